"""Format dispatch: :func:`read_volume` and :func:`can_read`."""

from __future__ import annotations

from pathlib import Path

from .._errors import LabelEffError
from ._dicom import has_dicom_magic, looks_like_dicom_folder, read_dicom
from ._itk import ITK_SUFFIXES, read_itk
from ._nifti import is_nifti_name, read_nifti
from ._volume import Volume
from ._zarr import looks_like_zarr, read_zarr

SUPPORTED = "NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd), a DICOM folder, zarr/OME-Zarr"


def _kind(path: Path) -> str | None:
    """Which reader handles ``path`` (by name, plus cheap content sniffing); never raises."""
    try:
        if path.is_dir():
            if looks_like_zarr(path):
                return "zarr"
            return "dicom" if looks_like_dicom_folder(path) else None
        if not path.is_file():
            return None
    except OSError:
        return None
    if is_nifti_name(path):
        return "nifti"
    if path.suffix.lower() in ITK_SUFFIXES:
        return "itk"
    if path.suffix.lower() == ".dcm" or has_dicom_magic(path):
        return "dicom"
    return None


def can_read(path) -> bool:
    """Whether :func:`read_volume` supports ``path``, judged by name and a cheap peek.

    Never raises (it backs the npe2 reader, which must return None for other files).
    """
    try:
        return _kind(Path(path)) is not None
    except (TypeError, ValueError):
        return False


def read_volume(path, *, series: str | None = None) -> Volume:
    """Read a 3D or 4D (multi-channel) medical volume with its geometry.

    Parameters
    ----------
    path : str or Path
        NIfTI ``.nii``/``.nii.gz``, NRRD ``.nrrd``/``.nhdr``, MetaImage ``.mha``/``.mhd``,
        a folder of DICOM files (or one DICOM file: its series), or a zarr / OME-Zarr
        store.
    series : str, optional
        DICOM only: the Series Instance UID to open when the folder holds several
        series (default: the one with the most slices, noted in ``metadata["notes"]``).

    Returns
    -------
    Volume
        ``data`` is (Z, Y, X) or (C, Z, Y, X) (numpy, numpy.memmap or dask);
        ``geometry`` holds the exact source affine.

    Raises
    ------
    LabelEffError
        Missing, corrupt, truncated or unsupported files; 2D or >4D images; complex or
        non-numeric voxels; inconsistent DICOM series. NaN/Inf voxels are not an
        error here: they are counted in ``metadata["nonfinite_voxels"]``.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise LabelEffError(f"path={str(path)!r} does not exist")
    kind = _kind(path)
    if kind is None:
        raise LabelEffError(f"path={str(path)!r} is not a supported format; supported: {SUPPORTED}")
    if series is not None and kind != "dicom":
        raise LabelEffError(f"series={series!r} only applies to DICOM, but {path} is {kind}")
    if kind == "nifti":
        return read_nifti(path)
    if kind == "itk":
        return read_itk(path)
    if kind == "zarr":
        return read_zarr(path)
    return read_dicom(path, series)
