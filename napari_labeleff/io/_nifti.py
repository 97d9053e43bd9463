"""NIfTI-1/2 reading and writing with nibabel, keeping the exact source affine."""

from __future__ import annotations

import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from .._errors import LabelEffError
from ._geometry import Geometry
from ._volume import Volume, check_dtype, check_spatial_shape, make_volume

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti_name(path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def _affine(header, notes) -> np.ndarray:
    """sform when its code is set, else qform, else pixdim only (NIfTI's method 1)."""
    sform, scode = header.get_sform(coded=True)
    if scode:
        return sform
    qform, qcode = header.get_qform(coded=True)
    if qcode:
        notes.append("sform not set: geometry from the qform")
        return qform
    notes.append("neither sform nor qform set: geometry from pixdim only (no orientation)")
    return header.get_base_affine()


def read_nifti(path: Path) -> Volume:
    """Read a NIfTI file; uncompressed, unscaled files stay a memory map."""
    try:
        img = nib.load(str(path))
    except Exception as err:  # nibabel raises many types for bad headers
        raise LabelEffError(f"{path}: not a readable NIfTI file ({err})") from err
    check_dtype(img.get_data_dtype(), path)
    notes: list[str] = []
    try:
        geometry = Geometry(_affine(img.header, notes))
    except ValueError as err:
        raise LabelEffError(f"{path}: invalid affine in header ({err})") from err

    shape = img.shape
    extra_axes = [a for a in range(3, len(shape)) if shape[a] != 1]
    n_channels = check_spatial_shape(shape[:3], [shape[a] for a in extra_axes], path)
    try:
        raw = np.asanyarray(img.dataobj)
    except (EOFError, OSError, ValueError, zlib.error) as err:
        raise LabelEffError(f"{path}: file is truncated or corrupt ({err})") from err
    raw = raw.reshape(shape[:3] + ((n_channels,) if n_channels else ()), order="F")
    # (i, j, k[, c]) -> (Z, Y, X) or (C, Z, Y, X): a view, so a memmap stays lazy.
    data = raw.T
    lazy = isinstance(raw, np.memmap)
    return make_volume(
        data,
        geometry,
        path,
        "nifti",
        notes=notes,
        lazy=lazy,
        nifti_codes={
            "sform": int(img.header["sform_code"]),
            "qform": int(img.header["qform_code"]),
        },
    )


def _is_orthogonal(affine: np.ndarray) -> bool:
    m = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    return bool(np.allclose(m.T @ m, np.eye(3), atol=1e-6))


def nifti_image(data_ijk: np.ndarray, geometry: Geometry) -> nib.Nifti1Image:
    """A NIfTI-1 image whose sform and qform both hold ``geometry.affine_ras``.

    Code 1 (scanner) is set on both; a sheared affine cannot be a qform, so then the
    qform code is 0 and readers use the sform.
    """
    affine = geometry.affine_ras
    img = nib.Nifti1Image(data_ijk, affine)
    img.header.set_data_dtype(data_ijk.dtype)
    img.set_sform(affine, code=1)
    if _is_orthogonal(affine):
        img.set_qform(affine, code=1)
    else:
        img.set_qform(None, code=0)
    img.header.set_xyzt_units(xyz="mm")
    return img
