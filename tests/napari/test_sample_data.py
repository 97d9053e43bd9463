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


def test_a_sample_saves_and_exports_outside_the_package(make_napari_viewer, qtbot):
    """The shipped file lives in the package: its autosave store goes to the user data
    dir and the export path defaults to the home folder (a store used to appear next
    to sample_data/brain_image.nii.gz)."""
    from pathlib import Path

    from napari_labeleff.session import user_store_dir

    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-labeleff", "LabelEff")
    viewer.open_sample("napari-labeleff", "brain")
    qtbot.waitUntil(lambda: widget.state.session is not None, timeout=20000)
    sample = load_sample("brain")
    store = Path(widget.state.session.store_path)
    assert store.parent == user_store_dir()
    assert not list(Path(sample.volume.path).parent.glob("*.labeleff.zarr"))
    assert Path(widget.export_panel.path.text()).parent == Path.home()
