"""The cohort project store: volumes, their weak labels and masks, model versions, a log.

Folder layout (see ``docs/formats.md``)::

    <project>/project.json          classes, volumes, model versions, published pointer
                                    (atomic; the previous generation is project.json.prev)
    <project>/writer.lock           one writer at a time (napari_labeleff._lock)
    <project>/volumes/<vid>/        the volume's AnnotationSession store (session.py):
                                    <checksum>.labeleff.zarr with scribbles, boxes, masks
    <project>/models/<version>/     checkpoint written by training (model.pt, config.json,
                                    train_log.jsonl, score.json)
    <project>/runs/<run>/           training snapshot (labels/<vid>.npz) + resume state
    <project>/annotations.jsonl     append-only log: time, volume, kind, class, voxels,
                                    seconds, model version, op

Crash safety: ``project.json`` is replaced atomically (``io._atomic``) after its
current content was copied to ``project.json.prev``; in-memory state changes only after
a successful write, so a failed save (disk full) leaves both the file and the object as
they were. Per-volume annotations go through :class:`~napari_labeleff.session.
AnnotationSession`, whose chunk and metadata writes are atomic too. A damaged
``project.json`` is set aside (never overwritten) and the ``.prev`` generation restored.

Training is split so it can run in another process without the writer lock:
:meth:`Project.prepare_training` (snapshot labels, build the learner's ``TrainSpec``),
:func:`run_training` (the learner's ``train_steps`` + validation of the new and the
published checkpoint; a plain generator over picklable values), and
:meth:`Project.finish_training` (record the version; publish it only when its
validation score is not worse). :meth:`Project.train_steps` chains the three.
"""

from __future__ import annotations

import copy
import errno
import hashlib
import json
import math
import os
import re
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import LabelEffError
from .._steps import drain
from ..io import Geometry, can_read, read_volume
from ..io._atomic import atomic_write_text
from ..session import STORE_SUFFIX, AnnotationSession, LabelClass, volume_checksum
from ..io._labeltable import default_color

PROJECT_FILE = "project.json"
PREV_SUFFIX = ".prev"
FORMAT = "napari-labeleff project"
FORMAT_VERSION = 1
LOG_FILE = "annotations.jsonl"
#: Volume status values: nothing drawn / scribbles or boxes / mask accepted / mask imported.
STATUSES = ("new", "weak", "accepted", "imported")
#: Volume roles: "auto" (the store decides), "train" (never validation), "validation".
ROLES = ("auto", "train", "validation")
#: Session mask names holding the accepted / imported mask of a volume.
MASK_NAMES = {"accepted": "accepted", "imported": "imported"}
#: A spacing this many times larger or smaller than the project's median (any axis) warns.
SPACING_RATIO_WARN = 3.0
#: With "auto" roles, every n-th labelled volume (in the order added) is held out for
#: validation once at least VALIDATION_MIN labelled volumes exist.
VALIDATION_EVERY = 5
VALIDATION_MIN = 5
_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_VERSION = re.compile(r"^v(\d{4,})$")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _volume_stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".ome.zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem if Path(name).suffix and not path.is_dir() else name


def _safe_id(stem: str) -> str:
    vid = _ID_CHARS.sub("_", stem).strip("._-")[:64]
    return vid or "volume"


# ---- records ----------------------------------------------------------------------------
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

    @property
    def geometry(self) -> Geometry:
        return Geometry(np.asarray(self.affine, dtype=float))

    def to_dict(self) -> dict:
        return {
            "id": self.id, "path": self.path, "checksum": self.checksum,
            "shape": list(self.shape), "spacing": list(self.spacing), "affine": self.affine,
            "channels": self.channels, "status": self.status, "dtype": self.dtype,
            "series": self.series, "added": self.added, "role": self.role,
            "scores": self.scores, "mask_source": self.mask_source,
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
            mask_source=d.get("mask_source"),
        )


class PublishedModel(str):
    """The published model version: a ``str`` (``"v0003"``) with its record attached.

    Attributes
    ----------
    version : str
    score : float or None
        Validation score (mean Dice) measured when it was published.
    record : dict
        Its entry in ``project.json``'s ``models`` list.
    """

    def __new__(cls, record: dict):
        obj = super().__new__(cls, record["version"])
        obj.record = dict(record)
        return obj

    @property
    def version(self) -> str:
        return str(self)

    @property
    def score(self) -> float | None:
        return self.record.get("score")


@dataclass
class Prediction:
    """The published model's prediction for one volume.

    Attributes
    ----------
    labels : ndarray, shape (Z, Y, X), uint8
    probabilities : ndarray, shape (K + 1, Z, Y, X), float32
    uncertainty : ndarray, shape (Z, Y, X), float32
        Normalised predictive entropy in [0, 1].
    version : str
        Model version that predicted.
    volume_id : str
    scores : dict
        ``uncertainty`` (mean) and ``quality`` (expected Dice), as in
        :attr:`VolumeRecord.scores`.
    """

    labels: np.ndarray
    probabilities: np.ndarray
    uncertainty: np.ndarray
    version: str
    volume_id: str
    scores: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TrainPlan:
    """Everything a training run needs, picklable (runs in another process).

    Attributes
    ----------
    spec : TrainSpec
        The learner's spec (``cohort/_spec.py``).
    version : str
        Version the new checkpoint gets (``spec.out_dir`` = ``models/<version>``).
    run : str
        Run folder name (``spec.run_dir`` = ``runs/<run>``).
    validation : tuple of TrainCase
        Cases both checkpoints are evaluated on before publishing.
    validation_independent : bool
        False when no volume is held out and the labelled cases stand in.
    previous : str or None
        Published version when the plan was made.
    previous_dir : str or None
    resumed : bool
        True when an interrupted run with the same snapshot is continued.
    """

    spec: Any
    version: str
    run: str
    validation: tuple
    validation_independent: bool
    previous: str | None
    previous_dir: str | None
    resumed: bool = False


@dataclass
class TrainOutcome:
    """What :func:`run_training` returns: the learner's report and both scores."""

    plan: TrainPlan
    report: Any
    score: float | None
    previous_score: float | None
    error: str | None = None
    previous_error: str | None = None
    #: Dice of the new model on the validation volumes with full masks (None: none).
    mask_score: float | None = None


@dataclass
class ProjectTrainReport:
    """Result of :meth:`Project.train`: the learner's report plus the publish decision.

    Attributes not listed here (``val_score``, ``epochs``, ``seconds``, ``log``...) are
    read from the learner's ``TrainReport`` (``report.train``).

    Attributes
    ----------
    version : str
        The new checkpoint's version.
    published : bool
        Whether it became the published model.
    score, previous_score : float or None
        Validation scores of the new and of the previously published model.
    previous : str or None
        Previously published version.
    message : str
        One line saying what happened and why.
    train : TrainReport
    """

    version: str
    published: bool
    score: float | None
    previous_score: float | None
    previous: str | None
    message: str
    train: Any = None

    def __getattr__(self, name):
        if name.startswith("__") or name == "train":
            raise AttributeError(name)
        return getattr(self.train, name)


