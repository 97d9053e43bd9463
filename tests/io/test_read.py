"""read_volume / can_read: every format, laziness, and every kind of bad input."""

import gzip

import dask.array as da
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import zarr

from napari_labeleff import LabelEffError
from napari_labeleff.io import Geometry, can_read, read_volume


def _save_nifti(path, data_zyx, affine=np.eye(4)):
    img = nib.Nifti1Image(np.asarray(data_zyx).T, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.to_filename(str(path))
    return path


# ---- NIfTI ----------------------------------------------------------------------------
def test_nifti_3d_uncompressed_is_lazy_memmap(tmp_path, sphere_volume, oblique_geometry):
    image, _ = sphere_volume
    path = _save_nifti(tmp_path / "x.nii", image, oblique_geometry.affine_ras)
    vol = read_volume(path)
    assert isinstance(vol.data, np.memmap) and vol.metadata["lazy"]
    assert vol.shape == image.shape and vol.channel_axis is None
    np.testing.assert_array_equal(vol.data, image)
    np.testing.assert_allclose(vol.geometry.affine_ras, oblique_geometry.affine_ras, atol=1e-6)
    assert vol.spacing == pytest.approx((2.5, 0.9, 0.7))
    assert vol.metadata["format"] == "nifti" and vol.metadata["nonfinite_voxels"] == 0


def test_nifti_4d_channels_last_becomes_channels_first(tmp_path, rng):
    data_ijkc = rng.normal(size=(10, 8, 6, 3)).astype(np.float32)
    nib.Nifti1Image(data_ijkc, np.diag([1.0, 2.0, 3.0, 1.0])).to_filename(str(tmp_path / "c.nii.gz"))
    vol = read_volume(tmp_path / "c.nii.gz")
    assert vol.data.shape == (3, 6, 8, 10) and vol.channel_axis == 0 and vol.shape == (6, 8, 10)
    np.testing.assert_array_equal(vol.data[2], data_ijkc[..., 2].T)
    assert vol.metadata["channel_names"] == ["channel 0", "channel 1", "channel 2"]


def test_nifti_prefers_sform_then_qform(tmp_path):
    data = np.zeros((4, 5, 6), np.int16).T
    sform, qform = np.diag([2.0, 2.0, 2.0, 1.0]), np.diag([3.0, 3.0, 3.0, 1.0])
    img = nib.Nifti1Image(data, None)
    img.set_sform(sform, code=2)
    img.set_qform(qform, code=1)
    img.to_filename(str(tmp_path / "both.nii"))
    assert read_volume(tmp_path / "both.nii").spacing == (2.0, 2.0, 2.0)
    img.set_sform(sform, code=0)
    img.to_filename(str(tmp_path / "qonly.nii"))
    vol = read_volume(tmp_path / "qonly.nii")
    assert vol.spacing == (3.0, 3.0, 3.0) and any("qform" in n for n in vol.metadata["notes"])


def test_big_endian_nifti_is_loaded_in_native_byte_order(tmp_path, sphere_volume):
    path = tmp_path / "be.nii.gz"
    header = nib.Nifti1Header(endianness=">")
    nib.Nifti1Image(sphere_volume[0].T.astype(">f4"), np.eye(4), header=header).to_filename(str(path))
    assert nib.load(str(path)).get_data_dtype().byteorder == ">"
    vol = read_volume(path)
    assert vol.data.dtype.isnative
    np.testing.assert_array_equal(vol.data, sphere_volume[0])


def test_nan_and_inf_are_loaded_and_counted(tmp_path, sphere_volume):
    image = sphere_volume[0].copy()
    image[0, 0, :3] = np.nan
    image[1, 1, 1] = np.inf
    vol = read_volume(_save_nifti(tmp_path / "nan.nii.gz", image))
    assert vol.metadata["nonfinite_voxels"] == 4


# ---- NRRD / MetaImage ---------------------------------------------------------------
@pytest.mark.parametrize("suffix, fmt", [(".nrrd", "nrrd"), (".mha", "metaimage"), (".mhd", "metaimage")])
def test_itk_formats(tmp_path, sphere_volume, suffix, fmt):
    image, _ = sphere_volume
    itk = sitk.GetImageFromArray(image)
    itk.SetSpacing((0.5, 0.75, 3.0))
    itk.SetOrigin((10.0, -20.0, 5.0))
    sitk.WriteImage(itk, str(tmp_path / f"x{suffix}"))
    vol = read_volume(tmp_path / f"x{suffix}")
    np.testing.assert_array_equal(vol.data, image)
    assert vol.spacing == pytest.approx((3.0, 0.75, 0.5)) and vol.metadata["format"] == fmt
    np.testing.assert_allclose(vol.geometry.origin_lps, [10.0, -20.0, 5.0])
    assert vol.geometry.axcodes == "LPS"


def test_vector_nrrd_becomes_channels(tmp_path, rng):
    data = rng.integers(0, 100, size=(5, 6, 7, 2)).astype(np.int16)
    sitk.WriteImage(sitk.GetImageFromArray(data, isVector=True), str(tmp_path / "v.nrrd"))
    vol = read_volume(tmp_path / "v.nrrd")
    assert vol.data.shape == (2, 5, 6, 7) and vol.channel_axis == 0
    np.testing.assert_array_equal(vol.data[1], data[..., 1])


# ---- DICOM --------------------------------------------------------------------------
def test_dicom_folder_with_two_series_opens_the_largest_or_the_chosen(tmp_path, write_dicom_series, rng):
    big = rng.integers(-100, 100, size=(7, 8, 9)).astype(np.int16)
    small = rng.integers(-100, 100, size=(4, 8, 9)).astype(np.int16)
    write_dicom_series(tmp_path / "d", big, uid="1.2.3.4.1001")
    write_dicom_series(tmp_path / "d", small, uid="1.2.3.4.1002", origin=(0.0, 0.0, 50.0))
    vol = read_volume(tmp_path / "d")
    np.testing.assert_array_equal(vol.data, big)
    assert vol.metadata["series_uid"] == "1.2.3.4.1001"
    assert "2 DICOM series" in vol.metadata["notes"][0] and "7 slices" in vol.metadata["notes"][0]
    chosen = read_volume(tmp_path / "d", series="1.2.3.4.1002")
    np.testing.assert_array_equal(chosen.data, small)
    one_file = read_volume(sorted((tmp_path / "d").glob("*1002_*_000.dcm"))[0])
    assert one_file.metadata["series_uid"] == "1.2.3.4.1002"
    with pytest.raises(LabelEffError, match="series='9.9' is not in .*available series"):
        read_volume(tmp_path / "d", series="9.9")


def test_dicom_missing_slice_is_refused(tmp_path, write_dicom_series):
    write_dicom_series(tmp_path / "gap", np.zeros((6, 4, 4)), skip={3})
    with pytest.raises(LabelEffError, match="non-uniform slice positions.*missing"):
        read_volume(tmp_path / "gap")


def test_dicom_mixed_series_is_refused(tmp_path, write_dicom_series):
    write_dicom_series(tmp_path / "mix", np.zeros((3, 4, 4)), uid="1.2.3.7")
    write_dicom_series(tmp_path / "mix", np.zeros((3, 5, 5)), uid="1.2.3.7", origin=(0.0, 0.0, 6.0))
    with pytest.raises(LabelEffError, match="mixes slices of different size"):
        read_volume(tmp_path / "mix")


# ---- zarr / OME-Zarr ------------------------------------------------------------------
def test_plain_zarr_array_is_lazy_with_affine_or_spacing(tmp_path, sphere_volume, oblique_geometry):
    image, _ = sphere_volume
    arr = zarr.create_array(str(tmp_path / "a.zarr"), shape=image.shape, chunks=(4, 8, 8), dtype="f4")
    arr[:] = image
    arr.attrs["affine_ras"] = oblique_geometry.affine_ras.tolist()
    vol = read_volume(tmp_path / "a.zarr")
    assert isinstance(vol.data, da.Array) and vol.metadata["format"] == "zarr"
    np.testing.assert_array_equal(vol.data.compute(), image)
    assert vol.geometry.allclose(oblique_geometry, atol=1e-9)
    arr2 = zarr.create_array(str(tmp_path / "s.zarr"), shape=image.shape, dtype="i2")
    arr2.attrs["spacing"] = [3.0, 2.0, 1.0]
    assert read_volume(tmp_path / "s.zarr").spacing == (3.0, 2.0, 1.0)


def test_ome_zarr_level0_scale_translation_channels(tmp_path, rng):
    data = rng.normal(size=(2, 6, 7, 8)).astype(np.float32)
    group = zarr.open_group(str(tmp_path / "img.ome.zarr"), mode="w", zarr_format=2)
    group.create_array("0", shape=data.shape, chunks=(1, 3, 7, 8), dtype="f4")[:] = data
    group.create_array("1", shape=(2, 3, 4, 4), dtype="f4")
    group.attrs["multiscales"] = [{
        "version": "0.4",
        "axes": [{"name": "c", "type": "channel"}] + [
            {"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"],
        "datasets": [
            {"path": "0", "coordinateTransformations": [
                {"type": "scale", "scale": [1.0, 2000.0, 500.0, 500.0]},
                {"type": "translation", "translation": [0.0, 1000.0, 0.0, -500.0]}]},
            {"path": "1", "coordinateTransformations": [
                {"type": "scale", "scale": [1.0, 4000.0, 1000.0, 1000.0]}]},
        ],
    }]
    group.attrs["omero"] = {"channels": [{"label": "T1"}, {"label": "FLAIR"}]}
    vol = read_volume(tmp_path / "img.ome.zarr")
    assert vol.data.shape == (2, 6, 7, 8) and vol.channel_axis == 0
    assert vol.spacing == pytest.approx((2.0, 0.5, 0.5))
    np.testing.assert_allclose(vol.geometry.napari_affine[:3, 3], [1.0, 0.0, -0.5])
    assert vol.metadata["channel_names"] == ["T1", "FLAIR"] and vol.metadata["format"] == "ome-zarr"
    np.testing.assert_array_equal(vol.data.compute(), data)


def test_ome_zarr_0_5_with_time_and_metadata_under_ome(tmp_path, rng):
    data = rng.integers(0, 1000, size=(1, 5, 6, 7)).astype(np.uint16)
    group = zarr.open_group(str(tmp_path / "v5.zarr"), mode="w", zarr_format=3)
    group.create_array("s0", shape=data.shape, dtype="u2")[:] = data
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": "t", "type": "time"}] + [
            {"name": n, "type": "space", "unit": "millimeter"} for n in "zyx"],
        "datasets": [{"path": "s0", "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, 3.0, 1.5, 1.5]}]}],
    }]}
    vol = read_volume(tmp_path / "v5.zarr")
    assert vol.data.shape == (5, 6, 7) and vol.channel_axis is None
    assert vol.spacing == (3.0, 1.5, 1.5)
    np.testing.assert_array_equal(vol.data.compute(), data[0])
    big_t = zarr.open_group(str(tmp_path / "t.zarr"), mode="w", zarr_format=3)
    big_t.create_array("s0", shape=(2, 5, 6, 7), dtype="u2")
    big_t.attrs["ome"] = group.attrs["ome"]
    with pytest.raises(LabelEffError, match="time series"):
        read_volume(tmp_path / "t.zarr")


