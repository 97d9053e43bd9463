"""The :class:`Volume` returned by :func:`read_volume`, and the checks every reader shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import LabelEffError
from ._geometry import Geometry

# Bytes per block when scanning a (possibly lazy) array for NaN/Inf.
_SCAN_BLOCK_BYTES = 64 * 2**20


@dataclass
class Volume:
    """A 3D (or multi-channel 3D) image with its geometry.

    Attributes
    ----------
    data : ndarray or dask.array.Array, shape (Z, Y, X) or (C, Z, Y, X)
        Voxel values. Large inputs stay lazy: a ``numpy.memmap`` view for uncompressed
        NIfTI, a dask array for zarr / OME-Zarr.
    geometry : Geometry
        Voxel-to-world geometry of the spatial axes.
    channel_axis : int or None
        0 when ``data`` is (C, Z, Y, X), None for a single-channel (Z, Y, X) volume.
    path : Path or None
        Where the volume was read from.
    metadata : dict
        ``format`` (str), ``notes`` (list of str: choices the reader made),
        ``channel_names`` (list of str, or None), ``nonfinite_voxels`` (int: NaN/Inf
        count; the engine refuses such volumes), plus format-specific entries.
    """

    data: Any
    geometry: Geometry
    channel_axis: int | None = None
    path: Path | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape (Z, Y, X)."""
        return tuple(int(n) for n in self.data.shape[-3:])

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm, (Z, Y, X)."""
        return self.geometry.spacing

    @property
    def n_channels(self) -> int:
        return 1 if self.channel_axis is None else int(self.data.shape[0])


def check_dtype(dtype, path) -> np.dtype:
    """Refuse anything but real integer and floating-point voxels."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "uif":
        kind = "complex" if dtype.kind == "c" else "non-numeric"
        raise LabelEffError(
            f"{path}: voxel type {dtype} is {kind}; only integer or floating-point "
            "images are supported"
        )
    return dtype


def check_spatial_shape(spatial, extra, path) -> int | None:
    """Validate (Z, Y, X) plus extra non-spatial sizes; return the channel count or None.

    ``extra`` holds the sizes of non-spatial axes (singletons already dropped).
    """
    spatial = tuple(int(n) for n in spatial)
    if len(spatial) < 3 or min(spatial) < 2:
        raise LabelEffError(
            f"{path}: image is 2D (spatial shape {spatial}); a 3D volume with at least "
            "2 voxels along each axis is required"
        )
    if len(extra) > 1:
        raise LabelEffError(
            f"{path}: image has {3 + len(extra)} dimensions {spatial + tuple(extra)}; "
            "only 3D volumes or 4D multi-channel volumes are supported"
        )
    return int(extra[0]) if extra else None


def count_nonfinite(data) -> int:
    """Number of NaN/Inf voxels, scanned blockwise so lazy data is never fully loaded."""
    if np.dtype(data.dtype).kind != "f":
        return 0
    import dask.array as da

    if isinstance(data, da.Array):
        return int(da.count_nonzero(~da.isfinite(data)).compute())
    per_row = max(1, int(np.prod(data.shape[1:])) * data.dtype.itemsize)
    step = max(1, _SCAN_BLOCK_BYTES // per_row)
    return int(
        sum(
            np.count_nonzero(~np.isfinite(data[i : i + step]))
            for i in range(0, data.shape[0], step)
        )
    )


def make_volume(data, geometry, path, fmt, *, channel_names=None, notes=(), **extra):
    """Build a :class:`Volume`, filling the metadata every reader reports."""
    if type(data) is np.ndarray and not data.dtype.isnative:  # in memory: cheap, torch-safe
        data = data.astype(data.dtype.newbyteorder("="))
    channel_axis = 0 if data.ndim == 4 else None
    if channel_axis is not None and channel_names is None:
        channel_names = [f"channel {i}" for i in range(data.shape[0])]
    metadata = {
        "format": fmt,
        "notes": list(notes),
        "channel_names": channel_names,
        "nonfinite_voxels": count_nonfinite(data),
        **extra,
    }
    return Volume(data, geometry, channel_axis, Path(path), metadata)
