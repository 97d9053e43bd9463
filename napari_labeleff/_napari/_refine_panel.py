"""Refine panel: scribbles/boxes -> "Refined mask", then accept into the "Final mask".

Thin: inputs are snapshots from :class:`ViewerState`, the work is
``engine.refine_steps`` run through the worker seam, and accepting uses
:func:`~napari_labeleff._napari._layers.accept_into`.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from .. import engine
from .._errors import LabelEffError
from ._layers import accept_into


def _engine_image(state):
    """The image handed to the engine: a single lazy layer (dask, zarr) is passed as
    it is, so that the engine reads only the region it solves (around the boxes) in
    the worker; anything else is snapshotted in memory."""
    layers = state.channel_layers or [state.image_layer]
    data = layers[0].data
    if len(layers) == 1 and not isinstance(data, np.ndarray) and hasattr(data, "shape") \
            and len(data.shape) == 3:
        return data
    return state.image_snapshot()

DEVICES = ("auto", "cpu", "cuda")
ACCEPT_SCOPES = ("all classes", "selected class", "region under cursor")
#: Quiet time after the last stroke before a live refinement starts (ms).
LIVE_DELAY_MS = 600
#: Accept steps that can be undone.
UNDO_DEPTH = 10
ACCEPT_REGION_KEY = "Shift-A"
#: Shortest time between two previews drawn into the Refined mask layer (s).
PREVIEW_INTERVAL_S = 0.25
#: Name of the refinement task in the worker seam and the activity dock.
REFINE_TASK = "Refine"


class RefinePanel(QGroupBox):
    """Method/device choice, Refine/Cancel, live update, uncertainty overlay, accept/undo.

    Parameters
    ----------
    viewer : napari.Viewer
    state : ViewerState
    runner : Runner
    current_class : callable
        Returns the class selected in the class editor (for "selected class").
    """

    def __init__(self, viewer, state, runner, current_class, parent=None):
        super().__init__("Refine", parent)
        self.viewer = viewer
        self.state = state
        self.runner = runner
        self._current_class = current_class
        self._undo: deque = deque(maxlen=UNDO_DEPTH)
        self._generation = 0  # bumps on every annotation change
        self._pending_live = False
        self._preview_shown = False
        self._last_preview = 0.0
        self._started = 0.0

        self.method = QComboBox()
        self.method.addItems(["auto", *engine.available_methods()])
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.live = QCheckBox("live update after each stroke")
        self.show_uncertainty = QCheckBox("show uncertainty overlay")
        self.refine_btn = QPushButton("Refine")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("idle")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.scope = QComboBox()
        self.scope.addItems(ACCEPT_SCOPES)
        self.scope.setToolTip(f"'{ACCEPT_REGION_KEY}' on the canvas accepts the region under the mouse")
        self.accept_btn = QPushButton("Accept into final mask")
        self.undo_btn = QPushButton("Undo accept")
        self.undo_btn.setEnabled(False)

        form = QFormLayout()
        form.addRow("method", self.method)
        form.addRow("device", self.device)
        run_row = QHBoxLayout()
        run_row.addWidget(self.refine_btn)
        run_row.addWidget(self.cancel_btn)
        accept_row = QHBoxLayout()
        accept_row.addWidget(self.accept_btn)
        accept_row.addWidget(self.undo_btn)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.live)
        lay.addLayout(run_row)
        lay.addWidget(self.progress)
        lay.addWidget(self.status)
        lay.addWidget(self.show_uncertainty)
        lay.addWidget(self.scope)
        lay.addLayout(accept_row)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(LIVE_DELAY_MS)
        self._timer.timeout.connect(self._live_refine)

        self.refine_btn.clicked.connect(self.run_refine)
        self.cancel_btn.clicked.connect(self.runner.cancel)
        self.accept_btn.clicked.connect(lambda: self.accept())
        self.undo_btn.clicked.connect(self.undo_accept)
        self.show_uncertainty.toggled.connect(self._show_uncertainty)
        state.annotations_changed.connect(self._on_annotations_changed)
        state.busy_changed.connect(self._on_busy)
        state.image_changed.connect(self._on_image_changed)
        viewer.bind_key(ACCEPT_REGION_KEY, self._accept_key, overwrite=True)
        self.destroyed.connect(lambda *_: viewer.bind_key(ACCEPT_REGION_KEY, None))

    # ---- refining -------------------------------------------------------------------
    def run_refine(self) -> bool:
        """Snapshot the annotations and refine in the background.

        Returns False (with a notification) if nothing can run now.
        """
        state = self.state
        if state.image_layer is None or state.scribbles_layer is None:
            show_info("Refine: choose an image in the LabelEff panel first")
            return False
        if state.busy:
            show_info("Refine: a task is still running; cancel it or wait")
            return False
        previous = state.result.state if state.result is not None else None
        try:  # the rules of the classes panel's rules box, stored with the session
            rules = state.session.rules_object() if state.session is not None else None
        except LabelEffError as err:
            show_error(f"Refine: {err}")
            return False
        snapshot_generation = self._generation
        self._started = time.monotonic()
        self.progress.setRange(0, 0)
        self.progress.setFormat("starting…")
        if state.project_refine is not None:  # a project volume: its network in the loop
            return self.runner.start(
                state.project_refine,
                state.scribbles_snapshot(),
                state.boxes_snapshot(),
                desc=REFINE_TASK,
                on_progress=self._on_progress,
                on_returned=lambda result: self._on_result(result, snapshot_generation),
                on_finished=self._on_finished,
                method=self.method.currentText(),
                device=self.device.currentText(),
                state=previous,
                rules=rules,
            )
        return self.runner.start(
            engine.refine_steps,
            _engine_image(state),
            state.scribbles_snapshot(),
            desc=REFINE_TASK,
            on_progress=self._on_progress,
            on_returned=lambda result: self._on_result(result, snapshot_generation),
            on_finished=self._on_finished,
            spacing=state.spacing,
            boxes=state.boxes_snapshot(),
            prior=state.prior,  # a cohort project's model, when one is published
            method=self.method.currentText(),
            device=self.device.currentText(),
            state=previous,
            rules=rules,
        )

    def _on_progress(self, p) -> None:
        if not isinstance(p, engine.Progress):
            return
        total = max(int(p.total), 0)
        self.progress.setRange(0, total)
        if total:
            self.progress.setValue(min(int(p.step), total))
        self.progress.setFormat(p.message or "%p%")
        now = time.monotonic()
        if p.preview is not None and self.state.refined_layer is not None:
            if now - self._last_preview >= PREVIEW_INTERVAL_S or not self._preview_shown:
                # the first result at once, later ones at most every PREVIEW_INTERVAL_S
                self.state.refined_layer.data = np.asarray(p.preview, dtype=np.uint8)
                if not self._preview_shown:
                    self.status.setText(f"first result after {now - self._started:.2f} s; "
                                        "refining…")
                self._preview_shown = True
                self._last_preview = now

    def _on_result(self, result, snapshot_generation: int) -> None:
        state = self.state
        state.result = result
        if state.refined_layer is not None:  # the user may delete it while refining
            state.refined_layer.data = result.labels
        self._preview_shown = False
        state.scribbles_dirty = snapshot_generation != self._generation
        if self.show_uncertainty.isChecked():
            self._show_uncertainty(True)
        self.status.setText(result.summary())
        state.refined.emit(result)

    def _on_finished(self, cancelled: bool) -> None:
        if self._preview_shown:  # cancelled or failed mid-way: back to the last result
            last = self.state.result
            layer = self.state.refined_layer
            if layer is not None:
                layer.data = last.labels if last is not None else np.zeros_like(layer.data)
            self._preview_shown = False
        self.progress.setRange(0, 1)
        self.progress.setValue(0 if cancelled else 1)
        self.progress.setFormat("cancelled" if cancelled else "done")
        if self._pending_live and self.live.isChecked():
            self._pending_live = False
            self._timer.start()

    def _on_busy(self, busy: bool) -> None:
        self.refine_btn.setEnabled(not busy)
        self.cancel_btn.setEnabled(busy)
        self.accept_btn.setEnabled(not busy)

    def _on_annotations_changed(self, _kind, _region) -> None:
        self._generation += 1
        self.state.scribbles_dirty = True
        if self.live.isChecked():
            if self.state.busy:
                self._pending_live = True
                if self.runner.task == REFINE_TASK:
                    # the next stroke cancels the refinement still running (its result
                    # would be stale); the live refinement restarts after the quiet time
                    self.runner.cancel(quiet=True)
            else:
                self._timer.start()

    def _live_refine(self) -> None:
        if self.state.busy:
            self._pending_live = True
        else:
            self.run_refine()

    def _on_image_changed(self) -> None:
        self._undo.clear()
        self.undo_btn.setEnabled(False)
        self.status.setText("")
        self.progress.setFormat("idle")

    # ---- uncertainty overlay --------------------------------------------------------------
    def _show_uncertainty(self, on: bool) -> None:
        state = self.state
        layer = state.uncertainty_layer
        if not on:
            if layer is not None:
                layer.visible = False
            return
        if state.result is None:
            return
        if layer is None or layer not in self.viewer.layers:
            state.uncertainty_layer = self.viewer.add_image(
                state.result.uncertainty,
                name="Uncertainty",
                affine=state.image_layer.affine.affine_matrix,
                colormap="inferno",
                blending="additive",
                opacity=0.6,
                contrast_limits=(0.0, 1.0),
                metadata=state.layer_metadata("uncertainty"),
            )
        else:
            layer.data = state.result.uncertainty
            layer.visible = True

    # ---- accepting -------------------------------------------------------------------------
    def accept(self, scope: str | None = None, at=None) -> bool:
        """Copy the refined mask (all, the selected class, or the region under the
        cursor / at voxel ``at``) into the final mask. Undoable."""
        state = self.state
        refined, final = state.refined_layer, state.final_layer
        if refined is None or final is None or state.result is None:
            show_info("Accept: refine first")
            return False
        scope = scope or self.scope.currentText()
        kwargs = {}
        if scope == "selected class":
            c = self._current_class()
            if c < 1:
                show_info("Accept: select a structure (not background) in the class list")
                return False
            kwargs["classes"] = [c]
        elif scope == "region under cursor":
            if at is None:
                at = refined.world_to_data(self.viewer.cursor.position)
            kwargs["at"] = np.round(np.asarray(at, dtype=float)[-3:]).astype(int)
            if any(not 0 <= a < n for a, n in zip(kwargs["at"], refined.data.shape)):
                show_info("Accept: the cursor is not over the volume")
                return False
        new, region = accept_into(final.data, refined.data, **kwargs)
        if not region:
            show_info("Accept: nothing changed")
            return False
        self._undo.append(np.array(final.data, copy=True))
        final.data = new
        self.undo_btn.setEnabled(True)
        state.final_dirty = True
        state.final_changed.emit()
        return True

    def undo_accept(self) -> None:
        if not self._undo or self.state.final_layer is None:
            return
        self.state.final_layer.data = self._undo.pop()
        self.undo_btn.setEnabled(bool(self._undo))
        self.state.final_dirty = True
        self.state.final_changed.emit()

    def _accept_key(self, _viewer) -> None:
        self.accept("region under cursor")
