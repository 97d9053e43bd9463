"""Checking label arrays and label files against the volume they belong to.

One place for what scribbles and masks must be, used by the CLI, the cohort project
and the annotation session: integer values in an allowed range, stored as uint8; a
label file read from disk must be one channel, on the image's voxel grid.
"""

from __future__ import annotations

import numpy as np

from .._errors import LabelEffError
from ._geometry import Geometry


def check_labels(values, what: str, *, max_value: int = 255, allowed: str | None = None
                 ) -> np.ndarray:
    """``values`` as a uint8 label array, or a clear error.

    Parameters
    ----------
    values : array_like of int
    what : str
        Name for messages (``"scribbles"``, ``"mask"``, a file name...).
    max_value : int
        Largest allowed value (<= 255).
    allowed : str, optional
        Words for the allowed values in the message (default ``"0..max_value"``).

    Raises
    ------
    LabelEffError
        A non-integer dtype, or values outside 0..max_value.
    """
    arr = np.asarray(values)
    if arr.dtype.kind not in "uib":
        raise LabelEffError(f"{what} must hold integers, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() > max_value):
        raise LabelEffError(f"{what} hold values {arr.min()}..{arr.max()}; "
                            f"allowed: {allowed or f'0..{max_value}'}")
    return arr.astype(np.uint8)


def grid_differences(labels: Geometry, image: Geometry, atol: float = 1e-3) -> list[str]:
    """What differs between two voxel grids: spacing, orientation, origin (mm); [] if none."""
    out = []
    if not np.allclose(labels.spacing, image.spacing, atol=atol, rtol=0):
        out.append(f"spacing {_r(labels.spacing)} mm vs the image's {_r(image.spacing)} mm (Z, Y, X)")
    if not np.allclose(labels.direction_lps, image.direction_lps, atol=atol, rtol=0):
        out.append(f"orientation {labels.axcodes} vs the image's {image.axcodes} (direction cosines differ)")
    gap = float(np.linalg.norm(labels.affine_ras[:3, 3] - image.affine_ras[:3, 3]))
    if gap > atol:
        out.append(f"origin {_r(labels.affine_ras[:3, 3])} vs the image's {_r(image.affine_ras[:3, 3])} "
                   f"(RAS mm; {gap:.3g} mm apart)")
    return out


def _r(values) -> tuple:
    return tuple(round(float(v), 3) for v in values)


def read_label_volume(path, shape, geometry: Geometry, *, what: str = "mask",
                      owner: str = "the image", grid: str = "the image's voxel grid"
                      ) -> np.ndarray:
    """Read a label file that must lie on a volume's voxel grid.

    Parameters
    ----------
    path : str or Path
        Any format :func:`~napari_labeleff.io.read_volume` reads.
    shape : tuple of int
        The volume's (Z, Y, X).
    geometry : Geometry
        The volume's geometry.
    what, owner, grid : str
        Words for messages: ``"<what> <path> has shape ... but <owner> has ..."``,
        ``"<what> <path> is not on <grid>: ..."``.

    Returns
    -------
    ndarray, shape (Z, Y, X)
        Integer labels >= 0 (int64 when the file stored whole floats, else its
        integer dtype). Check the range with :func:`check_labels`.

    Raises
    ------
    LabelEffError
        Several channels, another shape or grid, non-integer or negative values.
    """
    from ._read import read_volume

    vol = read_volume(path)
    if vol.channel_axis is not None:
        raise LabelEffError(f"{what} {path} has {vol.n_channels} channels; expected a single label volume")
    if tuple(vol.shape) != tuple(shape):
        raise LabelEffError(f"{what} {path} has shape {vol.shape} (Z, Y, X) but {owner} has {tuple(shape)}")
    differences = grid_differences(vol.geometry, geometry)
    if differences:
        raise LabelEffError(f"{what} {path} is not on {grid}: " + "; ".join(differences))
    data = np.asarray(vol.data)
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)):
            raise LabelEffError(f"{what} {path} holds non-integer values; expected integer labels")
        data = data.astype(np.int64)
    if data.size and data.min() < 0:
        raise LabelEffError(f"{what} {path} holds negative values ({data.min():g}); labels must be >= 0")
    return data
