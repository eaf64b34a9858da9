"""Draw a run's figures in worker processes while the caller writes its other files.

Drawing is pure Python and holds the interpreter lock, so threads would draw one
figure at a time; forked processes draw as many as the run has threads. Fork is
the only start method that does not run the caller's main module again in each
worker (an unguarded user script would run its whole pipeline once per worker),
so figures are drawn in worker processes on Linux only, and in this process
elsewhere. A forked worker also inherits the figures themselves: their arrays (a
full-size layer and the heights it is shaded with) are never pickled.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed

import numba


#: The figures of each open pool, by key: the pool's workers are forked while they are here
#: and call them from their own copy of this dict (only the key and index are sent).
_FIGURES: dict[int, list[Callable]] = {}


def _draw(key: int, index: int):
    return _FIGURES[key][index]()


def figure_processes(n_figures: int) -> int:
    """Worker processes for ``n_figures`` figures: one per thread the run may use
    (``numba.get_num_threads()``, i.e. ``NUMBA_NUM_THREADS``), at most one per figure;
    0 (draw them in this process) for fewer than two, or where processes cannot fork."""
    processes = min(n_figures, numba.get_num_threads())
    return processes if processes >= 2 and sys.platform.startswith("linux") else 0


class FigurePool:
    """Draw ``figures`` (callables, e.g. ``functools.partial(plots.heatmap, path, ...)``,
    each writing one file and returning what the caller keeps, e.g. its path)::

        with FigurePool(figures, on_done=bar.advance) as drawing:
            ...                     # other work, while the figures are drawn
            paths = drawing.wait()  # their return values, in the order given

    ``processes`` defaults to :func:`figure_processes`; with 0 the figures are drawn
    in this process, by :meth:`wait`. ``on_done`` is called (in this process) once
    per finished figure. A figure's error is raised by :meth:`wait`; leaving the
    block on any error cancels the figures not yet started and waits for those
    being drawn (each writes its file atomically, so none is left half-written).
    """

    def __init__(self, figures: Iterable[Callable], *, on_done: Callable[[], object] | None = None,
                 processes: int | None = None):
        self._figures = list(figures)
        self._on_done = on_done
        processes = figure_processes(len(self._figures)) if processes is None else processes
        self._pool = None
        self._futures = []
        if processes > 0:
            _FIGURES[id(self)] = self._figures
            self._pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork"))
            self._futures = [self._pool.submit(_draw, id(self), i) for i in range(len(self._figures))]

    def wait(self) -> list:
        """Every figure's return value, in the order given, once all are drawn."""
        if self._pool is None:
            results = []
            for figure in self._figures:
                results.append(figure())
                self._done()
            return results
        for future in as_completed(self._futures):
            future.result()  # raises the figure's error, if any
            self._done()
        return [future.result() for future in self._futures]

    def _done(self):
        if self._on_done is not None:
            self._on_done()

    def __enter__(self) -> FigurePool:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=exc_type is not None)
            _FIGURES.pop(id(self), None)
