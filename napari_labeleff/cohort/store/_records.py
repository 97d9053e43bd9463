"""What ``project.json`` keeps: volume records, the published model, names and rules."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ...io import Geometry

#: Volume status values: nothing drawn / scribbles or boxes / mask accepted / mask imported.
STATUSES = ("new", "weak", "accepted", "imported")
#: Volume roles: "auto" (the store decides), "train" (never validation), "validation".
ROLES = ("auto", "train", "validation")
#: Session mask names holding the accepted / imported mask of a volume.
MASK_NAMES = {"accepted": "accepted", "imported": "imported"}
_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def now() -> str:
    """The current UTC time, ISO format, seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def volume_stem(path: Path) -> str:
    """A volume's name without its format suffix (``.nii.gz``, ``.ome.zarr``...)."""
    name = path.name
    for suffix in (".nii.gz", ".ome.zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem if Path(name).suffix and not path.is_dir() else name


def safe_id(stem: str) -> str:
    """A filesystem-safe volume id made from ``stem``."""
    vid = _ID_CHARS.sub("_", stem).strip("._-")[:64]
    return vid or "volume"


@dataclass
class VolumeRecord:
    """One volume of a project (what ``project.json`` keeps about it).

    Attributes
    ----------
    id : str
        Filesystem-safe, stable volume id (from the file stem; ``-2``, ``-3``... when
        taken).
    path : str
        Absolute path of the image (file, DICOM folder or zarr store).
    checksum : str
        :func:`~napari_labeleff.session.volume_checksum` of the voxel content.
    shape : tuple of int
        (Z, Y, X).
    spacing : tuple of float
        (Z, Y, X) mm.
    affine : list of list of float
        (4, 4) NIfTI-style ``affine_ras`` of the source (see :class:`~napari_labeleff.io.Geometry`).
    channels : int
        1 for (Z, Y, X) images, C for (C, Z, Y, X).
    status : str
        One of :data:`STATUSES`.
    dtype : str
    series : str or None
        DICOM Series Instance UID given at :meth:`Project.add`.
    added : str
        ISO time.
    role : str
        One of :data:`ROLES`.
    scores : dict
        Model-estimated quality of this volume's prediction: ``model`` (version),
        ``uncertainty`` (mean normalised entropy, 0..1), ``quality`` (expected Dice of
        the predicted mask under the model's own probabilities, 0..1).
    mask_source : str or None
        Path an imported mask came from.
    curve : dict
        What accepting its mask measured (the running score, issue 19):
        ``model`` (published version then, or None), ``model_dice_before`` (that
        model's draft Dice on the accepted mask, None when there was no model or it
        had trained on this volume), ``interactions``, ``seconds``, ``accepted`` (time),
        ``order`` (1, 2, ... in the order accepted).
        Empty before the first accept.
    """

    id: str
    path: str
    checksum: str
    shape: tuple
    spacing: tuple
    affine: list
    channels: int
    status: str = "new"
    dtype: str = ""
    series: str | None = None
    added: str = ""
    role: str = "auto"
    scores: dict = field(default_factory=dict)
    mask_source: str | None = None
    curve: dict = field(default_factory=dict)

    @property
    def geometry(self) -> Geometry:
        return Geometry(np.asarray(self.affine, dtype=float))

    def to_dict(self) -> dict:
        return {
            "id": self.id, "path": self.path, "checksum": self.checksum,
            "shape": list(self.shape), "spacing": list(self.spacing), "affine": self.affine,
            "channels": self.channels, "status": self.status, "dtype": self.dtype,
            "series": self.series, "added": self.added, "role": self.role,
            "scores": self.scores, "mask_source": self.mask_source, "curve": self.curve,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "VolumeRecord":
        return cls(
            id=str(d["id"]), path=str(d["path"]), checksum=str(d["checksum"]),
            shape=tuple(int(n) for n in d["shape"]),
            spacing=tuple(float(s) for s in d["spacing"]),
            affine=[[float(v) for v in row] for row in d["affine"]],
            channels=int(d["channels"]), status=str(d.get("status", "new")),
            dtype=str(d.get("dtype", "")), series=d.get("series"), added=str(d.get("added", "")),
            role=str(d.get("role", "auto")), scores=dict(d.get("scores") or {}),
            mask_source=d.get("mask_source"), curve=dict(d.get("curve") or {}),
        )


@dataclass(frozen=True, eq=False)
class PublishedModel:
    """The published model version and what was measured when it was published.

    ``str(published)`` is the version (``"v0003"``), and a ``PublishedModel`` compares
    equal to its version string (``project.published == "v0003"``), so code written
    when the published model was a plain version string keeps working.

    Attributes
    ----------
    version : str
    score : float or None
        Validation score (mean Dice) measured when it was published.
    mask_score : float or None
        Its validation Dice on volumes with full masks (None: none had one).
    validation_independent : bool
        False when it was validated on the volumes it trained on.
    class_names : tuple of str
        Structures it was trained for.
    record : dict
        Its entry in ``project.json``'s ``models`` list (a copy).
    """

    version: str
    score: float | None = None
    mask_score: float | None = None
    validation_independent: bool = True
    class_names: tuple = ()
    record: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_record(cls, record: dict) -> "PublishedModel":
        return cls(version=str(record["version"]), score=record.get("score"),
                   mask_score=record.get("mask_score"),
                   validation_independent=bool(record.get("validation_independent", True)),
                   class_names=tuple(record.get("class_names", ())), record=dict(record))

    def __str__(self) -> str:
        return self.version

    def __eq__(self, other) -> bool:
        if isinstance(other, PublishedModel):
            return self.version == other.version
        if isinstance(other, str):
            return self.version == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.version)


class Room:
    """A part of the project store (volumes, labels, models): it reads and writes
    through the :class:`~.ProjectStore` it belongs to (``store.file``: project.json)."""

    def __init__(self, store):
        self._store = store

    @property
    def _file(self):
        return self._store.file
