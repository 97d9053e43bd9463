"""NRRD / MetaImage (and the pixel side of DICOM) through SimpleITK, LPS geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .._errors import LabelEffError
from ._geometry import Geometry
from ._volume import Volume, check_spatial_shape, make_volume

ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")


def geometry_of(image: sitk.Image, path) -> Geometry:
    """Geometry of the first three axes of a SimpleITK image (3D or 4D)."""
    dim = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(dim, dim)[:3, :3]
    try:
        return Geometry.from_lps(image.GetSpacing()[:3], image.GetOrigin()[:3], direction)
    except ValueError as err:
        raise LabelEffError(f"{path}: invalid geometry ({err})") from err


def volume_from_image(image: sitk.Image, path, fmt: str, notes=(), **extra) -> Volume:
    """Convert a SimpleITK image (3D scalar, 3D vector or 4D) into a :class:`Volume`."""
    dim, n_comp = image.GetDimension(), image.GetNumberOfComponentsPerPixel()
    size = image.GetSize()  # (x, y, z[, t])
    extra_sizes = [n for n in size[3:] if n != 1] + ([n_comp] if n_comp > 1 else [])
    check_spatial_shape(tuple(reversed(size[:3])) if dim >= 3 else size, extra_sizes, path)
    geometry = geometry_of(image, path)
    data = sitk.GetArrayFromImage(image)  # (Z, Y, X), (Z, Y, X, C) or (T, Z, Y, X)
    if n_comp > 1:
        data = np.moveaxis(data, -1, 0)
    data = data.reshape(((-1,) if extra_sizes else ()) + data.shape[-3:])
    return make_volume(data, geometry, path, fmt, notes=notes, **extra)


def read_itk(path: Path) -> Volume:
    """Read NRRD/NHDR or MetaImage (MHA/MHD) with SimpleITK."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        image = reader.Execute()
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1] if str(err).strip() else "unknown error"
        raise LabelEffError(f"{path}: cannot read image (corrupt or truncated?): {first}") from err
    fmt = "nrrd" if path.suffix.lower() in (".nrrd", ".nhdr") else "metaimage"
    return volume_from_image(image, path, fmt)
