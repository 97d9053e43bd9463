"""npe2 writer: a labels layer -> NIfTI with the geometry of the image it belongs to.

Geometry comes from the layer's ``metadata["geometry"]`` (set by our reader, sample
data and dock widget on every layer they create); a labels layer from elsewhere falls
back to its own affine (``Geometry.from_napari_affine``). Label names and colours in
``metadata["label_names"]`` / ``metadata["label_colors"]`` ({value: name / "#rrggbb"})
go into the label tables written next to the mask.
"""

from __future__ import annotations

import numpy as np
from napari.utils.colormaps.standardize_color import transform_color
from napari.utils.notifications import show_error

from .._errors import LabelEffError
from ..io import Geometry, write_labels as io_write_labels


def layer_geometry(metadata: dict, affine) -> Geometry:
    """Geometry of a layer: its stored source geometry, else its napari affine."""
    stored = (metadata or {}).get("geometry")
    if stored is not None:
        return Geometry.from_dict(stored)
    matrix = np.asarray(affine.affine_matrix if hasattr(affine, "affine_matrix") else affine)
    if matrix.shape != (4, 4):
        raise LabelEffError(
            f"layer affine has shape {matrix.shape}; only 3D (4, 4) affines can be written"
        )
    return Geometry.from_napari_affine(matrix)


def write_labels(path: str, data, attributes: dict) -> list[str]:
    """Save one labels layer as ``.nii.gz`` / ``.nii`` plus Slicer/ITK-SNAP tables.

    Parameters
    ----------
    path : str
        Output file chosen by the user.
    data : array-like, shape (Z, Y, X)
        The labels (0 = background, c = structure c).
    attributes : dict
        napari layer attributes (``metadata``, ``affine``, ``name``...).

    Returns
    -------
    list of str
        The written files (mask first).

    Raises
    ------
    LabelEffError
        With a one-line reason (wrong extension, would overwrite the source image,
        read-only folder, disk full, labels of the wrong shape...), also shown as a
        notification; nothing is left half-written.
    """
    try:
        return _write(path, data, attributes)
    except LabelEffError as err:
        # napari's save path swallows ValueErrors from writers ("not a valid writer"),
        # so the reason must reach the user here.
        show_error(f"Save failed: {err}")
        raise


def _write(path, data, attributes) -> list[str]:
    meta = attributes.get("metadata") or {}
    geometry = layer_geometry(meta, attributes.get("affine"))
    names = meta.get("label_names")
    colors = meta.get("label_colors")
    written = io_write_labels(
        path,
        np.asarray(data),
        geometry,
        label_names=None if names is None else {int(k): v for k, v in names.items()},
        colors=None if colors is None else {int(k): tuple(transform_color(v)[0, :3]) for k, v in colors.items()},
        source_path=meta.get("source_path"),
    )
    return [str(p) for p in written]
