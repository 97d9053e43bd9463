"""write_labels / write_volume: dtype, header codes, tables, atomicity, refusals."""

import errno
import os
import re
import stat

import nibabel as nib
import numpy as np
import pytest

from napari_labeleff import LabelEffError
from napari_labeleff.io import Geometry, label_table_paths, read_volume, write_labels, write_volume


@pytest.mark.parametrize("top, dtype", [(1, np.uint8), (255, np.uint8), (256, np.uint16), (70000, np.uint32)])
def test_smallest_unsigned_dtype(tmp_path, top, dtype):
    labels = np.zeros((3, 4, 5), np.int64)
    labels[1, 2, 3] = top
    mask, *_ = write_labels(tmp_path / "m.nii.gz", labels, Geometry.from_spacing())
    img = nib.load(str(mask))
    assert img.get_data_dtype() == dtype
    assert np.asarray(img.dataobj)[3, 2, 1] == top


def test_header_codes_affine_and_tables(tmp_path, oblique_geometry):
    labels = np.zeros((4, 5, 6), np.uint8)
    labels[1:3, 1:3, 1:3] = 2
    outputs = write_labels(tmp_path / "seg.nii", labels, oblique_geometry,
                           label_names={1: "gray matter", 2: "white matter"},
                           colors={2: (1.0, 1.0, 0.0)})
    assert [p.name for p in outputs] == ["seg.nii", "seg.ctbl", "seg.itksnap.txt"]
    assert outputs[1:] == label_table_paths(tmp_path / "seg.nii")
    img = nib.load(str(outputs[0]))
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    np.testing.assert_allclose(img.get_sform(), oblique_geometry.affine_ras, atol=1e-6)
    np.testing.assert_allclose(img.get_qform(), oblique_geometry.affine_ras, atol=1e-4)
    ctbl = outputs[1].read_text().splitlines()
    assert ctbl[0].startswith("# Color table file")
    assert ctbl[2:] == ["0 background 0 0 0 0", "1 gray_matter 230 75 53 255", "2 white_matter 255 255 0 255"]
    txt = outputs[2].read_text().splitlines()
    assert txt[1] == "# ITK-SnAP Label Description File (written by napari-labeleff)"
    assert txt[-1].split() == ["2", "255", "255", "0", "1", "1", "1", '"white', 'matter"']


def test_written_files_get_normal_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    outputs = write_labels(tmp_path / "m.nii.gz", np.ones((2, 2, 2), np.uint8), Geometry.from_spacing())
    for path in outputs:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_sheared_affine_keeps_sform_only(tmp_path):
    affine = np.array([[1.0, 0.3, 0, 0], [0, 1, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]])
    mask, *_ = write_labels(tmp_path / "s.nii.gz", np.ones((3, 3, 3), np.uint8), Geometry(affine))
    img = nib.load(str(mask))
    assert int(img.header["qform_code"]) == 0
    np.testing.assert_allclose(img.affine, affine, atol=1e-6)


