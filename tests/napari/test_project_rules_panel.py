"""The project panel's rules section (issue 21): rules learned from the accepted masks
with their support, accepted or rejected one by one, stored as the project's rules and
handed to the open volume's rules box (what refine enforces)."""

import pytest
from cohort.project_fakes import make_volume
from cohort.test_project_rules import SHAPE, ring_mask
from qtpy.QtCore import Qt

pytestmark = pytest.mark.gui


def test_learned_rules_are_accepted_into_the_project_and_the_volume(make_napari_viewer, qtbot,
                                                                    tmp_path):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-labeleff", "LabelEff")
    panel = widget.project_panel
    section = panel.rules_section
    folder = tmp_path / "scans"
    folder.mkdir()
    project = panel.create_project(tmp_path / "proj", ["cavity", "ring"])
    panel.add_paths([make_volume(folder, f"v{i}", seed=i, shape=SHAPE) for i in range(4)])
    assert "none" in section.rules_label.text() and not section.accept_btn.isEnabled()
    for i, vid in enumerate(project.volume_ids[:3]):
        project.accept(vid, ring_mask(shift=i - 1))

    assert section.learn()
    qtbot.waitUntil(lambda: not section.runner.running and bool(section.proposals), timeout=30000)
    texts = [section.list.item(i).text() for i in range(section.list.count())]
    assert any(t.startswith("cavity inside ring: 3 of 3") for t in texts), texts
    # full support is ticked; the user rejects all but the containment
    assert all(section.list.item(i).checkState() == Qt.CheckState.Checked
               for i in range(section.list.count()))
    keep = next(i for i, t in enumerate(texts) if t.startswith("cavity inside ring"))
    for i in range(section.list.count()):
        if i != keep:
            section.list.item(i).setCheckState(Qt.CheckState.Unchecked)
    assert section.accept_checked()
    assert [project.rules().text(r) for r in project.rules()] == ["cavity inside ring"]
    assert "cavity inside ring" in section.rules_label.text()
    assert section.list.count() == len(texts) - 1  # the rejected ones stay proposals

    # a volume without rules of its own starts with the project's
    panel.open_volume(project.volume_ids[3])
    qtbot.waitUntil(lambda: panel.vid == project.volume_ids[3], timeout=30000)
    box = widget.classes_panel.rules_box
    assert [box.rules_list.item(i).text() for i in range(box.rules_list.count())] == [
        "cavity inside ring"]
    assert widget.state.session.rules == [["inside", "cavity", "ring"]]


def test_learning_without_accepted_masks_says_so(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-labeleff", "LabelEff")
    panel = widget.project_panel
    panel.create_project(tmp_path / "proj", ["cavity", "ring"])
    section = panel.rules_section
    assert section.learn()
    qtbot.waitUntil(lambda: not section.runner.running, timeout=30000)
    assert "no accepted or imported mask" in section.status.text()
    assert section.proposals == [] and section.list.count() == 0
