"""The cohort project store: persistence only (no torch, no training).

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
    <project>/inbox/                scores left by read-only processes for the writer

Rooms: :class:`ProjectFile` (``_file``: project.json generations and the lock),
:class:`Volumes` (``_volumes``), :class:`Labels` (``_labels``: annotation stores,
weak labels, masks, status), :class:`AnnotationLog` (``_log``), :class:`Models`
(``_models``: versions, published pointer, scores, inbox); :class:`ProjectStore`
holds one of each.
"""

from ._file import PROJECT_FILE, ProjectFile, check_class_names
from ._labels import Labels
from ._log import LOG_FILE, AnnotationLog, check_seconds
from ._models import INBOX, Models, next_version
from ._records import MASK_NAMES, ROLES, STATUSES, PublishedModel, VolumeRecord, now
from ._store import ProjectStore
from ._volumes import SPACING_RATIO_WARN, Volumes

__all__ = [
    "INBOX",
    "LOG_FILE",
    "MASK_NAMES",
    "PROJECT_FILE",
    "ROLES",
    "SPACING_RATIO_WARN",
    "STATUSES",
    "AnnotationLog",
    "Labels",
    "Models",
    "ProjectFile",
    "ProjectStore",
    "PublishedModel",
    "Volumes",
    "VolumeRecord",
    "check_class_names",
    "check_seconds",
    "next_version",
    "now",
]