def test_write_volume_keeps_dtype_and_channels(tmp_path, rng, oblique_geometry):
    data = rng.normal(size=(2, 4, 5, 6)).astype(np.float64)
    path = write_volume(tmp_path / "img.nii.gz", data, oblique_geometry)
    vol = read_volume(path)
    assert vol.data.dtype == np.float64 and vol.data.shape == data.shape
    np.testing.assert_array_equal(vol.data, data)
    assert vol.geometry.allclose(oblique_geometry, atol=1e-6)


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_read_only_folder_leaves_nothing(tmp_path, monkeypatch):
    """The kernel refuses file creation in a mode-555 folder for normal users; root
    bypasses permission bits, so the refusal is also simulated at mkstemp."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)

    def refuse(*args, dir=None, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(dir))

    monkeypatch.setattr("tempfile.mkstemp", refuse)
    try:
        with pytest.raises(LabelEffError, match=re.escape(f"cannot write {folder / 'm.nii.gz'}: Permission denied; nothing was written")):
            write_labels(folder / "m.nii.gz", np.ones((2, 2, 2), np.uint8), Geometry.from_spacing())
        assert _listing(folder) == []
    finally:
        folder.chmod(0o755)


def test_disk_full_leaves_no_partial_file_and_keeps_old_one(tmp_path, monkeypatch):
    old = write_labels(tmp_path / "m.nii.gz", np.ones((2, 2, 2), np.uint8), Geometry.from_spacing())
    before = {p.name: p.read_bytes() for p in old}

    def half_then_enospc(self, filename, *args, **kwargs):
        with open(filename, "wb") as fh:
            fh.write(b"\x00" * 100)
        raise OSError(errno.ENOSPC, "No space left on device", str(filename))

    monkeypatch.setattr(nib.Nifti1Image, "to_filename", half_then_enospc)
    with pytest.raises(LabelEffError, match=re.escape(f"cannot write {tmp_path / 'm.nii.gz'}: No space left on device")):
        write_labels(tmp_path / "m.nii.gz", np.full((2, 2, 2), 2, np.uint8), Geometry.from_spacing())
    assert {p.name: p.read_bytes() for p in old} == before
    assert _listing(tmp_path) == sorted(before)


def test_never_overwrites_the_source(tmp_path, sphere_volume):
    src = write_volume(tmp_path / "img.nii.gz", sphere_volume[0], Geometry.from_spacing())
    content = src.read_bytes()
    link = tmp_path / "alias.nii.gz"
    link.symlink_to(src)
    for target in (src, link, tmp_path / "." / "img.nii.gz"):
        with pytest.raises(LabelEffError, match="refusing to overwrite the source image"):
            write_labels(target, sphere_volume[1], Geometry.from_spacing(), source_path=src)
        with pytest.raises(LabelEffError, match="refusing to overwrite the source image"):
            write_volume(target, sphere_volume[0], Geometry.from_spacing(), source_path=src)
    assert src.read_bytes() == content


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"path": "m.nrrd"}, "must end with one of .nii, .nii.gz"),
        ({"path": "missing_dir/m.nii.gz"}, "folder .* does not exist"),
        ({"labels": np.zeros((2, 2), np.uint8)}, r"must be a \(Z, Y, X\) array"),
        ({"labels": np.zeros((2, 2, 2), np.float32)}, "must hold integers, got dtype float32"),
        ({"labels": np.full((2, 2, 2), -1)}, "must be >= 0, found -1"),
        ({"geometry": np.eye(4)}, "geometry must be a Geometry, got ndarray"),
        ({"colors": [(0, 0, 0), (2.0, 0, 0)]}, r"colors\[1\]=.* must be 3 RGB floats in 0..1"),
        ({"label_names": "abc"}, "label_names must be a sequence indexed by label or a mapping"),
    ],
)
def test_write_labels_bad_input(tmp_path, kwargs, match):
    args = {"path": "m.nii.gz", "labels": np.ones((2, 2, 2), np.uint8), "geometry": Geometry.from_spacing()}
    args.update(kwargs)
    path = tmp_path / args.pop("path")
    with pytest.raises(LabelEffError, match=match):
        write_labels(path, args.pop("labels"), args.pop("geometry"), **args)
    assert _listing(tmp_path) == []


def test_write_volume_bad_input(tmp_path):
    with pytest.raises(LabelEffError, match=r"data must be \(Z, Y, X\) or \(C, Z, Y, X\)"):
        write_volume(tmp_path / "v.nii.gz", np.zeros((2, 2)), Geometry.from_spacing())
    with pytest.raises(LabelEffError, match="data must be real numeric, got dtype complex128"):
        write_volume(tmp_path / "v.nii.gz", np.zeros((2, 2, 2), complex), Geometry.from_spacing())
    assert _listing(tmp_path) == []
