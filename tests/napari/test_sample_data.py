"""Sample data contributions and their adoption by the dock widget."""

import numpy as np
import pytest

from napari_labeleff.io._samples import load_sample

pytestmark = pytest.mark.gui


def open_sample_with_widget(make_napari_viewer, qtbot, key, store):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-labeleff", "LabelEff")
    widget.autosave.store_dir = store  # keep stores out of the package's sample_data
    layers = viewer.open_sample("napari-labeleff", key)
    qtbot.waitUntil(lambda: widget.state.image_layer is not None, timeout=10000)
    return viewer, widget, layers


def test_brain_sample_opens_with_scribbles(make_napari_viewer, qtbot, tmp_path):
    viewer, widget, layers = open_sample_with_widget(make_napari_viewer, qtbot, "brain", tmp_path)
    sample = load_sample("brain")
    image, scribbles = layers[0], layers[1]
    assert np.allclose(image.affine.affine_matrix, sample.volume.geometry.napari_affine)
    assert np.allclose(scribbles.affine.affine_matrix, image.affine.affine_matrix)
    state = widget.state
    assert state.image_layer is image and state.scribbles_layer is scribbles  # adopted
    assert [c.name for c in state.classes] == sample.class_names
    assert np.array_equal(state.scribbles_layer.data, sample.scribbles)
    assert len([ly for ly in viewer.layers if ly.name.startswith("Scribbles")]) == 1


def test_ct_sample_boxes_are_engine_boxes(make_napari_viewer, qtbot, tmp_path):
    _, widget, layers = open_sample_with_widget(make_napari_viewer, qtbot, "ct", tmp_path)
    sample = load_sample("ct")
    assert widget.state.boxes_layer is layers[2]
    assert sorted(widget.state.boxes_snapshot()) == sorted(sample.boxes)
    assert sorted(widget.state.session.boxes) == sorted(sample.boxes)