def test_zarr_group_with_several_plain_arrays_is_refused(tmp_path):
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("a", shape=(3, 3, 3), dtype="u1")
    group.create_array("b", shape=(3, 3, 3), dtype="u1")
    with pytest.raises(LabelEffError, match="holds 2 arrays .*give the path of one array"):
        read_volume(tmp_path / "g.zarr")


# ---- bad input ----------------------------------------------------------------------
def test_missing_path(tmp_path):
    with pytest.raises(LabelEffError, match="does not exist"):
        read_volume(tmp_path / "nope.nii.gz")


def test_unknown_format(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG....")
    with pytest.raises(LabelEffError, match="not a supported format"):
        read_volume(tmp_path / "x.png")


def test_series_for_non_dicom(tmp_path, sphere_volume):
    path = _save_nifti(tmp_path / "x.nii.gz", sphere_volume[0])
    with pytest.raises(LabelEffError, match="series='1.2' only applies to DICOM"):
        read_volume(path, series="1.2")


def test_corrupt_nifti(tmp_path):
    (tmp_path / "bad.nii.gz").write_bytes(b"this is not gzip at all")
    with pytest.raises(LabelEffError, match="not a readable NIfTI"):
        read_volume(tmp_path / "bad.nii.gz")


@pytest.mark.parametrize("name", ["t.nii.gz", "t.nii"])
def test_truncated_nifti(tmp_path, sphere_volume, name):
    full = _save_nifti(tmp_path / f"full_{name}", sphere_volume[0]).read_bytes()
    raw = gzip.decompress(full) if name.endswith(".gz") else full
    cut = raw[: len(raw) // 2]
    (tmp_path / name).write_bytes(gzip.compress(cut) if name.endswith(".gz") else cut)
    with pytest.raises(LabelEffError, match="truncated or corrupt"):
        read_volume(tmp_path / name)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_corrupt_itk_file(tmp_path, suffix):
    (tmp_path / f"bad{suffix}").write_bytes(b"garbage header\x00\x01")
    with pytest.raises(LabelEffError, match="cannot read image"):
        read_volume(tmp_path / f"bad{suffix}")


def test_2d_image_is_refused(tmp_path):
    nib.Nifti1Image(np.zeros((10, 12), np.float32), np.eye(4)).to_filename(str(tmp_path / "flat.nii"))
    sitk.WriteImage(sitk.Image(10, 12, sitk.sitkUInt8), str(tmp_path / "flat.mha"))
    for name in ("flat.nii", "flat.mha"):
        with pytest.raises(LabelEffError, match="image is 2D"):
            read_volume(tmp_path / name)


def test_more_than_4d_is_refused(tmp_path):
    nib.Nifti1Image(np.zeros((4, 4, 4, 2, 3), np.float32), np.eye(4)).to_filename(str(tmp_path / "5d.nii"))
    with pytest.raises(LabelEffError, match="5 dimensions.*only 3D volumes or 4D"):
        read_volume(tmp_path / "5d.nii")


def test_complex_and_non_numeric_dtypes_are_refused(tmp_path):
    nib.Nifti1Image(np.zeros((4, 4, 4), np.complex64), np.eye(4)).to_filename(str(tmp_path / "c.nii"))
    with pytest.raises(LabelEffError, match="complex64 is complex"):
        read_volume(tmp_path / "c.nii")
    rgb = np.zeros((4, 4, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.Nifti1Image(rgb, np.eye(4)).to_filename(str(tmp_path / "rgb.nii"))
    with pytest.raises(LabelEffError, match="is non-numeric"):
        read_volume(tmp_path / "rgb.nii")
    arr = zarr.create_array(str(tmp_path / "b.zarr"), shape=(4, 4, 4), dtype="bool")
    arr[:] = True
    with pytest.raises(LabelEffError, match="bool is non-numeric"):
        read_volume(tmp_path / "b.zarr")


def test_can_read_never_raises(tmp_path, sphere_volume, write_dicom_series):
    nifti = _save_nifti(tmp_path / "x.nii.gz", sphere_volume[0])
    write_dicom_series(tmp_path / "dcm", np.zeros((3, 4, 4)))
    zarr.create_array(str(tmp_path / "z.zarr"), shape=(3, 3, 3), dtype="u1")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    assert can_read(nifti) and can_read(tmp_path / "dcm") and can_read(tmp_path / "z.zarr")
    assert can_read(next((tmp_path / "dcm").iterdir()))
    for bad in (tmp_path / "notes.txt", tmp_path / "empty", tmp_path / "missing.nii", None, 3, "\0"):
        assert can_read(bad) is False


def test_geometry_constructor_rejects_singular_affine():
    with pytest.raises(ValueError, match="singular"):
        Geometry(np.diag([1.0, 0.0, 1.0, 1.0]))
