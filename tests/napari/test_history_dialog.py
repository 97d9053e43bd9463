"""The "History..." dialog restores earlier work into the layers (undoably), and closing
the napari window writes pending saves."""

import numpy as np
import pytest

from napari_labeleff._napari import _history_dialog
from napari_labeleff.io import Geometry
from napari_labeleff.session import AnnotationSession
from test_main_widget import open_with_widget
from test_main_widget import paint_scribbles as paint

pytestmark = pytest.mark.gui


def test_history_dialog_restores_a_wrong_class_removal_and_the_restore_is_undoable(
        make_napari_viewer, qtbot, ball_nifti, monkeypatch, notes):
    path, _, scribbles = ball_nifti
    viewer = make_napari_viewer()
    _, widget = open_with_widget(viewer, path)
    state = widget.state
    qtbot.waitUntil(lambda: state.session is not None, timeout=20000)
    assert widget.history_button.isEnabled()
    widget.classes_panel.add_class("vessel", (0.0, 0.5, 1.0))
    paint(state.scribbles_layer, scribbles)
    state.scribbles_layer.paint((12, 30, 30), 3)  # a "vessel" stroke
    state.final_layer.data = (scribbles == 2).astype(np.uint8)
    state.final_changed.emit()
    widget.autosave.flush()
    before = (np.array(state.scribbles_layer.data), np.array(state.final_layer.data),
              [c.name for c in state.classes])
    widget._drop_class(1)  # the wrong removal: its scribbles are gone, vessel renumbered
    assert [c.name for c in state.classes] == ["background", "vessel"]
    removed = np.array(state.scribbles_layer.data)
    assert not np.array_equal(removed, before[0])

    dialog = widget.open_history()
    qtbot.addWidget(dialog)
    texts = [dialog.list.item(i).text() for i in range(dialog.list.count())]
    assert "class 'structure 1' removed" in texts[0] and texts[0].endswith("(current)")
    assert any("scribbles: +" in t for t in texts) and any("mask 'final' saved" in t for t in texts)
    assert not dialog.restore_button.isEnabled()  # the current generation is selected
    dialog.list.setCurrentRow(1)  # the generation before the removal

    asked = []
    monkeypatch.setattr(_history_dialog, "confirm_restore", lambda parent, text: asked.append(text))
    assert not dialog.restore_selected()  # the user says no: nothing changes
    assert asked and np.array_equal(state.scribbles_layer.data, removed)

    monkeypatch.setattr(_history_dialog, "confirm_restore", lambda parent, text: True)
    assert dialog.restore_selected()
    assert np.array_equal(state.scribbles_layer.data, before[0])
    assert np.array_equal(state.final_layer.data, before[1])
    assert [c.name for c in state.classes] == before[2]
    assert widget.classes_panel.list.count() == 3
    assert state.scribbles_layer.data is state.session.scribbles  # painting saves again
    newest = dialog.list.item(0).text()
    assert "restored generation #" in newest and newest.endswith("(current)")

    dialog.list.setCurrentRow(1)  # the removal, which the restore kept as a generation
    assert dialog.restore_selected()
    assert np.array_equal(state.scribbles_layer.data, removed)
    assert [c.name for c in state.classes] == ["background", "vessel"]


def test_closing_the_window_writes_pending_saves(make_napari_viewer, qtbot, ball_nifti, notes):
    path, _, scribbles = ball_nifti
    viewer = make_napari_viewer(show=True)
    image, widget = open_with_widget(viewer, path)
    state = widget.state
    qtbot.waitUntil(lambda: state.session is not None, timeout=20000)
    store = state.session.store_path
    state.final_layer.paint((12, 20, 20), 1)  # debounced: saved 0.8 s after the last stroke
    assert widget.autosave._final_timer.isActive()
    state.scribbles_layer.paint((12, 5, 5), 2)  # saved on the next turn of the event loop
    painted = np.array(state.final_layer.data)
    strokes = np.array(state.scribbles_layer.data)
    data = np.asarray(image.data)
    viewer.close()
    assert not [m for sev, m in notes if sev == "error"], notes
    saved = AnnotationSession.open(data, Geometry.from_dict(image.metadata["geometry"]),
                                   store_dir=store.parent, read_only=True)
    assert saved.store_path == store
    assert np.array_equal(saved.masks["final"], painted) and painted.any()
    diff = np.argwhere(saved.scribbles != strokes)
    assert np.array_equal(saved.scribbles, strokes), (diff[:5], saved.scribbles[tuple(diff[0])], strokes[tuple(diff[0])], np.count_nonzero(strokes))


def test_hiding_the_dock_with_its_window_saves_the_debounced_final_mask(make_napari_viewer, qtbot,
                                                                         ball_nifti):
    from qtpy.QtGui import QHideEvent

    path, _, _ = ball_nifti
    viewer = make_napari_viewer()
    _, widget = open_with_widget(viewer, path)
    state = widget.state
    qtbot.waitUntil(lambda: state.session is not None, timeout=20000)
    state.final_layer.paint((12, 20, 20), 1)
    assert widget.autosave._final_timer.isActive() and "final" not in state.session.masks
    widget.hideEvent(QHideEvent())  # what the window's close button does to the dock
    assert not widget.autosave._final_timer.isActive()
    assert np.array_equal(state.session.masks["final"], state.final_layer.data)
