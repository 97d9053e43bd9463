"""Project panel: create a project, add scans, open a volume (the project's store), log
strokes, train in the background (refining stays possible), the model's draft and
uncertainty, refine with the prior, accept, stop/resume training, screenshot (issue 7)."""

import json
import time

import numpy as np
import pytest
from cohort.project_fakes import FakeLearner, make_volume
from napari_labeleff.cohort import Project
from napari_labeleff.cohort.training import TrainProgress

pytestmark = pytest.mark.gui

SHAPE = (12, 24, 24)


def _panel(viewer):
    _, widget = viewer.window.add_plugin_dock_widget("napari-labeleff", "LabelEff")
    widget.project_panel.background = False  # the fake learner lives in this process
    return widget, widget.project_panel


def _scans(tmp_path, n=3):
    folder = tmp_path / "scans"
    folder.mkdir()
    return [make_volume(folder, f"case{i}", seed=i, shape=SHAPE) for i in range(n)]


def _open(qtbot, panel, vid):
    panel.open_volume(vid)
    qtbot.waitUntil(lambda: panel.vid == vid, timeout=30000)


def test_project_flow(make_napari_viewer, qtbot, tmp_path, monkeypatch, notes):
    learner = FakeLearner(scores=[0.8]).install(monkeypatch)
    viewer = make_napari_viewer()
    widget, panel = _panel(viewer)
    state = widget.state
    scans = _scans(tmp_path)
    # earlier work on a scan outside the project (user data dir) does not hijack its store
    from napari_labeleff.io import read_volume
    from napari_labeleff.session import AnnotationSession, user_store_dir

    vol = read_volume(scans[0])
    AnnotationSession.open(vol.data, vol.geometry, store_dir=user_store_dir()).close()
    # project tools and label QA stay folded until needed
    assert not panel.isChecked() and not panel.table.isVisibleTo(panel)
    assert not widget.qa_panel.isChecked()
    project = panel.create_project(tmp_path / "proj", ["ball"])
    assert panel.isChecked() and panel.table.isVisibleTo(panel)
    assert panel.add_paths(scans) == ["case0", "case1", "case2"]
    assert panel.table.rowCount() == 3
    assert [panel.table.item(i, 1).text() for i in range(3)] == ["new"] * 3
    assert not panel.accept_btn.isEnabled()

    _open(qtbot, panel, "case0")
    assert state.session.store_path == project.store_path("case0")
    assert [c.name for c in state.classes] == ["background", "ball"]
    assert state.prior is None and "model: none" in panel.model_label.text()
    qtbot.waitUntil(lambda: not panel.next_runner.running, timeout=30000)
    assert "train first" in panel.next_label.text()  # no model: no ranking yet

    # strokes are saved in the project's store and logged with their class and size
    mid = SHAPE[0] // 2
    state.scribbles_layer.data_setitem(np.nonzero(np.pad(np.ones((1, 2, 3), bool), [(mid, SHAPE[0] - mid - 1), (11, 11), (10, 11)])), 2)
    state.scribbles_layer.data_setitem((np.full(5, mid), np.zeros(5, int), np.arange(5)), 1)
    qtbot.waitUntil(lambda: len(project.annotation_log("case0")) == 2, timeout=5000)
    log = project.annotation_log("case0")
    assert [(e["class"], e["voxels"]) for e in log] == [("ball", 6), ("background", 5)]
    assert project.volume("case0").status == "weak"
    assert panel.table.item(0, 1).text() == "weak" and panel.table.item(0, 3).text() == "2"

    # train in the background: the viewer's own runner stays free for refining
    assert panel.train()
    assert panel.train_runner.running and not state.busy and not panel.train_btn.isEnabled()
    qtbot.waitUntil(lambda: not panel.train_runner.running, timeout=60000)
    assert project.published == "v0001", notes
    assert "v0001 (validation score 0.800)" in panel.model_label.text()
    assert "as refine prior: used unchecked" in panel.model_label.text()
    assert learner.calls[0].cases[0].labels_path  # the strokes went into the snapshot
    # the published model's draft and uncertainty appear for the open volume
    qtbot.waitUntil(lambda: state.prior is not None and not state.busy, timeout=60000)
    assert state.prior.shape == (2, *SHAPE)
    assert np.any(state.refined_layer.data)
    assert state.uncertainty_layer is not None and state.uncertainty_layer.visible
    assert panel.table.item(0, 4).text() != "-"  # model-estimated quality

    # the refine panel now refines through the project (a plain model: the graph with
    # the model as prior; an interactive one: the network in the loop)
    widget.refine_panel.method.setCurrentText("randomwalk")
    assert widget.refine_panel.run_refine()
    qtbot.waitUntil(lambda: not state.busy, timeout=60000)
    assert "prior" in state.result.info and state.result.info["project_mode"] == "graph"

    assert panel.accept_current()
    assert project.volume("case0").status == "accepted"
    assert np.array_equal(project.labels("case0")["mask"], state.refined_layer.data)
    # accepting again asks first (issue 22): "no" keeps the accepted mask, "yes" replaces it
    accepted = project.labels("case0")["mask"].copy()
    state.refined_layer.data = np.where(accepted > 0, 0, 1).astype(accepted.dtype)
    asked = []
    panel.confirm_replace = lambda vid, status: asked.append((vid, status)) or False
    assert not panel.accept_current()
    assert asked == [("case0", "accepted")]
    assert np.array_equal(project.labels("case0")["mask"], accepted)
    panel.confirm_replace = lambda vid, status: asked.append((vid, status)) or True
    assert panel.accept_current()
    assert np.array_equal(project.labels("case0")["mask"], state.refined_layer.data)

    # the next-volume slot ranks the unannotated volumes with the model (background)
    qtbot.waitUntil(lambda: not panel.next_runner.running and panel._next is not None, timeout=60000)
    assert panel._next in ("case1", "case2") and panel._next in panel.next_label.text()
    assert panel.table.item(2, 4).text() != "-"  # the ranking's predictions fill the table
    # another volume: the draft is shown when it opens
    _open(qtbot, panel, "case1")
    qtbot.waitUntil(lambda: state.prior is not None and not state.busy, timeout=60000)
    assert np.any(state.refined_layer.data)
    assert sum(ly.metadata.get("labeleff_volume") == "case0" for ly in viewer.layers) == 0

    # the panel as drawn (the docs' full-window screenshots: docs/make_project_screenshots.py)
    image = panel.grab()
    assert image.save(str(tmp_path / "panel.png")) and image.height() > 300
    gray = np.asarray([[image.toImage().pixelColor(x, y).value() for x in range(0, image.width(), 7)]
                       for y in range(0, image.height(), 7)])
    assert gray.std() > 5  # drawn, not blank
    qtbot.waitUntil(lambda: not (panel.next_runner.running or panel.train_runner.running
                                 or state.busy), timeout=60000)  # the fine-tunes after accept too


