"""Draw a run's figures in worker processes while the caller writes its other files.

Drawing is pure Python and holds the interpreter lock, so threads would draw one
figure at a time; forked processes draw as many as the run has threads. Fork is
the only start method that does not run the caller's main module again in each
worker (an unguarded user script would run its whole pipeline once per worker),
so figures are drawn in worker processes on Linux only, and in this process
elsewhere. A forked worker inherits the figures themselves: their arrays (a
full-size layer and the heights it is shaded with) are never pickled.

Ctrl-C must stop a run at once, and cleanly. The terminal sends SIGINT to every
process of the group, and ``concurrent.futures.ProcessPoolExecutor`` can then
hang for ever: an interrupted process may leave its job queue's lock taken, or a
message half-sent. So the workers here are forked with SIGINT blocked and share
nothing but a counter of the next figure and a stop flag. Each sends its results
through its own pipe. On an error or an interrupt, this process sets the flag and
waits for the figures being drawn (each file is written atomically, so none is
left half-written). The workers are daemons: they are killed, not awaited, if this
process exits first.
"""

from __future__ import annotations

import multiprocessing
import pickle
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from multiprocessing.connection import wait as wait_for_pipes

import numba


#: The figures of each open pool, by key: its workers are forked while they are here.
_FIGURES: dict[int, list[Callable]] = {}


def figure_processes(n_figures: int) -> int:
    """Worker processes for ``n_figures`` figures: one per thread the run may use
    (``numba.get_num_threads()``, i.e. ``NUMBA_NUM_THREADS``), at most one per figure;
    0 (draw them in this process) for fewer than two, or where processes cannot fork
    (not Linux, or not called from the main thread, which alone controls signals)."""
    processes = min(n_figures, numba.get_num_threads())
    forks = sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread()
    return processes if processes >= 2 and forks else 0


def _worker(key, next_figure, stop, pipe):
    """Draw figures, taking the next undrawn one each time, until none is left or ``stop``
    is set; send (index, True, result) or, on an error, (index, False, error) and stop."""
    figures = _FIGURES[key]
    while not stop.is_set():
        with next_figure.get_lock():
            index = next_figure.value
            next_figure.value += 1
        if index >= len(figures):
            break
        try:
            pipe.send((index, True, figures[index]()))
        except BaseException as exc:  # noqa: BLE001 - every error goes to the caller
            try:
                pickle.dumps(exc)
            except Exception:  # noqa: BLE001 - an error that cannot be pickled goes as its text
                exc = RuntimeError(f"{type(exc).__name__}: {exc}")
            pipe.send((index, False, exc))
            break
    pipe.close()


class FigurePool:
    """Draw ``figures`` (callables, e.g. ``functools.partial(plots.heatmap, path, ...)``,
    each writing one file and returning what the caller keeps, e.g. its path)::

        with FigurePool(figures, on_done=bar.advance) as drawing:
            ...                     # other work, while the figures are drawn
            paths = drawing.wait()  # their return values, in the order given

    ``processes`` defaults to :func:`figure_processes`; with 0 the figures are drawn
    in this process, by :meth:`wait`. ``on_done`` is called (in this process) once
    per finished figure. A figure's error is raised by :meth:`wait`; leaving the
    block on any error (Ctrl-C included) stops the workers after the figures they
    are drawing.
    """

    def __init__(self, figures: Iterable[Callable], *, on_done: Callable[[], object] | None = None,
                 processes: int | None = None):
        self._figures = list(figures)
        self._on_done = on_done
        processes = figure_processes(len(self._figures)) if processes is None else processes
        self._workers = []
        if processes <= 0:
            return
        context = multiprocessing.get_context("fork")
        self._stop = context.Event()
        next_figure = context.Value("q", 0)
        _FIGURES[id(self)] = self._figures
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            for _ in range(processes):
                receiver, sender = context.Pipe(duplex=False)
                worker = context.Process(target=_worker, args=(id(self), next_figure, self._stop, sender), daemon=True)
                worker.start()
                sender.close()
                self._workers.append((worker, receiver))
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def wait(self) -> list:
        """Every figure's return value, in the order given, once all are drawn."""
        if not self._workers:
            results = []
            for figure in self._figures:
                results.append(figure())
                self._done()
            return results
        results = {}
        open_pipes = {receiver: worker for worker, receiver in self._workers}
        while open_pipes:
            for pipe in wait_for_pipes(list(open_pipes)):
                try:
                    index, ok, value = pipe.recv()
                except EOFError:  # the worker has finished, or died
                    worker = open_pipes.pop(pipe)
                    worker.join()
                    if worker.exitcode != 0:
                        raise RuntimeError(f"a figure worker process died (exit code {worker.exitcode}); "
                                           "if it ran out of memory, set NUMBA_NUM_THREADS=1 to draw in one process")
                    continue
                if not ok:
                    raise value
                results[index] = value
                self._done()
        if len(results) < len(self._figures):
            raise RuntimeError(f"only {len(results)} of {len(self._figures)} figures were drawn")
        return [results[i] for i in range(len(self._figures))]

    def _done(self):
        if self._on_done is not None:
            self._on_done()

    def __enter__(self) -> FigurePool:
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._workers:
                self._stop.set()
                for worker, receiver in self._workers:
                    worker.join()
                    receiver.close()
        finally:
            _FIGURES.pop(id(self), None)
