"""npe2 reader: medical volumes -> napari image layers in physical space.

The layers get ``affine = geometry.napari_affine`` (full rotation, spacing and origin;
world axes (S, P, L) mm) and keep the source geometry in ``metadata`` so masks drawn on
them are written back with the exact source affine. Lazy data (memmap, dask) stays lazy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from napari.utils.notifications import show_error, show_warning
from skimage.filters import threshold_otsu

from .._errors import LabelEffError
from ..io import can_read, read_volume

#: Voxels sampled (at most) to estimate contrast limits of a volume.
_LIMIT_SAMPLES = 2_000_000


def napari_get_reader(path):
    """Return :func:`read_layers` if ``path`` is a volume we read, else None (never raises).

    Parameters
    ----------
    path : str or list of str
        napari passes one path (or a one-element list) per call here.
    """
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    if not isinstance(path, (str, Path)) or not can_read(path):
        return None
    return read_layers


def robust_limits(data) -> tuple[float, float]:
    """Contrast limits: (0.5, 99.5) percentiles of the foreground (voxels above the
    Otsu threshold, which drops air / empty background) of a strided subsample, so
    soft tissue is not washed out by the background; lazy-safe."""
    n = int(np.prod(data.shape))
    step = max(1, int(np.ceil((n / _LIMIT_SAMPLES) ** (1 / data.ndim))))
    sample = np.asarray(data[(slice(None, None, step),) * data.ndim], dtype=np.float64)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return (0.0, 1.0)
    if sample.min() < sample.max():
        foreground = sample[sample > threshold_otsu(sample)]
        if foreground.size >= 0.01 * sample.size:
            sample = foreground
    lo, hi = np.percentile(sample, [0.5, 99.5])
    if hi <= lo:
        lo, hi = float(sample.min()), float(sample.max())
    return (float(lo), float(hi) if hi > lo else float(lo) + 1.0)


def layer_name(path) -> str:
    """File name without the volume suffix (``ct.nii.gz`` -> ``ct``)."""
    name = Path(path).name
    for suffix in (".nii.gz", ".ome.zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem if Path(name).suffix else name


def volume_layer_data(volume, name: str) -> tuple:
    """A (data, kwargs, "image") tuple for a :class:`~napari_labeleff.io.Volume`."""
    geometry = volume.geometry
    meta = {
        "geometry": geometry.to_dict(),
        "affine_ras": geometry.affine_ras.tolist(),
        "source_path": str(volume.path) if volume.path is not None else None,
        "format": volume.metadata.get("format"),
        "notes": list(volume.metadata.get("notes", [])),
    }
    kwargs = {"name": name, "affine": geometry.napari_affine, "metadata": meta}
    if volume.channel_axis is None:
        kwargs["contrast_limits"] = robust_limits(volume.data)
    else:
        names = volume.metadata.get("channel_names") or []
        n = volume.n_channels
        kwargs["channel_axis"] = volume.channel_axis
        kwargs["name"] = [f"{name} [{names[i] if i < len(names) else i}]" for i in range(n)]
        kwargs["contrast_limits"] = [robust_limits(volume.data[i]) for i in range(n)]
        kwargs["metadata"] = [{**meta, "channel_index": i, "n_channels": n} for i in range(n)]
    return (volume.data, kwargs, "image")


def read_layers(path) -> list[tuple] | None:
    """Read one volume; on failure show the one-line reason and return None."""
    if isinstance(path, (list, tuple)):
        path = path[0]
    try:
        volume = read_volume(path)
    except LabelEffError as err:
        show_error(f"Cannot open {Path(path).name}: {err}")
        return None
    except (OSError, RuntimeError, ValueError) as err:  # library errors on corrupt files
        show_error(f"Cannot open {Path(path).name}: {type(err).__name__}: {err}")
        return None
    for note in volume.metadata.get("notes", []):
        show_warning(f"{Path(path).name}: {note}")
    bad = int(volume.metadata.get("nonfinite_voxels", 0))
    if bad:
        show_warning(
            f"{Path(path).name}: {bad} voxels are NaN/Inf; they show as blank and "
            "refinement will refuse this volume until they are fixed"
        )
    return [volume_layer_data(volume, layer_name(path))]
