"""The one seam between the GUI and long-running headless work.

This is the ONLY module of the package that creates thread workers. Panels call
:meth:`Runner.start` with a headless callable (an engine/active generator function such
as ``engine.refine_steps``, or a plain function such as ``active.suggest``) and with
arguments that are *snapshots* taken on the GUI thread; the worker never touches Qt or
layers. Results, progress and errors come back to the GUI thread through callbacks.

* progress: every yielded :class:`~napari_labeleff.engine.Progress` updates a
  ``napari.utils.progress`` bar, which napari shows in its activity dock;
* cancel: :meth:`Runner.cancel` calls ``worker.quit()``; the worker stops at the next
  yield and the headless generator is closed (its ``finally`` blocks run), so the
  previous result stays untouched;
* errors: :class:`~napari_labeleff.LabelEffError` becomes an error notification with
  its one-line message; any other exception becomes a notification naming the task
  plus a logged traceback;
* modes: ``"thread"`` (napari ``create_worker``, the default) or ``"sync"`` (runs in
  the calling thread; deterministic, for tests and for debugging a slow GUI, see
  micro-sam#740).

:class:`IOQueue` is the second channel through the same seam: serial background I/O
(the checksum and opening of a volume's store on bind, mask saves) that must neither
freeze the viewer nor wait for a refinement to finish.
"""

from __future__ import annotations

import inspect
import logging
import threading
import traceback
import warnings
from dataclasses import dataclass
from typing import Any, Callable

from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning

from .._errors import LabelEffError
from ..engine import Progress

logger = logging.getLogger(__name__)

MODES = ("thread", "sync")


@dataclass
class _Failed:
    """An exception caught in the worker, carried to the GUI thread as a value."""

    error: BaseException
    trace: str


@dataclass
class _Done:
    value: Any


def _drive(fn: Callable, args: tuple, kwargs: dict):
    """Run ``fn``; re-yield its progress if it is a generator; return _Done/_Failed.

    Exceptions are returned rather than raised so the GUI decides how to show them
    (napari's worker would otherwise dump every traceback into a notification).
    """
    inner = None
    try:
        out = fn(*args, **kwargs)
        if not inspect.isgenerator(out):
            return _Done(out)
        inner = out
        value = yield from inner
        return _Done(value)
    except Exception as exc:  # noqa: BLE001 - reported to the user on the GUI thread
        return _Failed(exc, traceback.format_exc())
    finally:
        if inner is not None:
            inner.close()


class Runner:
    """Starts at most one background task at a time for one :class:`ViewerState`.

    Parameters
    ----------
    state : ViewerState
        Its ``busy`` flag is set while a task runs.
    mode : {"thread", "sync"}
    """

    def __init__(self, state, mode: str = "thread"):
        self.state = state
        self.mode = mode
        self._worker = None
        self._gen = None
        self._pbar = None
        self._cancelled = False
        self._quiet = False
        self._in_yield = False
        self.task: str | None = None  # ``desc`` of the running task

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self._mode = mode

    @property
    def running(self) -> bool:
        return self._gen is not None

    def start(
        self,
        fn: Callable,
        *args,
        desc: str,
        on_progress: Callable[[Progress], None] | None = None,
        on_returned: Callable[[Any], None] | None = None,
        on_failed: Callable[[BaseException], None] | None = None,
        on_finished: Callable[[bool], None] | None = None,
        **kwargs,
    ) -> bool:
        """Run ``fn(*args, **kwargs)`` in the background.

        Parameters
        ----------
        fn : callable
            Headless function or generator function. Its arguments must already be
            snapshots (numpy arrays, tuples), never layers.
        desc : str
            Task name shown in the activity dock and in messages ("Refine").
        on_progress : callable, optional
            Called on the GUI thread with each yielded value.
        on_returned : callable, optional
            Called on the GUI thread with the return value on success.
        on_failed : callable, optional
            Called on the GUI thread with the exception after it was reported.
        on_finished : callable, optional
            Called last on the GUI thread with ``cancelled`` (True if cancelled).

        Returns
        -------
        bool
            False (and an info notification) if a task is already running.
        """
        if self.running:
            show_info(f"{desc}: another task is still running; cancel it or wait")
            return False
        self._cancelled = False
        self._quiet = False
        self.task = desc
        self._gen = _drive(fn, args, kwargs)
        self._pbar = progress(total=0, desc=desc)
        self.state.set_busy(True)
        callbacks = (desc, on_progress, on_returned, on_failed, on_finished)
        if self.mode == "sync":
            self._run_sync(*callbacks)
        else:
            self._run_thread(*callbacks)
        return True

    def cancel(self, quiet: bool = False) -> None:
        """Ask the running task to stop at its next progress step (``quiet``: without
        the "cancelled" notification, e.g. when a new stroke supersedes a refinement)."""
        if not self.running:
            return
        self._cancelled = True
        self._quiet = quiet
        if self._worker is not None:
            self._worker.quit()

    # ---- modes -------------------------------------------------------------------
    def _run_thread(self, desc, on_progress, on_returned, on_failed, on_finished):
        gen = self._gen

        def passthrough():
            return (yield from gen)

        worker = create_worker(passthrough)
        worker.yielded.connect(lambda p: self._on_yield(p, on_progress))
        worker.returned.connect(
            lambda out: self._on_result(out, desc, on_returned, on_failed)
        )
        worker.finished.connect(lambda: self._on_finished(desc, on_finished))
        self._worker = worker
        worker.start()

    def _run_sync(self, desc, on_progress, on_returned, on_failed, on_finished):
        gen = self._gen
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                while not self._cancelled:
                    self._on_yield(next(gen), on_progress)
            except StopIteration as stop:
                self._on_result(stop.value, desc, on_returned, on_failed)
        for w in caught:
            show_warning(str(w.message))
        self._on_finished(desc, on_finished)

    # ---- GUI-thread callbacks ------------------------------------------------------
    def _on_yield(self, value, on_progress):
        if self._in_yield:  # a slot that spun the event loop; drop this (stale) report
            return
        self._in_yield = True
        try:
            self._show_progress(value, on_progress)
        finally:
            self._in_yield = False

    def _show_progress(self, value, on_progress):
        if isinstance(value, Progress) and self._pbar is not None:
            pbar = self._pbar
            if value.total != pbar.total:
                pbar.total = max(int(value.total), 0)
            if value.step > pbar.n:
                pbar.update(int(value.step) - pbar.n)
            if value.message:
                pbar.set_description(value.message)
        if on_progress is not None and not self._cancelled:
            on_progress(value)

    def _on_result(self, out, desc, on_returned, on_failed):
        if self._cancelled:
            return
        if isinstance(out, _Failed):
            report_error(out.error, desc, out.trace)
            if on_failed is not None:
                on_failed(out.error)
        elif on_returned is not None:
            on_returned(out.value)

    def _on_finished(self, desc, on_finished):
        gen, self._gen, self._worker, self.task = self._gen, None, None, None
        if gen is not None:
            gen.close()  # runs the headless generator's cleanup on cancel
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        cancelled = self._cancelled
        if cancelled and not self._quiet:
            show_info(f"{desc} cancelled; the previous result is kept")
        self.state.set_busy(False)
        if on_finished is not None:
            on_finished(cancelled)


