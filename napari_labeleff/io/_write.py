"""Atomic NIfTI writers for masks (with label tables) and images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._errors import LabelEffError
from ._atomic import atomic_paths
from ._geometry import Geometry
from ._labeltable import itksnap_txt, label_entries, slicer_ctbl
from ._nifti import NIFTI_SUFFIXES, is_nifti_name, nifti_image


def _nifti_stem(path: Path) -> str:
    name = path.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else name[: -len(".nii")]


def _same_file(a: Path, b) -> bool:
    b = Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _check_target(path, source_path, outputs=()) -> Path:
    path = Path(path).expanduser()
    if not is_nifti_name(path):
        raise LabelEffError(f"path={str(path)!r} must end with one of {', '.join(NIFTI_SUFFIXES)}")
    if not path.parent.is_dir():
        raise LabelEffError(f"cannot write {path}: folder {path.parent} does not exist")
    if source_path is not None:
        for out in (path, *outputs):
            if _same_file(out, source_path):
                raise LabelEffError(
                    f"refusing to overwrite the source image {source_path}; choose another output path"
                )
    return path


def _check_geometry(geometry) -> None:
    if not isinstance(geometry, Geometry):
        raise LabelEffError(f"geometry must be a Geometry, got {type(geometry).__name__}")


def label_table_paths(path) -> list[Path]:
    """The Slicer ``.ctbl`` and ITK-SNAP ``.itksnap.txt`` paths written next to a mask."""
    path = Path(path)
    stem = _nifti_stem(path)
    return [path.with_name(stem + ".ctbl"), path.with_name(stem + ".itksnap.txt")]


def smallest_uint(max_value: int) -> np.dtype:
    """Smallest unsigned integer dtype holding ``max_value``."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if max_value <= np.iinfo(dt).max:
            return np.dtype(dt)
    raise LabelEffError(f"label value {max_value} does not fit in uint32")


def write_labels(path, labels, geometry, *, label_names=None, colors=None, source_path=None):
    """Write a label mask as NIfTI with the source geometry, plus label-name tables.

    Parameters
    ----------
    path : str or Path
        Output ``.nii.gz`` or ``.nii``.
    labels : array-like, shape (Z, Y, X), integer or bool
        0 = background, c = structure c.
    geometry : Geometry
        Geometry of the image the mask belongs to; ``geometry.affine_ras`` is written
        verbatim as sform and qform (code 1, scanner; qform code 0 if sheared).
    label_names, colors : sequence indexed by label, or mapping {label: value}, optional
        Names and RGB colours (floats 0..1) for the tables; defaults fill the gaps.
    source_path : str or Path, optional
        The image's own file: writing onto it (or onto its table names) is refused.

    Returns
    -------
    list of Path
        ``[mask, <stem>.ctbl (3D Slicer), <stem>.itksnap.txt (ITK-SNAP)]``.

    Raises
    ------
    LabelEffError
        Bad path/extension, would overwrite the source, non-integer or negative
        labels, not 3D, or the write failed (nothing is left behind then).
    """
    tables = label_table_paths(path) if is_nifti_name(path) else []
    path = _check_target(path, source_path, tables)
    _check_geometry(geometry)
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise LabelEffError(f"labels must be a (Z, Y, X) array, got shape {labels.shape}")
    if labels.dtype.kind not in "uib":
        raise LabelEffError(f"labels must hold integers, got dtype {labels.dtype}")
    low, high = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
    if low < 0:
        raise LabelEffError(f"labels must be >= 0, found {low}")
    data_ijk = labels.T.astype(smallest_uint(high), copy=False)
    rows = label_entries(high, label_names, colors)
    outputs = [path, *tables]
    with atomic_paths(*outputs) as (tmp_mask, tmp_ctbl, tmp_txt):
        nifti_image(data_ijk, geometry).to_filename(tmp_mask)
        tmp_ctbl.write_text(slicer_ctbl(rows), encoding="utf-8")
        tmp_txt.write_text(itksnap_txt(rows), encoding="utf-8")
    return outputs


def write_volume(path, data, geometry, *, source_path=None) -> Path:
    """Write an image volume as NIfTI with ``geometry.affine_ras`` (used by ``convert``).

    Parameters
    ----------
    path : str or Path
        Output ``.nii.gz`` or ``.nii``.
    data : array-like, shape (Z, Y, X) or (C, Z, Y, X)
        Any real numeric dtype (float16 is stored as float32, bool as uint8); lazy
        arrays are computed. Channels become the 4th NIfTI axis.
    geometry : Geometry
    source_path : str or Path, optional
        Refuse to write onto this file.

    Returns
    -------
    Path
        The written file.
    """
    path = _check_target(path, source_path)
    _check_geometry(geometry)
    data = np.asarray(data)
    if data.ndim not in (3, 4):
        raise LabelEffError(f"data must be (Z, Y, X) or (C, Z, Y, X), got shape {data.shape}")
    if data.dtype.kind not in "uifb":
        raise LabelEffError(f"data must be real numeric, got dtype {data.dtype}")
    if data.dtype == np.float16:
        data = data.astype(np.float32)
    elif data.dtype.kind == "b":
        data = data.astype(np.uint8)
    with atomic_paths(path) as (tmp,):
        nifti_image(data.T, geometry).to_filename(tmp)
    return path
