"""Training in a separate (spawned) process, driven like any engine generator.

``train_in_background(spec)`` starts ``train_steps(spec)`` in a child process created
with the ``spawn`` start method (no forked torch/Qt state; the viewer's process keeps
its memory and GIL), relays each :class:`TrainProgress` through a queue and returns the
:class:`TrainReport`. Closing the generator (the worker seam's cancel) sets an event:
the child closes its ``train_steps`` generator at the next step, which writes the resume
state, and exits; a child that does not exit within ``cancel_timeout`` seconds is
terminated. Errors in the child come back as :class:`LabelEffError` with the child's
message.

The GUI runs this generator through its one worker seam (``_napari``), exactly like
``engine.refine_steps``.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_mod
import traceback
from collections.abc import Generator

from ..._errors import LabelEffError
from ._spec import TrainProgress, TrainReport, TrainSpec


def _child(spec: TrainSpec, out, cancel) -> None:
    """Child process body: run ``train_steps`` and report on ``out``."""
    try:
        from ._loop import train_steps

        gen = train_steps(spec)
        while True:
            if cancel.is_set():
                gen.close()  # writes the resume state
                out.put(("cancelled", None))
                return
            try:
                p = next(gen)
            except StopIteration as stop:
                out.put(("done", stop.value))
                return
            out.put(("progress", p))
    except LabelEffError as err:
        out.put(("error", str(err)))
    except BaseException as err:  # report anything, the parent decides
        out.put(("error", f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=8)}"))


def train_in_background(spec: TrainSpec, *, poll_s: float = 0.2,
                        cancel_timeout: float = 120.0) -> Generator[TrainProgress, None, TrainReport | None]:
    """Run ``train_steps(spec)`` in a spawned child process.

    Parameters
    ----------
    spec : TrainSpec
    poll_s : float
        How often the parent checks that the child is alive while waiting.
    cancel_timeout : float
        Seconds to wait for a cancelled child to save its resume state and exit.

    Yields
    ------
    TrainProgress
        As the child reports them (``stage`` ``"start"`` first, while it imports).

    Returns
    -------
    TrainReport or None
        The child's report; None when it was cancelled.

    Raises
    ------
    LabelEffError
        The child's error (same message), or a child that died without a word
        (exit code given).
    """
    if not isinstance(spec, TrainSpec):
        raise LabelEffError(f"train_in_background needs a TrainSpec, got {type(spec).__name__}")
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    cancel = ctx.Event()
    proc = ctx.Process(target=_child, args=(spec, out, cancel), name="labeleff-train", daemon=True)
    proc.start()
    finished = False
    try:
        yield TrainProgress(0, 1, f"training process {proc.pid} started", stage="start")
        while True:
            try:
                kind, payload = out.get(timeout=poll_s)
            except queue_mod.Empty:
                if not proc.is_alive():
                    # a last message may still be in the pipe
                    try:
                        kind, payload = out.get(timeout=1.0)
                    except queue_mod.Empty:
                        raise LabelEffError(
                            f"the training process died without a report (exit code {proc.exitcode}); "
                            "out of memory? its resume state, if any, is in the run folder"
                        ) from None
                else:
                    continue
            if kind == "progress":
                yield payload
            elif kind == "done":
                finished = True
                return payload
            elif kind == "cancelled":
                finished = True
                return None
            elif kind == "error":
                finished = True
                raise LabelEffError(payload)
    finally:
        if not finished and proc.is_alive():
            cancel.set()
            # keep draining so the child never blocks on a full queue while saving
            while proc.is_alive():
                try:
                    kind, _ = out.get(timeout=poll_s)
                    if kind in ("cancelled", "done", "error"):
                        break
                except queue_mod.Empty:
                    pass
                cancel_timeout -= poll_s
                if cancel_timeout <= 0:
                    break
        proc.join(timeout=max(1.0, cancel_timeout))
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)
        out.close()
