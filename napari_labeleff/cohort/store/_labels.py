"""Per-volume annotation stores: scribbles, boxes and masks of each volume, its status.

Each volume's annotations live in an :class:`~napari_labeleff.session.AnnotationSession`
store (``volumes/<vid>/<checksum>.labeleff.zarr``), whose chunk and metadata writes are
atomic. This room reads and writes them, keeps the structure list of every store in
line with the project's, derives a volume's status and logs what changed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..._errors import LabelEffError
from ...io import check_labels, default_color, read_label_volume
from ...session import STORE_SUFFIX, AnnotationSession, LabelClass
from ._file import check_class_names
from ._log import check_seconds
from ._records import MASK_NAMES, Room, VolumeRecord


class Labels(Room):
    """The annotation stores of a project's volumes (``store``: the ProjectStore)."""

    @property
    def class_names(self) -> list[str]:
        return list(self._file.data["class_names"])

    # ---- stores ----------------------------------------------------------------------------
    def store_path(self, vid: str) -> Path:
        rec = self._store.volumes.get(vid)
        return self._file.folder / "volumes" / rec.id / f"{rec.checksum}{STORE_SUFFIX}"

    def create_store(self, rec: VolumeRecord) -> None:
        """Create the volume's session store in the project (kept if it exists)."""
        path = self._file.folder / "volumes" / rec.id / f"{rec.checksum}{STORE_SUFFIX}"
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

    def open_store(self, vid: str, read_only: bool) -> AnnotationSession | None:
        rec = self._store.volumes.get(vid)
        path = self.store_path(vid)
        if not path.exists():
            if read_only:
                return None
            self.create_store(rec)
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
        """See :meth:`Project.session`."""
        self._file.writer("open an annotation session")
        session = self.open_store(vid, read_only=False)
        try:
            self.sync_classes(vid, session)
        except BaseException:
            session.close()
            raise
        return session

    def with_session(self, vid: str, session):
        """``(session, owned)``: the caller's open store of ``vid``, or a new one."""
        if session is None:
            return self.session(vid), True
        if Path(session.store_path) != self.store_path(vid):
            raise LabelEffError(
                f"session={session.store_path} is not volume {vid!r}'s store {self.store_path(vid)}"
            )
        self.sync_classes(vid, session)
        return session, False

    def sync_classes(self, vid: str, session: AnnotationSession) -> None:
        """Session classes == project classes: add the project's missing ones to the
        session; adopt structures the session added at the end (e.g. in the GUI)."""
        names = [c.name for c in session.classes[1:]]
        self.adopt_classes(names, vid=vid)
        for name in self.class_names[len(names):]:
            session.add_class(name)

    def adopt_classes(self, names, *, vid: str | None = None) -> None:
        """See :meth:`Project.adopt_classes`."""
        names = list(names)
        project = self.class_names
        if names == project or project[: len(names)] == names:
            return
        if names[: len(project)] == project:
            self._file.writer("add classes")
            data = self._file.edit()
            data["class_names"] = check_class_names(names)
            self._file.commit(data)
            return
        where = f"volume {vid!r}: its" if vid else "the"
        raise LabelEffError(
            f"{where} classes {names} differ from the project's {project}; use the same "
            "structures, in the same order, in every volume (add new ones at the end)"
        )

    def read(self, vid: str) -> dict:
        """See :meth:`Project.labels`."""
        rec = self._store.volumes.get(vid)
        session = self.open_store(vid, read_only=True)
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

    # ---- weak labels -----------------------------------------------------------------------
    def set_weak(self, vid: str, scribbles=None, boxes=None, *, seconds: float = 0.0,
                 session=None) -> None:
        """See :meth:`Project.set_weak_labels`."""
        self._file.writer("store weak labels")
        check_seconds(seconds)
        rec = self._store.volumes.get(vid)
        session, owned = self.with_session(vid, session)
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
            arr = check_labels(arr, "scribbles", max_value=k + 1, allowed=(
                f"0 (unannotated), 1 (background) or c + 1 for structures c = 1..{k}"))
            entries += self.scribble_entries(session.scribbles, arr)
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
            self._store.log_entries(vid, entries or [{"kind": "weak labels", "class": None, "voxels": 0}],
                                    seconds)
        self.refresh(vid, session.scribbles, session.boxes)

    def scribble_entries(self, old, new) -> list[dict]:
        """Log entries (per scribble value drawn or erased) for ``old`` -> ``new``."""
        changed = np.asarray(old) != np.asarray(new)
        if not changed.any():
            return []
        values, counts = np.unique(np.asarray(new)[changed], return_counts=True)
        names = ["background", *self.class_names]
        return [{"kind": "erase" if v == 0 else "scribble",
                 "class": None if v == 0 else (names[v - 1] if v - 1 < len(names) else f"label {v}"),
                 "voxels": int(n)} for v, n in zip(values.tolist(), counts.tolist())]

    def refresh_status(self, vid: str | None = None, *, scribbles=None, boxes=None) -> None:
        """See :meth:`Project.refresh_status`."""
        self._file.writer("update statuses")
        if scribbles is not None or boxes is not None:
            if vid is None:
                raise LabelEffError("refresh_status: scribbles/boxes need a volume id")
            stored = None if scribbles is not None and boxes is not None else self.read(vid)
            self.refresh(vid, stored["scribbles"] if scribbles is None else scribbles,
                         stored["boxes"] if boxes is None else boxes)
            return
        for v in [vid] if vid is not None else self._store.volumes.ids:
            stored = self.read(v)
            self.refresh(v, stored["scribbles"], stored["boxes"])

    def refresh(self, vid, scribbles, boxes) -> None:
        """Status "new" or "weak" from ``scribbles`` and ``boxes`` (masks keep theirs)."""
        rec = self._store.volumes.get(vid)
        if rec.status in ("accepted", "imported"):
            return
        status = "weak" if (np.any(scribbles) or len(boxes)) else "new"
        if status != rec.status:
            self._store.volumes.update(vid, status=status)

    # ---- masks -----------------------------------------------------------------------------
    def accept(self, vid: str, mask, *, seconds: float = 0.0, session=None,
               replace: bool = False, curve: dict | None = None) -> None:
        """See :meth:`Project.accept` (``curve``: the volume's learning-curve entry,
        saved in the same write as its status)."""
        self._file.writer("accept a mask")
        check_seconds(seconds)
        rec = self._store.volumes.get(vid)
        mask = self.check_mask(rec, np.asarray(mask), "mask")
        self._save_mask(vid, MASK_NAMES["accepted"], mask, session,
                        check=lambda: self._refuse_replace(rec, replace))
        self._store.volumes.update(vid, status="accepted", **({"curve": curve} if curve else {}))
        self._store.log_entries(vid, self._mask_entries("accept", mask), seconds)

    def _refuse_replace(self, rec: VolumeRecord, replace: bool) -> None:
        if rec.status in MASK_NAMES and not replace:
            raise LabelEffError(
                f"volume {rec.id!r} already has an {rec.status} mask; accepting another one "
                "replaces it: pass replace=True (labeleff project accept --replace) to do so"
            )

    def import_mask(self, vid: str, path, *, session=None) -> None:
        """See :meth:`Project.import_mask`."""
        self._file.writer("import a mask")
        rec = self._store.volumes.get(vid)
        path = Path(path).expanduser().absolute()
        data = read_label_volume(path, tuple(rec.shape), rec.geometry, what="mask",
                                 owner=f"volume {vid!r}", grid=f"the voxel grid of volume {vid!r}")
        mask = self.check_mask(rec, data, f"mask {path}")
        self._save_mask(vid, MASK_NAMES["imported"], mask, session)
        self._store.volumes.update(vid, status="imported", mask_source=str(path))
        self._store.log_entries(vid, self._mask_entries("import", mask), 0.0)

    def _save_mask(self, vid, name, mask, session, check=None) -> None:
        """Save through the caller's session or a new one; ``check()`` runs once the
        store is open (the volume is ours), before anything is written."""
        session, owned = self.with_session(vid, session)
        try:
            if check is not None:
                check()
            session.save_mask(name, mask)
        finally:
            if owned:
                session.close()

    def check_mask(self, rec, mask, what) -> np.ndarray:
        """``mask`` as uint8 0..K on ``rec``'s grid, or a clear error."""
        if mask.shape != tuple(rec.shape):
            raise LabelEffError(f"{what} has shape {mask.shape}; volume {rec.id!r} has (Z, Y, X) = {tuple(rec.shape)}")
        k = len(self.class_names)
        return check_labels(mask, what, max_value=k, allowed=f"0 (background) or structures 1..{k}")

    def _mask_entries(self, kind, mask) -> list[dict]:
        counts = np.bincount(mask.ravel(), minlength=len(self.class_names) + 1)
        return [{"kind": kind, "class": name, "voxels": int(counts[c + 1])}
                for c, name in enumerate(self.class_names)]
