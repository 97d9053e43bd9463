"""Project panel: a cohort project in the dock (create/open, add scans, a volume table,
open a volume with the model's draft, accept its mask, train/stop/resume, fine-tune after
each accept, the learning curve, next volume).

Thin: the store is :class:`napari_labeleff.cohort.Project`; long work goes through the
worker seam (:class:`~._worker.Runner`): the model's draft of an opened volume through
the main runner (it is a refinement), training through a second runner of its own so
refining stays possible while the network trains (``_project_training``: train, stop,
fine-tune, their status line). Forms are magicgui widgets, the volume table a
``QTableWidget``.

Accepting a mask starts a fine-tune (a short training run warm-started from the
published model, on the labels that now include the mask) through the same training
runner; an accept while a fine-tune runs cancels it quietly and starts a new one once it
has stopped. Closing the panel (or the viewer) cancels training; the learner keeps its
resume state. The *Learning curve* section (``_curve_widget``) shows
``Project.curve()`` and ``Project.network_lead()`` after each accept and training.

Opening a volume adds its image layer and binds it with the project's per-volume store
(``<project>/volumes/<vid>/``) as the autosave store, so the Scribbles/Boxes/masks
layers are the project's. Every annotation change is logged to the project
(``annotations.jsonl``: class, voxels, seconds since the previous interaction, capped
at :data:`IDLE_CAP_S`).
"""

from __future__ import annotations

import functools
import time
import weakref
from pathlib import Path

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    LineEdit,
    PushButton,
)
from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QTableWidgetItem,
)

from .._errors import LabelEffError
from ._collapsible import collapsible
from ._curve_widget import CurveSection
from ._project_rules import ProjectRulesSection
from ._project_training import FINETUNE_MINUTES, TrainingMixin, if_alive, model_role, TrainState
from ._reader import volume_layer_data
from ._table import make_table
from ._worker import Runner, report_error

#: Seconds of inactivity after which the time between two strokes is not counted.
IDLE_CAP_S = 60.0
COLUMNS = ("volume", "status", "time", "interactions", "quality", "uncertainty")
DEVICES = ("auto", "cpu", "cuda")


def _on_panel_destroyed(panel_ref, runners) -> None:
    """The panel's widgets are gone (the viewer closed): stop its background work
    quietly. Connected through a weak reference: Qt does not call a slot bound to the
    object being destroyed."""
    panel = panel_ref()
    if panel is not None:
        panel._closed = True
    for runner in runners:
        if runner.running:
            runner.cancel(quiet=True)


def _suggest_next(view):
    """(best VolumeSuggestion or None, problem or None), ranked on ``view``: a read-only
    ``Project`` of the panel's project, used only by this worker (the ranking's cache of
    predictions lives on it), so the worker never writes what the GUI thread writes."""
    view.reload()
    try:
        items = view.suggest_volumes(n=1)
    except LabelEffError as err:
        return None, str(err), {}
    # the ranking predicted the volumes: their scores, for the table (recorded by the GUI)
    cache = view.__dict__.get("_volume_al_cache", {})
    scores = {vid: dict(entry["scores"]) for (_, vid), entry in cache.items()
              if isinstance(entry, dict) and isinstance(entry.get("scores"), dict)}
    return (items[0] if items else None), None, scores