# ---- the store -------------------------------------------------------------------------------
class Project:
    """A cohort project folder (see the module docstring for the layout).

    Create with :meth:`create`, open with :meth:`open`; :meth:`close` (or ``with``)
    releases the writer lock. Every mutating method needs a writer
    (``read_only=False``) and saves at once. One object is used from one thread at a
    time (a worker thread that only reads can open its own ``read_only=True`` view).
    """

    def __init__(self, folder: Path, data: dict, lock, read_only: bool):
        self.folder = folder
        self._data = data
        self._lock = lock
        self.read_only = read_only
        self._models: dict = {}
        self._last_prediction: Prediction | None = None

    # ---- create / open / close -------------------------------------------------------------
    @classmethod
    def create(cls, folder, class_names) -> "Project":
        """Create a new project in ``folder`` (absent or empty) and open it for writing.

        Parameters
        ----------
        folder : str or Path
        class_names : sequence of str
            Structures (background excluded), e.g. ``["left atrium"]``.
        """
        folder = Path(folder).expanduser().absolute()
        names = _check_class_names(class_names)
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            what = "a project" if (folder / PROJECT_FILE).exists() else "not empty"
            raise LabelEffError(
                f"folder={str(folder)!r} is {what}; choose a new or empty folder "
                "(Project.open opens an existing project)"
            )
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise LabelEffError(f"cannot create project folder {folder}: {err.strerror or err}") from err
        lock = _acquire(folder)
        data = {
            "format": FORMAT, "version": FORMAT_VERSION, "generation": 0, "created": _now(),
            "class_names": names, "channels": None, "volumes": [], "models": [],
            "published": None, "pending_run": None,
        }
        project = cls(folder, {}, lock, read_only=False)
        try:
            project._commit(data)
        except LabelEffError:
            lock.release()
            raise
        return project

    @classmethod
    def open(cls, folder, read_only: bool = False) -> "Project":
        """Open an existing project.

        Parameters
        ----------
        folder : str or Path
        read_only : bool
            Do not take the writer lock (another process may be writing); every
            mutating method then raises.

        Raises
        ------
        LabelEffError
            Not a project; another process holds the writer lock; ``project.json`` and
            its previous generation are both unreadable.
        """
        folder = Path(folder).expanduser().absolute()
        main, prev = folder / PROJECT_FILE, folder / (PROJECT_FILE + PREV_SUFFIX)
        if not main.exists() and not prev.exists():
            raise LabelEffError(
                f"folder={str(folder)!r} is not a napari-labeleff project (no {PROJECT_FILE}); "
                "create one with Project.create / labeleff project create"
            )
        lock = None if read_only else _acquire(folder)
        try:
            data, problem = _load(main)
            if problem is not None:
                data = _recover(folder, problem, read_only)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return cls(folder, data, lock, read_only)

    def reload(self) -> None:
        """Re-read ``project.json`` (a read-only view following another writer)."""
        data, problem = _load(self.folder / PROJECT_FILE)
        if problem is not None:
            data = _recover(self.folder, problem, read_only=True)
        if data.get("published") != self._data.get("published"):
            self._models.clear()
        self._data = data
        self._last_prediction = None

    def close(self) -> None:
        """Release the writer lock (idempotent). The object stays readable."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        self.read_only = True
        self._models.clear()
        self._last_prediction = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return (f"Project({str(self.folder)!r}, {len(self.volumes)} volumes, "
                f"classes={self.class_names}, published={self.published!r})")

    # ---- saving ---------------------------------------------------------------------------------
    def _writer(self, what: str) -> None:
        if self.read_only:
            raise LabelEffError(
                f"cannot {what}: project {self.folder} is open read-only (or closed); "
                "open it with Project.open(folder) in one process to change it"
            )

    def _commit(self, data: dict) -> None:
        """Write ``data`` as the new generation; memory changes only on success."""
        data = dict(data)
        data["generation"] = int(self._data.get("generation", -1)) + 1
        main = self.folder / PROJECT_FILE
        text = json.dumps(data, indent=1)
        if main.exists():
            try:
                current = main.read_text(encoding="utf-8")
            except OSError as err:
                raise LabelEffError(f"cannot read {main}: {err.strerror or err}; nothing was written") from err
            if _parse(current)[1] is None:  # keep only a readable generation as .prev
                atomic_write_text(self.folder / (PROJECT_FILE + PREV_SUFFIX), current)
        atomic_write_text(main, text)
        self._data = data

    def _edit(self) -> dict:
        return copy.deepcopy(self._data)

    # ---- classes ---------------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        """Structures (background excluded); structure c is ``class_names[c - 1]``."""
        return list(self._data["class_names"])

    def add_class(self, name: str) -> int:
        """Append a structure; returns its index c. Models trained before it need retraining."""
        self._writer("add a class")
        names = _check_class_names([*self.class_names, name])
        data = self._edit()
        data["class_names"] = names
        self._commit(data)
        return len(names)

    # ---- volumes -------------------------------------------------------------------------------
    @property
    def volumes(self) -> list[VolumeRecord]:
        """All volumes, in the order added."""
        return [VolumeRecord.from_dict(v) for v in self._data["volumes"]]

    @property
    def volume_ids(self) -> list[str]:
        return [v["id"] for v in self._data["volumes"]]

    def volume(self, vid: str) -> VolumeRecord:
        """The record of volume ``vid``."""
        for v in self._data["volumes"]:
            if v["id"] == vid:
                return VolumeRecord.from_dict(v)
        raise LabelEffError(
            f"volume={vid!r} is not in project {self.folder.name}; "
            f"volumes: {', '.join(self.volume_ids) or '(none)'}"
        )

    def add(self, path, *, series: str | None = None, volume_id: str | None = None) -> str:
        """Add one volume (a file, a DICOM series folder or a zarr store); return its id.

        Parameters
        ----------
        path : str or Path
            Anything :func:`~napari_labeleff.io.read_volume` reads. A folder of several
            files goes through :meth:`add_folder`.
        series : str, optional
            DICOM Series Instance UID (default: the folder's largest series).
        volume_id : str, optional
            Id to use instead of the one made from the file name.

        Raises
        ------
        LabelEffError
            Unreadable file; content already in the project; a channel count that
            differs from the project's. A spacing far from the project's median warns.
        """
        self._writer("add volumes")
        path = Path(path).expanduser().absolute()
        if path.is_dir() and not can_read(path):
            raise LabelEffError(
                f"path={str(path)!r} is a folder but not a DICOM series or zarr store; "
                "add its files with Project.add_folder"
            )
        vol = read_volume(path, series=series)
        data = self._edit()
        if data["channels"] is not None and vol.n_channels != data["channels"]:
            raise LabelEffError(
                f"{path} has {vol.n_channels} channel(s) but the volumes of this project have "
                f"{data['channels']}; a project holds one kind of scan (same channels)"
            )
        checksum = volume_checksum(vol.data)
        for v in data["volumes"]:
            if v["checksum"] == checksum:
                raise LabelEffError(f"{path} is already in the project as volume {v['id']!r} (same content)")
        self._warn_spacing(path, vol.spacing, data["volumes"])
        taken = {v["id"].lower() for v in data["volumes"]}
        if volume_id is not None:
            vid = _safe_id(str(volume_id))
            if vid != volume_id or vid.lower() in taken:
                raise LabelEffError(
                    f"volume_id={volume_id!r} must be unique and use only letters, digits, '.', '_', '-'"
                )
        else:
            base = vid = _safe_id(_volume_stem(path))
            n = 2
            while vid.lower() in taken:
                vid, n = f"{base}-{n}", n + 1
        record = VolumeRecord(
            id=vid, path=str(path), checksum=checksum, shape=vol.shape, spacing=vol.spacing,
            affine=vol.geometry.affine_ras.tolist(), channels=vol.n_channels,
            dtype=str(vol.data.dtype), series=series, added=_now(),
        )
        self._create_store(record)
        data["volumes"].append(record.to_dict())
        if data["channels"] is None:
            data["channels"] = vol.n_channels
        self._commit(data)
        return vid

    def add_folder(self, folder, *, recursive: bool = False) -> tuple[list[str], list[str]]:
        """Add every readable volume in ``folder`` (files, DICOM series and zarr stores
        in it; with ``recursive`` also in subfolders). A folder that is itself one DICOM
        series or zarr store is added as one volume.

        Returns
        -------
        added : list of str
            Volume ids, in file-name order.
        skipped : list of str
            ``"<path>: <reason>"`` for entries that could not be added (unreadable,
            already present, wrong channel count...). Other entries (not volumes) are
            ignored silently.
        """
        self._writer("add volumes")
        folder = Path(folder).expanduser().absolute()
        if not folder.is_dir():
            raise LabelEffError(f"folder={str(folder)!r} is not a folder")
        if can_read(folder):
            return [self.add(folder)], []
        added, skipped = [], []
        for entry in _volume_entries(folder, recursive):
            try:
                added.append(self.add(entry))
            except LabelEffError as err:
                skipped.append(f"{entry}: {err}")
        if not added and not skipped:
            raise LabelEffError(f"folder={str(folder)!r} holds no volume that napari-labeleff reads")
        return added, skipped

    def remove(self, vid: str) -> None:
        """Remove a volume from the project. Its annotation store is moved to
        ``<project>/trash/`` (nothing drawn is deleted)."""
        self._writer("remove volumes")
        self.volume(vid)
        data = self._edit()
        data["volumes"] = [v for v in data["volumes"] if v["id"] != vid]
        if not data["volumes"]:
            data["channels"] = None
        self._commit(data)
        src = self.folder / "volumes" / vid
        if src.exists():
            dst = self.folder / "trash" / f"{vid}-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
            dst.parent.mkdir(exist_ok=True)
            os.replace(src, dst)

    def relocate(self, vid: str, new_path) -> None:
        """Point volume ``vid`` at a moved image; refuses a file with other content."""
        self._writer("relocate a volume")
        rec = self.volume(vid)
        new_path = Path(new_path).expanduser().absolute()
        vol = read_volume(new_path, series=rec.series)
        checksum = volume_checksum(vol.data)
        if checksum != rec.checksum:
            raise LabelEffError(
                f"{new_path} is not volume {vid!r}: its content differs (checksum "
                f"{checksum[:12]}... vs {rec.checksum[:12]}...); choose the moved copy of {rec.path}"
            )
        self._update_volume(vid, path=str(new_path))

    def set_role(self, vid: str, role: str) -> None:
        """``"validation"`` (held out of training, used to decide publishing),
        ``"train"`` (never held out) or ``"auto"`` (the store decides)."""
        self._writer("change a volume's role")
        if role not in ROLES:
            raise LabelEffError(f"role={role!r} must be one of {', '.join(ROLES)}")
        self.volume(vid)
        self._update_volume(vid, role=role)

    def _update_volume(self, vid: str, **changes) -> None:
        data = self._edit()
        for v in data["volumes"]:
            if v["id"] == vid:
                v.update(changes)
        self._commit(data)

    def _warn_spacing(self, path, spacing, volumes) -> None:
        if not volumes:
            return
        median = np.median(np.asarray([v["spacing"] for v in volumes], dtype=float), axis=0)
        ratio = np.maximum(np.asarray(spacing) / median, median / np.asarray(spacing))
        if float(ratio.max()) > SPACING_RATIO_WARN:
            warnings.warn(
                f"{path} has spacing {tuple(round(s, 3) for s in spacing)} mm (Z, Y, X), "
                f"{ratio.max():.1f}x off the project's median {tuple(round(float(s), 3) for s in median)} mm; "
                "training resamples to one spacing, so very different scans learn poorly together",
                UserWarning, stacklevel=3,
            )

    # ---- images --------------------------------------------------------------------------------
    def image_path(self, vid: str) -> Path:
        """The image path of ``vid``; a clear error when the file is gone."""
        rec = self.volume(vid)
        path = Path(rec.path)
        if not path.exists():
            raise LabelEffError(
                f"volume {vid!r}: image {path} is missing (moved or deleted); if it moved, "
                f"run Project.relocate({vid!r}, NEW_PATH) or `labeleff project relocate "
                f"{self.folder} {vid} NEW_PATH`"
            )
        return path

    def read_image(self, vid: str, *, verify: bool = True):
        """Read the image of ``vid`` (a :class:`~napari_labeleff.io.Volume`).

        With ``verify`` its content checksum must equal the one recorded at :meth:`add`
        (a different file at the same path is refused).
        """
        rec = self.volume(vid)
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

    # ---- per-volume annotation stores -------------------------------------------------------------
    def store_path(self, vid: str) -> Path:
        """The volume's AnnotationSession store (``volumes/<vid>/<checksum>.labeleff.zarr``)."""
        rec = self.volume(vid)
        return self.folder / "volumes" / rec.id / f"{rec.checksum}{STORE_SUFFIX}"

    def store_dir(self, vid: str) -> Path:
        """Folder to pass as ``store_dir`` to ``AnnotationSession.open`` for ``vid``."""
        return self.store_path(vid).parent

    def _create_store(self, rec: VolumeRecord) -> None:
        """Create the volume's session store in the project (kept if it exists)."""
        path = self.folder / "volumes" / rec.id / f"{rec.checksum}{STORE_SUFFIX}"
        if path.exists():
            return  # left by an interrupted add of the same content: keep its work
        path.parent.mkdir(parents=True, exist_ok=True)
        session = AnnotationSession(
            checksum=rec.checksum, shape=tuple(rec.shape), geometry=rec.geometry,
            image_path=Path(rec.path), classes=[LabelClass("background", default_color(0))],
            scribbles=np.zeros(rec.shape, np.uint8),
        )
        for name in self.class_names:
            session.classes.append(LabelClass(name, default_color(len(session.classes))))
        session._create_store(path)  # creates it under a temporary name, then renames
        session.close()

    def _open_store(self, vid: str, read_only: bool) -> AnnotationSession:
        rec = self.volume(vid)
        path = self.store_path(vid)
        if not path.exists():
            if read_only:
                return None
            self._create_store(rec)
        stand_in = np.broadcast_to(np.uint8(0), tuple(rec.shape))  # no voxels are read
        session = AnnotationSession.open(
            stand_in, rec.geometry, store_dir=path.parent, checksum=rec.checksum,
            read_only=read_only,
        )
        if session.store_path != path:
            session.close()
            raise LabelEffError(f"volume {vid!r}: annotation store {path} could not be opened")
        return session

    def session(self, vid: str) -> AnnotationSession:
        """Open the volume's annotation session for writing (close it when done, or use
        ``with``); its classes are brought in line with the project's first (see
        :meth:`_sync_classes`). While it is open, nobody else can write this volume."""
        self._writer("open an annotation session")
        session = self._open_store(vid, read_only=False)
        try:
            self._sync_classes(vid, session)
        except BaseException:
            session.close()
            raise
        return session

    def _with_session(self, vid: str, session):
        """``session`` if the caller holds this volume's store open, else a new one."""
        if session is None:
            return self.session(vid), True
        if Path(session.store_path) != self.store_path(vid):
            raise LabelEffError(
                f"session={session.store_path} is not volume {vid!r}'s store {self.store_path(vid)}"
            )
        self._sync_classes(vid, session)
        return session, False

    def _sync_classes(self, vid: str, session: AnnotationSession) -> None:
        """Session classes == project classes: add the project's missing ones to the
        session; adopt structures the session added at the end (e.g. in the GUI)."""
        names = [c.name for c in session.classes[1:]]
        self.adopt_classes(names, vid=vid)
        for name in self.class_names[len(names):]:
            session.add_class(name)

    def adopt_classes(self, names, *, vid: str | None = None) -> None:
        """Check a volume's structure list against the project's: the project adopts
        structures appended at the end (e.g. added in the GUI); a volume may lack the
        project's newest ones (added after its store was made). Anything else (renamed,
        removed, reordered) is an error naming both lists."""
        names = list(names)
        project = self.class_names
        if names == project or project[: len(names)] == names:
            return
        if names[: len(project)] == project:
            self._writer("add classes")
            data = self._edit()
            data["class_names"] = _check_class_names(names)
            self._commit(data)
            return
        where = f"volume {vid!r}: its" if vid else "the"
        raise LabelEffError(
            f"{where} classes {names} differ from the project's {project}; use the same "
            "structures, in the same order, in every volume (add new ones at the end)"
        )

    def labels(self, vid: str) -> dict:
        """What is stored for ``vid`` (read now from disk, without the writer lock).

        Returns
        -------
        dict
            ``scribbles`` (Z, Y, X) uint8, ``boxes`` list of 7-tuples, ``mask``
            (Z, Y, X) uint8 or None (the accepted or imported mask, by status),
            ``masks`` (name -> array: every saved mask, e.g. the GUI's ``"final"``),
            ``classes`` (structure names stored with the volume).
        """
        rec = self.volume(vid)
        session = self._open_store(vid, read_only=True)
        if session is None:
            return {"scribbles": np.zeros(rec.shape, np.uint8), "boxes": [], "mask": None,
                    "masks": {}, "classes": self.class_names}
        masks = {name: np.asarray(m, dtype=np.uint8) for name, m in session.masks.items()}
        mask_name = MASK_NAMES.get(rec.status)
        return {
            "scribbles": np.asarray(session.scribbles, dtype=np.uint8),
            "boxes": [tuple(int(v) for v in b) for b in session.boxes],
            "mask": masks.get(mask_name) if mask_name else None,
            "masks": masks,
            "classes": [c.name for c in session.classes[1:]],
        }

    # ---- weak labels, masks, status ---------------------------------------------------------------
    def set_weak_labels(self, vid: str, scribbles=None, boxes=None, *, seconds: float = 0.0,
                        session=None) -> None:
        """Store scribbles and/or boxes of ``vid`` (engine conventions) and log the change.

        Parameters
        ----------
        vid : str
        scribbles : array, shape (Z, Y, X), optional
            0 unannotated, 1 background, c + 1 structure c (c = 1..K). Replaces the
            stored scribbles; None keeps them.
        boxes : sequence of (c, z0, y0, x0, z1, y1, x1), optional
            Replaces the stored boxes; None keeps them.
        seconds : float
            Annotation time to log for this change.
        session : AnnotationSession, optional
            The volume's session when the caller holds it open (the GUI); else one is
            opened and closed here.
        """
        self._writer("store weak labels")
        _check_seconds(seconds)
        rec = self.volume(vid)
        session, owned = self._with_session(vid, session)
        try:
            self._store_weak(rec, session, scribbles, boxes, seconds)
        finally:
            if owned:
                session.close()

    def _store_weak(self, rec, session, scribbles, boxes, seconds) -> None:
        vid = rec.id
        k = len(self.class_names)
        entries = []
        if scribbles is not None:
            arr = np.asarray(scribbles)
            if arr.shape != tuple(rec.shape):
                raise LabelEffError(
                    f"scribbles have shape {arr.shape}; volume {vid!r} has (Z, Y, X) = {tuple(rec.shape)}"
                )
            arr = _labels_uint8(arr, "scribbles", k + 1, f"0 (unannotated), 1 (background) or c + 1 for structures c = 1..{k}")
            entries += self._scribble_entries(session.scribbles, arr)
            session.scribbles = arr.copy()
            session.save_scribbles()
        if boxes is not None:
            before = set(session.boxes)
            session.set_boxes([tuple(b) for b in boxes])
            for b in session.boxes:
                if b not in before:
                    vox = int(np.prod(np.subtract(b[4:], b[1:4])))
                    entries.append({"kind": "box", "class": self.class_names[b[0] - 1], "voxels": vox})
        if entries or seconds:
            self._append_log(vid, entries or [{"kind": "weak labels", "class": None, "voxels": 0}], seconds)
        self._refresh(vid, session.scribbles, session.boxes)

    def _scribble_entries(self, old, new) -> list[dict]:
        """Log entries (per scribble value drawn or erased) for ``old`` -> ``new``."""
        changed = np.asarray(old) != np.asarray(new)
        if not changed.any():
            return []
        values, counts = np.unique(np.asarray(new)[changed], return_counts=True)
        names = ["background", *self.class_names]
        return [{"kind": "erase" if v == 0 else "scribble",
                 "class": None if v == 0 else (names[v - 1] if v - 1 < len(names) else f"label {v}"),
                 "voxels": int(n)} for v, n in zip(values.tolist(), counts.tolist())]

    def log_scribble_change(self, vid: str, old, new, *, seconds: float = 0.0) -> int:
        """Log one interaction that changed scribbles ``old`` -> ``new`` (same shape:
        the whole volume or the touched region): voxels per class drawn / erased.
        Returns the number of voxels changed (0: nothing logged)."""
        self._writer("log annotations")
        self.volume(vid)
        entries = self._scribble_entries(old, new)
        if entries:
            self._append_log(vid, entries, seconds)
        return sum(e["voxels"] for e in entries)

    def refresh_status(self, vid: str | None = None, *, scribbles=None, boxes=None) -> None:
        """Re-derive "new"/"weak" from the stored scribbles and boxes (after they were
        edited through the session directly, e.g. in the GUI), or from the given
        in-memory ``scribbles`` / ``boxes`` of ``vid``. Accepted and imported volumes
        keep their status."""
        self._writer("update statuses")
        if scribbles is not None or boxes is not None:
            if vid is None:
                raise LabelEffError("refresh_status: scribbles/boxes need a volume id")
            stored = None if scribbles is not None and boxes is not None else self.labels(vid)
            self._refresh(vid, stored["scribbles"] if scribbles is None else scribbles,
                          stored["boxes"] if boxes is None else boxes)
            return
        for v in [vid] if vid is not None else self.volume_ids:
            stored = self.labels(v)
            self._refresh(v, stored["scribbles"], stored["boxes"])

    def _refresh(self, vid, scribbles, boxes) -> None:
        rec = self.volume(vid)
        if rec.status in ("accepted", "imported"):
            return
        status = "weak" if (np.any(scribbles) or len(boxes)) else "new"
        if status != rec.status:
            self._update_volume(vid, status=status)

    def accept(self, vid: str, mask, *, seconds: float = 0.0, session=None) -> None:
        """Accept ``mask`` ((Z, Y, X) integers 0..K) as the volume's label; status
        "accepted". ``session``: as in :meth:`set_weak_labels`."""
        self._writer("accept a mask")
        _check_seconds(seconds)
        rec = self.volume(vid)
        mask = self._check_mask(rec, np.asarray(mask), "mask")
        self._save_mask(vid, MASK_NAMES["accepted"], mask, session)
        self._update_volume(vid, status="accepted")
        self._append_log(vid, self._mask_entries("accept", mask), seconds)

    def import_mask(self, vid: str, path, *, session=None) -> None:
        """Import a mask file (NIfTI or any readable format) on the volume's grid;
        status "imported". Shape and geometry must match the image, saying which not."""
        self._writer("import a mask")
        rec = self.volume(vid)
        path = Path(path).expanduser().absolute()
        vol = read_volume(path)
        if vol.channel_axis is not None:
            raise LabelEffError(f"mask {path} has {vol.n_channels} channels; expected one label volume")
        if vol.shape != tuple(rec.shape):
            raise LabelEffError(
                f"mask {path} has shape {vol.shape} (Z, Y, X) but volume {vid!r} has {tuple(rec.shape)}"
            )
        differences = _geometry_differences(vol.geometry, rec.geometry)
        if differences:
            raise LabelEffError(
                f"mask {path} is not on the voxel grid of volume {vid!r}: "
                + "; ".join(differences)
            )
        data = np.asarray(vol.data)
        if data.dtype.kind == "f" and (not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data))):
            raise LabelEffError(f"mask {path} holds non-integer values; expected integer labels 0..K")
        mask = self._check_mask(rec, data.astype(np.int64), f"mask {path}")
        self._save_mask(vid, MASK_NAMES["imported"], mask, session)
        self._update_volume(vid, status="imported", mask_source=str(path))
        self._append_log(vid, self._mask_entries("import", mask), 0.0)

    def _save_mask(self, vid, name, mask, session) -> None:
        session, owned = self._with_session(vid, session)
        try:
            session.save_mask(name, mask)
        finally:
            if owned:
                session.close()

    def _check_mask(self, rec, mask, what) -> np.ndarray:
        if mask.shape != tuple(rec.shape):
            raise LabelEffError(f"{what} has shape {mask.shape}; volume {rec.id!r} has (Z, Y, X) = {tuple(rec.shape)}")
        k = len(self.class_names)
        return _labels_uint8(mask, what, k, f"0 (background) or structures 1..{k}")

    def _mask_entries(self, kind, mask) -> list[dict]:
        counts = np.bincount(mask.ravel(), minlength=len(self.class_names) + 1)
        return [{"kind": kind, "class": name, "voxels": int(counts[c + 1])}
                for c, name in enumerate(self.class_names)]

    # ---- annotation log ------------------------------------------------------------------------
    def log_annotation(self, vid: str, kind: str, *, class_name: str | None = None,
                       voxels: int = 0, seconds: float = 0.0) -> None:
        """Append one interaction to ``annotations.jsonl`` (with the published model version).

        Parameters
        ----------
        vid : str
        kind : str
            What was done: ``"scribble"``, ``"erase"``, ``"box"``, ``"correction"``...
        class_name : str, optional
            Structure (or ``"background"``) it was drawn for.
        voxels : int
            Voxels drawn or changed.
        seconds : float
            Time spent.
        """
        self._writer("log annotations")
        self.volume(vid)
        if not isinstance(kind, str) or not kind.strip():
            raise LabelEffError(f"kind={kind!r} must be a non-empty string")
        if class_name is not None and class_name not in ("background", *self.class_names):
            raise LabelEffError(
                f"class_name={class_name!r} is not one of background, {', '.join(self.class_names)}"
            )
        self._append_log(vid, [{"kind": kind, "class": class_name, "voxels": voxels}], seconds)

    def _append_log(self, vid: str, entries: list[dict], seconds: float) -> None:
        """One operation (possibly several classes) = one ``op`` id = one interaction."""
        seconds = _check_seconds(seconds)
        op = uuid.uuid4().hex[:12]
        model = self.published
        lines = []
        for i, e in enumerate(entries):
            voxels = e.get("voxels", 0)
            if isinstance(voxels, bool) or not isinstance(voxels, (int, np.integer)) or voxels < 0:
                raise LabelEffError(f"voxels={voxels!r} must be an integer >= 0")
            lines.append(json.dumps({
                "time": _now(), "volume": vid, "kind": e["kind"], "class": e.get("class"),
                "voxels": int(voxels), "seconds": seconds if i == 0 else 0.0,
                "model": str(model) if model else None, "op": op,
            }))
        _append_lines(self.folder / LOG_FILE, lines)

    def annotation_log(self, vid: str | None = None) -> list[dict]:
        """Entries of ``annotations.jsonl`` (for one volume, or all); a torn last line
        (a crash mid-write) is skipped."""
        path = self.folder / LOG_FILE
        out = []
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return out
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and (vid is None or entry.get("volume") == vid):
                out.append(entry)
        return out

    def annotation_totals(self) -> dict[str, dict]:
        """Per volume: ``seconds`` spent, ``interactions`` (operations), ``voxels`` drawn."""
        totals = {v: {"seconds": 0.0, "interactions": 0, "voxels": 0} for v in self.volume_ids}
        ops: dict[str, set] = {v: set() for v in totals}
        for e in self.annotation_log():
            v = e.get("volume")
            if v not in totals:
                continue
            totals[v]["seconds"] += float(e.get("seconds") or 0.0)
            totals[v]["voxels"] += int(e.get("voxels") or 0) if e.get("kind") not in ("accept", "import") else 0
            ops[v].add(e.get("op"))
        for v, t in totals.items():
            t["interactions"] = len(ops[v])
        return totals

    def table(self) -> list[dict]:
        """One row per volume for status displays: id, status, role, shape, spacing,
        seconds, interactions, voxels, uncertainty and quality (model estimates or
        None), path, and whether the image file is present."""
        totals = self.annotation_totals()
        published = self.published
        rows = []
        for rec in self.volumes:
            scores = rec.scores if published and rec.scores.get("model") == str(published) else {}
            rows.append({
                "id": rec.id, "status": rec.status, "role": rec.role, "shape": tuple(rec.shape),
                "spacing": tuple(rec.spacing), **totals[rec.id],
                "uncertainty": scores.get("uncertainty"), "quality": scores.get("quality"),
                "path": rec.path, "present": Path(rec.path).exists(),
            })
        return rows

    # ---- models -------------------------------------------------------------------------------------
    @property
    def models(self) -> list[dict]:
        """Model versions trained in this project (oldest first): ``version``, ``score``,
        ``status`` ("published", "kept": worse than the published one, "damaged"),
        ``reason``, ``class_names``, ``created``, ``run``."""
        return copy.deepcopy(self._data["models"])

    @property
    def published(self) -> PublishedModel | None:
        """Published model version (a str, e.g. ``"v0002"``) with ``.score``, or None."""
        version = self._data.get("published")
        for m in self._data["models"]:
            if m["version"] == version:
                return PublishedModel(m)
        return None

    def model_dir(self, version: str) -> Path:
        return self.folder / "models" / str(version)

    def _require_model(self):
        published = self.published
        if published is None:
            raise LabelEffError(
                f"project {self.folder.name} has no published model yet; train first "
                "(Project.train / labeleff project train)"
            )
        trained = list(published.record.get("class_names", []))
        if trained != self.class_names:
            raise LabelEffError(
                f"the class list changed after training: model {published} knows {trained}, "
                f"the project now has {self.class_names}; retrain (labeleff project train) "
                "before predicting"
            )
        return published

    def load_model(self, device: str = "auto"):
        """The published model (``cohort._predict.load_model``), cached per version."""
        published = self._require_model()
        key = (str(published), device)
        if key not in self._models:
            from ._predict import load_model

            folder = self.model_dir(published)
            try:
                model = load_model(str(folder), device=device)
            except LabelEffError:
                raise
            except Exception as err:  # noqa: BLE001 - a damaged checkpoint, named
                raise LabelEffError(
                    f"published model {published} in {folder} cannot be loaded "
                    f"({type(err).__name__}: {err}); train again to replace it"
                ) from err
            self._models.clear()
            self._models[key] = model
        return self._models[key]

    def predict(self, vid: str, *, device: str = "auto", record: bool = True) -> Prediction:
        """The published model's prediction for ``vid`` (cached for the last volume).

        Also records the model-estimated quality and uncertainty of the volume (see
        :attr:`VolumeRecord.scores`) when the project is open for writing and
        ``record`` (pass False from a worker thread; then call :meth:`record_scores`).
        """
        rec = self.volume(vid)
        model = self.load_model(device)
        version = str(self.published)
        last = self._last_prediction
        if last is not None and last.volume_id == vid and last.version == version:
            if record and not self.read_only and rec.scores != last.scores:
                self._update_volume(vid, scores=last.scores)
            return last
        vol = self.read_image(vid)
        probs = np.asarray(model.predict(np.asarray(vol.data), vol.spacing), dtype=np.float32)
        k1 = len(self.class_names) + 1
        if probs.shape != (k1, *rec.shape):
            raise LabelEffError(
                f"model {version} returned probabilities of shape {probs.shape}; "
                f"expected {(k1, *rec.shape)}"
            )
        labels, uncertainty, scores = _summarise(probs)
        pred = Prediction(labels, probs, uncertainty, version, vid, {"model": version, **scores})
        self._last_prediction = pred
        if record and not self.read_only:
            self._update_volume(vid, scores=pred.scores)
        return pred

    def refine_steps(self, vid: str, scribbles, boxes=None, *, method: str = "auto",
                     device: str = "auto", state=None, use_prior: bool | None = None,
                     **options):
        """Generator form of :meth:`refine` (yields engine ``Progress``)."""
        from ..engine import refine_steps

        prior, note = None, "no published model: refined without a prior"
        published = self.published
        if published is not None:
            use, why = self.prior_use()
            if use_prior is not None:
                use, why = bool(use_prior), f"use_prior={use_prior} ({why})"
            elif not use and not np.any(scribbles) and not boxes:
                use, why = True, f"used: nothing drawn yet, the model is all there is ({why})"
            if use:
                prior = self.predict(vid, device=device, record=False).probabilities
            note = f"prior from model {published}: {why}"
        vol = self.read_image(vid, verify=False)
        image = np.asarray(vol.data)
        result = yield from refine_steps(image, scribbles, spacing=vol.spacing, boxes=boxes,
                                         prior=prior, method=method, device=device,
                                         state=state, **options)
        result.info["project_prior"] = note
        return result

    def prior_use(self) -> tuple[bool, str]:
        """Whether the published model serves as refine's prior, and why (see
        :meth:`refine`); (False, reason) without a published model."""
        published = self.published
        if published is None:
            return False, "no published model"
        record = published.record
        return prior_gate(record.get("mask_score"), record.get("validation_independent", True))

    def refine(self, vid: str, scribbles, boxes=None, **kwargs):
        """``engine.refine`` on the volume with the published model's probabilities as
        ``prior`` (without one when no model is published; ``info["project_prior"]``
        says which). Returns the engine's ``RefineResult``.

        ``use_prior=None`` (default) lets the project decide (:meth:`prior_use`,
        :func:`prior_gate`): a model whose Dice on held-out validation volumes with full
        masks is below :data:`PRIOR_MIN_DICE`, or was scored only on the volumes it
        trained on, is not used (it would pull refine below the scribbles alone), except
        as the draft of a volume with nothing drawn yet; True or False force the choice."""
        return drain(self.refine_steps(vid, scribbles, boxes, **kwargs))

    def record_scores(self, vid: str, **scores) -> None:
        """Store model-estimated scores of ``vid`` (e.g. from a batch job):
        ``model`` (version) plus floats such as ``uncertainty`` and ``quality``."""
        self._writer("record scores")
        self.volume(vid)
        for key, value in scores.items():
            if key != "model" and value is not None and (
                    isinstance(value, bool) or not isinstance(value, (int, float))):
                raise LabelEffError(f"score {key}={value!r} must be a number (or None)")
        self._update_volume(vid, scores=dict(scores))

    # ---- training ---------------------------------------------------------------------------------
    def prepare_training(self, *, max_minutes: float = 10.0, device: str = "auto",
                         seed: int = 0, **options) -> TrainPlan:
        """Snapshot the labels and build the learner's ``TrainSpec`` (writer only).

        An interrupted run whose snapshot and options are unchanged is resumed (same
        version and run folder).
        """
        self._writer("train")
        from ._spec import TrainCase, TrainSpec, write_labels_snapshot

        if not isinstance(max_minutes, (int, float)) or not max_minutes > 0:
            raise LabelEffError(f"max_minutes={max_minutes!r} must be a number > 0")
        if device not in ("auto", "cpu", "cuda") and not str(device).startswith("cuda:"):
            raise LabelEffError(f"device={device!r} must be auto, cpu, cuda or cuda:N")
        if not self.volume_ids:
            raise LabelEffError("the project has no volumes; add some first (Project.add)")
        for vid in self.volume_ids:
            self.image_path(vid)  # every image must be there (clear message otherwise)
        stored = {vid: self.labels(vid) for vid in self.volume_ids}
        for vid, s in stored.items():
            self._refresh(vid, s["scribbles"], s["boxes"])
            self.adopt_classes(s["classes"], vid=vid)  # no session needed (the GUI may hold it)
        labelled = [v for v in self.volumes if v.status != "new"]
        if not labelled:
            raise LabelEffError(
                "no labels to train on: draw scribbles or boxes on at least one volume "
                "(set_weak_labels), or accept / import a mask"
            )
        held = _validation_ids(labelled)
        digest = hashlib.sha256(json.dumps(
            {"classes": self.class_names, "held": sorted(held), "seed": seed,
             "options": {k: repr(v) for k, v in sorted(options.items())},
             "published": str(self.published) if self.published else None}).encode())
        for vid in self.volume_ids:
            digest.update(vid.encode())
            for key in ("scribbles", "mask"):
                arr = stored[vid][key]
                digest.update(b"-" if arr is None else hashlib.sha256(arr.tobytes()).digest())
            digest.update(json.dumps(stored[vid]["boxes"]).encode())
        digest = digest.hexdigest()

        data = self._edit()
        pending = data.get("pending_run")
        resumed = bool(pending and pending.get("digest") == digest
                       and (self.folder / "runs" / pending["run"]).is_dir()
                       and not any(m["version"] == pending["version"] for m in data["models"]))
        if resumed:
            version, run = pending["version"], pending["run"]
        else:
            taken = data["models"] + ([{"version": pending["version"]}] if pending else [])
            version = _next_version(taken, self.folder / "models")
            run = f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{version}"
        run_dir = self.folder / "runs" / run
        (run_dir / "labels").mkdir(parents=True, exist_ok=True)
        (self.folder / "models").mkdir(exist_ok=True)
        cases, validation = [], []
        for rec in self.volumes:
            s = stored[rec.id]
            if rec.status == "new":
                cases.append(TrainCase(rec.id, rec.path, None, "unlabeled"))
                continue
            npz = run_dir / "labels" / f"{rec.id}.npz"
            if not (resumed and npz.exists()):
                try:
                    write_labels_snapshot(npz, s["scribbles"], mask=s["mask"], boxes=s["boxes"] or None)
                except OSError as err:
                    raise LabelEffError(f"cannot write {npz}: {err.strerror or err}") from err
            role = "validation" if rec.id in held else "labelled"
            case = TrainCase(rec.id, rec.path, str(npz), role)
            cases.append(case)
            if role == "validation":
                validation.append(case)
        independent = bool(validation)
        if not independent:
            validation = [c for c in cases if c.role == "labelled"]
        published = self.published
        if published is not None and list(published.record.get("class_names", [])) != self.class_names:
            published = None  # other classes: neither a warm start nor a comparison
        spec = TrainSpec(
            cases=tuple(cases), class_names=tuple(self.class_names),
            out_dir=str(self.model_dir(version)), run_dir=str(run_dir),
            init_checkpoint=str(self.model_dir(published)) if published else None,
            options={"max_minutes": float(max_minutes), "device": device, "seed": int(seed), **options},
        )
        data["pending_run"] = {"run": run, "version": version, "digest": digest, "started": _now()}
        self._commit(data)
        return TrainPlan(spec, version, run, tuple(validation), independent,
                         str(published) if published else None,
                         str(self.model_dir(published)) if published else None, resumed)

    def finish_training(self, outcome: TrainOutcome) -> ProjectTrainReport:
        """Record the new version; publish it when its validation score is not worse
        than the published model's (a damaged or unscorable checkpoint never is)."""
        self._writer("finish training")
        if not isinstance(outcome, TrainOutcome):
            raise LabelEffError(
                f"outcome must be the TrainOutcome of run_training, got {type(outcome).__name__} "
                "(a cancelled run has none: train again to resume it)"
            )
        plan = outcome.plan
        data = self._edit()
        current = data.get("published")
        if outcome.error is not None:
            status, published = "damaged", False
            message = (f"model {plan.version} was not published: its checkpoint could not be "
                       f"evaluated ({outcome.error}); {current or 'no model'} stays published")
        elif current is not None and current != plan.previous and plan.previous is not None:
            status, published = "kept", False
            message = (f"model {plan.version} was not published: {current} was published "
                       "meanwhile; train again to compare them")
        elif plan.previous is None or outcome.previous_score is None or (
                outcome.score is not None and outcome.score >= outcome.previous_score):
            status, published = "published", True
            against = ("no comparable model was published" if plan.previous is None else
                       f"{plan.previous} could not be evaluated ({outcome.previous_error})"
                       if outcome.previous_score is None else
                       f"{plan.previous} scored {outcome.previous_score:.4f}")
            message = f"published model {plan.version} (validation {_fmt(outcome.score)}; {against})"
        else:
            status, published = "kept", False
            message = (f"model {plan.version} was not published: validation {_fmt(outcome.score)} "
                       f"< {outcome.previous_score:.4f} of the published {plan.previous}")
        if not plan.validation_independent:
            message += " [validated on training volumes: no volume is held out]"
        entry = {
            "version": plan.version, "created": _now(), "score": outcome.score,
            "mask_score": outcome.mask_score,
            "status": status, "reason": message, "run": plan.run,
            "class_names": list(plan.spec.class_names),
            "validation": [c.volume_id for c in plan.validation],
            "validation_independent": plan.validation_independent,
        }
        if published:
            for m in data["models"]:
                if m["status"] == "published":
                    m["status"] = "superseded"
            data["published"] = plan.version
        data["models"] = [m for m in data["models"] if m["version"] != plan.version] + [entry]
        data["pending_run"] = None
        self._commit(data)
        self._models.clear()
        self._last_prediction = None
        return ProjectTrainReport(plan.version, published, outcome.score, outcome.previous_score,
                                  plan.previous, message, outcome.report)

    def train_steps(self, *, max_minutes: float = 10.0, device: str = "auto", seed: int = 0,
                    **options):
        """Train a new model version (generator: yields the learner's progress, then a
        validation step); returns :class:`ProjectTrainReport`. Closing it cancels
        training; the next call with unchanged labels resumes it."""
        plan = self.prepare_training(max_minutes=max_minutes, device=device, seed=seed, **options)
        outcome = yield from run_training(plan)
        return self.finish_training(outcome)

    def train(self, *, max_minutes: float = 10.0, device: str = "auto", seed: int = 0,
              **options) -> ProjectTrainReport:
        """Blocking :meth:`train_steps`."""
        return drain(self.train_steps(max_minutes=max_minutes, device=device, seed=seed,
                                      **options))

    # ---- cohort-scale hooks (issue 9) ------------------------------------------------------------
    def suggest_volumes(self, n: int = 3, **kwargs):
        """Rank volumes to annotate next (``cohort._volume_al``): items with
        ``volume_id``, ``score``, ``reason``."""
        try:
            from ._volume_al import suggest_volumes
        except ImportError as err:
            raise LabelEffError("volume suggestions are not available in this version") from err
        return suggest_volumes(self, n=n, **kwargs)

    def label_qa(self, **kwargs):
        """Doubtful accepted/imported masks (``cohort._qa``): items with ``volume_id``,
        ``score`` (higher = more doubtful), ``bbox`` or None, ``reason``."""
        try:
            from ._qa import label_qa
        except ImportError as err:
            raise LabelEffError("label QA is not available in this version") from err
        return label_qa(self, **kwargs)


