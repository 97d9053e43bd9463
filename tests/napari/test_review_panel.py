"""Review panel: suggest -> jump -> annotate -> refine -> re-rank, shortcuts, looks right."""

import numpy as np
import pytest

from napari_labeleff._napari._layers import confirmed_scribbles

pytestmark = pytest.mark.gui

SHAPE = (24, 40, 40)
SCRIBBLED_SLICE = 12


@pytest.fixture
def ball_image():
    """Bright ball (radius 9 voxels) off-centre on noise, (Z, Y, X) = (24, 40, 40)."""
    rng = np.random.default_rng(3)
    z, y, x = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    ball = ((z - 12) / 9.0) ** 2 + ((y - 18) / 9.0) ** 2 + ((x - 21) / 9.0) ** 2 <= 1
    return (100.0 * ball + rng.normal(0, 25, SHAPE)).astype(np.float32)


@pytest.fixture
def review(make_napari_viewer, ball_image):
    """Viewer + LabelEff widget (sync worker), scribbles on one slice, refined once."""
    viewer = make_napari_viewer(show=True)
    viewer.add_image(ball_image, name="ball")
    _, widget = viewer.window.add_plugin_dock_widget("napari-labeleff", "LabelEff")
    widget.runner.mode = "sync"
    # the graph method: fast on 2 CPU cores, and it leaves uncertain regions to review
    widget.refine_panel.method.setCurrentText("randomwalk")
    state = widget.state
    viewer.dims.set_point(0, SCRIBBLED_SLICE)
    scribbles = state.scribbles_layer
    scribbles.brush_size = 5
    scribbles.paint((SCRIBBLED_SLICE, 18, 21), 2)  # structure 1
    scribbles.paint((SCRIBBLED_SLICE, 3, 3), 1)  # background
    scribbles.paint((SCRIBBLED_SLICE, 36, 36), 1)
    assert widget.refine_panel.run_refine()
    assert state.result is not None
    return viewer, widget


def _canvas(widget):
    """The viewer's OpenGL canvas widget (what receives key presses), found through
    Qt's public object tree of the main window the dock widget lives in."""
    from qtpy.QtOpenGLWidgets import QOpenGLWidget

    (canvas,) = widget.window().findChildren(QOpenGLWidget)
    return canvas


def _press(qtbot, widget, key):
    from qtpy.QtCore import Qt

    qtbot.keyClick(_canvas(widget), getattr(Qt.Key, f"Key_{key}"),
                   Qt.KeyboardModifier.ShiftModifier)


def _indices(state):
    return [s.index for s in state.suggestions]


def test_suggest_jump_annotate_refine_rerank(review):
    viewer, widget = review
    state, panel = widget.state, widget.review_panel
    panel.n.setValue(4)
    assert panel.request_suggestions()
    first = list(state.suggestions)
    assert [s.rank for s in first] == [1, 2, 3, 4]
    assert all(s.kind == "slice" and s.axis == 0 for s in first)
    assert SCRIBBLED_SLICE not in _indices(state)
    assert panel.table.rowCount() == 4
    assert panel.table.item(0, 1).text() == f"Z {first[0].index}"

    # jump: the viewer shows the suggested slice, outlined, with the uncertainty overlay
    panel.select(1)
    target = first[1]
    assert viewer.dims.point[0] == pytest.approx(target.index)
    outline = panel._highlight
    assert outline in viewer.layers and len(outline.data) == 1
    assert np.all(outline.data[0][:, 0] == target.index)
    assert state.uncertainty_layer is not None and state.uncertainty_layer.visible

    # annotate here: painting on the Scribbles layer with the likely class
    panel.annotate_here()
    scribbles = state.scribbles_layer
    assert viewer.layers.selection.active.name == scribbles.name
    assert scribbles.mode == "paint"
    likely = target.classes[0] if target.classes else 1
    assert scribbles.selected_label == likely + 1
    assert state.review_status[1] == "annotated"
    assert state.session.reviewed[-1]["index"] == target.index
    assert state.session.reviewed[-1]["status"] == "annotated"
    scribbles.paint((target.index, 18, 21), 2)
    scribbles.paint((target.index, 2, 37), 1)

    # refine -> automatic re-rank without the annotated slice
    old_result = state.result
    assert widget.refine_panel.run_refine()
    assert state.result is not old_result
    assert state.suggestions is not first
    assert target.index not in _indices(state)
    assert SCRIBBLED_SLICE not in _indices(state)
    assert [s.index for s in state.suggestions] != [s.index for s in first]
    assert set(state.review_status.values()) == {"pending"}
    assert "remaining: 4" in panel.counts.text()


