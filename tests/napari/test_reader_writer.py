"""npe2 reader and writer through napari's own entry points."""

import os
import stat

import nibabel as nib
import numpy as np
import pytest

from napari_labeleff import LabelEffError
from napari_labeleff._napari._reader import napari_get_reader
from napari_labeleff._napari._writer import write_labels
from napari_labeleff.io import Geometry

pytestmark = pytest.mark.gui


def oblique_affine():
    """RAS affine with rotated direction cosines and anisotropic spacing."""
    t = np.deg2rad(20)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag([0.8, 1.1, 2.5])
    a[:3, 3] = [-40.0, 12.5, 7.0]
    return a


@pytest.fixture
def oblique_nifti(tmp_path):
    rng = np.random.default_rng(0)
    data_ijk = rng.normal(100, 20, size=(14, 12, 10)).astype(np.float32)
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(data_ijk, oblique_affine()), path)
    return path, data_ijk


def test_reader_declines_what_it_cannot_read(tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("not an image")
    (tmp_path / "empty_dir").mkdir()
    for p in [junk, tmp_path / "missing.nii.gz", tmp_path / "empty_dir", [str(junk)], 3]:
        assert napari_get_reader(p) is None


def test_reader_layer_affine_matches_geometry(make_napari_viewer, oblique_nifti):
    path, data_ijk = oblique_nifti
    viewer = make_napari_viewer()
    (layer,) = viewer.open(path, plugin="napari-labeleff")
    geometry = Geometry.from_dict(layer.metadata["geometry"])
    assert np.allclose(geometry.affine_ras, oblique_affine(), atol=1e-5)
    assert np.allclose(layer.affine.affine_matrix, geometry.napari_affine, atol=1e-6)
    assert np.array_equal(np.asarray(layer.data), data_ijk.T)  # (Z, Y, X) = (k, j, i)
    assert layer.metadata["source_path"] == str(path)
    lo, hi = layer.contrast_limits
    assert data_ijk.min() < lo < hi < data_ijk.max()
    # world position of voxel (z, y, x) = the RAS position of (i, j, k) = (x, y, z), in S, P, L
    ras = oblique_affine() @ np.array([3, 4, 5, 1.0])
    world = layer.data_to_world((5, 4, 3))
    assert np.allclose(world, [ras[2], -ras[1], -ras[0]], atol=1e-4)


def test_reader_multichannel_gives_one_layer_per_channel(make_napari_viewer, tmp_path):
    data_ijk = np.random.default_rng(1).random((8, 9, 10, 2)).astype(np.float32)
    path = tmp_path / "mc.nii.gz"
    nib.save(nib.Nifti1Image(data_ijk, np.diag([1.0, 1.0, 2.0, 1.0])), path)
    viewer = make_napari_viewer()
    layers = viewer.open(path, plugin="napari-labeleff")
    assert len(layers) == 2
    assert [ly.metadata["channel_index"] for ly in layers] == [0, 1]
    assert all(ly.data.shape == (10, 9, 8) for ly in layers)


def test_corrupt_file_is_a_notification_not_an_exception(make_napari_viewer, tmp_path, notes):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b" + b"garbage" * 20)
    viewer = make_napari_viewer()
    reader = napari_get_reader(str(bad))
    assert reader is not None and reader(str(bad)) is None
    assert any(s == "error" and "broken.nii.gz" in m for s, m in notes)
    assert len(viewer.layers) == 0


def _labels_for(viewer, image, values):
    return viewer.add_labels(
        values,
        name="mask",
        affine=image.affine,
        metadata={
            "geometry": image.metadata["geometry"],
            "source_path": image.metadata["source_path"],
            "label_names": {0: "background", 1: "liver"},
            "label_colors": {0: "#000000", 1: "#ff0000"},
        },
    )


def test_writer_round_trip_keeps_affine_and_grid(make_napari_viewer, oblique_nifti, tmp_path):
    path, data_ijk = oblique_nifti
    viewer = make_napari_viewer()
    (image,) = viewer.open(path, plugin="napari-labeleff")
    mask = (np.asarray(image.data) > 110).astype(np.uint8)
    labels = _labels_for(viewer, image, mask)
    out = tmp_path / "out" / "mask.nii.gz"
    out.parent.mkdir()
    labels.save(str(out), plugin="napari-labeleff")
    written = nib.load(out)
    assert np.abs(written.affine - oblique_affine()).max() <= 1e-4
    assert np.array_equal(np.asarray(written.dataobj), mask.T)
    assert written.get_data_dtype() == np.uint8
    table = (tmp_path / "out" / "mask.ctbl").read_text()
    assert "liver" in table and "255 0 0" in table


def test_writer_without_metadata_uses_layer_affine(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    affine = np.array([[2.0, 0, 0, 5], [0, 1.5, 0, -3], [0, 0, 0.7, 1], [0, 0, 0, 1]])
    labels = viewer.add_labels(np.zeros((4, 5, 6), np.uint8), affine=affine)
    out = tmp_path / "plain.nii"
    labels.save(str(out), plugin="napari-labeleff")
    assert Geometry(nib.load(out).affine).allclose(Geometry.from_napari_affine(affine))


def _refused(labels, path, notes, reason):
    with pytest.warns(UserWarning, match="not a valid writer"):  # napari's own message
        assert labels.save(str(path), plugin="napari-labeleff") == []
    assert any(s == "error" and "Save failed" in m and reason in m for s, m in notes), notes


def test_writer_refuses_source_and_read_only_folder(
    make_napari_viewer, oblique_nifti, tmp_path, notes
):
    path, _ = oblique_nifti
    viewer = make_napari_viewer()
    (image,) = viewer.open(path, plugin="napari-labeleff")
    labels = _labels_for(viewer, image, np.zeros(image.data.shape, np.uint8))
    before = path.read_bytes()
    _refused(labels, path, notes, "source image")
    assert path.read_bytes() == before
    with pytest.raises(LabelEffError, match="source image"):  # direct calls raise
        write_labels(str(path), labels.data, {"metadata": labels.metadata})
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(locked, os.W_OK):  # root ignores permissions: use a missing folder
            _refused(labels, tmp_path / "nowhere" / "m.nii.gz", notes, "does not exist")
        else:
            _refused(labels, locked / "m.nii.gz", notes, "cannot write")
            assert list(locked.iterdir()) == []
    finally:
        locked.chmod(stat.S_IRWXU)


def test_writer_refuses_wrong_shape_labels_layer(make_napari_viewer, tmp_path, notes):
    viewer = make_napari_viewer()
    labels = viewer.add_labels(np.zeros((5, 6), np.uint8))
    _refused(labels, tmp_path / "flat.nii.gz", notes, "(4, 4)")