def report_error(error: BaseException, desc: str, trace: str | None = None) -> None:
    """Show an error to the user: the message for LabelEffError, else name + log."""
    if isinstance(error, LabelEffError):
        show_error(f"{desc}: {error}")
        return
    logger.error("%s failed:\n%s", desc, trace or "".join(traceback.format_exception(error)))
    show_error(f"{desc} failed: {type(error).__name__}: {error}")


class _Job:
    """One queued background I/O call and, once run, its outcome."""

    def __init__(self, key, fn, args, desc, on_done):
        self.key, self.fn, self.args, self.desc, self.on_done = key, fn, args, desc, on_done
        self.outcome = None  # _Done / _Failed once run
        self.ran = threading.Event()
        self.handled = False
        self._claim = threading.Lock()
        self._claimed = False

    def run(self) -> None:
        """Run ``fn`` (any thread) unless another thread already does; never raises."""
        with self._claim:
            if self._claimed:
                return
            self._claimed = True
        try:
            self.outcome = _Done(self.fn(*self.args))
        except Exception as exc:  # noqa: BLE001 - reported on the GUI thread
            self.outcome = _Failed(exc, traceback.format_exc())
        self.ran.set()


class IOQueue:
    """Serial background I/O for one viewer: checksums, store opening, mask saves.

    Jobs run one at a time, in order, in a napari thread worker (``mode="thread"``) or
    at once in the calling thread (``mode="sync"``). A job submitted under the key of
    a job still *waiting* replaces it (only the latest mask needs writing). Callbacks
    run on the GUI thread. Unlike :class:`Runner` it never sets ``state.busy``: saving
    must not block refining.

    Parameters
    ----------
    mode : {"thread", "sync"}
    """

    def __init__(self, mode: str = "thread"):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self._waiting: dict = {}
        self._running: _Job | None = None
        self._worker = None

    @property
    def pending(self) -> int:
        """Jobs waiting or running."""
        return len(self._waiting) + (self._running is not None)

    def submit(self, key, fn: Callable, *args, desc: str, on_done: Callable | None = None) -> None:
        """Queue ``fn(*args)``; ``on_done(value)`` is called on the GUI thread on success.

        A failure is reported like :func:`report_error` (LabelEffError: its message).
        """
        job = _Job(key, fn, args, desc, on_done)
        if self.mode == "sync":
            job.run()
            self._finish(job)
            return
        self._waiting.pop(key, None)
        self._waiting[key] = job
        self._kick()

    def _kick(self) -> None:
        if self._running is not None or not self._waiting:
            return
        key = next(iter(self._waiting))
        job = self._running = self._waiting.pop(key)
        worker = create_worker(job.run)
        worker.finished.connect(lambda: self._on_worker_finished(job))
        self._worker = worker
        worker.start()

    def _on_worker_finished(self, job: _Job) -> None:
        self._finish(job)
        if self._running is job:
            self._running, self._worker = None, None
        self._kick()

    def _finish(self, job: _Job) -> None:
        if job.handled:
            return
        job.handled = True
        if isinstance(job.outcome, _Failed):
            report_error(job.outcome.error, job.desc, job.outcome.trace)
        elif job.on_done is not None:
            job.on_done(job.outcome.value)

    def flush(self, timeout: float = 600.0) -> bool:
        """Finish every queued job now (GUI thread): wait for the running one, then run
        the waiting ones here. Returns False if the running job did not end in time."""
        job = self._running
        if job is not None:
            # napari queues a worker's start on the event loop, which we are blocking:
            # run the job here unless its thread has already started it.
            job.run()
            if not job.ran.wait(timeout):
                return False
            self._finish(job)
            self._running = None  # the worker's finished signal finds it handled
        while self._waiting:
            key = next(iter(self._waiting))
            waiting = self._waiting.pop(key)
            waiting.run()
            self._finish(waiting)
        return True