class ProjectPanel(TrainingMixin, QGroupBox):
    """The cohort project in the LabelEff dock.

    Parameters
    ----------
    viewer : napari.Viewer
    widget : LabelEffWidget
        The main widget: its ``state``, ``runner``, ``autosave`` and ``bind``.
    show_uncertainty : callable, optional
        Turns the uncertainty overlay on (the refine panel's checkbox).
    """

    def __init__(self, viewer, widget, show_uncertainty=None, parent=None):
        super().__init__("Project", parent)
        self.viewer = viewer
        self.widget = widget
        self.state = widget.state
        self.project = None
        self._show_uncertainty = show_uncertainty
        self.vid: str | None = None  # the project volume bound in the viewer
        self._baseline = None  # scribbles as last logged (to count what a stroke changed)
        self._boxes = []
        self._last_event = time.monotonic()
        self.train_runner = Runner(TrainState(self._on_train_busy))
        self.next_runner = Runner(TrainState(lambda busy: None))
        self._view = None  # read-only view of the project for the next-volume ranking
        self._closed = False
        runners = [self.train_runner, self.next_runner]
        me = weakref.ref(self)
        self.destroyed.connect(lambda *_: _on_panel_destroyed(me, runners))
        #: Train in a spawned process (``cohort.training.train_in_background``); False: in a thread.
        self.background = True
        self._plan = None
        self._fine_tune = False  # the training runner's task is a fine-tune after accept
        self._fine_tune_again = False  # start a fine-tune when the cancelled one has stopped
        self._draft_after_busy = None  # volume whose draft waits for the previous image's task
        self._train_token = None  # the running training task's (its progress updates the status)

        # ---- forms (magicgui) ----
        self.folder = FileEdit(mode="d", label="folder")
        self.classes = LineEdit(label="structures", value="structure 1")
        self.classes.tooltip = "comma-separated structure names (for a new project)"
        self.create_btn = PushButton(text="Create")
        self.open_btn = PushButton(text="Open")
        self.open_form = Container(widgets=[
            self.folder, self.classes,
            Container(widgets=[self.create_btn, self.open_btn], layout="horizontal", labels=False),
        ])
        self.minutes = FloatSpinBox(label="max minutes", value=10.0, min=0.5, max=600.0, step=0.5)
        self.device = ComboBox(label="device", choices=DEVICES, value="auto")
        self.fine_tune_minutes = FloatSpinBox(label="fine-tune minutes", value=FINETUNE_MINUTES,
                                              min=0.5, max=60.0, step=0.5)
        self.fine_tune = CheckBox(text="fine-tune after accept", value=True)
        self.fine_tune.tooltip = (
            "After each accepted mask, train the published model a few minutes more on the "
            "project's labels (warm start, in the background; a new accept restarts it)")
        self.train_form = Container(widgets=[self.minutes, self.device, self.fine_tune_minutes,
                                             self.fine_tune])

        # ---- volume table and actions (Qt) ----
        self.info = QLabel("No project open")
        self.info.setWordWrap(True)
        self.add_files_btn = QPushButton("Add files…")
        self.add_folder_btn = QPushButton("Add folder…")
        self.add_series_btn = QPushButton("Add DICOM series…")
        self.table = make_table(COLUMNS, fit_columns=False)
        self.table.horizontalHeader().setMaximumSectionSize(180)  # long ids are elided
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.table.setMinimumHeight(140)
        self.open_volume_btn = QPushButton("Open volume")
        self.accept_btn = QPushButton("Accept mask into project")
        self.model_label = QLabel("model: none")
        self.model_label.setWordWrap(True)
        self.train_btn = QPushButton("Train / resume")
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setEnabled(False)
        self.train_status = QLabel("")
        self.train_status.setWordWrap(True)
        self.curve = CurveSection()
        self.rules_section = ProjectRulesSection(self)
        runners.append(self.rules_section.runner)  # stopped with the panel's
        self.next_label = QLabel("next volume: -")
        self.next_label.setWordWrap(True)
        self.next_btn = QPushButton("Open next")

        # folded until a project is open: single-volume work starts at the top
        lay = collapsible(
            self, "Tick to show the project tools: a cohort of scans, training, next volume")
        lay.addWidget(self.open_form.native)
        lay.addWidget(self.info)
        add_row = QHBoxLayout()
        for b in (self.add_files_btn, self.add_folder_btn, self.add_series_btn):
            add_row.addWidget(b)
        lay.addLayout(add_row)
        lay.addWidget(self.table)
        vol_row = QHBoxLayout()
        vol_row.addWidget(self.open_volume_btn)
        vol_row.addWidget(self.accept_btn)
        lay.addLayout(vol_row)
        lay.addWidget(self.model_label)
        lay.addWidget(self.train_form.native)
        train_row = QHBoxLayout()
        train_row.addWidget(self.train_btn)
        train_row.addWidget(self.stop_btn)
        lay.addLayout(train_row)
        lay.addWidget(self.train_status)
        lay.addWidget(self.curve)
        lay.addWidget(QLabel("<b>Rules learned from the accepted masks</b>"))
        lay.addWidget(self.rules_section)
        next_row = QHBoxLayout()
        next_row.addWidget(self.next_label, 1)
        next_row.addWidget(self.next_btn)
        lay.addLayout(next_row)

        self.create_btn.changed.connect(lambda: self._guard("Create project", self.create_project))
        self.open_btn.changed.connect(lambda: self._guard("Open project", self.open_project))
        self.add_files_btn.clicked.connect(self._ask_files)
        self.add_folder_btn.clicked.connect(lambda: self._ask_folder(series=False))
        self.add_series_btn.clicked.connect(lambda: self._ask_folder(series=True))
        self.table.itemDoubleClicked.connect(lambda *_: self.open_selected())
        self.open_volume_btn.clicked.connect(self.open_selected)
        self.accept_btn.clicked.connect(lambda: self._guard("Accept", self.accept_current))
        self.train_btn.clicked.connect(self.train)
        self.stop_btn.clicked.connect(self.stop_training)
        self.next_btn.clicked.connect(self.open_next)
        self.state.image_changed.connect(self._on_image_changed)
        self.state.annotations_changed.connect(self._on_annotations)
        self.state.classes_changed.connect(self._on_classes_changed)
        self.state.busy_changed.connect(self._on_busy_changed)
        self._update_enabled()

    # ---- helpers -------------------------------------------------------------------------
    def _guard(self, desc: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (LabelEffError, OSError) as err:
            report_error(LabelEffError(str(err)) if isinstance(err, OSError) else err, desc)
            return None

    def _update_enabled(self) -> None:
        have = self.project is not None and not self.project.read_only
        training = self.train_runner.running
        for b in (self.add_files_btn, self.add_folder_btn, self.add_series_btn,
                  self.open_volume_btn, self.next_btn):
            b.setEnabled(have)
        self.accept_btn.setEnabled(have and self.vid is not None)
        self.train_btn.setEnabled(have and not training)
        self.stop_btn.setEnabled(training)

    # ---- create / open -----------------------------------------------------------------------
    def create_project(self, folder=None, class_names=None):
        """Create a project (default: the form's folder and structures) and show it."""
        from ..cohort import Project

        folder = Path(folder if folder is not None else self.folder.value)
        if class_names is None:
            class_names = [n.strip() for n in self.classes.value.split(",") if n.strip()]
        self._set_project(Project.create(folder, class_names=class_names))
        return self.project

    def open_project(self, folder=None):
        """Open an existing project for writing (read-only if another process has it)."""
        from .._lock import StoreLockedError
        from ..cohort import Project

        folder = Path(folder if folder is not None else self.folder.value)
        try:
            project = Project.open(folder)
        except StoreLockedError as err:
            project = Project.open(folder, read_only=True)
            show_warning(f"Opened read-only: {err}")
        self._set_project(project)
        return self.project

    def _set_project(self, project) -> None:
        self.close_project()
        self.project = project
        self.setChecked(True)
        self.folder.value = str(project.folder)
        self.classes.value = ", ".join(project.class_names)
        self.refresh()
        self.refresh_curve()

    def close_project(self) -> None:
        self._fine_tune_again = False
        for runner in (self.train_runner, self.next_runner, self.rules_section.runner):
            if runner.running:
                runner.cancel()
        if self.project is not None:
            self.project.close()
        self.project = None
        self._view = None
        self.vid = None
        self.train_status.setText("")
        self.rules_section.clear()
        self.refresh()
        self.refresh_curve()

    # ---- adding volumes ----------------------------------------------------------------------
    def _ask_files(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Add volumes to the project")
        if paths:
            self.add_paths(paths)

    def _ask_folder(self, series: bool) -> None:
        title = "Add a DICOM series folder" if series else "Add every volume in a folder"
        path = QFileDialog.getExistingDirectory(self, title)
        if path:
            self.add_paths([path]) if series else self.add_folder(path)

    def add_paths(self, paths) -> list[str]:
        """Add files / DICOM series folders / zarr stores; returns the new ids."""
        added = []
        for path in paths:
            vid = self._guard("Add volume", self.project.add, path)
            if vid is not None:
                added.append(vid)
        self.refresh()
        if added:
            show_info(f"Added {len(added)} volume(s): {', '.join(added)}")
        return added

    def add_folder(self, folder) -> list[str]:
        """Add every readable volume in ``folder``; problems are shown, not raised."""
        out = self._guard("Add folder", self.project.add_folder, folder)
        self.refresh()
        if out is None:
            return []
        added, skipped = out
        show_info(f"Added {len(added)} volume(s)" + (f"; skipped {len(skipped)}" if skipped else ""))
        for line in skipped[:5]:
            show_warning(f"Skipped {line}")
        return added

    # ---- table -------------------------------------------------------------------------------
    def refresh(self, next_volume: bool = True) -> None:
        """Redraw the table, the model line and (``next_volume``) the next-volume slot."""
        p = self.project
        self.table.setRowCount(0)
        self.rules_section.refresh()
        if p is None:
            self.info.setText("No project open")
            self.model_label.setText("model: none")
            self.next_label.setText("next volume: -")
            self._update_enabled()
            return
        if not p.read_only:  # scores that batch jobs run beside napari handed over
            self._guard("Project scores", p.collect_scores)
        rows = self._guard("Project table", p.table) or []
        mode = " (read-only)" if p.read_only else ""
        self.info.setText(f"{p.folder.name}{mode}: {len(rows)} volume(s); structures "
                          f"{', '.join(p.class_names)}")
        self.table.setRowCount(len(rows))
        for i, r in enumerate(rows):
            cells = (r["id"] + ("" if r["present"] else " (missing)"), r["status"],
                     f"{r['seconds'] / 60:.1f} min", str(r["interactions"]),
                     "-" if r["quality"] is None else f"{r['quality']:.2f}",
                     "-" if r["uncertainty"] is None else f"{r['uncertainty']:.2f}")
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, r["id"])
                self.table.setItem(i, j, item)
            if r["id"] == self.vid:
                self.table.selectRow(i)
        self.table.resizeColumnsToContents()
        published = p.published
        if published is None:
            text = "model: none yet (train after annotating a few volumes)"
        else:
            score = "-" if published.score is None else f"{published.score:.3f}"
            text = f"model: {published} (validation score {score}); " + model_role(p)
        self.model_label.setText(text)
        if next_volume:
            self.refresh_next()
        self._update_enabled()

    def refresh_curve(self) -> None:
        """Redraw the learning curve and the network's lead (after an accept, after
        training, when a project opens)."""
        p = self.project
        if p is None:
            self.curve.show_curve([])
            return
        items = self._guard("Learning curve", p.curve) or []
        self.curve.show_curve(items, self._guard("Network lead", p.network_lead))

    def refresh_next(self) -> None:
        """Fill the "next volume" slot from ``Project.suggest_volumes`` (issue 9), in
        the background (ranking predicts every unannotated volume)."""
        self._next = None
        if self.project is None:
            return
        if self.next_runner.running:
            self._next_again = True
            return
        self._next_again = False
        self.next_label.setText("next volume: ranking…")
        if self._view is None:
            from ..cohort import Project

            self._view = Project.open(self.project.folder, read_only=True)
        self.next_runner.start(_suggest_next, self._view, desc="Next volume",
                               on_returned=self._on_next, on_finished=self._on_next_finished)

    @if_alive
    def _on_next(self, found) -> None:
        if self.project is None:
            return
        item, problem, scores = found
        p = self.project
        published = str(p.published) if p.published is not None else None
        fresh = {vid: sc for vid, sc in scores.items()
                 if published and sc.get("model") == published and vid in p.volume_ids
                 and p.volume(vid).scores != sc}
        if fresh and not p.read_only:
            for vid, sc in fresh.items():
                self._guard("Record scores", p.record_scores, vid, **sc)
            self.refresh(next_volume=False)
        if item is None:
            self.next_label.setText(f"next volume: - ({problem or 'nothing to suggest'})")
            return
        self._next = item.volume_id
        self.next_label.setText(f"next volume: {item.volume_id} ({item.reason})")

    @if_alive
    def _on_next_finished(self, cancelled: bool) -> None:
        if getattr(self, "_next_again", False):
            self.refresh_next()

    def selected(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        return self.table.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole)

    def open_selected(self) -> None:
        vid = self.selected()
        if vid is None:
            show_info("Open volume: select a volume in the table")
            return
        self._guard("Open volume", self.open_volume, vid)

    def open_next(self) -> None:
        if getattr(self, "_next", None) is None:
            show_info("Next volume: no suggestion yet")
            return
        self._guard("Open volume", self.open_volume, self._next)

    # ---- opening a volume -------------------------------------------------------------------
    def open_volume(self, vid: str) -> None:
        """Show volume ``vid``: its image, its stored scribbles/boxes/masks (the project's
        store), then the published model's draft and uncertainty in the background."""
        p = self.project
        vol = p.read_image(vid)
        for layer in list(self.viewer.layers):  # one project volume at a time
            if layer.metadata.get("labeleff_project") == str(p.folder):
                self.viewer.layers.remove(layer)
        data, kwargs, _ = volume_layer_data(vol, vid)
        tag = {"labeleff_project": str(p.folder), "labeleff_volume": vid}
        meta = kwargs["metadata"]
        kwargs["metadata"] = [{**m, **tag} for m in meta] if isinstance(meta, list) else {**meta, **tag}
        added = self.viewer.add_image(data, **kwargs)
        image = added[0] if isinstance(added, list) else added
        autosave = self.widget.autosave
        previous = autosave.store_dir
        autosave.store_dir = p.store_dir(vid)  # new / restored store: the project's
        try:
            self.widget.bind(image)
        finally:
            autosave.store_dir = previous

    @if_alive
    def _on_image_changed(self) -> None:
        """A (project) volume finished binding: check its store, start the draft."""
        state, p = self.state, self.project
        layer = state.image_layer
        self.vid = None
        self._baseline = None
        state.prior = None
        state.project_refine = None
        if p is None or layer is None or layer.metadata.get("labeleff_project") != str(p.folder):
            self._update_enabled()
            return
        vid = layer.metadata["labeleff_volume"]
        session = state.session
        if session is None or Path(session.store_path or "") != p.store_path(vid):
            show_warning(
                f"{vid}: annotations are saved in {getattr(session, 'store_path', None)}, not in "
                f"the project store {p.store_path(vid)} (a store next to the image takes "
                "precedence); move it away to annotate this volume in the project"
            )
            self._update_enabled()
            return
        self.vid = vid
        state.project_refine = functools.partial(p.refine_steps, vid)  # the refine panel's path
        self._baseline = np.array(session.scribbles, copy=True)
        self._boxes = list(session.boxes)
        self._last_event = time.monotonic()
        # a volume without rules of its own starts with the project's
        self.rules_section.share_with_volume(self._guard("Project rules", p.rules), only_if_empty=True)
        self.refresh(next_volume=False)
        if p.published is None:
            return
        if self.widget.runner.running:  # the previous image's task: binding cancelled it
            self._draft_after_busy = vid
        else:
            self.show_draft()

    @if_alive
    def _on_busy_changed(self, busy: bool) -> None:
        """The previous image's task has stopped: start the draft of the volume opened
        meanwhile (e.g. a draft after training was running when the next one opened)."""
        if busy or self._draft_after_busy is None:
            return
        vid, self._draft_after_busy = self._draft_after_busy, None
        if vid == self.vid:
            self.show_draft()

    def show_draft(self) -> bool:
        """Run the model's draft (the prior refined with the current scribbles)."""
        state, p = self.state, self.project
        if self.vid is None or p.published is None:
            return False
        return self.widget.runner.start(
            p.refine_steps, self.vid, state.scribbles_snapshot(),
            state.boxes_snapshot(), desc="Model draft",
            on_returned=lambda res, vid=self.vid: self._on_draft(vid, res),
        )

    @if_alive
    def _on_draft(self, vid, result) -> None:
        state, p = self.state, self.project
        if vid != self.vid or state.refined_layer is None:
            return
        pred = p.predict(vid)  # cached by the draft: records the quality estimate
        # later refinements use the model only where the project trusts it
        state.prior = pred.probabilities if p.prior_use()[0] else None
        state.result = result
        state.refined_layer.data = result.labels
        state.refined.emit(result)
        if self._show_uncertainty is not None:
            self._show_uncertainty()
        self.refresh(next_volume=False)

    @if_alive
    def _on_classes_changed(self) -> None:
        """A structure added in the class editor joins the project's list."""
        p = self.project
        if self.vid is None or p is None or p.read_only:
            return
        names = [c.name for c in self.state.classes[1:]]
        if self._guard("Project classes", p.adopt_classes, names, vid=self.vid) is None:
            self.refresh(next_volume=False)

    # ---- annotation log ------------------------------------------------------------------------
    def _seconds(self) -> float:
        now = time.monotonic()
        dt, self._last_event = now - self._last_event, now
        return float(min(max(dt, 0.0), IDLE_CAP_S))

    def _on_annotations(self, kind: str, region) -> None:
        # napari emits ``paint`` before ``data_setitem`` writes the voxels: look after
        # this event loop turn, when the layer holds the new values
        if self.vid is not None:
            vid = self.vid
            QTimer.singleShot(0, lambda: self._log_change(vid, kind, region))

    @if_alive
    def _log_change(self, vid, kind: str, region) -> None:
        p, state = self.project, self.state
        if vid != self.vid or p is None or p.read_only or state.scribbles_layer is None:
            return
        try:
            if kind == "boxes":
                boxes = state.boxes_snapshot() or []
                new = [b for b in boxes if tuple(b) not in set(map(tuple, self._boxes))]
                for b in new:
                    p.log_annotation(self.vid, "box", class_name=p.class_names[b[0] - 1]
                                     if 0 < b[0] <= len(p.class_names) else None,
                                     voxels=int(np.prod(np.subtract(b[4:], b[1:4]))),
                                     seconds=self._seconds())
                self._boxes = list(boxes)
            else:
                data = np.asarray(state.scribbles_layer.data)
                sl = (slice(None),) * 3 if region is None else tuple(
                    slice(a, b) for a, b in zip(region[:3], region[3:]))
                p.log_scribble_change(self.vid, self._baseline[sl], data[sl], seconds=self._seconds())
                self._baseline[sl] = data[sl]
            was_new = p.volume(self.vid).status == "new"
            if was_new:
                p.refresh_status(self.vid, scribbles=self._baseline, boxes=self._boxes)
            self.refresh(next_volume=was_new and p.volume(self.vid).status != "new")
        except LabelEffError as err:
            report_error(err, "Project log")

    # ---- accept --------------------------------------------------------------------------------
    def accept_current(self) -> bool:
        """Accept the Final mask (or, if empty, the Refined mask) into the project."""
        state, p = self.state, self.project
        if self.vid is None:
            show_info("Accept: open a project volume first")
            return False
        mask = None
        for layer in (state.final_layer, state.refined_layer):
            if layer is not None and np.any(layer.data):
                mask = np.asarray(layer.data)
                break
        if mask is None:
            show_info("Accept: the Final and Refined masks are empty; refine first")
            return False
        status = p.volume(self.vid).status
        replace = status in ("accepted", "imported")
        if replace and not self.confirm_replace(self.vid, status):
            show_info(f"Accept: kept the {status} mask of {self.vid}")
            return False
        p.accept(self.vid, mask, session=state.session, seconds=self._seconds(), replace=replace)
        show_info(f"Accepted the mask of {self.vid} ({int(np.count_nonzero(mask))} structure voxels)")
        self.refresh()
        self.refresh_curve()
        if self.fine_tune.value:
            self.fine_tune_after_accept()
        return True

    def confirm_replace(self, vid: str, status: str) -> bool:
        """Ask whether to replace the volume's accepted or imported mask; True = yes."""
        answer = QMessageBox.question(
            self,
            "Replace mask?",
            f"Volume {vid} already has an {status} mask in the project.\n\n"
            "Replace it with the mask shown now?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes
