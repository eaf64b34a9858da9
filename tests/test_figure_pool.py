"""Figures drawn in worker processes: the same files as drawn in this process, errors raised, nothing half-written."""

from functools import partial

import numba
import numpy as np
import pytest

from sitesel import plots
from sitesel.figure_pool import FigurePool, figure_processes
from sitesel.terrain.grid import Grid


def _figures(folder, n=4, bad=None):
    grid = Grid.centred((60, 80), 500.0, 0.0, 0.0)
    x, y = grid.xy()
    figures = []
    for i in range(n):
        layer = np.sin(x / (5e3 + 1e3 * i)) * np.cos(y / 7e3)
        if i == bad:
            layer = layer[:-1]  # the wrong shape: heatmap raises ValueError
        figures.append(partial(plots.heatmap, folder / f"f{i}.png", layer, grid, title=f"figure {i}", units="1"))
    return figures


def test_worker_processes_write_the_same_files_in_order(tmp_path):
    serial, pooled = tmp_path / "serial", tmp_path / "pooled"
    serial.mkdir()
    pooled.mkdir()
    done = []
    with FigurePool(_figures(serial), processes=0) as drawing:
        serial_paths = drawing.wait()
    with FigurePool(_figures(pooled), processes=2, on_done=lambda: done.append(1)) as drawing:
        pooled_paths = drawing.wait()
    assert [p.name for p in pooled_paths] == [p.name for p in serial_paths] == [f"f{i}.png" for i in range(4)]
    assert len(done) == 4
    for a, b in zip(serial_paths, pooled_paths):
        assert a.read_bytes() == b.read_bytes(), a.name


@pytest.mark.parametrize("processes", [0, 2])
def test_a_figure_error_is_raised_by_wait(tmp_path, processes):
    with pytest.raises(ValueError, match="does not match grid shape"):
        with FigurePool(_figures(tmp_path, bad=1), processes=processes) as drawing:
            drawing.wait()
    assert not (tmp_path / "f1.png").exists()


def test_an_error_while_drawing_leaves_only_whole_files(tmp_path):
    with pytest.raises(RuntimeError, match="stop"):
        with FigurePool(_figures(tmp_path, n=8), processes=2):
            raise RuntimeError("stop")
    # figures not yet started were cancelled; those started were finished (atomically written)
    for path in tmp_path.iterdir():
        assert path.name.endswith(".png") and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path.name


def test_figure_processes_follow_the_thread_count():
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        assert figure_processes(10) == 0
        numba.set_num_threads(threads)
        assert figure_processes(1) == 0
        assert figure_processes(10) in (0, min(10, threads))  # 0 where processes cannot fork
    finally:
        numba.set_num_threads(threads)


def test_workers_inherit_the_figures_instead_of_unpickling_them(tmp_path):
    import threading

    lock = threading.Lock()  # cannot be pickled: a figure holding it only runs where it was inherited

    def figure(i):
        with lock:
            path = tmp_path / f"{i}.txt"
            path.write_text(str(i))
            return path

    with FigurePool([partial(figure, i) for i in range(3)], processes=2) as drawing:
        paths = drawing.wait()
    assert [p.read_text() for p in paths] == ["0", "1", "2"]


def test_a_worker_that_dies_is_reported(tmp_path):
    import os

    def figure(i):
        if i == 1:
            os._exit(3)  # as if killed, e.g. out of memory
        return i

    with pytest.raises(RuntimeError, match="figure worker process died .exit code 3"):
        with FigurePool([partial(figure, i) for i in range(4)], processes=2) as drawing:
            drawing.wait()
