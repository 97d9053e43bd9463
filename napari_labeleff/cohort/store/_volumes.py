"""The project's volumes: records in ``project.json``, their images on disk."""

from __future__ import annotations

import os
import uuid
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np

from ..._errors import LabelEffError
from ...io import can_read, read_volume
from ...session import STORE_SUFFIX, volume_checksum
from ._records import ROLES, Room, VolumeRecord, now, safe_id, volume_stem

#: A spacing this many times larger or smaller than the project's median (any axis) warns.
SPACING_RATIO_WARN = 3.0


class Volumes(Room):
    """Volume records (add, remove, relocate, roles) and reading their images.

    ``store`` is the :class:`~.ProjectStore` this belongs to (its ``file`` and its
    ``labels``, which create a new volume's annotation store)."""

    @property
    def records(self) -> list[VolumeRecord]:
        return [VolumeRecord.from_dict(v) for v in self._file.data["volumes"]]

    @property
    def ids(self) -> list[str]:
        return [v["id"] for v in self._file.data["volumes"]]

    def get(self, vid: str) -> VolumeRecord:
        for v in self._file.data["volumes"]:
            if v["id"] == vid:
                return VolumeRecord.from_dict(v)
        raise LabelEffError(
            f"volume={vid!r} is not in project {self._file.folder.name}; "
            f"volumes: {', '.join(self.ids) or '(none)'}"
        )

    def add(self, path, *, series: str | None = None, volume_id: str | None = None,
            stacklevel: int = 2) -> str:
        """See :meth:`Project.add`; ``stacklevel`` of the spacing warning (2: the caller)."""
        file = self._file
        file.writer("add volumes")
        path = Path(path).expanduser().absolute()
        if path.is_dir() and not can_read(path):
            raise LabelEffError(
                f"path={str(path)!r} is a folder but not a DICOM series or zarr store; "
                "add its files with Project.add_folder"
            )
        vol = read_volume(path, series=series)
        data = file.edit()
        if data["channels"] is not None and vol.n_channels != data["channels"]:
            raise LabelEffError(
                f"{path} has {vol.n_channels} channel(s) but the volumes of this project have "
                f"{data['channels']}; a project holds one kind of scan (same channels)"
            )
        checksum = volume_checksum(vol.data)
        for v in data["volumes"]:
            if v["checksum"] == checksum:
                raise LabelEffError(f"{path} is already in the project as volume {v['id']!r} (same content)")
        _warn_spacing(path, vol.spacing, data["volumes"], stacklevel + 1)
        vid = _new_id(path, volume_id, {v["id"].lower() for v in data["volumes"]})
        record = VolumeRecord(
            id=vid, path=str(path), checksum=checksum, shape=vol.shape, spacing=vol.spacing,
            affine=vol.geometry.affine_ras.tolist(), channels=vol.n_channels,
            dtype=str(vol.data.dtype), series=series, added=now(),
        )
        self._store.labels.create_store(record)
        data["volumes"].append(record.to_dict())
        if data["channels"] is None:
            data["channels"] = vol.n_channels
        file.commit(data)
        return vid

    def add_folder(self, folder, *, recursive: bool = False, stacklevel: int = 2):
        """See :meth:`Project.add_folder`."""
        self._file.writer("add volumes")
        folder = Path(folder).expanduser().absolute()
        if not folder.is_dir():
            raise LabelEffError(f"folder={str(folder)!r} is not a folder")
        if can_read(folder):
            return [self.add(folder, stacklevel=stacklevel + 1)], []
        added, skipped = [], []
        for entry in volume_entries(folder, recursive):
            try:
                added.append(self.add(entry, stacklevel=stacklevel + 1))
            except LabelEffError as err:
                skipped.append(f"{entry}: {err}")
        if not added and not skipped:
            raise LabelEffError(f"folder={str(folder)!r} holds no volume that napari-labeleff reads")
        return added, skipped

    def remove(self, vid: str) -> None:
        """See :meth:`Project.remove`."""
        file = self._file
        file.writer("remove volumes")
        self.get(vid)
        data = file.edit()
        data["volumes"] = [v for v in data["volumes"] if v["id"] != vid]
        if not data["volumes"]:
            data["channels"] = None
        file.commit(data)
        src = file.folder / "volumes" / vid
        if src.exists():
            dst = file.folder / "trash" / f"{vid}-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
            dst.parent.mkdir(exist_ok=True)
            os.replace(src, dst)

    def relocate(self, vid: str, new_path) -> None:
        """See :meth:`Project.relocate`."""
        self._file.writer("relocate a volume")
        rec = self.get(vid)
        new_path = Path(new_path).expanduser().absolute()
        vol = read_volume(new_path, series=rec.series)
        checksum = volume_checksum(vol.data)
        if checksum != rec.checksum:
            raise LabelEffError(
                f"{new_path} is not volume {vid!r}: its content differs (checksum "
                f"{checksum[:12]}... vs {rec.checksum[:12]}...); choose the moved copy of {rec.path}"
            )
        self.update(vid, path=str(new_path))

    def set_role(self, vid: str, role: str) -> None:
        """See :meth:`Project.set_role`."""
        self._file.writer("change a volume's role")
        if role not in ROLES:
            raise LabelEffError(f"role={role!r} must be one of {', '.join(ROLES)}")
        self.get(vid)
        self.update(vid, role=role)

    def update(self, vid: str, **changes) -> None:
        """Change fields of ``vid``'s record and save."""
        data = self._file.edit()
        for v in data["volumes"]:
            if v["id"] == vid:
                v.update(changes)
        self._file.commit(data)

    # ---- images --------------------------------------------------------------------------
    def image_path(self, vid: str) -> Path:
        """See :meth:`Project.image_path`."""
        rec = self.get(vid)
        path = Path(rec.path)
        if not path.exists():
            raise LabelEffError(
                f"volume {vid!r}: image {path} is missing (moved or deleted); if it moved, "
                f"run Project.relocate({vid!r}, NEW_PATH) or `labeleff project relocate "
                f"{self._file.folder} {vid} NEW_PATH`"
            )
        return path

    def read_image(self, vid: str, *, verify: bool = True):
        """See :meth:`Project.read_image`."""
        rec = self.get(vid)
        vol = read_volume(self.image_path(vid), series=rec.series)
        if vol.shape != rec.shape or vol.n_channels != rec.channels:
            raise LabelEffError(
                f"volume {vid!r}: {rec.path} now has shape {vol.shape} and {vol.n_channels} "
                f"channel(s), the project recorded {rec.shape} and {rec.channels}; "
                "the file was replaced: relocate the volume to its original image"
            )
        if verify and volume_checksum(vol.data) != rec.checksum:
            raise LabelEffError(
                f"volume {vid!r}: the content of {rec.path} changed since it was added "
                "(checksum differs); relocate the volume to its original image"
            )
        return vol


