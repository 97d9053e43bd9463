"""Review panel: ranked active-learning suggestions, reviewed one by one in the viewer.

Thin by design: ranking comes from :func:`napari_labeleff.active.suggest` (run through
the worker seam), weak labels of a confirmed place from
:func:`napari_labeleff.active.confirmed_labels` (its confident interior only); this
module only gathers
inputs, moves the viewer and writes results into layers.

Keyboard shortcuts (bound on the viewer, active while the panel exists; they are free
in napari's default keymap):

==========  =====================================================
Shift-N     next pending suggestion
Shift-B     previous pending suggestion
Shift-E     annotate here (Scribbles layer, paint mode, likely class)
Shift-Y     looks right (confirm; becomes weak labels)
Shift-S     skip
==========  =====================================================
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .. import active
from .._errors import LabelEffError
from ._table import make_table

AXIS_NAMES = ("Z", "Y", "X")
HIGHLIGHT_COLOR = "yellow"
#: key -> (panel method name, what it does), bound with ``viewer.bind_key``.
SHORTCUTS = {
    "Shift-N": ("select_next", "next suggestion"),
    "Shift-B": ("select_previous", "previous suggestion"),
    "Shift-E": ("annotate_here", "annotate here"),
    "Shift-Y": ("looks_right", "looks right"),
    "Shift-S": ("skip", "skip"),
}
_COLUMNS = ("#", "where", "score", "status", "reason")


def describe_where(s) -> str:
    """Short location text of a suggestion: ``"Z 42"`` or ``"z 40-52, y 10-30, x 5-25"``."""
    if s.bbox is None:
        return f"{AXIS_NAMES[s.axis]} {s.index}"
    lo, hi = s.bbox[:3], s.bbox[3:]
    return ", ".join(f"{n.lower()} {a}-{b - 1}" for n, a, b in zip(AXIS_NAMES, lo, hi))


def suggestion_region(s, shape) -> tuple[int, ...]:
    """``(z0, y0, x0, z1, y1, x1)`` a suggestion covers: its box, or its whole slice."""
    if s.bbox is not None:
        return tuple(int(v) for v in s.bbox)
    lo, hi = [0, 0, 0], list(shape)
    lo[s.axis], hi[s.axis] = int(s.index), int(s.index) + 1
    return (*lo, *hi)


class ReviewPanel(QGroupBox):
    """Suggest, jump to, and review places to annotate next.

    Parameters
    ----------
    viewer : napari.Viewer
    state : ViewerState
        Shared per-viewer state: the image, scribbles, boxes, last refinement, and the
        current ranking (``suggestions``/``review_status``).
    runner : Runner
        The worker seam that runs :func:`napari_labeleff.active.suggest`.
    show_uncertainty : callable, optional
        Called without arguments when a suggestion is shown, to turn the uncertainty
        overlay on (owned by the Refine panel, which creates that layer).
    """

    def __init__(self, viewer, state, runner, show_uncertainty=None,
                 parent: QWidget | None = None):
        super().__init__("Review suggestions", parent)
        self.viewer = viewer
        self.state = state
        self.runner = runner
        self._show_uncertainty = show_uncertainty
        self._highlight = None
        self._shown: list | None = None  # the ranking the table shows
        self._last_request: dict | None = None
        self._rerank_pending = False
        self._build()
        self._bind_keys()
        state.suggestions_changed.connect(self._refresh)
        state.refined.connect(self._on_refined)
        state.busy_changed.connect(self._on_busy)
        state.image_changed.connect(self._on_image_changed)
        self._refresh()

    # ---- layout -------------------------------------------------------------------
    def _build(self):
        self.granularity = QComboBox()
        self.granularity.addItems(active.GRANULARITIES)
        self.axis = QComboBox()
        self.axis.addItems([f"{n} (axis {i})" for i, n in enumerate(AXIS_NAMES)])
        self.strategy = QComboBox()
        self.strategy.addItems(list(active.STRATEGIES))
        self.strategy.setCurrentText("default")
        self.uncertainty = QComboBox()
        self._fill_uncertainty_kinds()
        self.uncertainty.setToolTip(
            "voxel uncertainty; mutual information needs an ensemble of refinements "
            "and is listed only when one exists")
        self.n = QSpinBox()
        self.n.setRange(1, 50)
        self.n.setValue(5)
        self.auto_rerank = QCheckBox("re-rank after each refinement")
        self.auto_rerank.setChecked(True)
        self.suggest_btn = QPushButton("Suggest")
        self.suggest_btn.setToolTip("Rank places to annotate next by the last refinement")
        self.suggest_btn.clicked.connect(self.request_suggestions)

        form = QFormLayout()
        form.addRow("granularity", self.granularity)
        form.addRow("axis", self.axis)
        form.addRow("strategy", self.strategy)
        form.addRow("uncertainty", self.uncertainty)
        form.addRow("suggestions", self.n)

        self.table = make_table(_COLUMNS)
        self.table.itemSelectionChanged.connect(self._on_selection)

        self.detail = QLabel("")
        self.detail.setWordWrap(True)
        self.counts = QLabel("")

        self.prev_btn = QPushButton("Previous")
        self.next_btn = QPushButton("Next")
        self.annotate_btn = QPushButton("Annotate here")
        self.confirm_btn = QPushButton("Looks right")
        self.skip_btn = QPushButton("Skip")
        tips = {method: f"{text} ({key})" for key, (method, text) in SHORTCUTS.items()}
        for btn, method in (
            (self.prev_btn, "select_previous"),
            (self.next_btn, "select_next"),
            (self.annotate_btn, "annotate_here"),
            (self.confirm_btn, "looks_right"),
            (self.skip_btn, "skip"),
        ):
            btn.setToolTip(tips[method])
            btn.clicked.connect(getattr(self, method))
        self.confirm_btn.setToolTip(
            tips["looks_right"] + ": the confidently refined interior here becomes weak "
            "labels for the next refinement (uncertain voxels and boundaries stay free)")

        nav = QHBoxLayout()
        nav.addWidget(self.prev_btn)
        nav.addWidget(self.next_btn)
        actions = QHBoxLayout()
        for btn in (self.annotate_btn, self.confirm_btn, self.skip_btn):
            actions.addWidget(btn)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.auto_rerank)
        layout.addWidget(self.suggest_btn)
        layout.addWidget(self.table)
        layout.addWidget(self.detail)
        layout.addLayout(nav)
        layout.addLayout(actions)
        layout.addWidget(self.counts)

    def _bind_keys(self):
        for key, (method, _) in SHORTCUTS.items():
            self.viewer.bind_key(key, _key_handler(getattr(self, method)), overwrite=True)
        viewer = self.viewer
        self.destroyed.connect(lambda *_: _unbind_keys(viewer))

    # ---- suggesting -----------------------------------------------------------------
    def request_suggestions(self) -> bool:
        """Rank suggestions with the panel's settings (in the background).

        Returns False (with a notification) when nothing can be ranked yet.
        """
        state = self.state
        if state.image_layer is None or state.scribbles_layer is None:
            show_info("Suggest: open a volume and start annotating first")
            return False
        if state.result is None:
            show_info("Suggest: refine first; suggestions are ranked by the refinement")
            return False
        self._last_request = {
            "n": self.n.value(),
            "axis": self.axis.currentIndex(),
            "granularity": self.granularity.currentText(),
            "strategy": self.strategy.currentText(),
            "uncertainty": self.uncertainty.currentText(),
        }
        return self._run_suggest()

    def _run_suggest(self) -> bool:
        state = self.state
        others = tuple(self.ensemble())
        return self.runner.start(
            active.suggest,
            state.image_snapshot(),
            state.scribbles_snapshot(),
            desc="Suggest",
            on_returned=self._on_suggestions,
            spacing=state.spacing,
            result=state.result,
            exclude=tuple(self.reviewed()),
            boxes=state.boxes_snapshot(),
            class_names=state.label_names(),
            others=others,
            **self._last_request,
        )

    def _on_suggestions(self, suggestions) -> None:
        self.state.set_suggestions(suggestions)
        if not suggestions:
            show_info("Suggest: nothing left to suggest (no uncertain place that is not "
                      "annotated or reviewed); try slices or another axis")

    def ensemble(self) -> list:
        """Further ensemble members of the last refinement (``state.ensemble`` when the
        state keeps one; none today): mutual information is offered only with them."""
        return list(getattr(self.state, "ensemble", None) or ())

    def _fill_uncertainty_kinds(self) -> None:
        current = self.uncertainty.currentText()
        kinds = active.available_kinds(1 + len(self.ensemble()))
        self.uncertainty.blockSignals(True)
        self.uncertainty.clear()
        self.uncertainty.addItems(list(kinds))
        self.uncertainty.setCurrentText(current if current in kinds else kinds[0])
        self.uncertainty.blockSignals(False)

    def _on_refined(self, _result=None):
        self._fill_uncertainty_kinds()
        if self._last_request is not None and self.auto_rerank.isChecked():
            self._rerank_pending = True
            if not self.state.busy:
                self._on_busy(False)

    def _on_busy(self, busy: bool):
        self.suggest_btn.setEnabled(not busy)
        if not busy and self._rerank_pending:
            self._rerank_pending = False
            self._run_suggest()

    def _on_image_changed(self):
        self._last_request = None

    def reviewed(self) -> list:
        """Suggestions reviewed on this volume (annotated, confirmed or skipped), from
        the autosaved session, so they stay excluded after a restart."""
        keys = {f.name for f in fields(active.Suggestion)}
        out = []
        for entry in self.state.session.reviewed:
            kw = {k: v for k, v in entry.items() if k in keys}
            kw["classes"] = tuple(kw.get("classes") or ())
            kw["bbox"] = tuple(kw["bbox"]) if kw.get("bbox") is not None else None
            out.append(active.Suggestion(**kw))
        return out

    # ---- list -------------------------------------------------------------------------
    def _refresh(self):
        state = self.state
        selected = self.current_position() if state.suggestions is self._shown else None
        self._shown = state.suggestions
        self.table.blockSignals(True)
        self.table.setRowCount(len(state.suggestions))
        for row, s in enumerate(state.suggestions):
            cells = (str(s.rank), describe_where(s), f"{s.score:.3g}",
                     state.review_status.get(row, "pending"), s.reason)
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(s.reason)
                self.table.setItem(row, col, item)
        if selected is not None and selected < len(state.suggestions):
            self.table.selectRow(selected)
        else:
            self.table.clearSelection()
        self.table.blockSignals(False)
        statuses = list(state.review_status.values())
        pending = statuses.count("pending")
        n_reviewed = len(state.session.reviewed) if state.session is not None else 0
        self.counts.setText(
            f"reviewed: {n_reviewed} in all, {len(statuses) - pending} of this ranking; "
            f"remaining: {pending}")
        has = bool(state.suggestions)
        for btn in (self.prev_btn, self.next_btn, self.annotate_btn, self.confirm_btn,
                    self.skip_btn):
            btn.setEnabled(has)
        if not has:
            self.detail.setText("")
            self._clear_highlight()

    def current_position(self) -> int | None:
        """Row of the selected suggestion (its position in ``state.suggestions``)."""
        rows = self.table.selectionModel().selectedRows()
        return rows[0].row() if rows else None

    def select(self, position: int) -> None:
        """Select a suggestion: the viewer jumps to it and highlights it."""
        self.table.selectRow(position)

    def _step(self, direction: int) -> None:
        n = len(self.state.suggestions)
        if not n:
            return
        start = self.current_position()
        start = -1 if start is None and direction > 0 else (n if start is None else start)
        pending = [i for i in range(n) if self.state.review_status.get(i) == "pending"]
        ahead = [i for i in pending if (i - start) * direction > 0]
        if ahead:
            self.select(min(ahead) if direction > 0 else max(ahead))
        elif pending:
            self.select(pending[0] if direction > 0 else pending[-1])

    def select_next(self) -> None:
        """Select the next pending suggestion (wrapping around)."""
        self._step(+1)

    def select_previous(self) -> None:
        """Select the previous pending suggestion (wrapping around)."""
        self._step(-1)

    def _on_selection(self):
        pos = self.current_position()
        if pos is None:
            return
        s = self.state.suggestions[pos]
        self.detail.setText(f"#{s.rank}: {s.reason}")
        self._jump(s)

    # ---- viewer -----------------------------------------------------------------------
    def _jump(self, s) -> None:
        """Show the slice (or the region's centre slice), highlight it, show uncertainty."""
        state, viewer = self.state, self.viewer
        layer = state.image_layer
        region = suggestion_region(s, state.shape)
        lo, hi = np.array(region[:3], float), np.array(region[3:], float)
        centre = (lo + hi - 1) / 2
        centre[s.axis] = s.index
        world = np.asarray(layer.data_to_world(centre), dtype=float)
        # the world axis the suggestion's array axis runs along becomes the sliced one
        linear = np.asarray(layer.affine.affine_matrix)[:3, :3]
        world_axis = int(np.argmax(np.abs(linear[:, s.axis])))
        if viewer.dims.ndisplay == 2 and world_axis in viewer.dims.displayed:
            viewer.dims.order = (world_axis,) + tuple(
                a for a in viewer.dims.order if a != world_axis)
        viewer.dims.set_point(range(3), tuple(world))
        if s.bbox is not None:
            self._frame(layer, lo - 0.5, hi - 0.5, world)
        self._show_highlight(s, region)
        if self._show_uncertainty is not None:
            self._show_uncertainty()

    def _frame(self, layer, lo, hi, world_centre) -> None:
        """Centre the camera on a box and zoom so that it fills about a third of the canvas."""
        viewer = self.viewer
        corners = np.array(np.meshgrid(*zip(lo, hi), indexing="ij")).reshape(3, -1).T
        ext = np.ptp([layer.data_to_world(c) for c in corners], axis=0)
        viewer.reset_view()  # zoom that fits everything: the reference for the box
        full = np.asarray(viewer.layers.extent.world[1]) - viewer.layers.extent.world[0]
        shown = list(viewer.dims.displayed)
        ratio = np.min(full[shown] / np.maximum(ext[shown], 1e-6))
        viewer.scene.camera.center = tuple(world_centre[shown])
        viewer.scene.camera.zoom = viewer.scene.camera.zoom * max(1.0, ratio / 3)

    def _show_highlight(self, s, region) -> None:
        """Outline the suggestion on every slice it covers ("Suggestion" shapes layer)."""
        lo, hi = np.array(region[:3], float) - 0.5, np.array(region[3:], float) - 0.5
        plane = [a for a in range(3) if a != s.axis]
        rects = []
        for k in range(int(region[s.axis]), int(region[s.axis + 3])):
            corners = []
            for u, v in ((lo[plane[0]], lo[plane[1]]), (lo[plane[0]], hi[plane[1]]),
                         (hi[plane[0]], hi[plane[1]]), (hi[plane[0]], lo[plane[1]])):
                p = np.empty(3)
                p[s.axis], p[plane[0]], p[plane[1]] = k, u, v
                corners.append(p)
            rects.append(np.array(corners))
        width = max(0.3, 0.004 * float(np.max(self.state.shape)))
        layer = self._highlight
        if layer is None or layer not in self.viewer.layers:
            active_layer = self.viewer.layers.selection.active
            layer = self.viewer.add_shapes(
                name="Suggestion", affine=self.state.image_layer.affine.affine_matrix,
                ndim=3, opacity=1.0, blending="translucent_no_depth")
            self._highlight = layer
            self.viewer.layers.selection.active = active_layer
        layer.data = []
        layer.add_rectangles(rects, edge_width=width, edge_color=HIGHLIGHT_COLOR,
                             face_color="transparent")
        layer.visible = True

    def _clear_highlight(self) -> None:
        if self._highlight is not None and self._highlight in self.viewer.layers:
            self._highlight.data = []

    # ---- review actions ------------------------------------------------------------------
    def _selected(self):
        pos = self.current_position()
        if pos is None:
            self._step(+1)
            pos = self.current_position()
        return (None, None) if pos is None else (pos, self.state.suggestions[pos])

    def _mark(self, pos, s, status) -> None:
        if self.state.session is not None:
            try:
                self.state.session.add_reviewed(s, status)  # autosaved
            except LabelEffError as err:  # e.g. a read-only session
                show_error(f"Review: {err}")
        self.state.set_review_status(pos, status)

    def annotate_here(self) -> None:
        """Switch to painting on the Scribbles layer with the likely class selected."""
        pos, s = self._selected()
        if s is None:
            return
        layer = self.state.scribbles_layer
        if layer is None:
            show_info("Annotate here: the Scribbles layer was deleted; choose the image again")
            return
        likely = s.classes[0] if s.classes else 1
        self.viewer.layers.selection.active = layer
        layer.mode = "paint"
        layer.selected_label = int(likely) + 1
        self._mark(pos, s, "annotated")
        self.select(pos)

    def looks_right(self) -> None:
        """Confirm the refinement here: its confident interior (probability >=
        :data:`napari_labeleff.active._confirm.CONFIDENT`, eroded one voxel) becomes
        weak labels for the next refinement; uncertain voxels stay free."""
        pos, s = self._selected()
        if s is None:
            return
        state = self.state
        if state.result is None or state.scribbles_layer is None:
            # e.g. after a class was removed: the refinement no longer matches the classes
            show_info("Looks right: refine again first (the classes or layers changed)")
            return
        region = suggestion_region(s, state.shape)
        indices, values = active.confirmed_labels(state.result, state.scribbles_layer.data,
                                                  region)
        if values.size:
            state.scribbles_layer.data_setitem(indices, values)
        self._mark(pos, s, "confirmed")
        self.select_next()

    def skip(self) -> None:
        """Mark the selected suggestion skipped and move on."""
        pos, s = self._selected()
        if s is None:
            return
        self._mark(pos, s, "skipped")
        self.select_next()


def _key_handler(method):
    def handler(_viewer):
        method()

    return handler


def _unbind_keys(viewer) -> None:
    for key in SHORTCUTS:
        viewer.bind_key(key, None)