def test_keyboard_shortcuts_and_looks_right(review, qtbot):
    viewer, widget = review
    state, panel = widget.state, widget.review_panel
    panel.n.setValue(5)
    assert panel.request_suggestions()
    ranking = list(state.suggestions)
    assert panel.current_position() is None

    _press(qtbot, widget, "N")  # next -> first pending
    assert panel.current_position() == 0
    assert viewer.dims.point[0] == pytest.approx(ranking[0].index)
    _press(qtbot, widget, "N")
    assert panel.current_position() == 1
    _press(qtbot, widget, "B")  # back
    assert panel.current_position() == 0

    # looks right (Shift-Y): the confident interior of the slice becomes scribbles;
    # uncertain voxels of the refinement are not frozen into hard seeds
    index = ranking[0].index
    before = np.array(state.scribbles_layer.data[index], copy=True)
    refined = np.array(state.result.labels[index], copy=True)
    p_refined = np.take_along_axis(np.asarray(state.result.probabilities[:, index],
                                              dtype=np.float32),
                                   refined[None].astype(np.int64), 0)[0]
    assert (p_refined < 0.9).any()  # the slice holds uncertain voxels
    _press(qtbot, widget, "Y")
    after = np.asarray(state.scribbles_layer.data[index])
    added = (after != before)
    assert added.sum() > 0.3 * before.size
    assert np.all(before[added] == 0)
    assert np.array_equal(after[added], refined[added].astype(after.dtype) + 1)
    assert p_refined[added].min() >= 0.9
    assert state.review_status[0] == "confirmed"
    assert state.session.reviewed[-1]["status"] == "confirmed"
    assert panel.current_position() == 1  # moved on to the next pending one

    _press(qtbot, widget, "S")  # skip
    assert state.review_status[1] == "skipped"
    assert panel.current_position() == 2

    _press(qtbot, widget, "E")  # annotate here
    assert viewer.layers.selection.active.name == state.scribbles_layer.name
    assert state.review_status[2] == "annotated"
    assert "reviewed: 3 in all, 3 of this ranking; remaining: 2" in panel.counts.text()

    # reviewed places stay out of the next ranking, even the skipped one
    assert panel.request_suggestions()
    new = _indices(state)
    assert not {ranking[0].index, ranking[1].index, ranking[2].index} & set(new)


def test_region_suggestion_frames_and_outlines_its_box(review):
    viewer, widget = review
    state, panel = widget.state, widget.review_panel
    panel.granularity.setCurrentText("region")
    assert panel.request_suggestions()
    assert state.suggestions and all(s.kind == "region" for s in state.suggestions)
    s = state.suggestions[0]
    viewer.reset_view()  # the view that fits the volume in the canvas as it is now (the
    zoom_before = viewer.scene.camera.zoom  # dock's height changes the canvas's size)
    panel.select(0)
    z0, y0, x0, z1, y1, x1 = s.bbox
    assert viewer.dims.point[0] == pytest.approx(s.index)
    assert z0 <= s.index < z1
    outline = panel._highlight
    assert len(outline.data) == z1 - z0  # one rectangle per slice of the box
    assert viewer.scene.camera.center[-2:] == pytest.approx(((y0 + y1 - 1) / 2, (x0 + x1 - 1) / 2))
    assert viewer.scene.camera.zoom >= zoom_before


def test_suggest_needs_a_refinement(make_napari_viewer, ball_image, notes):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(ball_image)
    _, widget = viewer.window.add_plugin_dock_widget("napari-labeleff", "LabelEff")
    assert not widget.review_panel.request_suggestions()
    assert any("refine first" in msg for _, msg in notes)
    assert widget.state.suggestions == []


def test_confirmed_scribbles_erodes_classes_and_keeps_existing_scribbles():
    refined = np.zeros((5, 9, 9), np.uint8)
    refined[:, 2:7, 2:7] = 1
    scribbles = np.zeros(refined.shape, np.uint8)
    scribbles[2, 4, 4] = 1  # an existing (contradicting) scribble is kept
    idx, values = confirmed_scribbles(refined, scribbles, (2, 0, 0, 3, 9, 9))
    out = np.zeros_like(scribbles)
    out[idx] = values
    assert set(np.unique(idx[0])) == {2}  # only the confirmed slice
    assert out[2, 4, 4] == 0  # not overwritten
    assert np.all(out[2, 3:6, 3:6][np.arange(9).reshape(3, 3) != 4] == 2)  # core
    assert np.all(out[2, 2, 2:7] == 0) and np.all(out[2, 1, 2:7] == 0)  # boundary free
    assert out[2, 0, 0] == 1 and out[2, 8, 4] == 1  # background beyond it
    # a 3D region erodes in 3D; the object runs through every slice, so along Z only
    # the volume border bounds it, and the border does not erode
    idx, values = confirmed_scribbles(refined, np.zeros_like(scribbles), (1, 0, 0, 4, 9, 9))
    out = np.zeros_like(scribbles)
    out[idx] = values
    assert set(np.unique(idx[0])) == {1, 2, 3}
    assert out[2, 4, 4] == 2 and out[1, 4, 4] == 2


def test_mutual_information_offered_only_with_an_ensemble(review):
    _, widget = review
    panel = widget.review_panel
    kinds = [panel.uncertainty.itemText(i) for i in range(panel.uncertainty.count())]
    assert kinds == ["entropy", "margin"]  # one refinement: no ensemble
    widget.state.ensemble = [widget.state.result, widget.state.result]
    panel._on_refined()
    kinds = [panel.uncertainty.itemText(i) for i in range(panel.uncertainty.count())]
    assert "mutual_info" in kinds
    del widget.state.ensemble