def run_training(plan: TrainPlan, *, background: bool = False):
    """Train (the learner's ``train_steps(plan.spec)``) and validate both checkpoints.

    Needs no :class:`Project` and no lock, so it can run anywhere (a worker thread);
    pass its return value to :meth:`Project.finish_training`.

    Parameters
    ----------
    plan : TrainPlan
    background : bool
        Train in a spawned child process (``cohort._background``): the caller's
        process (the viewer) keeps its memory and GIL. Validation runs here.

    Yields
    ------
    TrainProgress, then engine Progress for the validation step.

    Returns
    -------
    TrainOutcome or None
        None when the background process reported a cancel.
    """
    from ..engine._types import Progress
    from ._predict import evaluate

    if background:
        from ._background import train_in_background as train_steps
    else:
        from ._train import train_steps

    report = yield from train_steps(plan.spec)
    if report is None:
        return None
    cases = list(plan.validation)
    yield Progress(0, 2, f"validating {plan.version} on {len(cases)} volume(s)")
    score, mask_score, error = _evaluate(evaluate, plan.spec.out_dir, cases)
    previous_score = previous_error = None
    if plan.previous_dir is not None:
        yield Progress(1, 2, f"validating the published {plan.previous}")
        previous_score, _, previous_error = _evaluate(evaluate, plan.previous_dir, cases)
    yield Progress(2, 2, "validated")
    return TrainOutcome(plan, report, score, previous_score, error, previous_error,
                        mask_score)


