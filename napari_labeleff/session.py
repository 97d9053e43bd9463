"""Headless per-volume annotation state with autosave to a zarr store.

One :class:`AnnotationSession` holds everything a user drew on one volume (classes,
scribbles, boxes, masks, reviewed suggestions) and persists it, so a crash loses at
most the operation in progress and reopening the same volume (recognised by a content
checksum, not by its path) restores the work.

Store layout (``<image>.labeleff.zarr`` next to the image, or
``<checksum>.labeleff.zarr`` in a chosen folder or the user data dir)::

    zarr.json                 zarr v3 group
    scribbles[.<token>]/      uint8 (Z, Y, X), chunks SCRIBBLE_CHUNKS (the current one
                              is named in session.json)
    masks/<name>.<token>/     uint8 (Z, Y, X), one array per saved version
    session.json              format version, checksum, shape, geometry, classes,
                              boxes, reviewed, and which arrays are current
    session.json.prev         the previous generation of session.json
    session.json.damaged-*    a damaged session.json set aside (until discard_damaged())
    history/<id>.json         the last N generations of the user's work
    history/blobs/<sha256>    each array file's bytes once (hard links of the chunks)
    writer.lock               while a process has the store open for writing

Durability (see docs/formats.md, "Durability guarantees"):

* every file is written to a temporary file, fsynced and renamed into place, and its
  folder is fsynced (:func:`napari_labeleff.io.atomic.durable_put`); zarr chunks go
  through :class:`~napari_labeleff._history.DurableLocalStore`, which does this itself
  instead of relying on whichever zarr release is installed. When a ``save_*`` method
  returns, the change is on disk and survives a SIGKILL, a power cut or an OS crash;
* every save is a generation of the history (:meth:`AnnotationSession.history`,
  :meth:`AnnotationSession.restore`; :mod:`napari_labeleff._history` has the design);
  a file a generation lists but the disk lacks is damage, not "unannotated";
* a mask, and the scribbles after a class removal, are written as *new* arrays and
  become current only when ``session.json`` is atomically replaced, so every multi-array
  change (removing a class renumbers scribbles, boxes and every mask) is one atomic
  transition;
* the previous ``session.json`` generation and the arrays it names are kept, so a
  damaged ``session.json`` (or damaged current arrays) is recovered from it;
* opening never deletes or overwrites anything in a store it cannot fully read: it
  recovers from the previous generation, else from the newest intact generation of the
  history (the damaged session.json is renamed and the damaged arrays are kept until
  :meth:`AnnotationSession.discard_damaged`), or raises a :class:`LabelEffError` naming
  the file and the remedy. A store written by a
  newer version of the package is refused, nothing written;
* one writer per store (:class:`napari_labeleff._lock.StoreLock`); ``read_only=True``
  opens without the lock and every save raises.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr

from ._errors import LabelEffError
from ._history import DurableLocalStore, Generation, History
from ._lock import LOCK_NAME, StoreLock
from ._session_files import (  # noqa: F401 - constants re-exported (documented here)
    BOOKKEEPING,
    FORMAT_VERSION,
    META_NAME,
    PREV_NAME,
    SCRIBBLE_CHUNKS,
    STORE_SUFFIX,
    RecoveredStoreWarning,
    _array_keys,
    _belongs,
    _check_region,
    _counts_of,
    _Damaged,
    _drop_value,
    _generations,
    _load_meta,
    _read_arrays,
    as_uint8_labels,
    new_token,
    volume_checksum,
)
from ._session_history import SessionHistory
from .io import Geometry
from .io import check_color, default_color
from .io.atomic import TMP_MARK, atomic_write_text, durable_put, fsync_dir

__all__ = [
    "AnnotationSession", "DurableLocalStore", "Generation", "LabelClass",
    "RecoveredStoreWarning", "as_uint8_labels", "user_store_dir", "volume_checksum",
]

logger = logging.getLogger(__name__)

_MASK_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def user_store_dir() -> Path:
    """Per-user folder for stores of images whose folder is not writable."""
    import platformdirs

    return Path(platformdirs.user_data_dir("napari-labeleff"))


@dataclass
class LabelClass:
    """A class: ``name`` and display ``color`` (RGB floats in 0..1)."""

    name: str
    color: tuple[float, float, float]

    def to_dict(self) -> dict:
        return {"name": self.name, "color": [float(v) for v in self.color]}


@dataclass(eq=False)
class AnnotationSession(SessionHistory):
    """Annotation state of one volume, persisted in a zarr store.

    Open with :meth:`open`; close with :meth:`close` (or use a ``with`` block) to let
    another process write the store.

    Attributes
    ----------
    checksum : str
        :func:`volume_checksum` of the image.
    shape : tuple of int
        (Z, Y, X).
    geometry : Geometry
    image_path : Path or None
    classes : list of LabelClass
        ``classes[0]`` is the background (always present); structure c is
        ``classes[c]``; its scribble value is c + 1.
    scribbles : ndarray, shape (Z, Y, X), uint8
        0 = unannotated, 1 = background, c + 1 = structure c. Edit in place, then call
        :meth:`save_scribbles` with the touched region.
    boxes : list of tuple
        ``(c, z0, y0, x0, z1, y1, x1)``, inclusive-exclusive voxel indices.
    masks : dict of str to ndarray
        Saved masks ((Z, Y, X) uint8, 0 = background, c = structure c).
    reviewed : list of dict
        Reviewed active-learning suggestions (``Suggestion.to_dict()`` + ``status``).
    store_path : Path or None
        The zarr store (None for a read-only session of a volume without a store).
    restored : bool
        True when :meth:`open` found an existing store for this content.
    read_only : bool
        Opened with ``read_only=True``: nothing is written, every save raises.
    recovered : str or None
        What was recovered from the previous generation on open (None if nothing).
    damaged : list of str
        Arrays and files of a damaged generation kept after a recovery (for a repair
        by hand) until :meth:`discard_damaged`; empty when there are none.
    history_limit : int
        Generations of the user's work kept (:meth:`history`, :meth:`restore`);
        stored with the session; :meth:`set_history_limit` changes it. Default
        :data:`~napari_labeleff._history.DEFAULT_HISTORY_LIMIT` (20) or the
        ``LABELEFF_HISTORY_LIMIT`` environment variable.
    """

    checksum: str
    shape: tuple
    geometry: Geometry
    image_path: Path | None
    classes: list[LabelClass]
    scribbles: np.ndarray
    boxes: list[tuple] = field(default_factory=list)
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    reviewed: list[dict] = field(default_factory=list)
    store_path: Path | None = None
    restored: bool = False
    read_only: bool = False
    recovered: str | None = None
    damaged: list[str] = field(default_factory=list)
    _history_limit: int | None = field(default=None, repr=False)
    _extra: dict = field(default_factory=dict, repr=False)  # content keys of newer code
    _history: History | None = field(default=None, repr=False)
    _counts: np.ndarray | None = field(default=None, repr=False)  # scribble voxels per value
    _mask_keys: dict[str, str] = field(default_factory=dict, repr=False)
    _scribbles_key: str = field(default="scribbles", repr=False)
    _lock: StoreLock | None = field(default=None, repr=False)
    _store: DurableLocalStore | None = field(default=None, repr=False)
    _io: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _meta_text: str | None = field(default=None, repr=False)
    _pending: set = field(default_factory=set, repr=False)
    _closed: bool = field(default=False, repr=False)

    # ---- opening -----------------------------------------------------------------------
    @classmethod
    def open(
        cls, data, geometry, *, image_path=None, store_dir=None, read_only: bool = False,
        checksum: str | None = None,
    ) -> "AnnotationSession":
        """Restore the session of this volume's content, or start a new one.

        Stores are looked for, in order, next to the image (``<image>.labeleff.zarr``),
        in ``store_dir`` and in the user data dir (``<checksum>.labeleff.zarr``), and
        through the user data dir's index of stores (so a copy of the image at another
        path finds its work). A store is used only if its checksum matches.
        A new store goes to ``store_dir`` if given, else next to the image if that
        folder is writable, else to the user data dir.

        Parameters
        ----------
        data : array-like, shape (Z, Y, X) or (C, Z, Y, X)
            The image (lazy arrays are read blockwise for the checksum).
        geometry : Geometry
        image_path : str or Path, optional
        store_dir : str or Path, optional
        read_only : bool
            Open without taking the writer lock and without writing anything (no
            store is created); every save raises :class:`LabelEffError`.
        checksum : str, optional
            :func:`volume_checksum` of ``data`` if already computed (e.g. in a worker
            thread); not verified.

        Raises
        ------
        LabelEffError
            The store is open for writing in another process or object
            (:class:`~napari_labeleff._lock.StoreLockedError`); the store is damaged
            beyond what the previous generation can recover (the message names the
            file); the store was written by a newer version of napari-labeleff.

        Warns
        -----
        RecoveredStoreWarning
            A damaged ``session.json`` or array was recovered from the previous
            generation.
        """
        if not isinstance(geometry, Geometry):
            raise LabelEffError(f"geometry must be a Geometry, got {type(geometry).__name__}")
        if getattr(data, "ndim", 0) not in (3, 4):
            raise LabelEffError(
                f"data must be a (Z, Y, X) or (C, Z, Y, X) array, got shape {getattr(data, 'shape', None)}"
            )
        if checksum is None:
            checksum = volume_checksum(data)
        elif not isinstance(checksum, str) or not re.fullmatch(r"[0-9a-f]{64}", checksum):
            raise LabelEffError(f"checksum={checksum!r} must be 64 hexadecimal characters")
        shape = tuple(int(n) for n in data.shape[-3:])
        image_path = Path(image_path).expanduser().absolute() if image_path is not None else None
        store_dir = Path(store_dir).expanduser().absolute() if store_dir is not None else None
        seen = set()
        for candidate in _candidates(checksum, image_path, store_dir):
            if candidate in seen or not candidate.is_dir():
                continue
            seen.add(candidate)
            if _belongs(candidate, checksum, shape):
                return cls._restore(candidate, geometry, image_path, checksum, shape, read_only)
        session = cls(
            checksum=checksum,
            shape=shape,
            geometry=geometry,
            image_path=image_path,
            classes=[LabelClass("background", default_color(0))],
            scribbles=np.zeros(shape, np.uint8),
            read_only=read_only,
        )
        if not read_only:
            session._create_store(_new_store_path(checksum, image_path, store_dir))
        return session

    @classmethod
    def _restore(cls, store_path, geometry, image_path, checksum, shape, read_only):
        lock = None if read_only else StoreLock.acquire(store_path, what="annotation store")
        try:
            metas = _generations(store_path)  # [(file, meta or error)], current first
            history = History(store_path).load()
            expected = history.expected_files()
            errors = []
            for i, (path, meta) in enumerate(metas):
                if isinstance(meta, str):
                    errors.append(f"{path.name} {meta}")
                    continue
                if meta.get("checksum") != checksum or tuple(meta.get("shape", ())) != shape:
                    errors.append(f"{path.name} belongs to other content")
                    continue
                try:
                    arrays = _read_arrays(store_path, meta, expected)
                except _Damaged as err:
                    errors.append(str(err))
                    continue
                recovered = ("; ".join(errors) + f"; restored from {path.name}") if i else None
                session = cls._from_meta(meta, arrays, geometry, image_path, store_path,
                                         read_only, recovered, lock)
                session._history = history
                if read_only:
                    return session
                session._store = DurableLocalStore(store_path)
                session._meta_text = path.read_text(encoding="utf-8")
                return session._opened(metas[0][0] if i else None)
            if not read_only:
                session = cls._from_history(store_path, history, geometry, image_path,
                                            checksum, shape, errors, lock)
                if session is not None:
                    return session._opened(metas[0][0])
            raise LabelEffError(
                f"autosave store {store_path} is damaged: {'; '.join(errors)}. Nothing was "
                f"changed. Move the store away (or restore {store_path / META_NAME} from a "
                "backup) to start afresh"
            )
        except BaseException:
            if lock is not None:
                lock.release()
            raise

    @classmethod
    def _from_meta(cls, meta, arrays, geometry, image_path, store_path, read_only,
                   recovered, lock) -> "AnnotationSession":
        session = cls(
            checksum=meta["checksum"],
            shape=tuple(meta["shape"]),
            geometry=geometry,
            image_path=image_path,
            classes=[],
            scribbles=arrays.pop(None),
            masks=arrays,
            store_path=store_path,
            restored=True,
            read_only=read_only,
            recovered=recovered,
            damaged=list(meta.get("damaged", [])),
            _mask_keys=dict(meta.get("masks", {})),
            _scribbles_key=meta.get("scribbles", "scribbles"),
            _lock=lock,
        )
        if "history_limit" in meta:
            session._history_limit = int(meta["history_limit"])
        session._apply_content(meta)
        return session

    def _opened(self, damaged_meta: Path | None) -> "AnnotationSession":
        """Finish opening a store for writing: adopt a recovery, clean up, record."""
        if self.recovered is not None:
            self._adopt_recovered(damaged_meta)
        self._remove_leftovers()
        self._start_history()
        _register(self.checksum, self.store_path)
        return self

    def _apply_content(self, meta: dict) -> None:
        """Set the user's work (everything but the store's bookkeeping) from ``meta``."""
        self.classes = [LabelClass(c["name"], tuple(float(v) for v in c["color"]))
                        for c in meta["classes"]]
        self.boxes = [tuple(int(v) for v in b) for b in meta.get("boxes", [])]
        self.reviewed = list(meta.get("reviewed", []))
        self._extra = {k: v for k, v in meta.items()
                       if k not in BOOKKEEPING and k not in ("classes", "boxes", "reviewed")}

    def _create_store(self, path: Path) -> None:
        """Create the store in a temporary folder next to ``path``, then rename it."""
        tmp = path.with_name(f".{path.name}.{new_token()}{TMP_MARK}")
        try:
            store = DurableLocalStore(tmp)
            group = zarr.open_group(store=store, mode="w-")
            group.create_array("scribbles", shape=self.shape, chunks=SCRIBBLE_CHUNKS,
                               dtype="u1", fill_value=0)
            group.create_group("masks")
            store.sync_dirs()
            self._meta_text = None
            self.store_path = tmp
            self._store = store
            self._history = History(tmp)
            self._counts = np.zeros(256, np.int64)
            self._save_meta(note="session created")
            if path.exists():
                raise LabelEffError(f"cannot create the autosave store {path}: it exists already")
            os.rename(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(path.parent)
        self.store_path = path
        self._store = DurableLocalStore(path)
        self._store.journal = store.journal
        self._history.root = path
        self._lock = StoreLock.acquire(path, what="annotation store")
        _register(self.checksum, path)

    # ---- closing -----------------------------------------------------------------------
    def close(self) -> None:
        """Release the store's writer lock; later saves raise. Idempotent."""
        with self._io:
            self._closed = True
            if self._lock is not None:
                self._lock.release()

    def __enter__(self) -> "AnnotationSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _writable(self) -> None:
        if self.read_only:
            raise LabelEffError(
                f"the session of {self.store_path or 'this volume'} is open read-only "
                "(read_only=True); nothing can be saved. Close the other writer and reopen"
            )
        if self._closed:
            raise LabelEffError(f"the session of {self.store_path} is closed; reopen it to save")
        if self._lock is not None and not self._lock.held:
            raise LabelEffError(
                f"the writer lock of {self.store_path} was taken by another process "
                f"({StoreLock.holder(self.store_path)}); nothing was saved"
            )

    # ---- saving ------------------------------------------------------------------------
    def _open_array(self, key: str):
        # Chunks of the scribbles are never deleted (an erased chunk is written as zeros),
        # so every chunk file the history lists exists: a missing one is damage.
        array = zarr.open_array(store=self._store, path=key, mode="r+")
        return array.with_config({"write_empty_chunks": True})

    def _write_array(self, key: str, values: np.ndarray) -> None:
        """Create array ``key`` holding ``values`` (only non-empty chunks are stored)."""
        group = zarr.open_group(store=self._store, mode="r+")
        group.create_array(key, shape=self.shape, chunks=SCRIBBLE_CHUNKS, dtype="u1",
                           fill_value=0)[...] = values
        self._store.sync_dirs()

    def save_scribbles(self, region=None) -> None:
        """Write the scribble chunks touched by ``region`` (tuple of slices; None = all).

        Whole chunks are rewritten from memory, each atomically and durably; the result
        is a new generation of the history (see :meth:`history`).
        """
        region = _check_region(() if region is None else region, self.shape)
        if np.shape(self.scribbles) != self.shape:
            raise LabelEffError(f"scribbles have shape {np.shape(self.scribbles)}, expected {self.shape}")
        with self._io:
            self._writable()
            block = as_uint8_labels(self.scribbles[region], "scribbles")
            array = self._open_array(self._scribbles_key)
            old = np.asarray(array[region])
            try:
                array[region] = block
                self._store.sync_dirs()
            except BaseException:
                self._counts = None  # recounted at the next record
                raise
            if self._counts is not None:
                self._counts += np.bincount(block.ravel(), minlength=256)
                self._counts -= np.bincount(old.ravel(), minlength=256)
            self._commit()

    def _content(self) -> dict:
        """The user's work recorded in session.json and in each generation."""
        return {
            **self._extra,
            "classes": [c.to_dict() for c in self.classes],
            "boxes": [[int(v) for v in b] for b in self.boxes],
            "reviewed": self.reviewed,
        }

    def _meta(self) -> dict:
        meta = {
            "version": FORMAT_VERSION,
            "checksum": self.checksum,
            "shape": list(self.shape),
            "geometry": self.geometry.to_dict(),
            "image_path": str(self.image_path) if self.image_path else None,
            **self._content(),
            "scribbles": self._scribbles_key,
            "masks": dict(self._mask_keys),
        }
        if self._history_limit is not None:
            meta["history_limit"] = self._history_limit
        if self.damaged:
            meta["damaged"] = list(self.damaged)
        return meta

    def save_meta(self) -> None:
        """Atomically write classes, boxes, reviewed suggestions and the array index.

        The replaced ``session.json`` becomes ``session.json.prev``; arrays named by
        neither generation (nor kept as damaged) are then deleted, and the new state is
        recorded as a generation of the history.
        """
        self._save_meta()

    def _save_meta(self, note: str | None = None) -> None:
        with self._io:
            self._writable()
            text = json.dumps(self._meta(), indent=1)
            if text == self._meta_text:
                return
            meta, prev = self.store_path / META_NAME, self.store_path / PREV_NAME
            tmp = meta.with_name(f"{META_NAME}.{new_token()}.partial")
            link = prev.with_name(f"{PREV_NAME}.{new_token()}.partial")
            try:
                durable_put(tmp, text.encode("utf-8"), sync_dir=False)
                if self._meta_text is not None and meta.exists():
                    try:  # the current generation becomes .prev (a link: nothing copied)
                        os.link(meta, link)
                    except OSError:  # file systems without hard links
                        durable_put(link, meta.read_bytes(), sync_dir=False)
                    os.replace(link, prev)
                os.replace(tmp, meta)
            except OSError as err:
                raise LabelEffError(f"cannot write {meta}: {err.strerror or err}; "
                                    "the previous state is kept") from err
            finally:
                tmp.unlink(missing_ok=True)
                link.unlink(missing_ok=True)
            fsync_dir(self.store_path)
            self._meta_text = text
            self._collect_garbage()
            self._commit(note)

    def save_mask(self, name: str, mask) -> None:
        """Save ``mask`` ((Z, Y, X), 0..255) under ``name`` (letters, digits, _ or -).

        Safe to call from a worker thread: the array is written outside the session's
        I/O lock and switched in atomically.
        """
        if not isinstance(name, str) or not _MASK_NAME.match(name):
            raise LabelEffError(f"name={name!r} must be 1-64 letters, digits, '_' or '-'")
        mask = as_uint8_labels(mask, "mask")
        if mask.shape != self.shape:
            raise LabelEffError(f"mask has shape {mask.shape}, expected {self.shape}")
        self._writable()
        mask = mask.copy()
        key = f"masks/{name}.{new_token()}"
        with self._io:
            self._pending.add(key)
        try:
            self._write_array(key, mask)
            with self._io:
                self._writable()
                old_key = self._mask_keys.get(name)
                self._mask_keys[name] = key
                try:
                    self.save_meta()
                except BaseException:
                    if old_key is None:
                        del self._mask_keys[name]
                    else:
                        self._mask_keys[name] = old_key
                    raise
                self.masks[name] = mask
        finally:
            with self._io:
                self._pending.discard(key)

    def set_boxes(self, boxes) -> None:
        """Replace the boxes (validated against the classes and the volume) and save."""
        checked = []
        for box in boxes:
            values = tuple(int(v) for v in box) if len(box) == 7 else None
            if values is None or values != tuple(box):
                raise LabelEffError(f"box {box!r} must be 7 integers (c, z0, y0, x0, z1, y1, x1)")
            c, lo, hi = values[0], values[1:4], values[4:]
            if not 1 <= c < len(self.classes):
                raise LabelEffError(f"box {box!r}: class {c} is not a structure (1..{len(self.classes) - 1})")
            if any(a < 0 or a >= b or b > n for a, b, n in zip(lo, hi, self.shape)):
                raise LabelEffError(f"box {box!r} is empty or outside the volume {self.shape}")
            checked.append(values)
        with self._io:
            self._writable()
            self.boxes = checked
            self.save_meta()

    def add_reviewed(self, suggestion, status: str) -> None:
        """Record a reviewed suggestion (``Suggestion`` or dict) with its status; save."""
        if hasattr(suggestion, "to_dict"):
            entry = suggestion.to_dict()
        elif isinstance(suggestion, dict):
            entry = dict(suggestion)
        else:
            raise LabelEffError(f"suggestion must be a Suggestion or a dict, got {type(suggestion).__name__}")
        if not isinstance(status, str) or not status:
            raise LabelEffError(f"status={status!r} must be a non-empty string")
        with self._io:
            self._writable()
            self.reviewed.append({**entry, "status": status})
            self.save_meta()

    # ---- anatomical rules (napari_labeleff.rules) -----------------------------------------
    @property
    def rules(self) -> list:
        """The session's rules as lists ``[relation, class name, ...]`` (the tuples of
        :class:`napari_labeleff.rules.Rules`, by class name), saved in ``session.json``
        under ``"rules"`` and in its history like the classes."""
        return [list(r) for r in self._extra.get("rules", [])]

    def set_rules(self, rules) -> None:
        """Replace the rules (a ``Rules`` or rule tuples naming this session's classes);
        validated against the classes (contradictions and unknown classes raise), saved."""
        from .rules import Rules

        names = [c.name for c in self.classes[1:]]
        rules = (rules.for_classes(names) if isinstance(rules, Rules)
                 else Rules(list(rules), class_names=names, geometry=self.geometry))
        items = [list(t) for t in rules.to_list()]
        with self._io:
            self._writable()
            if items:
                self._extra["rules"] = items
            else:
                self._extra.pop("rules", None)
            self.save_meta()

    def rules_object(self):
        """The rules as a ``Rules`` for the current classes and geometry (None without
        rules). A rule naming a class that was removed raises a ``LabelEffError`` naming
        the rule."""
        from .rules import Rules

        if not self._extra.get("rules"):
            return None
        return Rules([tuple(r) for r in self._extra["rules"]],
                     class_names=[c.name for c in self.classes[1:]], geometry=self.geometry)

    # ---- classes -----------------------------------------------------------------------
    def _check_index(self, index: int) -> int:
        if not isinstance(index, (int, np.integer)) or not 0 <= index < len(self.classes):
            raise LabelEffError(f"index={index!r} must be a class index 0..{len(self.classes) - 1}")
        return int(index)

    def _check_name(self, name: str, skip: int | None = None) -> str:
        name = name.strip() if isinstance(name, str) else ""
        if not name:
            raise LabelEffError("name must be a non-empty string")
        taken = {c.name.lower() for i, c in enumerate(self.classes) if i != skip}
        if name.lower() in taken:
            raise LabelEffError(f"name={name!r} is already used by another class")
        return name

    def add_class(self, name: str, color=None) -> int:
        """Add a structure; return its index c (scribble value c + 1). Saves."""
        if len(self.classes) >= 255:
            raise LabelEffError("at most 254 structures fit in uint8 scribbles")
        name = self._check_name(name)
        color = check_color(default_color(len(self.classes)) if color is None else color)
        with self._io:
            self._writable()
            self.classes.append(LabelClass(name, color))
            self.save_meta()
        return len(self.classes) - 1

    def rename_class(self, index: int, name: str) -> None:
        index = self._check_index(index)
        name = self._check_name(name, skip=index)
        with self._io:
            self._writable()
            old = self.classes[index].name
            self.classes[index].name = name
            if self._extra.get("rules"):  # the rules follow the rename (they store names)
                self._extra["rules"] = [[name if i and v == old else v for i, v in enumerate(r)]
                                        for r in self._extra["rules"]]
            self.save_meta()

    def recolor_class(self, index: int, color) -> None:
        index, color = self._check_index(index), check_color(color)
        with self._io:
            self._writable()
            self.classes[index].color = color
            self.save_meta()

    def remove_class(self, index: int, *, force: bool = False) -> None:
        """Remove structure ``index``; higher classes move down by one.

        Refuses the background, and a class with scribbles unless ``force`` (then its
        scribbles are erased, its boxes dropped and its mask voxels become background).
        On disk this is one atomic transition: the renumbered scribbles and masks are
        written as new arrays and ``session.json`` switches to them (with the new class
        table and boxes) in one replace.
        """
        index = self._check_index(index)
        if index == 0:
            raise LabelEffError("index=0 is the background class, which cannot be removed")
        n = int(np.count_nonzero(self.scribbles == index + 1))
        if n and not force:
            raise LabelEffError(
                f"class {self.classes[index].name!r} has {n} scribbled voxels; "
                "erase them first or pass force=True"
            )
        with self._io:
            self._writable()
            scribbles = _drop_value(as_uint8_labels(self.scribbles, "scribbles"), index + 1)
            masks = {name: _drop_value(mask, index) for name, mask in self.masks.items()}
            keys = {name: f"masks/{name}.{new_token()}" for name in masks}
            scribbles_key = f"scribbles.{new_token()}"
            self._pending.update([scribbles_key, *keys.values()])
            try:
                self._write_array(scribbles_key, scribbles)
                for name, mask in masks.items():
                    self._write_array(keys[name], mask)
                before = (self.classes, self.boxes, self._scribbles_key, self._mask_keys, self._counts)
                note = f"class {self.classes[index].name!r} removed" + (
                    f" ({n:,} scribbled voxels erased)" if n else "")
                self.classes = [c for i, c in enumerate(self.classes) if i != index]
                self.boxes = [(b[0] - (b[0] > index), *b[1:]) for b in self.boxes if b[0] != index]
                self._scribbles_key, self._mask_keys = scribbles_key, {**self._mask_keys, **keys}
                self._counts = np.bincount(scribbles.ravel(), minlength=256)
                try:
                    self._save_meta(note=note)  # the one atomic switch
                except BaseException:
                    (self.classes, self.boxes, self._scribbles_key, self._mask_keys,
                     self._counts) = before
                    raise
                self.scribbles = scribbles
                self.masks = masks
            finally:
                self._pending.difference_update([scribbles_key, *keys.values()])

    # ---- housekeeping --------------------------------------------------------------------
    def _referenced(self) -> set:
        keys = {self._scribbles_key, *self._mask_keys.values(), *self._pending, *self.damaged}
        prev = _load_meta(self.store_path / PREV_NAME)
        if isinstance(prev, dict):
            keys |= {prev.get("scribbles", "scribbles"), *prev.get("masks", {}).values()}
        return keys

    def _collect_garbage(self) -> None:
        """Delete arrays named by neither generation of session.json (under the lock)."""
        keep = self._referenced()
        for key in _array_keys(self.store_path):
            if key not in keep:
                shutil.rmtree(self.store_path / key, ignore_errors=True)

    def _remove_leftovers(self) -> None:
        """Delete temporary files of interrupted writes and unreferenced arrays.

        Runs only with the writer lock held, so no other process's writes in progress
        are touched.
        """
        with self._io:
            for pattern in ("*.partial", f"*{TMP_MARK}*"):
                for tmp in self.store_path.rglob(pattern):
                    if tmp.is_file() and tmp.name != LOCK_NAME:
                        tmp.unlink(missing_ok=True)
            self._collect_garbage()