class SlowLearner(FakeLearner):
    def train_steps(self, spec):
        gen = super().train_steps(spec)
        try:
            while True:
                p = next(gen)
                time.sleep(0.02)
                yield TrainProgress(p.step, p.total, p.message)
        except StopIteration as stop:
            return stop.value
        finally:
            gen.close()


def test_a_weak_model_is_a_draft_but_not_a_prior(make_napari_viewer, qtbot, tmp_path, monkeypatch, notes):
    """A model below PRIOR_MIN_DICE on full masks: the draft shows, later refinements
    run without it, and the panel says why."""
    FakeLearner(scores=[0.8], mask_score=0.5).install(monkeypatch)
    viewer = make_napari_viewer()
    widget, panel = _panel(viewer)
    state = widget.state
    project = panel.create_project(tmp_path / "proj", ["ball"])
    panel.add_paths(_scans(tmp_path, 2))
    s = np.zeros(SHAPE, np.uint8)
    s[6, 10:13, 10:13], s[6, 0, :] = 2, 1
    project.set_weak_labels("case0", scribbles=s)
    project.train()
    panel.refresh()
    assert "as refine prior: not used: its Dice on full masks (0.500)" in panel.model_label.text()
    _open(qtbot, panel, "case1")
    qtbot.waitUntil(lambda: not state.busy and np.any(state.refined_layer.data), timeout=60000)
    assert state.prior is None and "nothing drawn yet" in state.result.info["project_prior"]


def test_stop_and_resume_training(make_napari_viewer, qtbot, tmp_path, monkeypatch, notes):
    learner = SlowLearner(scores=[0.7], steps=200).install(monkeypatch)
    viewer = make_napari_viewer()
    widget, panel = _panel(viewer)
    project = panel.create_project(tmp_path / "proj", ["ball"])
    panel.add_paths(_scans(tmp_path, 1))
    s = np.zeros(SHAPE, np.uint8)
    s[6, 12, 12], s[6, 0, 0] = 2, 1
    project.set_weak_labels("case0", scribbles=s)
    assert panel.train()
    def progressed():
        files = list((project.folder / "runs").rglob("resume.json"))
        try:
            return bool(files) and json.loads(files[0].read_text())["step"] >= 5
        except ValueError:  # caught mid-write
            return False

    qtbot.waitUntil(progressed, timeout=30000)
    panel.stop_btn.click()
    qtbot.waitUntil(lambda: not panel.train_runner.running, timeout=30000)
    assert project.published is None
    assert any("press Train / resume" in m for _, m in notes)
    assert panel.train_btn.isEnabled()
    assert panel.train()
    qtbot.waitUntil(lambda: not panel.train_runner.running, timeout=60000)
    assert learner.resumed_from[0] == 0 and learner.resumed_from[1] > 0
    assert project.published == "v0001"
    qtbot.waitUntil(lambda: not panel.next_runner.running, timeout=60000)


def test_open_errors_are_notifications(make_napari_viewer, qtbot, tmp_path, notes):
    viewer = make_napari_viewer()
    widget, panel = _panel(viewer)
    panel.folder.value = str(tmp_path / "nothing")
    panel.open_btn.changed.emit(None)
    assert any(sev == "error" and "not a napari-labeleff project" in m for sev, m in notes)
    # a project another process writes opens read-only, with a warning
    holder = Project.create(tmp_path / "held", class_names=["a"])
    try:
        panel.open_project(tmp_path / "held")
        assert panel.project.read_only and not panel.add_files_btn.isEnabled()
        assert any("read-only" in m.lower() for _, m in notes)
    finally:
        panel.close_project()
        holder.close()


def test_class_added_in_the_panel_joins_the_project(make_napari_viewer, qtbot, tmp_path, notes):
    viewer = make_napari_viewer()
    widget, panel = _panel(viewer)
    project = panel.create_project(tmp_path / "proj", ["ball"])
    panel.add_paths(_scans(tmp_path, 1))
    _open(qtbot, panel, "case0")
    widget.state.session.add_class("appendage")  # what the class editor does
    widget.state.classes_changed.emit()
    assert project.class_names == ["ball", "appendage"]
    assert "ball, appendage" in panel.info.text()
    widget.state.session.rename_class(1, "atrium")  # renaming breaks the project's list
    widget.state.classes_changed.emit()
    assert project.class_names == ["ball", "appendage"]
    assert any(sev == "error" and "differ from the project's" in m for sev, m in notes)