def _evaluate(evaluate, folder, cases):
    """(score, score on full masks only or None, error or None) of one checkpoint."""
    try:
        score, mask_score = evaluate(folder, cases, with_mask_score=True)
        score = float(score)
    except Exception as err:  # noqa: BLE001 - a damaged checkpoint is reported, not raised
        return None, None, f"{type(err).__name__}: {err}"
    if not math.isfinite(score):
        return None, None, f"score {score}"
    return score, mask_score, None


# ---- helpers --------------------------------------------------------------------------------
def _fmt(score) -> str:
    return "n/a" if score is None else f"{score:.4f}"


def _acquire(folder: Path):
    from .._lock import StoreLock

    return StoreLock.acquire(folder, what="project")


def _check_seconds(seconds) -> float:
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(seconds, bool) or not math.isfinite(value) or value < 0:
        raise LabelEffError(f"seconds={seconds!r} must be a finite number >= 0")
    return value


def _check_class_names(names) -> list[str]:
    if isinstance(names, str) or not hasattr(names, "__iter__"):
        raise LabelEffError(f"class_names={names!r} must be a list of structure names, e.g. ['left atrium']")
    out = []
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise LabelEffError(f"class_names={list(names)!r}: every name must be a non-empty string")
        if name.strip().lower() in {n.lower() for n in out} | {"background"}:
            raise LabelEffError(f"class_names={list(names)!r}: {name!r} is repeated or 'background'")
        out.append(name.strip())
    if not 1 <= len(out) <= 254:
        raise LabelEffError(f"class_names={list(names)!r} must name 1..254 structures (background excluded)")
    return out


