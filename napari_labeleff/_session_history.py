"""The history methods of :class:`napari_labeleff.session.AnnotationSession`.

A mixin: the session's state (arrays, keys, store, history records) lives in the
session; the storage design is in :mod:`napari_labeleff._history`.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import warnings
from pathlib import Path

import numpy as np

from ._errors import LabelEffError
from ._history import (
    DurableLocalStore,
    Generation,
    History,
    check_limit,
    collect_blobs,
    default_history_limit,
    describe,
    record_arrays,
)
from ._session_files import (
    DAMAGED_FILE,
    RecoveredStoreWarning,
    _array_keys,
    _counts_of,
    _Damaged,
    _read_arrays,
    new_token,
)
from .io.atomic import fsync_dir

logger = logging.getLogger("napari_labeleff.session")


class SessionHistory:
    """History of the user's work: :meth:`history`, :meth:`restore`,
    :meth:`set_history_limit`, :meth:`discard_damaged`, and the recording of each save."""

    @classmethod
    def _from_history(cls, store_path, history, geometry, image_path, checksum, shape,
                      errors, lock):
        """Recover from the newest intact generation of the history (both session.json
        generations unusable, e.g. a scribble chunk deleted by hand); None if none is.

        Its arrays are recreated from the history's blobs, checked first, so nothing is
        written unless the recovery succeeds."""
        for record in reversed(history.records):
            meta = record.get("meta", {})
            if meta.get("checksum") != checksum or tuple(meta.get("shape", ())) != shape:
                continue
            store = DurableLocalStore(store_path)
            files = record_arrays(record)
            if any(store.verify(f) for f in files.values()):
                continue
            new = {"scribbles": f"scribbles.{new_token()}",
                   **{name: f"masks/{name}.{new_token()}" for name in record["arrays"]["masks"]}}
            try:
                store.materialize(new["scribbles"], record["arrays"]["scribbles"]["files"])
                for name, entry in record["arrays"]["masks"].items():
                    store.materialize(new[name], entry["files"])
                store.sync_dirs()
                meta = {**meta, **record["content"], "scribbles": new.pop("scribbles"), "masks": new}
                arrays = _read_arrays(store_path, meta)
            except (LabelEffError, _Damaged, OSError):
                for key in store.journal:
                    shutil.rmtree(store_path / key, ignore_errors=True)
                continue
            recovered = "; ".join(errors) + f"; restored from history generation #{record['id']}"
            session = cls._from_meta(meta, arrays, geometry, image_path, store_path, False,
                                     recovered, lock)
            session._history = history
            session._store = store
            session._counts = _counts_of(record)
            return session
        return None

    # ---- history -------------------------------------------------------------------------
    @property
    def history_limit(self) -> int:
        """Generations kept: this session's own limit, else the user default."""
        return self._history_limit if self._history_limit is not None else default_history_limit()

    def set_history_limit(self, limit: int) -> None:
        """Keep the last ``limit`` generations (>= 1) of this session; saved with it.

        Lowering it deletes the oldest generations beyond the new limit at once.
        """
        limit = check_limit(limit)
        with self._io:
            self._writable()
            self._history_limit = limit
            self._save_meta()
            self._prune()

    def _record(self) -> dict:
        """The current state as a generation record (id and change not yet set)."""
        store = self._store
        if self._counts is None:
            self._counts = np.bincount(np.asarray(self.scribbles, np.uint8).ravel(), minlength=256)
        record = {
            "id": 0,
            "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"),
            "change": "",
            "meta": {"checksum": self.checksum, "shape": list(self.shape),
                     "geometry": self.geometry.to_dict(),
                     "image_path": str(self.image_path) if self.image_path else None,
                     **({"history_limit": self._history_limit} if self._history_limit else {})},
            "content": self._content(),
            "arrays": {
                "scribbles": {"key": self._scribbles_key, "files": store.manifest(self._scribbles_key)},
                "masks": {name: {"key": key, "files": store.manifest(key)}
                          for name, key in sorted(self._mask_keys.items())},
            },
            "counts": {str(v): int(n) for v, n in enumerate(self._counts) if n and v},
        }
        return json.loads(json.dumps(record))  # as it reads back (lists, not tuples)

    def _commit(self, note: str | None = None) -> None:
        """Record the current state as a new generation unless the newest one is it.

        Called once a change is on disk; a failure here is logged, not raised (the
        change itself is saved; the next save or open records it).
        """
        if self._history is None or self._store is None:
            return
        try:
            record = self._record()
            newest = self._history.newest
            if newest is not None and all(newest[k] == record[k] for k in ("content", "arrays", "counts")):
                return
            record["change"] = note or describe(newest, record)
            self._history.append(record)
            self._prune()
        except OSError as err:
            logger.warning("the history of %s was not updated (%s); the change is saved and is "
                           "recorded at the next save or open", self.store_path, err)

    def _live(self) -> set:
        return {self._scribbles_key, *self._mask_keys.values(), *self._pending}

    def _prune(self, everything: bool = False) -> None:
        """Drop generations beyond the limit and the blobs only they named."""
        dropped = self._history.prune(self.history_limit)
        self._store.forget(self._live())
        if dropped or everything:
            candidates = None if everything else {
                sha for r in dropped for files in record_arrays(r).values() for sha in files.values()}
            collect_blobs(self._store, self._history, self._live(), candidates)

    def _start_history(self) -> None:
        """At open: manifests of the current arrays, a record of any work not yet in the
        history (a crash before its record), pruning, collection of stray blobs."""
        for problem in self._history.problems:
            logger.warning("autosave store %s: %s (skipped)", self.store_path, problem)
        for key in {self._scribbles_key, *self._mask_keys.values()}:
            self._store.scan(key)
        self._store.sync_dirs()
        self._commit()
        self._prune(everything=True)

    def history(self) -> list[Generation]:
        """The generations of the user's work kept in the store, newest first.

        Each save (a brush stroke, a box or class change, a reviewed suggestion, a mask
        save, a restore) is one generation; the last :attr:`history_limit` are kept.
        Works on read-only sessions too.
        """
        if self.store_path is None:
            return []
        history = self._history if self._history is not None else History(self.store_path).load()
        records = history.records
        return [Generation(r["id"], _dt.datetime.fromisoformat(r["time"]), r["change"],
                           current=i == len(records) - 1)
                for i, r in reversed(list(enumerate(records)))]

    def restore(self, generation) -> Generation:
        """Bring back generation ``generation`` (an id or a :class:`Generation`).

        Scribbles, masks, classes, boxes and reviewed suggestions become exactly what
        they were (the arrays are rebuilt from the history's blobs, bit-exact). The
        state before is a generation of its own, so a restore can be undone by
        restoring that one. One atomic transition on disk, like a class removal.

        Returns
        -------
        Generation
            The new current generation ("restored generation #id ...").
        """
        gid = generation.id if isinstance(generation, Generation) else generation
        if isinstance(gid, bool) or not isinstance(gid, (int, np.integer)):
            raise LabelEffError(f"generation={generation!r} must be a generation id (int) or a Generation")
        with self._io:
            self._writable()
            self._commit()  # the current state is a generation first
            record = self._history.find(int(gid))
            if record is None:
                kept = [r["id"] for r in self._history.records]
                held = f"kept: {kept[0]}..{kept[-1]}" if kept else "it is empty"
                raise LabelEffError(f"generation={gid} is not in the history of {self.store_path} ({held})")
            damaged = {name: self._store.verify(files) for name, files in record_arrays(record).items()}
            damaged = {k: v for k, v in damaged.items() if v}
            if damaged:
                raise LabelEffError(f"generation #{gid} cannot be restored: blobs of "
                                    f"{', '.join(f'{k} ({len(v)} files)' for k, v in damaged.items())} "
                                    "are missing or damaged; nothing was changed")
            keys = {"scribbles": f"scribbles.{new_token()}",
                    **{name: f"masks/{name}.{new_token()}" for name in record["arrays"]["masks"]}}
            self._pending.update(keys.values())
            try:
                self._store.materialize(keys["scribbles"], record["arrays"]["scribbles"]["files"])
                for name, entry in record["arrays"]["masks"].items():
                    self._store.materialize(keys[name], entry["files"])
                self._store.sync_dirs()
                mask_keys = {name: key for name, key in keys.items() if name != "scribbles"}
                try:
                    arrays = _read_arrays(self.store_path, {"shape": list(self.shape),
                                                            "scribbles": keys["scribbles"],
                                                            "masks": mask_keys})
                except _Damaged as err:
                    raise LabelEffError(f"generation #{gid} cannot be restored: {err}") from err
                before = (self.classes, self.boxes, self.reviewed, self._extra,
                          self._scribbles_key, self._mask_keys, self._counts)
                self._apply_content({**record["content"]})
                self._scribbles_key, self._mask_keys = keys["scribbles"], mask_keys
                self._counts = _counts_of(record)
                stamp = _dt.datetime.fromisoformat(record["time"]).astimezone().strftime("%Y-%m-%d %H:%M:%S")
                try:
                    self._save_meta(note=f"restored generation #{gid} of {stamp}")
                except BaseException:
                    (self.classes, self.boxes, self.reviewed, self._extra,
                     self._scribbles_key, self._mask_keys, self._counts) = before
                    raise
                self.scribbles = arrays.pop(None)
                self.masks = arrays
            finally:
                self._pending.difference_update(keys.values())
            return self.history()[0]

    def discard_damaged(self) -> list[str]:
        """Delete what a recovery kept of the damaged generation (see ``damaged``).

        Returns
        -------
        list of str
            What was deleted (array keys and file names in the store).
        """
        with self._io:
            self._writable()
            gone, self.damaged = list(self.damaged), []
            try:
                self._save_meta()  # arrays no longer kept are collected here
            except BaseException:
                self.damaged = gone
                raise
            for name in gone:
                if DAMAGED_FILE.match(name):
                    (self.store_path / name).unlink(missing_ok=True)
            fsync_dir(self.store_path)
            return gone

    def _adopt_recovered(self, damaged: Path | None) -> None:
        """Make the recovered generation current; keep the damaged generation aside.

        The damaged ``session.json`` is renamed, and every array the recovered
        generation does not name is listed in ``damaged`` (persisted in session.json,
        so later opens keep them) until :meth:`discard_damaged`.
        """
        kept = set(self.damaged)
        if damaged is not None and damaged.exists():
            stamp = _dt.datetime.now().strftime("%Y%m%dT%H%M%S")
            aside = damaged.with_name(f"{damaged.name}.damaged-{stamp}-{new_token()}")
            os.replace(damaged, aside)
            fsync_dir(damaged.parent)
            kept.add(aside.name)
        current = {self._scribbles_key, *self._mask_keys.values()}
        kept.update(k for k in _array_keys(self.store_path) if k not in current)
        self.damaged = sorted(kept)
        message = f"autosave store {self.store_path} was damaged and recovered: {self.recovered}"
        if self.damaged:
            message += (f". The damaged generation is kept in the store ({', '.join(self.damaged)}) "
                        "until you discard it (AnnotationSession.discard_damaged())")
        logger.warning(message)
        warnings.warn(message, RecoveredStoreWarning, stacklevel=5)
        self._meta_text = None  # session.json is written even if its text did not change
        self._save_meta(note=f"recovered after damage ({self.recovered})")