# ---- store discovery ------------------------------------------------------------------
def _adjacent(image_path: Path) -> Path:
    return image_path.with_name(image_path.name + STORE_SUFFIX)


def _index_file(checksum: str) -> Path:
    return user_store_dir() / "index" / f"{checksum}.json"


def _candidates(checksum: str, image_path, store_dir):
    if image_path is not None:
        yield _adjacent(image_path)
    for folder in (store_dir, user_store_dir()):
        if folder is not None:
            yield folder / f"{checksum}{STORE_SUFFIX}"
    try:
        yield Path(json.loads(_index_file(checksum).read_text())["store"])
    except (OSError, ValueError, KeyError, TypeError):
        return


def _writable(folder: Path) -> bool:
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".labeleff-probe")
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


def _new_store_path(checksum: str, image_path, store_dir) -> Path:
    if store_dir is not None:
        store_dir.mkdir(parents=True, exist_ok=True)
        return store_dir / f"{checksum}{STORE_SUFFIX}"
    if image_path is not None and not _adjacent(image_path).exists() and _writable(image_path.parent):
        return _adjacent(image_path)
    folder = user_store_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{checksum}{STORE_SUFFIX}"


def _register(checksum: str, store: Path) -> None:
    """Record ``store`` in the user index so copies of the image find it."""
    index = _index_file(checksum)
    try:
        index.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(index, json.dumps({"store": str(store)}))
    except (OSError, LabelEffError):
        pass  # the index only helps find stores of moved images; the store itself is saved
