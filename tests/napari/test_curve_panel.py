"""Project panel, issue 19: the learning curve (running score per accepted volume, work
per volume, the network's lead) and the fine-tune that follows each accept (warm start,
restarted by a new accept, cancelled when the viewer or the panel closes)."""

import re
import time

import numpy as np
import pytest
from cohort.project_fakes import FakeLearner, ball, make_volume
from napari_labeleff._napari._curve_widget import SCORE_COLOUR
from napari_labeleff.cohort.training import read_labels_snapshot

pytestmark = pytest.mark.gui

SHAPE = (12, 24, 24)


class GatedLearner(FakeLearner):
    """The fake learner with ``delay`` seconds per step; ``closed`` lists the runs
    (``out_dir``) whose generator was closed before it finished (cancelled)."""

    def __init__(self, *args, delay=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.delay = delay
        self.closed = []

    def train_steps(self, spec):
        gen = super().train_steps(spec)
        finished = False
        try:
            while True:
                try:
                    p = next(gen)
                except StopIteration as stop:
                    finished = True
                    return stop.value
                time.sleep(self.delay)
                yield p
        finally:
            if not finished:
                self.closed.append(spec.out_dir)
            gen.close()


def _setup(make_napari_viewer, tmp_path, n=3):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-labeleff", "LabelEff")
    panel = widget.project_panel
    panel.background = False  # the fake learner lives in this process
    folder = tmp_path / "scans"
    folder.mkdir()
    project = panel.create_project(tmp_path / "proj", ["ball"])
    panel.add_paths([make_volume(folder, f"case{i}", seed=i, shape=SHAPE) for i in range(n)])
    return viewer, widget, panel, project


def _publish_first_model(panel, project):
    """v0001 trained on strokes of the last volume (so the others get a running score)."""
    s = np.zeros(SHAPE, np.uint8)
    s[6, 10:13, 10:13], s[6, 0, :] = 2, 1
    project.set_weak_labels(project.volume_ids[-1], scribbles=s)
    project.train()
    panel.refresh()
    assert project.published == "v0001"


def _open(qtbot, widget, panel, vid):
    panel.open_volume(vid)
    qtbot.waitUntil(lambda: panel.vid == vid, timeout=30000)
    if panel.project.published is not None:  # the model's draft
        qtbot.waitUntil(lambda: widget.state.prior is not None and not widget.state.busy, timeout=60000)


def _idle(qtbot, widget, panel):
    qtbot.waitUntil(lambda: not (panel.train_runner.running or panel.next_runner.running
                                 or widget.state.busy), timeout=60000)


def _is_score_colour(colour) -> bool:
    return all(abs(a - b) <= 12 for a, b in zip(colour.getRgb()[:3], SCORE_COLOUR.getRgb()[:3]))


def _learner_step(panel) -> bool:
    """The status line counts the learner's steps (a bool: ``waitUntil`` takes None as
    an assertion that passed)."""
    return re.fullmatch(r"fine-tuning after accept: step \d+/\d+", panel.train_status.text()) is not None


def test_curve_shows_one_point_per_scored_accept(make_napari_viewer, qtbot, tmp_path, monkeypatch, notes):
    FakeLearner(scores=[0.8] * 5).install(monkeypatch)
    _, widget, panel, project = _setup(make_napari_viewer, tmp_path)
    panel.fine_tune.value = False
    curve = panel.curve
    assert not curve.isChecked() and curve.table.rowCount() == 0
    assert curve.lead_label.text() == "network lead: no published model: the graph method alone"

    # accepted before any model: on the curve, in the table, without a point
    _open(qtbot, widget, panel, "case0")
    widget.state.refined_layer.data = ball(SHAPE).astype(np.uint8)
    assert panel.accept_current()
    assert curve.isChecked()  # opened by itself with its first volume
    assert curve.table.rowCount() == 1 and curve.table.item(0, 2).text() == "-"
    assert curve.plot.points() == []

    # the section follows a training run: the lead line names the new model
    assert panel.train()
    qtbot.waitUntil(lambda: not panel.train_runner.running, timeout=60000)
    reason = project.network_lead()[1]
    assert "v0001" in reason and curve.lead_label.text() == f"network lead: {reason}"

    # two accepts scored by the published model: two points (the second mask differs
    # from the model's draft: a lower score)
    for vid in ("case1", "case2"):
        _open(qtbot, widget, panel, vid)
        if vid == "case2":
            draft = np.asarray(widget.state.refined_layer.data)
            widget.state.refined_layer.data = np.where(np.arange(SHAPE[2]) < SHAPE[2] // 2, draft, 0)
        assert panel.accept_current()
    items = project.curve()
    assert [it.volume_id for it in items] == ["case0", "case1", "case2"]
    assert [it.model_dice_before is None for it in items] == [True, False, False]
    assert curve.table.rowCount() == 3
    assert [curve.table.item(r, 1).text() for r in range(3)] == ["case0", "case1", "case2"]
    assert curve.table.item(2, 2).text() == f"{items[2].model_dice_before:.3f}"
    assert items[1].model_dice_before > items[2].model_dice_before

    # the dots are painted where points() says, at the height of their score
    plot = curve.plot
    image = plot.grab().toImage()
    points, area = plot.points(), plot._area()
    assert [order for order, _ in points] == [2, 3]
    assert points[0][1].y() < points[1][1].y()  # the better score is higher
    for (order, p), it in zip(points, items[1:]):
        assert abs(p.y() - (area.bottom() - it.model_dice_before * area.height())) < 1e-6
        # a disc, not just the line through it: 2 px away on both axes
        for dx, dy in ((0, 0), (-2, 0), (2, 0), (0, -2), (0, 2)):
            assert _is_score_colour(image.pixelColor(round(p.x()) + dx, round(p.y()) + dy))
    x_first = round(plot._x(1))  # the unscored first volume: no dot anywhere on its column
    assert not any(_is_score_colour(image.pixelColor(x_first, y)) for y in range(image.height()))
    _idle(qtbot, widget, panel)


def test_accept_starts_a_fine_tune(make_napari_viewer, qtbot, tmp_path, monkeypatch, notes):
    learner = GatedLearner(scores=[0.8] * 5, steps=60).install(monkeypatch)
    _, widget, panel, project = _setup(make_napari_viewer, tmp_path)
    _publish_first_model(panel, project)
    learner.delay = 0.02
    assert panel.fine_tune.value and panel.fine_tune_minutes.value == 3.0  # on, 3 minutes

    _open(qtbot, widget, panel, "case0")
    assert panel.accept_current()
    assert panel.train_runner.running and panel._fine_tune
    qtbot.waitUntil(lambda: len(learner.calls) == 2, timeout=30000)
    spec = learner.calls[-1]
    assert spec.init_checkpoint == str(project.model_dir("v0001"))  # warm start
    assert spec.options["max_minutes"] == 3.0
    case0 = next(c for c in spec.cases if c.volume_id == "case0")
    assert case0.role == "labelled" and read_labels_snapshot(case0.labels_path)["mask"] is not None
    qtbot.waitUntil(lambda: _learner_step(panel), timeout=30000)
    assert not panel.train_btn.isEnabled()

    # it ends like a training: finish_training publishes, the curve and the lead follow
    qtbot.waitUntil(lambda: not panel.train_runner.running, timeout=60000)
    assert project.published == "v0002" and learner.closed == []
    assert panel.train_status.text().startswith("fine-tune after accept finished: published model v0002")
    assert "v0002" in panel.curve.lead_label.text()
    _idle(qtbot, widget, panel)

    # the spin box sets the budget; the check box turns it off
    panel.fine_tune_minutes.value = 1.5
    _open(qtbot, widget, panel, "case1")
    assert panel.accept_current()
    qtbot.waitUntil(lambda: len(learner.calls) == 3, timeout=30000)
    assert learner.calls[-1].options["max_minutes"] == 1.5
    _idle(qtbot, widget, panel)
    panel.fine_tune.value = False
    _open(qtbot, widget, panel, "case2")
    assert panel.accept_current() and not panel.train_runner.running
    assert len(learner.calls) == 3
    _idle(qtbot, widget, panel)


def test_a_new_accept_restarts_the_fine_tune(make_napari_viewer, qtbot, tmp_path, monkeypatch, notes):
    learner = GatedLearner(scores=[0.8] * 5, steps=400).install(monkeypatch)
    _, widget, panel, project = _setup(make_napari_viewer, tmp_path)
    _publish_first_model(panel, project)
    learner.delay = 0.05
    _open(qtbot, widget, panel, "case0")
    assert panel.accept_current()
    qtbot.waitUntil(lambda: _learner_step(panel), timeout=30000)
    first = learner.calls[-1]

    _open(qtbot, widget, panel, "case1")
    assert panel.train_runner.running  # still fine-tuning on case0's mask
    assert panel.accept_current()
    assert panel.train_status.text().startswith("fine-tune cancelled: a new accept")
    qtbot.waitUntil(lambda: len(learner.calls) == 3, timeout=30000)
    assert learner.closed == [first.out_dir]  # the first stopped before it finished
    second = learner.calls[-1]
    assert second.init_checkpoint == str(project.model_dir("v0001"))
    labelled = {c.volume_id for c in second.cases if c.role == "labelled"}
    assert {"case0", "case1"} <= labelled  # the new mask is in its snapshot
    assert not any("cancelled" in m for _, m in notes)  # quietly
    qtbot.waitUntil(lambda: _learner_step(panel), timeout=30000)

    learner.delay = 0.0
    qtbot.waitUntil(lambda: not panel.train_runner.running, timeout=60000)
    published = project.published
    assert published is not None and str(published) in second.out_dir
    assert [m["version"] for m in project.models] == ["v0001", str(published)]
    _idle(qtbot, widget, panel)


@pytest.mark.parametrize("close", ["viewer", "panel"])
def test_closing_cancels_the_fine_tune(make_napari_viewer, qtbot, tmp_path, monkeypatch, notes, close):
    """Closing the viewer, or the panel's widgets being deleted while the viewer stays
    (the dock removed and destroyed), cancels the fine-tune; the resume state stays."""
    learner = GatedLearner(scores=[0.8] * 5, steps=400).install(monkeypatch)
    viewer, widget, panel, project = _setup(make_napari_viewer, tmp_path)
    _publish_first_model(panel, project)
    learner.delay = 0.05
    _open(qtbot, widget, panel, "case0")
    assert panel.accept_current()
    qtbot.waitUntil(lambda: _learner_step(panel), timeout=30000)
    running = learner.calls[-1]
    runner = panel.train_runner

    if close == "viewer":
        viewer.close()
    else:
        qtbot.waitUntil(lambda: not (panel.next_runner.running or widget.state.busy), timeout=60000)
        viewer.window.remove_dock_widget(widget)
        widget.deleteLater()
    qtbot.waitUntil(lambda: not runner.running, timeout=30000)
    assert learner.closed == [running.out_dir]
    assert project.published == "v0001" and len(project.models) == 1
    assert not any(sev == "error" for sev, _ in notes)
    # the learner kept its resume state: the same fine-tune resumes it
    plan = project.prepare_training(max_minutes=3.0, device="auto")
    assert plan.resumed and plan.spec.out_dir == running.out_dir
