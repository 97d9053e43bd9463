"""DICOM series from a folder (SimpleITK / GDCM), with slice-consistency checks.

SimpleITK's series reader only warns about missing slices and stacks whatever it is
given; these checks (the product's own) turn such series into a clear error instead
of a silently distorted volume.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .._errors import LabelEffError
from ._itk import volume_from_image

_TAG_SERIES_UID = "0020|000e"
_TAG_POSITION = "0020|0032"
_TAG_ORIENTATION = "0020|0037"
_TAG_DESCRIPTION = "0008|103e"
_TAG_MODALITY = "0008|0060"


def has_dicom_magic(path: Path) -> bool:
    """True for a file with the DICOM preamble ('DICM' at byte 128); never raises."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def looks_like_dicom_folder(folder: Path, max_files: int = 32) -> bool:
    """True when one of the first ``max_files`` files of ``folder`` is DICOM; never raises."""
    try:
        for n, entry in enumerate(folder.iterdir()):
            if n >= max_files:
                return False
            if entry.is_file() and (entry.suffix.lower() == ".dcm" or has_dicom_magic(entry)):
                return True
    except OSError:
        return False
    return False


def _header(path: str) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise LabelEffError(f"{path}: unreadable DICOM file (corrupt or truncated?)") from err
    return reader


def _tag(reader: sitk.ImageFileReader, tag: str, default: str = "") -> str:
    return reader.GetMetaData(tag).strip() if reader.HasMetaDataKey(tag) else default


def _floats(reader, tag: str, n: int, path: str) -> np.ndarray:
    try:
        values = np.array([float(v) for v in _tag(reader, tag).split("\\")])
    except ValueError:
        values = np.zeros(0)
    if values.size != n:
        raise LabelEffError(f"{path}: DICOM tag {tag} is missing or malformed")
    return values


def _check_slices(uid: str, files: list[str]) -> None:
    """Refuse mixed slices (size/orientation differ, duplicates) and missing slices."""
    headers = [_header(f) for f in files]
    sizes = {h.GetSize()[:2] for h in headers}
    orientations = np.array([_floats(h, _TAG_ORIENTATION, 6, f) for h, f in zip(headers, files)])
    if len(sizes) > 1 or np.abs(orientations - orientations[0]).max() > 1e-4:
        raise LabelEffError(
            f"DICOM series {uid} mixes slices of different size or orientation "
            f"(sizes {sorted(sizes)}); export each acquisition as its own series"
        )
    normal = np.cross(orientations[0, :3], orientations[0, 3:])
    positions = np.array([_floats(h, _TAG_POSITION, 3, f) for h, f in zip(headers, files)])
    along = np.sort(positions @ normal)
    gaps = np.diff(along)
    if np.any(gaps < 1e-3):
        raise LabelEffError(
            f"DICOM series {uid} has {int(np.sum(gaps < 1e-3))} duplicate slice positions "
            "(mixed series or repeated acquisition)"
        )
    step = float(np.median(gaps))
    if np.abs(gaps - step).max() > 0.01 * step + 1e-3:
        raise LabelEffError(
            f"DICOM series {uid} has non-uniform slice positions (gaps from {gaps.min():.3g} "
            f"to {gaps.max():.3g} mm, expected {step:.3g} mm): slices are missing"
        )


def read_dicom(path: Path, series: str | None = None):
    """Read a DICOM series from a folder (or the series of one given DICOM file).

    Parameters
    ----------
    path : Path
        A folder holding DICOM files, or one DICOM file (its series is read).
    series : str, optional
        Series Instance UID to open. By default the series with the most slices.
    """
    folder = path if path.is_dir() else path.parent
    if series is None and not path.is_dir():
        series = _tag(_header(str(path)), _TAG_SERIES_UID) or None
    uids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    if not uids:
        raise LabelEffError(f"{folder}: no DICOM series found in this folder")
    by_uid = {u: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), u)) for u in uids}
    notes = []
    if series is not None:
        if series not in by_uid:
            raise LabelEffError(
                f"series={series!r} is not in {folder}; available series: {', '.join(uids)}"
            )
        uid = series
    else:
        uid = max(uids, key=lambda u: len(by_uid[u]))
        if len(uids) > 1:
            notes.append(
                f"folder has {len(uids)} DICOM series; opened the largest "
                f"(UID {uid}, {len(by_uid[uid])} slices); pass series=<UID> for another"
            )
    files = by_uid[uid]
    first = _header(files[0])
    if len(files) == 1:
        reader = sitk.ImageFileReader()
        reader.SetFileName(files[0])
    else:
        _check_slices(uid, files)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise LabelEffError(f"{folder}: cannot read DICOM series {uid} (corrupt file?)") from err
    return volume_from_image(
        image,
        path,
        "dicom",
        notes=notes,
        series_uid=uid,
        series_uids=uids,
        series_description=_tag(first, _TAG_DESCRIPTION),
        modality=_tag(first, _TAG_MODALITY),
    )
