"""Training interface between the project store and the learner (contract C3).

The project (``cohort/services/_training.py``) builds a :class:`TrainSpec` from the project's
volumes and hands it to :func:`napari_labeleff.cohort.training.train_steps`; training never
imports the store. This module is pure Python + numpy (no torch), so the store, the CLI
and the GUI can import it cheaply.

Labels snapshot (``TrainCase.labels_path``): a ``.npz`` file with

- ``"scribbles"``: (Z, Y, X) uint8, engine convention (0 = unannotated,
  1 = background, c + 1 = structure c);
- ``"mask"`` (optional): (Z, Y, X) uint8, 0..K, a full (accepted / imported) mask;
- ``"boxes"`` (optional): (N, 7) int64 rows ``(c, z0, y0, x0, z1, y1, x1)``
  (inclusive-exclusive voxel boxes around structure c, engine convention).

:func:`write_labels_snapshot` writes one atomically, :func:`read_labels_snapshot` reads
and validates one.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..._errors import LabelEffError

ROLES = ("labelled", "unlabeled", "validation")
"""Allowed values of :attr:`TrainCase.role`."""

#: Option names understood by ``train_steps`` (documented in ``cohort/training/_options.py``).
KNOWN_OPTIONS = (
    "max_minutes", "max_steps", "device", "seed", "semi", "pretrain", "pretrain_minutes",
    "pseudo_labels", "patch_size", "batch_size", "target_spacing", "features",
    "learning_rate", "val_every", "num_threads", "amp", "verbose", "pseudo_cache_dir",
    "pseudo_confidence", "self_training", "pseudo_band", "interactive", "rules", "rule_weight",
)


@dataclass(frozen=True)
class TrainCase:
    """One volume of a training run.

    Attributes
    ----------
    volume_id : str
        The project's id of the volume (filesystem-safe).
    image_path : str
        Image file, read with :func:`napari_labeleff.io.read_volume`.
    labels_path : str or None
        ``.npz`` labels snapshot (see the module docstring), or None for an
        unlabeled volume.
    role : str
        ``"labelled"`` (used for supervised terms; weak and/or full labels),
        ``"unlabeled"`` (semi-supervised and self-supervised terms only) or
        ``"validation"`` (never trained on; scored to decide publication).
    """

    volume_id: str
    image_path: str
    labels_path: str | None = None
    role: str = "labelled"

    def __post_init__(self):
        if not isinstance(self.volume_id, str) or not self.volume_id:
            raise LabelEffError(f"TrainCase volume_id={self.volume_id!r} must be a non-empty string")
        if self.role not in ROLES:
            raise LabelEffError(
                f"TrainCase role={self.role!r} for volume {self.volume_id!r} is unknown; "
                f"allowed: {', '.join(map(repr, ROLES))}"
            )
        if self.role in ("labelled", "validation") and self.labels_path is None:
            raise LabelEffError(
                f"TrainCase {self.volume_id!r} has role={self.role!r} but labels_path=None; "
                f"a {self.role} case needs a labels snapshot (.npz)"
            )
        object.__setattr__(self, "image_path", os.fspath(self.image_path))
        if self.labels_path is not None:
            object.__setattr__(self, "labels_path", os.fspath(self.labels_path))


@dataclass(frozen=True)
class TrainSpec:
    """Everything a training run needs; rerunning the same spec resumes it.

    Attributes
    ----------
    cases : tuple of TrainCase
        Volumes with their roles.
    class_names : tuple of str
        Structures, background excluded (K = ``len(class_names)``).
    out_dir : str
        A NEW checkpoint folder (``models/<version>``) to write; it must not hold a
        ``model.pt`` yet.
    run_dir : str
        Folder for the resume state (``resume.pt``) and the run's log.
    init_checkpoint : str or None
        Published checkpoint folder to warm-start from (its class list must match).
    options : dict
        Training options, see ``napari_labeleff.cohort.training._options`` (``max_minutes``,
        ``device``, ``seed``, ``semi``, ``pretrain``, ...).
    """

    cases: tuple
    class_names: tuple
    out_dir: str
    run_dir: str
    init_checkpoint: str | None = None
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        cases = tuple(self.cases)
        for c in cases:
            if not isinstance(c, TrainCase):
                raise LabelEffError(f"TrainSpec cases must be TrainCase objects, got {type(c).__name__}")
        ids = [c.volume_id for c in cases]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise LabelEffError(f"TrainSpec lists volume(s) {dup} more than once")
        names = tuple(str(n) for n in self.class_names)
        if not names:
            raise LabelEffError("TrainSpec class_names is empty; give at least one structure")
        if len(set(names)) != len(names):
            raise LabelEffError(f"TrainSpec class_names={list(names)} has duplicates")
        if len(names) > 254:
            raise LabelEffError(f"TrainSpec has {len(names)} classes; at most 254 fit in uint8 labels")
        opts = dict(self.options or {})
        unknown = sorted(set(opts) - set(KNOWN_OPTIONS))
        if unknown:
            raise LabelEffError(
                f"TrainSpec options {unknown} are unknown; allowed: {', '.join(KNOWN_OPTIONS)}"
            )
        object.__setattr__(self, "cases", cases)
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "out_dir", os.fspath(self.out_dir))
        object.__setattr__(self, "run_dir", os.fspath(self.run_dir))
        if self.init_checkpoint is not None:
            object.__setattr__(self, "init_checkpoint", os.fspath(self.init_checkpoint))
        object.__setattr__(self, "options", opts)

    @property
    def n_classes(self) -> int:
        """K + 1, background included."""
        return len(self.class_names) + 1

    def by_role(self, role: str) -> tuple:
        """The cases with ``role``."""
        return tuple(c for c in self.cases if c.role == role)


@dataclass
class TrainProgress:
    """One progress report of ``train_steps``.

    Attributes
    ----------
    step, total : int
        Optimiser steps done and planned (``total`` is an estimate under a time budget).
    message : str
        Stage and state, e.g. ``"hybrid: step 120/600, loss 0.41"``.
    loss : float or None
        Mean training loss over the last steps.
    val_dice : float or None
        Latest validation score (mean Dice), when one was computed.
    stage : str
        ``"prepare"``, ``"pretrain"``, ``"train"``, ``"validate"`` or ``"save"``.
    """

    step: int
    total: int
    message: str
    loss: float | None = None
    val_dice: float | None = None
    stage: str = "train"


@dataclass
class TrainReport:
    """Return value of ``train_steps`` (``StopIteration.value``) and ``Project.train``.

    Attributes
    ----------
    out_dir : str
        The checkpoint folder written.
    val_score : float or None
        Mean Dice on the validation cases (None when there were none).
    epochs : int
        Passes over the labelled cases (approximate under patch sampling).
    steps : int
        Optimiser steps of the hybrid stage.
    seconds : float
        Wall time of the run (all sessions of a resumed run together).
    log : list of dict
        The training log (also in ``train_log.jsonl``).
    version : str
        The checkpoint's version (folder name).
    info : dict
        Extras: device, cpu seconds, peak memory, stages run, resumed from step, ...
    """

    out_dir: str
    val_score: float | None
    epochs: int
    seconds: float
    log: list = field(default_factory=list)
    steps: int = 0
    version: str = ""
    info: dict[str, Any] = field(default_factory=dict)


def write_labels_snapshot(path, scribbles, *, mask=None, boxes=None) -> str:
    """Write a labels snapshot ``.npz`` atomically (temp file + rename).

    Parameters
    ----------
    path : str or path-like
        Destination ``.npz``.
    scribbles : array_like of int, shape (Z, Y, X)
        Engine convention: 0 = unannotated, 1 = background, c + 1 = structure c.
    mask : array_like of int, shape (Z, Y, X), optional
        Full mask 0..K.
    boxes : array_like of int, shape (N, 7), optional
        ``(c, z0, y0, x0, z1, y1, x1)`` rows.

    Returns
    -------
    str
        The path written.
    """
    path = os.fspath(path)
    scribbles = np.asarray(scribbles)
    arrays = {"scribbles": scribbles.astype(np.uint8)}
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != scribbles.shape:
            raise LabelEffError(f"mask shape {mask.shape} != scribbles shape {scribbles.shape}")
        arrays["mask"] = mask.astype(np.uint8)
    if boxes is not None and len(boxes):
        arrays["boxes"] = np.asarray(boxes, dtype=np.int64).reshape(-1, 7)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".npz.tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_labels_snapshot(path, *, shape=None, n_classes=None) -> dict:
    """Read and validate a labels snapshot.

    Parameters
    ----------
    path : str or path-like
        ``.npz`` written by :func:`write_labels_snapshot` (or the store).
    shape : tuple of int, optional
        Expected (Z, Y, X) shape (the image's).
    n_classes : int, optional
        K + 1; labels beyond it are an error (class list changed since labelling).

    Returns
    -------
    dict
        ``"scribbles"`` (Z, Y, X) uint8, ``"mask"`` (Z, Y, X) uint8 or None,
        ``"boxes"`` (N, 7) int64 (possibly N = 0).

    Raises
    ------
    LabelEffError
        Missing or damaged file, wrong shape, labels beyond the class list.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise LabelEffError(f"labels snapshot {path!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: np.asarray(z[k]) for k in z.files}
    except Exception as err:  # zipfile.BadZipFile, ValueError, OSError, EOFError
        raise LabelEffError(f"labels snapshot {path!r} is damaged or not an .npz file ({err})") from err
    if "scribbles" not in data and "mask" not in data:
        raise LabelEffError(f"labels snapshot {path!r} has neither 'scribbles' nor 'mask'")
    ref = data.get("scribbles", data.get("mask"))
    if ref.ndim != 3:
        raise LabelEffError(f"labels snapshot {path!r}: arrays must be (Z, Y, X), got shape {ref.shape}")
    if shape is not None and tuple(ref.shape) != tuple(shape):
        raise LabelEffError(
            f"labels snapshot {path!r} has shape {tuple(ref.shape)} but its image has {tuple(shape)}"
        )
    scribbles = data.get("scribbles")
    scribbles = np.zeros(ref.shape, np.uint8) if scribbles is None else scribbles.astype(np.uint8)
    mask = data.get("mask")
    if mask is not None:
        if mask.shape != scribbles.shape:
            raise LabelEffError(f"labels snapshot {path!r}: mask shape {mask.shape} != {scribbles.shape}")
        mask = mask.astype(np.uint8)
    boxes = data.get("boxes")
    boxes = np.zeros((0, 7), np.int64) if boxes is None else boxes.astype(np.int64).reshape(-1, 7)
    if n_classes is not None:
        k = n_classes - 1
        if scribbles.size and int(scribbles.max()) > k + 1:
            raise LabelEffError(
                f"labels snapshot {path!r} has scribble label {int(scribbles.max())} (structure "
                f"{int(scribbles.max()) - 1}) but the project has {k} structure(s); "
                f"was the class list changed after labelling?"
            )
        if mask is not None and mask.size and int(mask.max()) > k:
            raise LabelEffError(
                f"labels snapshot {path!r} has mask label {int(mask.max())} but the project has "
                f"{k} structure(s); was the class list changed after labelling?"
            )
        if len(boxes) and (boxes[:, 0].min() < 1 or boxes[:, 0].max() > k):
            raise LabelEffError(
                f"labels snapshot {path!r} has boxes for classes {sorted(set(boxes[:, 0].tolist()))}; "
                f"allowed 1..{k}"
            )
    return {"scribbles": scribbles, "mask": mask, "boxes": boxes}


def has_labels(labels: dict) -> bool:
    """True when a snapshot carries any supervision (scribbles, mask or boxes)."""
    return bool(
        (labels.get("scribbles") is not None and np.any(labels["scribbles"]))
        or labels.get("mask") is not None
        or len(labels.get("boxes", ())) > 0
    )