def _labels_uint8(arr: np.ndarray, what: str, max_value: int, allowed: str) -> np.ndarray:
    if arr.dtype.kind not in "uib":
        raise LabelEffError(f"{what} must hold integers, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() > max_value):
        raise LabelEffError(f"{what} hold values {arr.min()}..{arr.max()}; allowed: {allowed}")
    return arr.astype(np.uint8)


def _parse(text: str):
    try:
        data = json.loads(text)
    except ValueError as err:
        return None, f"not valid JSON ({err})"
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None, "not a napari-labeleff project file"
    if data.get("version", 0) > FORMAT_VERSION:
        return None, f"written by a newer napari-labeleff (format {data.get('version')})"
    try:
        list(data["class_names"])
        [VolumeRecord.from_dict(v) for v in data["volumes"]]
        [m["version"] for m in data["models"]]
    except (KeyError, TypeError, ValueError) as err:
        return None, f"incomplete ({type(err).__name__}: {err})"
    data.setdefault("pending_run", None)
    return data, None


def _load(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, "missing"
    except (OSError, UnicodeDecodeError) as err:
        return None, f"unreadable ({err})"
    data, problem = _parse(text)
    return data, problem


def _recover(folder: Path, problem: str, read_only: bool) -> dict:
    """``project.json`` is damaged: use ``project.json.prev``; set the damaged file aside."""
    main, prev = folder / PROJECT_FILE, folder / (PROJECT_FILE + PREV_SUFFIX)
    data, prev_problem = _load(prev)
    if data is None:
        raise LabelEffError(
            f"{main} is {problem} and its previous generation {prev.name} is {prev_problem}; "
            "nothing was changed: restore project.json from a backup"
        )
    if read_only:
        warnings.warn(f"{main} is {problem}; reading its previous generation {prev.name} "
                      "(open the project for writing to restore it)", UserWarning, stacklevel=3)
        return data
    if main.exists():
        aside = folder / f"{PROJECT_FILE}.damaged-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
        os.replace(main, aside)
        kept = f"; the damaged file is kept as {aside.name}"
    else:
        kept = ""
    atomic_write_text(main, json.dumps(data, indent=1))
    warnings.warn(
        f"{main} was {problem}; restored its previous generation (generation "
        f"{data.get('generation')}): the last change to the project list may be lost, "
        f"annotations in volumes/ are not{kept}",
        UserWarning, stacklevel=3,
    )
    return data


def _geometry_differences(mask: Geometry, image: Geometry, atol: float = 1e-3) -> list[str]:
    """What differs between two voxel grids: spacing, orientation, origin (mm)."""
    out = []
    if not np.allclose(mask.spacing, image.spacing, atol=atol, rtol=0):
        out.append(f"spacing {_r(mask.spacing)} mm vs the image's {_r(image.spacing)} mm (Z, Y, X)")
    if not np.allclose(mask.direction_lps, image.direction_lps, atol=atol, rtol=0):
        out.append(f"orientation {mask.axcodes} vs the image's {image.axcodes} (direction cosines differ)")
    gap = float(np.linalg.norm(mask.affine_ras[:3, 3] - image.affine_ras[:3, 3]))
    if gap > atol:
        out.append(f"origin {_r(mask.affine_ras[:3, 3])} vs the image's {_r(image.affine_ras[:3, 3])} "
                   f"(RAS mm; {gap:.3g} mm apart)")
    return out


def _r(values) -> tuple:
    return tuple(round(float(v), 3) for v in values)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _append_lines(path: Path, lines: list[str]) -> None:
    """Append whole lines with one write; on failure truncate back (no torn line)."""
    payload = ("\n".join(lines) + "\n").encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    except OSError as err:
        raise LabelEffError(f"cannot write {path}: {err.strerror or err}; nothing was logged") from err
    try:
        size = os.fstat(fd).st_size
        if size:  # a torn line from a crash: start on a fresh line
            with open(path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    payload = b"\n" + payload
        try:
            written = os.write(fd, payload)
            if written != len(payload):
                raise OSError(errno.ENOSPC, "short write")
            os.fsync(fd)
        except OSError as err:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            raise LabelEffError(f"cannot write {path}: {err.strerror or err}; nothing was logged") from err
    finally:
        os.close(fd)


def _volume_entries(folder: Path, recursive: bool) -> list[Path]:
    out = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.name.endswith(STORE_SUFFIX):
            continue
        if can_read(entry):
            if entry.is_file() and entry.suffix.lower() == ".dcm":
                continue  # loose DICOM slices belong to a series folder, not one volume each
            out.append(entry)
        elif recursive and entry.is_dir():
            out.extend(_volume_entries(entry, True))
    return out


#: A published model is used as refine's prior only when its Dice on held-out
#: validation volumes with full masks is at least this: on the left-atrium tuning cases
#: the graph method reaches 0.77-0.85 from the initial scribbles alone, and models below
#: that pulled refine down (0.33 vs 0.85 in the learning-curve run of session 2).
PRIOR_MIN_DICE = 0.8


def prior_gate(mask_score, independent: bool = True):
    """Whether a model validated at ``mask_score`` (Dice on full masks, or None when
    no validation volume had one) may serve as refine's prior; returns (use, note).

    A score measured on the model's own training volumes (``independent=False``) says
    little (0.87-0.92 there while the prior lowered refine on the next volumes of the
    learning-curve run): the model is then not used as the prior."""
    if mask_score is None:
        return True, ("used unchecked: no validation volume has a full mask (accept or "
                      "import masks to let the project check the model)")
    if not independent:
        return False, (f"not used: its Dice on full masks ({mask_score:.3f}) comes from "
                       "the volumes it trained on; with 5 or more labelled volumes (or one "
                       "set as validation) the project holds some out to check it")
    if mask_score < PRIOR_MIN_DICE:
        return False, (f"not used: the model's validation Dice on full masks "
                       f"{mask_score:.3f} < {PRIOR_MIN_DICE} (a weaker model pulls refine "
                       "below the scribbles alone)")
    return True, f"used: validation Dice on full masks {mask_score:.3f}"


def _validation_ids(labelled: list[VolumeRecord]) -> set[str]:
    explicit = {v.id for v in labelled if v.role == "validation"}
    auto = [v for v in labelled if v.role == "auto"]
    if len(labelled) >= VALIDATION_MIN:
        explicit |= {v.id for i, v in enumerate(auto) if i % VALIDATION_EVERY == VALIDATION_EVERY - 1}
    if len(explicit) == len(labelled):  # keep at least one volume to train on
        explicit -= {labelled[0].id}
    return explicit


def _next_version(models: list[dict], folder: Path) -> str:
    numbers = [int(m.group(1)) for m in (_VERSION.match(x["version"]) for x in models) if m]
    if folder.is_dir():
        numbers += [int(m.group(1)) for m in (_VERSION.match(p.name) for p in folder.iterdir()) if m]
    return f"v{max(numbers, default=0) + 1:04d}"


def _summarise(probs: np.ndarray):
    """Labels, normalised entropy and the volume's model-estimated scores."""
    p = np.clip(probs, 0.0, None)
    p = p / np.maximum(p.sum(0, keepdims=True), 1e-12)
    labels = np.argmax(p, axis=0).astype(np.uint8)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(p > 0, p * np.log(p), 0.0).sum(0) / math.log(p.shape[0])
    uncertainty = np.clip(ent, 0.0, 1.0).astype(np.float32)
    dices = []
    for c in range(1, p.shape[0]):
        y = labels == c
        denom = float(p[c].sum() + y.sum())
        if denom > 0:
            dices.append(2.0 * float(p[c][y].sum()) / denom)
    quality = float(np.mean(dices)) if dices else None
    fg = labels > 0
    scores = {
        "uncertainty": float(uncertainty.mean()),
        "foreground_uncertainty": float(uncertainty[fg].mean()) if fg.any() else None,
        "quality": quality,
    }
    return labels, uncertainty, scores
