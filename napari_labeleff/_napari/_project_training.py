"""Training in the project panel: *Train / resume*, *Stop*, the fine-tune after each
accept, and the status line of the training runner (a mixin of
:class:`~._project_panel.ProjectPanel`, which owns the widgets and the runners).

The training itself runs in a spawned process (``cohort.training.train_in_background``)
through the panel's second runner, so refining stays possible while the network trains;
validation and publishing run in this process (``Project.finish_training``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from napari.utils.notifications import show_info

from .._errors import LabelEffError
from ..engine import Progress

#: Default budget of the fine-tune that follows an accept (minutes).
FINETUNE_MINUTES = 3.0


@dataclass
class _LearnerStep(Progress):
    """A learner's progress report (the status line counts its steps; the validation
    that follows reports plain ``Progress``)."""


def _as_engine_progress(gen):
    """Re-yield a training generator's progress as engine ``Progress`` (activity dock)."""
    try:
        while True:
            try:
                p = next(gen)
            except StopIteration as stop:
                return stop.value
            if not isinstance(p, Progress):
                p = _LearnerStep(int(p.step), int(p.total), str(p.message))
            yield p
    finally:
        gen.close()


def if_alive(method):
    """Callbacks of background work: do nothing once the panel's widgets are gone
    (napari closed while a task was still running)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if self._closed:
            return None
        try:
            return method(self, *args, **kwargs)
        except RuntimeError as err:  # "wrapped C/C++ object ... has been deleted"
            if "deleted" not in str(err):
                raise
            self._closed = True
            return None

    return wrapper


class TrainState:
    """The ``state`` a training Runner toggles (kept apart from the viewer's busy flag)."""

    def __init__(self, on_change):
        self.busy = False
        self._on_change = on_change

    def set_busy(self, busy: bool) -> None:
        self.busy = busy
        self._on_change(busy)


class TrainingMixin:
    """Train, stop and fine-tune-after-accept for the project panel (uses its
    ``project``, ``train_runner``, forms, ``train_status`` and ``_guard``)."""

    def train(self) -> bool:
        """Train a new model version in the background (resumes an interrupted run)."""
        if self.project is None or self.train_runner.running:
            return False
        return self._start_training(float(self.minutes.value), fine_tune=False)

    def stop_training(self) -> None:
        """Stop the running training or fine-tune (and a fine-tune waiting to restart);
        the learner keeps its resume state."""
        self._fine_tune_again = False
        self.train_runner.cancel()

    def fine_tune_after_accept(self) -> bool:
        """Fine-tune the published model on the project's labels (which now hold the
        accepted mask) for "fine-tune minutes", in the background.

        A fine-tune still running is cancelled quietly first; the new one starts when it
        has stopped (warm-started from the then published model). Nothing starts
        without a published model of the project's structures, or while a training
        started with *Train / resume* runs (it is left alone). Returns whether a
        fine-tune started or was scheduled.
        """
        p = self.project
        if p is None or p.read_only:
            return False
        published = p.published
        if published is None or list(published.class_names) != p.class_names:
            self.train_status.setText(
                "no fine-tune: no published model of these structures to start from yet; "
                "press Train / resume")
            return False
        if self.train_runner.running:
            if not self._fine_tune:
                self.train_status.setText(
                    f"no fine-tune: {self.train_runner.task} is running (train again when it "
                    "ends to learn from this mask)")
                return False
            self._fine_tune_again = True
            self.train_status.setText("fine-tune cancelled: a new accept (a new fine-tune "
                                      "starts once it has stopped)")
            self.train_runner.cancel(quiet=True)
            return True
        return self._start_training(float(self.fine_tune_minutes.value), fine_tune=True)

    def _start_training(self, minutes: float, *, fine_tune: bool) -> bool:
        """Snapshot the labels here (the writer), train in the training runner."""
        from ..cohort import run_training

        what = "Fine-tune" if fine_tune else "Train"
        plan = self._guard(what, self.project.prepare_training, max_minutes=minutes,
                           device=str(self.device.value))
        if plan is None:
            return False
        self._plan = plan
        self._fine_tune = fine_tune
        label = "fine-tuning after accept" if fine_tune else f"training {plan.version}"
        resumed = f" (resuming the interrupted run of {plan.version})" if plan.resumed else ""
        if plan.resumed and not fine_tune:
            show_info(f"Resuming the interrupted training of {plan.version}")
        self.train_status.setText(f"{label}{resumed}: starting")
        token = self._train_token = object()
        return self.train_runner.start(
            _as_engine_progress, run_training(plan, background=self.background),
            desc=f"{what} {plan.version}",
            on_progress=lambda p: self._on_train_progress(token, label, p),
            on_returned=self._on_trained, on_finished=self._on_train_finished,
            on_failed=lambda err: self._set_train_status(f"{label} failed: {err}"),
        )

    @if_alive
    def _set_train_status(self, text: str) -> None:
        self.train_status.setText(text)

    @if_alive
    def _on_train_progress(self, token, label: str, p) -> None:
        if token is not self._train_token:
            # the task has ended: napari's progress bar spins the event loop while it
            # shows a report, so the result can be handled before this report's turn
            return
        if isinstance(p, _LearnerStep):
            self.train_status.setText(f"{label}: step {p.step}/{p.total}")
        elif isinstance(p, Progress):
            self.train_status.setText(f"{label}: {p.message}")

    @if_alive
    def _on_trained(self, outcome) -> None:
        self._train_token = None
        p = self.project
        done = "fine-tune after accept" if self._fine_tune else "training"
        if p is None:  # closed meanwhile
            return
        if outcome is None:  # the training process reported a cancel
            self.train_status.setText(f"{done} stopped: its process was cancelled")
            return
        report = self._guard("Train", p.finish_training, outcome)
        if report is not None:
            show_info(report.message)
            self.train_status.setText(f"{done} finished: {report.message}")
        self.refresh()
        self.refresh_curve()
        if report is not None and report.published and self.vid is not None:
            self.show_draft()

    @if_alive
    def _on_train_finished(self, cancelled: bool) -> None:
        fine_tune, self._fine_tune = self._fine_tune, False
        self._train_token = None
        if self._fine_tune_again and self.project is not None:
            self._fine_tune_again = False
            self.fine_tune_after_accept()
            return
        if cancelled:
            what = "fine-tune" if fine_tune else "training"
            show_info(f"{what.capitalize()} stopped; press Train / resume to continue it")
            self.train_status.setText(f"{what} stopped")
            self.refresh()

    @if_alive
    def _on_train_busy(self, busy: bool) -> None:
        self._update_enabled()


def model_role(p) -> str:
    """What the published model does in refine: the network in the loop (an interactive
    model: the lead line says how much) or the graph method's prior (a plain one)."""
    try:
        prompted = bool(int(getattr(p.load_model(), "config", {}).get("prompt_channels", 0)))
    except LabelEffError:
        prompted = False
    if prompted:
        return "in the loop (see the network lead below)"
    return f"as refine prior: {p.prior_use()[1]}"
