"""zarr and OME-Zarr (NGFF 0.4 / 0.5) volumes, opened lazily as dask arrays.

OME-Zarr: level 0 of the first multiscale, with its ``scale``/``translation``
coordinate transformations (dataset-level, then multiscale-level). NGFF stores no
anatomical orientation, so the axes get ITK's default (identity direction, LPS).

Plain zarr array: ``attrs["affine_ras"]`` (4x4, NIfTI convention) if present, else
``attrs["spacing"]`` (Z, Y, X mm) with optional ``attrs["origin"]`` (Z, Y, X), else
1 mm voxels. A 4D array is (C, Z, Y, X); ``attrs["channel_names"]`` names channels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from .._errors import LabelEffError
from ._geometry import Geometry
from ._volume import Volume, check_dtype, check_spatial_shape, make_volume

_UNIT_TO_MM = {
    None: 1.0,
    "millimeter": 1.0,
    "micrometer": 1e-3,
    "nanometer": 1e-6,
    "centimeter": 10.0,
    "meter": 1000.0,
}
_ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray")


def looks_like_zarr(path: Path) -> bool:
    """True for a ``*.zarr`` folder or a folder holding zarr metadata; never raises."""
    try:
        return path.is_dir() and (
            path.suffix.lower() == ".zarr" or any((path / m).is_file() for m in _ZARR_MARKERS)
        )
    except OSError:
        return False


def _ome(attrs, key: str):
    """NGFF metadata entry: top-level attrs in 0.4, under ``attrs["ome"]`` in 0.5."""
    return attrs.get(key) or attrs.get("ome", {}).get(key)


def _transform(transforms, kind: str, n: int) -> np.ndarray:
    for t in transforms or ():
        if t.get("type") == kind:
            return np.asarray(t[kind], dtype=float)
    return np.full(n, 1.0 if kind == "scale" else 0.0)


def _ome_level0(group, path):
    """(array, axes, scale, translation, channel names) of an OME-Zarr image group."""
    ms = _ome(group.attrs, "multiscales")[0]
    ds = ms["datasets"][0]
    try:
        arr = group[ds["path"]]
    except KeyError as err:
        raise LabelEffError(f"{path}: OME-Zarr level {ds['path']!r} is missing") from err
    n = arr.ndim
    axes = [a if isinstance(a, dict) else {"name": a} for a in ms.get("axes", [])]
    if len(axes) != n:
        axes = [{"name": name} for name in "tczyx"[-n:]]
    scale = _transform(ds.get("coordinateTransformations"), "scale", n)
    trans = _transform(ds.get("coordinateTransformations"), "translation", n)
    g_scale = _transform(ms.get("coordinateTransformations"), "scale", n)
    g_trans = _transform(ms.get("coordinateTransformations"), "translation", n)
    scale, trans = g_scale * scale, g_scale * trans + g_trans
    channels = (_ome(group.attrs, "omero") or {}).get("channels")
    names = [c.get("label", f"channel {i}") for i, c in enumerate(channels)] if channels else None
    return arr, axes, scale, trans, names


def _ome_volume(group, path) -> Volume:
    import dask.array as da

    arr, axes, scale, trans, names = _ome_level0(group, path)
    check_dtype(arr.dtype, path)
    data = da.from_zarr(arr)
    spatial = [i for i, a in enumerate(axes) if a.get("type") == "space" or a["name"] in ("z", "y", "x")]
    others = [i for i in range(arr.ndim) if i not in spatial]
    kept = [i for i in others if arr.shape[i] != 1]
    if any(axes[i].get("type") == "time" or axes[i]["name"] == "t" for i in kept):
        raise LabelEffError(f"{path}: time series (t > 1) are not supported; save one time point")
    check_spatial_shape([arr.shape[i] for i in spatial], [arr.shape[i] for i in kept], path)
    units = {axes[i].get("unit") for i in spatial}
    unknown = units - set(_UNIT_TO_MM)
    if unknown:
        raise LabelEffError(f"{path}: unsupported spatial unit(s) {sorted(unknown)}")
    to_mm = np.array([_UNIT_TO_MM[axes[i].get("unit")] for i in spatial])
    data = data.transpose(others + spatial).reshape([arr.shape[i] for i in kept + spatial])
    geometry = Geometry.from_spacing(scale[spatial] * to_mm, trans[spatial] * to_mm)
    notes = ["OME-Zarr has no anatomical orientation: identity direction (LPS) assumed"]
    return make_volume(data, geometry, path, "ome-zarr", channel_names=names if kept else None,
                       notes=notes, lazy=True)


def _array_volume(arr, path) -> Volume:
    import dask.array as da

    check_dtype(arr.dtype, path)
    check_spatial_shape(arr.shape[-3:], list(arr.shape[:-3]), path)
    attrs = arr.attrs
    notes = []
    try:
        if "affine_ras" in attrs:
            geometry = Geometry(np.asarray(attrs["affine_ras"], dtype=float))
        elif "spacing" in attrs:
            geometry = Geometry.from_spacing(attrs["spacing"], attrs.get("origin", (0, 0, 0)))
        else:
            geometry = Geometry.from_spacing()
            notes.append("zarr array has no 'affine_ras' or 'spacing' attribute: 1 mm voxels assumed")
    except (ValueError, TypeError) as err:
        raise LabelEffError(f"{path}: invalid geometry attributes ({err})") from err
    names = attrs.get("channel_names") if arr.ndim == 4 else None
    return make_volume(da.from_zarr(arr), geometry, path, "zarr", channel_names=names,
                       notes=notes, lazy=True)


def read_zarr(path: Path) -> Volume:
    """Read a zarr array, a group holding one array, or an OME-Zarr image, lazily."""
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as err:  # zarr raises several types for a damaged store
        raise LabelEffError(f"{path}: not a readable zarr store ({err})") from err
    if isinstance(node, zarr.Array):
        return _array_volume(node, path)
    if _ome(node.attrs, "multiscales"):
        return _ome_volume(node, path)
    names = sorted(node.array_keys())
    if len(names) != 1:
        raise LabelEffError(
            f"{path}: zarr group holds {len(names)} arrays ({', '.join(names) or 'none'}) and "
            "no OME-Zarr multiscales; give the path of one array"
        )
    return _array_volume(node[names[0]], path / names[0])
