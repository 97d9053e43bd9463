"""The rules box of the classes panel: template, add / remove, violations with jump-to,
class removal."""

import numpy as np
import pytest

pytestmark = pytest.mark.gui

NAMES = ["RV cavity", "myocardium", "LV cavity"]


def heart(shape=(6, 40, 48)):
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    cy, cx = shape[1] // 2, shape[2] // 2 + 6
    d2 = (y - cy) ** 2 + (x - cx) ** 2
    m = np.zeros(shape, np.uint8)
    m[:] = np.where(d2 <= 81, 2, 0)
    m[:] = np.where(d2 <= 36, 3, m)
    rv = ((y - cy) ** 2 / 64 + (x - (cx - 14)) ** 2 / 25 <= 1) & (m == 0)
    m[np.broadcast_to(rv, shape)] = 1
    return m


@pytest.fixture
def widget(make_napari_viewer, tmp_path):
    import nibabel as nib

    truth = heart()
    image = (truth * 0.3 + np.random.default_rng(0).normal(0, 0.05, truth.shape)).astype(np.float32)
    path = tmp_path / "heart.nii.gz"
    nib.save(nib.Nifti1Image(image.T, np.diag([1.5, 1.5, 8.0, 1.0])), path)
    viewer = make_napari_viewer()
    viewer.open(path, plugin="napari-labeleff")
    _, w = viewer.window.add_plugin_dock_widget("napari-labeleff", "LabelEff")
    for c, name in enumerate(NAMES, start=1):  # a new session starts with one structure
        if c < len(w.state.classes):
            w.classes_panel.rename_class(c, name)
        else:
            w.classes_panel.add_class(name)
    assert [c.name for c in w.state.classes[1:]] == NAMES
    return w, truth


def test_template_add_remove_and_persist(widget, notes):
    w, _ = widget
    box = w.classes_panel.rules_box
    assert box.use_template("cardiac")
    assert box.rules_list.count() == 7
    assert any("no class matched" not in m and "7 rules" in m for _, m in notes)
    assert ["inside", "LV cavity", "myocardium"] in w.state.session.rules
    assert box.remove_rule(0)
    assert box.rules_list.count() == 6
    # the add row: a contradiction is refused with a notification, nothing changes
    box.relation.setCurrentText("inside")
    box.class_a.setCurrentText("myocardium")
    box.class_b.setCurrentText("RV cavity")
    box._add_from_row()
    assert box.rules_list.count() == 7
    box.relation.setCurrentText("excludes")
    box.class_a.setCurrentText("myocardium")
    box.class_b.setCurrentText("RV cavity")
    box._add_from_row()
    assert box.rules_list.count() == 7
    assert any(sev == "error" and "contradict" in m for sev, m in notes)
    box.relation.setCurrentText("n_pieces")
    box.value.setText("two")
    box._add_from_row()
    assert any("expected pieces" in m for _, m in notes)


def test_violations_listed_with_jump_to_slice(widget):
    w, truth = widget
    box = w.classes_panel.rules_box
    box.use_template("cardiac")
    bad = truth.copy()
    bad[4, 2:5, 2:5] = 3  # a stray piece of LV cavity on slice 4
    w.state.refined_layer.data = bad
    found = box.check()
    assert {v.rule.relation for v in found} == {"inside", "n_pieces"}
    assert box.violations.count() == 2
    w.viewer.dims.set_point(0, 0.0)
    box.jump_to(0)
    z_world = w.state.image_layer.data_to_world((4, 0, 0))[0]
    assert w.viewer.dims.point[0] == pytest.approx(z_world)
    w.state.refined_layer.data = truth
    assert box.check() == [] and "keeps all 7 rules" in box.status.text()


def test_removing_a_class_drops_its_rules(widget, notes):
    w, _ = widget
    box = w.classes_panel.rules_box
    box.use_template("cardiac")
    w.classes_panel.remove_class(2)  # the myocardium
    assert all("myocardium" not in r for r in w.state.session.rules)
    assert w.state.session.rules  # the others stay
    assert any("naming class 'myocardium'" in m for _, m in notes)
    assert box.rules_list.count() == len(w.state.session.rules)


def test_export_writes_the_rules_beside_the_mask(widget, tmp_path):
    from napari_labeleff.rules import Rules

    w, truth = widget
    w.classes_panel.rules_box.use_template("cardiac")
    w.state.final_layer.data = truth
    out = tmp_path / "out" / "heart_mask.nii.gz"
    out.parent.mkdir()
    written = w.export_panel.save(str(out), target="final mask")
    side = out.parent / "heart_mask.rules.json"
    assert str(side) in written
    back = Rules.from_json(side.read_text(), class_names=NAMES)
    assert back == w.state.session.rules_object()


def test_refine_in_the_panel_enforces_the_rules_box(widget, qtbot, notes):
    """The rules picked in the rules box act in the panel's refine: the LV cavity ends
    inside the myocardium ring, each structure one piece."""
    w, truth = widget
    assert w.classes_panel.rules_box.use_template("cardiac")
    scr = np.zeros(truth.shape, np.uint8)
    for z in (1, 3, 4):
        for c in range(4):
            ys, xs = np.nonzero(truth[z] == c)
            k = len(ys) // 2
            scr[z, ys[k], xs[k]] = c + 1
    for value in np.unique(scr[scr > 0]):
        w.state.scribbles_layer.data_setitem(np.nonzero(scr == value), int(value))
    w.refine_panel.method.setCurrentText("randomwalk")
    assert w.refine_panel.run_refine()
    qtbot.waitUntil(lambda: not w.state.busy, timeout=60000)
    res = w.state.result
    assert res is not None, notes
    assert "LV cavity inside myocardium" in res.info["rules"]["rules"]
    rules = w.state.session.rules_object()
    assert [v for v in rules.violations(res.labels, spacing=w.state.spacing)
            if v.rule.relation in ("inside", "one_piece")] == []