def _new_id(path: Path, volume_id, taken: set) -> str:
    if volume_id is not None:
        vid = safe_id(str(volume_id))
        if vid != volume_id or vid.lower() in taken:
            raise LabelEffError(
                f"volume_id={volume_id!r} must be unique and use only letters, digits, '.', '_', '-'"
            )
        return vid
    base = vid = safe_id(volume_stem(path))
    n = 2
    while vid.lower() in taken:
        vid, n = f"{base}-{n}", n + 1
    return vid


def _warn_spacing(path, spacing, volumes, stacklevel: int) -> None:
    if not volumes:
        return
    median = np.median(np.asarray([v["spacing"] for v in volumes], dtype=float), axis=0)
    ratio = np.maximum(np.asarray(spacing) / median, median / np.asarray(spacing))
    if float(ratio.max()) > SPACING_RATIO_WARN:
        warnings.warn(
            f"{path} has spacing {tuple(round(s, 3) for s in spacing)} mm (Z, Y, X), "
            f"{ratio.max():.1f}x off the project's median {tuple(round(float(s), 3) for s in median)} mm; "
            "training resamples to one spacing, so very different scans learn poorly together",
            UserWarning, stacklevel=stacklevel,
        )


def volume_entries(folder: Path, recursive: bool) -> list[Path]:
    """The entries of ``folder`` that are volumes (files, DICOM series, zarr stores)."""
    out = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.name.endswith(STORE_SUFFIX):
            continue
        if can_read(entry):
            if entry.is_file() and entry.suffix.lower() == ".dcm":
                continue  # loose DICOM slices belong to a series folder, not one volume each
            out.append(entry)
        elif recursive and entry.is_dir():
            out.extend(volume_entries(entry, True))
    return out
