"""Geometry round trips: read X -> write a mask -> reread; affine and voxel grid must match.

Sources: oblique NIfTI (RAS), NRRD in LPS and in RAS space, MetaImage, and a DICOM
series written here with SimpleITK. The mask marks one voxel; it must land on X's
voxel (i, j, k) and at the same physical point according to nibabel and SimpleITK.
"""

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from napari_labeleff.io import read_volume, write_labels

SHAPE_ZYX = (9, 11, 13)
MARK_ZYX = (6, 3, 10)
MARK_IJK = MARK_ZYX[::-1]


def _marked_image():
    data = np.zeros(SHAPE_ZYX, np.int16)
    data[MARK_ZYX] = 1000
    return data


def _rotation(ax, ay, az):
    ax, ay, az = np.deg2rad([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


SPACING_XYZ = (0.6, 0.85, 2.2)
ORIGIN = (-40.5, 17.25, 60.0)
DIRECTION = _rotation(15, -10, 25)


def _write_nifti_ras(folder):
    affine = np.eye(4)
    affine[:3, :3] = DIRECTION @ np.diag(SPACING_XYZ)
    affine[:3, 3] = ORIGIN
    img = nib.Nifti1Image(_marked_image().T, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    path = folder / "x.nii.gz"
    img.to_filename(str(path))
    return path


def _write_itk(folder, name):
    image = sitk.GetImageFromArray(_marked_image())
    image.SetSpacing(SPACING_XYZ)
    image.SetOrigin(ORIGIN)
    image.SetDirection(DIRECTION.ravel().tolist())
    path = folder / name
    sitk.WriteImage(image, str(path))
    return path


def _vec(v):
    return "(" + ",".join(f"{x:.12g}" for x in v) + ")"


def _write_nrrd_ras(folder):
    """A NRRD in RAS space (ITK must convert it to LPS), header written by hand."""
    vectors = (DIRECTION @ np.diag(SPACING_XYZ)).T  # one row per voxel axis i, j, k
    header = "\n".join([
        "NRRD0004",
        "type: int16",
        "dimension: 3",
        "space: right-anterior-superior",
        f"sizes: {' '.join(str(n) for n in SHAPE_ZYX[::-1])}",
        f"space directions: {' '.join(_vec(v) for v in vectors)}",
        "kinds: domain domain domain",
        "endian: little",
        "encoding: raw",
        f"space origin: {_vec(ORIGIN)}",
    ])
    path = folder / "ras.nrrd"
    path.write_bytes(header.encode() + b"\n\n" + _marked_image().astype("<i2").tobytes())
    return path


def _write_dicom(folder, write_dicom_series):
    write_dicom_series(folder / "dcm", _marked_image(), spacing_xyz=SPACING_XYZ, origin=ORIGIN,
                       direction=DIRECTION)
    return folder / "dcm"


def _source_point(path):
    """Physical LPS point of the marker according to SimpleITK reading the source."""
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path)))
        image = reader.Execute()
    else:
        image = sitk.ReadImage(str(path))
    marker = np.argwhere(sitk.GetArrayFromImage(image) == 1000)
    assert len(marker) == 1
    return image.TransformIndexToPhysicalPoint([int(v) for v in marker[0][::-1]])


@pytest.mark.parametrize("source", ["nifti_ras", "nrrd_lps", "nrrd_ras", "mha_lps", "dicom_lps"])
def test_mask_round_trip_matches_source_grid(tmp_path, source, write_dicom_series):
    path = {
        "nifti_ras": lambda: _write_nifti_ras(tmp_path),
        "nrrd_lps": lambda: _write_itk(tmp_path, "x.nrrd"),
        "nrrd_ras": lambda: _write_nrrd_ras(tmp_path),
        "mha_lps": lambda: _write_itk(tmp_path, "x.mha"),
        "dicom_lps": lambda: _write_dicom(tmp_path, write_dicom_series),
    }[source]()
    vol = read_volume(path)
    assert vol.geometry.is_oblique
    assert vol.spacing == pytest.approx(SPACING_XYZ[::-1], abs=1e-5)

    mask = (np.asarray(vol.data) == 1000).astype(np.uint8)
    assert mask[MARK_ZYX] == 1
    out, *_ = write_labels(tmp_path / "mask.nii.gz", mask, vol.geometry, source_path=path)

    # nibabel: same affine as the source, marker at the source's (i, j, k)
    written = nib.load(str(out))
    expected = np.eye(4)
    expected[:3, :3] = DIRECTION @ np.diag(SPACING_XYZ)
    expected[:3, 3] = ORIGIN
    if source not in ("nifti_ras", "nrrd_ras"):  # ITK sources are in LPS
        expected = np.diag([-1.0, -1, 1, 1]) @ expected
    assert np.abs(written.affine - expected).max() <= 1e-4
    assert np.abs(written.affine - vol.geometry.affine_ras).max() <= 1e-4
    assert tuple(np.argwhere(np.asarray(written.dataobj) == 1)[0]) == MARK_IJK

    # reread with our reader and with SimpleITK: same grid, same physical point
    again = read_volume(out)
    assert again.geometry.allclose(vol.geometry, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(again.data), mask)
    itk_mask = sitk.ReadImage(str(out))
    idx = [int(v) for v in np.argwhere(sitk.GetArrayFromImage(itk_mask) == 1)[0][::-1]]
    assert tuple(idx) == MARK_IJK
    np.testing.assert_allclose(itk_mask.TransformIndexToPhysicalPoint(idx), _source_point(path), atol=1e-4)


def test_napari_affine_shows_anterior_at_the_top(tmp_path):
    """Axis-aligned RAS scan: higher j is anterior; napari's vertical world axis (P)
    must decrease with it, so anterior is drawn at lower y (top of the screen)."""
    data = np.zeros((5, 6, 7), np.int16)
    data[2, 5, 3] = 1  # most anterior row (j = 5)
    nib.Nifti1Image(data.T, np.diag([1.5, 1.5, 3.0, 1.0])).to_filename(str(tmp_path / "ras.nii.gz"))
    vol = read_volume(tmp_path / "ras.nii.gz")
    aff = vol.geometry.napari_affine
    anterior = aff @ np.array([2, 5, 3, 1.0])
    posterior = aff @ np.array([2, 0, 3, 1.0])
    assert anterior[1] < posterior[1]
    # radiological convention: the patient's right (high i in RAS) on the screen's left
    patient_right = aff @ np.array([2, 0, 6, 1.0])
    patient_left = aff @ np.array([2, 0, 0, 1.0])
    assert patient_right[2] < patient_left[2]
