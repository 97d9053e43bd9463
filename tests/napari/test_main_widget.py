"""The dock widget end to end: scribble -> refine -> correct -> accept -> export,
cancel, autosave restore, and bad input reported as notifications."""

import shutil
import time

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from napari_labeleff.engine import Progress

pytestmark = pytest.mark.gui


def dice(a, b):
    return 2 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


def open_with_widget(viewer, path):
    (image,) = viewer.open(path, plugin="napari-labeleff")
    _, widget = viewer.window.add_plugin_dock_widget("napari-labeleff", "LabelEff")
    return image, widget


def paint_scribbles(layer, scribbles):
    """Paint like a user: one undoable edit per label (fires ``events.paint``)."""
    for value in np.unique(scribbles[scribbles > 0]):
        layer.data_setitem(np.nonzero(scribbles == value), int(value))


def refine_and_wait(qtbot, widget):
    state = widget.state
    assert widget.refine_panel.run_refine()
    qtbot.waitUntil(lambda: not state.busy, timeout=60000)


def test_full_flow(make_napari_viewer, qtbot, ball_nifti, tmp_path, notes):
    path, truth, scribbles = ball_nifti
    viewer = make_napari_viewer()
    image, widget = open_with_widget(viewer, path)
    state = widget.state
    assert state.image_layer is image
    names = [ly.name for ly in viewer.layers]
    assert {"Scribbles", "Boxes", "Refined mask", "Final mask"} <= set(names)
    for layer in (state.scribbles_layer, state.refined_layer, state.boxes_layer):
        assert np.allclose(layer.affine.affine_matrix, image.affine.affine_matrix)

    paint_scribbles(state.scribbles_layer, scribbles)
    widget.refine_panel.method.setCurrentText("randomwalk")
    refine_and_wait(qtbot, widget)
    assert state.result is not None, notes
    first = np.array(state.refined_layer.data)
    assert dice(first == 1, truth == 1) > 0.9

    # correct: a background stroke through a voxel wrongly inside, then refine again
    wrong = np.argwhere((first == 1) & (truth == 0))
    z, y, x = wrong[0] if len(wrong) else (12, 20, 30)
    state.scribbles_layer.paint((z, y, x), 1)
    refine_and_wait(qtbot, widget)
    assert state.result.labels[z, y, x] == 0
    assert dice(state.refined_layer.data == 1, truth == 1) > 0.9

    widget.refine_panel.accept("all classes")
    assert np.array_equal(state.final_layer.data, state.refined_layer.data)
    widget.refine_panel.undo_accept()
    assert not np.any(state.final_layer.data)
    inside = tuple(np.argwhere(truth == 1)[len(np.argwhere(truth == 1)) // 2])
    widget.refine_panel.accept("region under cursor", at=inside)
    comps, _ = ndimage.label(state.refined_layer.data == 1)
    assert np.array_equal(state.final_layer.data == 1, comps == comps[inside])
    assert dice(state.final_layer.data == 1, truth == 1) > 0.9

    out = tmp_path / "export" / "ball_mask.nii.gz"
    out.parent.mkdir()
    written = widget.export_panel.save(str(out))
    assert written and written[0] == str(out)
    saved = nib.load(out)
    assert np.abs(saved.affine - nib.load(path).affine).max() <= 1e-4
    assert np.array_equal(np.asarray(saved.dataobj).T, state.final_layer.data)
    assert "1 structure_1 " in (out.parent / "ball_mask.ctbl").read_text()  # Slicer: no spaces


def test_cancel_keeps_previous_mask(make_napari_viewer, qtbot, ball_nifti, monkeypatch, notes):
    path, _, scribbles = ball_nifti
    viewer = make_napari_viewer()
    _, widget = open_with_widget(viewer, path)
    state = widget.state
    paint_scribbles(state.scribbles_layer, scribbles)
    widget.refine_panel.method.setCurrentText("randomwalk")
    refine_and_wait(qtbot, widget)
    previous = state.result
    shown = np.array(state.refined_layer.data)

    from napari_labeleff._napari import _refine_panel

    def slow_refine(image, scribbles, **kwargs):
        junk = np.ones(scribbles.shape, np.uint8)
        for i in range(1000):
            yield Progress(i, 1000, "slow", preview=junk)
            time.sleep(0.02)
        raise AssertionError("never cancelled")

    monkeypatch.setattr(_refine_panel.engine, "refine_steps", slow_refine)
    assert widget.refine_panel.run_refine()
    qtbot.waitUntil(lambda: np.all(state.refined_layer.data == 1), timeout=10000)
    assert not widget.refine_panel.refine_btn.isEnabled()
    widget.refine_panel.cancel_btn.click()
    qtbot.waitUntil(lambda: not state.busy, timeout=10000)
    assert state.result is previous
    assert np.array_equal(state.refined_layer.data, shown)
    assert any("cancelled" in m for _, m in notes)


def test_autosave_restores_on_reopen(make_napari_viewer, qtbot, ball_nifti, tmp_path, notes):
    path, _, scribbles = ball_nifti
    viewer = make_napari_viewer()
    image, widget = open_with_widget(viewer, path)
    state = widget.state
    widget.classes_panel.rename_class(1, "tumour")
    widget.classes_panel.add_class("vessel", (0.0, 0.5, 1.0))
    paint_scribbles(state.scribbles_layer, scribbles)
    state.scribbles_layer.paint((12, 30, 30), 3)  # a "vessel" stroke
    state.boxes_layer.add_rectangles(np.array([[12, 10, 10], [12, 10, 30], [12, 30, 30], [12, 30, 10]]))
    state.final_layer.data = (scribbles == 2).astype(np.uint8)
    state.final_changed.emit()
    expected = np.array(state.scribbles_layer.data)
    assert state.boxes_snapshot() == [(2, 12, 10, 10, 13, 31, 31)]  # class "vessel" selected

    # the same content at another path, in a fresh viewer: everything comes back
    copy = tmp_path / "elsewhere" / "copy.nii.gz"
    copy.parent.mkdir()
    shutil.copy(path, copy)
    viewer.layers.remove(image)
    assert state.image_layer is None
    notes.clear()
    viewer2 = make_napari_viewer()
    _, widget2 = open_with_widget(viewer2, copy)
    s2 = widget2.state
    assert any("Restored autosaved work" in m for _, m in notes), notes
    assert [c.name for c in s2.classes] == ["background", "tumour", "vessel"]
    assert np.array_equal(s2.scribbles_layer.data, expected)
    assert s2.boxes_snapshot() == [(2, 12, 10, 10, 13, 31, 31)]
    assert np.array_equal(s2.final_layer.data, scribbles == 2)
    assert widget2.classes_panel.list.count() == 3


def test_bad_input_becomes_notification(make_napari_viewer, qtbot, tmp_path, notes):
    data = np.random.default_rng(0).random((12, 16, 16)).astype(np.float32)
    data[3, 4, 5] = np.nan
    path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(data.T, np.eye(4)), path)
    viewer = make_napari_viewer()
    _, widget = open_with_widget(viewer, path)
    assert any(s == "warning" and "NaN/Inf" in m for s, m in notes)
    state = widget.state
    refine_and_wait(qtbot, widget)  # no scribbles at all
    assert state.result is None
    errors = [m for s, m in notes if s == "error"]
    assert errors and errors[-1].startswith("Refine:"), notes
    assert "\n" not in errors[-1]
    assert widget.export_panel.save(str(path)) is None  # never onto the source
    assert any("source image" in m for _, m in notes)
