"""The durable zarr store of an annotation session and its history of generations.

Headless plumbing for :mod:`napari_labeleff.session`:

* :class:`DurableLocalStore` writes every zarr key atomically and durably, and keeps
  each array file's content once in a content-addressed blob folder
  (``history/blobs/<sha256>``): the file in the array and its blob are two hard links
  to one inode, so keeping an old chunk costs nothing until it is overwritten, and a
  chunk that several generations share is stored once. It also journals, per array,
  which files it wrote with which digest (the manifest of the array).
* :class:`History` keeps the last N generations of the user's work as small JSON
  records (``history/<id>.json``): the session's content (classes, boxes, reviewed
  suggestions, ...) and, for the scribbles and each mask, the manifest
  ``{file: sha256}`` of its array. Restoring a generation links its blobs into new
  arrays, so it is bit-exact and copies no voxel data.

Write protocol of one generation (every step atomic; a crash between two steps loses
nothing): chunk files (blob first, then the array's link) -> ``session.json`` switch
(for multi-array changes) -> the generation record -> pruning of records beyond N ->
deletion of blobs no kept record names. A state that became current but whose record
was not written yet (a crash in between) is recorded at the next open.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import hashlib
import json
import logging
import os
import re
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from zarr.storage import LocalStore

from ._errors import LabelEffError
from .io.atomic import TMP_MARK, durable_put, fsync_dir

logger = logging.getLogger(__name__)

HISTORY_DIR = "history"
BLOB_DIR = "history/blobs"
#: Generations kept when neither the session nor ``LABELEFF_HISTORY_LIMIT`` says otherwise.
DEFAULT_HISTORY_LIMIT = 20
ARRAY_KEY = re.compile(r"^(scribbles(\.[0-9a-f]{8,32})?|masks/[A-Za-z0-9_-]{1,64}\.[0-9a-f]{8,32})$")
_RECORD = re.compile(r"^(\d{8})\.json$")
_SHA = re.compile(r"^[0-9a-f]{64}$")


def default_history_limit() -> int:
    """``LABELEFF_HISTORY_LIMIT`` (a whole number >= 1) if set, else 20."""
    text = os.environ.get("LABELEFF_HISTORY_LIMIT", "").strip()
    if not text:
        return DEFAULT_HISTORY_LIMIT
    try:
        return check_limit(int(text), "LABELEFF_HISTORY_LIMIT")
    except (ValueError, LabelEffError):
        logger.warning("LABELEFF_HISTORY_LIMIT=%r is not a whole number >= 1; using %d",
                       text, DEFAULT_HISTORY_LIMIT)
        return DEFAULT_HISTORY_LIMIT


def check_limit(value, what: str = "history_limit") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LabelEffError(f"{what}={value!r} must be a whole number >= 1 (generations kept)")
    return int(value)


def split_key(key: str) -> tuple[str, str] | None:
    """``(array key, file key in the array)`` of a store key, or None if it is not a
    file of a scribble or mask array (group metadata, lock, ...)."""
    if key.endswith("/zarr.json"):
        array, name = key[: -len("/zarr.json")], "zarr.json"
    elif "/c/" in key:
        array, rest = key.split("/c/", 1)
        name = "c/" + rest
    else:
        return None
    return (array, name) if ARRAY_KEY.match(array) else None


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _link(source: Path, target: Path) -> None:
    """Make ``target`` a hard link of ``source`` atomically (temp link + rename)."""
    tmp = target.with_name(f"{target.name}.{uuid.uuid4().hex}.partial")
    try:
        os.link(source, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def put_blob(blobs: Path, data: bytes, digest: str) -> Path:
    """Store ``data`` as ``blobs/<digest>`` if it is not there (fsynced; folder not)."""
    blob = blobs / digest
    if not blob.exists():
        try:
            durable_put(blob, data, exclusive=True, sync_dir=False)
        except FileExistsError:
            pass
    return blob


def place(path: Path, data: bytes, blobs: Path, digest: str) -> None:
    """Write ``data`` to ``path`` as a hard link of its blob (stored first if new).

    Falls back to a plain durable write where the file system has no hard links.
    """
    for _ in range(3):  # the blob may be collected between the check and the link
        blob = put_blob(blobs, data, digest)
        try:
            _link(blob, path)
            return
        except FileNotFoundError:
            continue
        except OSError:  # no hard links here (some network or FAT file systems)
            break
    durable_put(path, data, sync_dir=False)


class DurableLocalStore(LocalStore):
    """A zarr ``LocalStore`` whose writes are atomic and durable on every zarr 3 release.

    Each key is written with :func:`~napari_labeleff.io.atomic.durable_put` semantics
    (temporary file, fsync, rename); the folders touched are remembered and fsynced
    once by :meth:`sync_dirs` (one fsync per folder per save, not one per chunk). Files
    of scribble and mask arrays are kept as hard links of content-addressed blobs in
    ``history/blobs`` and journalled (:meth:`manifest`). Only the public ``Store`` API
    (``set``, ``set_if_not_exists``) is overridden.
    """

    def __init__(self, root, *, read_only: bool = False) -> None:
        super().__init__(root, read_only=read_only)
        self._dirty: set[Path] = set()
        self._dirty_lock = threading.Lock()
        self.lock = threading.RLock()  # journal and blob collection
        self.journal: dict[str, dict[str, str]] = {}
        self.blobs = Path(root) / BLOB_DIR

    def _put(self, key: str, value, exclusive: bool) -> None:
        if self.read_only:
            raise LabelEffError(f"store {self.root} is open read-only")
        path = Path(self.root) / key
        data = value.to_bytes()
        parts = split_key(key)
        if parts is None:
            durable_put(path, data, exclusive=exclusive, sync_dir=False)
            dirty = {path.parent}
        else:
            if exclusive and path.exists():
                raise FileExistsError(path)
            digest = _sha(data)
            with self.lock:  # journalled first: a collection from now on keeps the blob
                self.journal.setdefault(parts[0], {})[parts[1]] = digest
            path.parent.mkdir(parents=True, exist_ok=True)
            if parts[1] == "zarr.json":  # its own file: the same metadata is in every array
                put_blob(self.blobs, data, digest)
                durable_put(path, data, sync_dir=False)
            else:
                place(path, data, self.blobs, digest)
            dirty = {path.parent, self.blobs}
        with self._dirty_lock:
            self._dirty |= dirty

    async def set(self, key: str, value) -> None:
        await asyncio.to_thread(self._put, key, value, False)

    async def set_if_not_exists(self, key: str, value) -> None:
        try:
            await asyncio.to_thread(self._put, key, value, True)
        except FileExistsError:
            pass

    def set_sync(self, key: str, value) -> None:  # zarr >= 3.1 calls this on some paths
        self._put(key, value, False)

    def sync_dirs(self) -> None:
        """fsync every folder that received a file since the last call."""
        with self._dirty_lock:
            dirs, self._dirty = sorted(self._dirty, key=lambda p: -len(p.parts)), set()
        for folder in dirs:
            fsync_dir(folder)

    def manifest(self, array: str) -> dict[str, str]:
        """``{file: sha256}`` of ``array`` as written (or scanned) by this store."""
        with self.lock:
            return dict(self.journal.get(array, {}))

    def scan(self, array: str) -> dict[str, str]:
        """Hash the files of ``array`` on disk, make sure each has its blob, journal them."""
        folder = Path(self.root) / array
        files = {}
        for path in sorted(folder.rglob("*")):
            name = path.relative_to(folder).as_posix()
            if not path.is_file() or path.name.endswith(".partial") or TMP_MARK in path.name:
                continue
            if name != "zarr.json" and not name.startswith("c/"):
                continue
            data = path.read_bytes()
            digest = _sha(data)
            blob = self.blobs / digest
            if not blob.exists():
                self.blobs.mkdir(parents=True, exist_ok=True)
                try:
                    if name == "zarr.json":
                        raise OSError("metadata gets its own copy")
                    os.link(path, blob)
                except FileExistsError:
                    pass
                except OSError:
                    put_blob(self.blobs, data, digest)
                with self._dirty_lock:
                    self._dirty.add(self.blobs)
            files[name] = digest
        with self.lock:
            self.journal[array] = dict(files)
        return files

    def materialize(self, array: str, files: dict[str, str]) -> None:
        """Create ``array`` from blobs (hard links); LabelEffError if a blob is missing."""
        folder = Path(self.root) / array
        for name, digest in sorted(files.items(), key=lambda kv: kv[0] != "zarr.json"):
            blob = self.blobs / digest
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                if name == "zarr.json":
                    durable_put(target, blob.read_bytes(), sync_dir=False)
                    continue
                try:
                    _link(blob, target)
                except FileNotFoundError:
                    raise
                except OSError:  # no hard links: copy
                    durable_put(target, blob.read_bytes(), sync_dir=False)
            except FileNotFoundError as err:
                raise LabelEffError(f"the history blob {blob} of {array}/{name} is missing") from err
            finally:
                with self._dirty_lock:
                    self._dirty.add(target.parent)
        with self.lock:
            self.journal[array] = dict(files)

    def verify(self, files: dict[str, str]) -> list[str]:
        """Files whose blob is missing or no longer holds its digest's bytes."""
        bad = []
        for name, digest in sorted(files.items()):
            try:
                ok = _sha((self.blobs / digest).read_bytes()) == digest
            except OSError:
                ok = False
            if not ok:
                bad.append(name)
        return bad

    def forget(self, keep) -> None:
        """Drop journal entries of arrays not in ``keep``."""
        with self.lock:
            for array in [a for a in self.journal if a not in keep]:
                del self.journal[array]


# ---- generation records -------------------------------------------------------------------
@dataclass(frozen=True)
class Generation:
    """One generation of the user's work, as listed by ``AnnotationSession.history()``.

    Attributes
    ----------
    id : int
        Increases by one per generation; never reused in a store.
    time : datetime.datetime
        When it was recorded (UTC).
    change : str
        What changed from the generation before it, e.g. ``"scribbles: +1,234 voxels
        of class 'liver'"``, ``"mask 'refined' saved"``, ``"class 'liver' removed"``.
    current : bool
        True for the generation the session currently holds.
    """

    id: int
    time: _dt.datetime
    change: str
    current: bool = False

    def __str__(self) -> str:
        stamp = self.time.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        return f"#{self.id}  {stamp}  {self.change}" + ("  (current)" if self.current else "")


def record_arrays(record: dict) -> dict[str, dict]:
    """``{array key: {file: sha}}`` of the arrays a record names."""
    arrays = record["arrays"]
    out = {arrays["scribbles"]["key"]: arrays["scribbles"]["files"]}
    for entry in arrays["masks"].values():
        out[entry["key"]] = entry["files"]
    return out


def _check_record(record) -> str | None:
    try:
        assert isinstance(record, dict) and isinstance(record["id"], int)
        _dt.datetime.fromisoformat(record["time"])
        assert isinstance(record["change"], str) and isinstance(record["content"], dict)
        arrays = record_arrays(record)
        for key, files in arrays.items():
            assert ARRAY_KEY.match(key) and "zarr.json" in files
            assert all(isinstance(f, str) and _SHA.match(s) for f, s in files.items())
            assert all(".." not in f.split("/") for f in files)
        counts = record["counts"]
        assert all(0 <= int(v) < 256 and isinstance(n, int) for v, n in counts.items())
    except (AssertionError, KeyError, TypeError, ValueError, AttributeError) as err:
        return f"does not have the expected content ({type(err).__name__} {err})"
    return None


class History:
    """The generation records of one store (``history/<id>.json``), oldest first."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.records: list[dict] = []
        self.problems: list[str] = []

    @property
    def folder(self) -> Path:
        return self.root / HISTORY_DIR

    def load(self) -> "History":
        """Read every record; unreadable ones are skipped and reported in ``problems``."""
        self.records, self.problems = [], []
        if not self.folder.is_dir():
            return self
        for path in sorted(self.folder.iterdir()):
            if not _RECORD.match(path.name) or not path.is_file():
                continue
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
                problem = _check_record(record)
            except (OSError, ValueError) as err:
                problem = f"cannot be read ({err})"
            if problem is not None:
                self.problems.append(f"{HISTORY_DIR}/{path.name} {problem}")
                continue
            self.records.append(record)
        self.records.sort(key=lambda r: r["id"])
        return self

    @property
    def newest(self) -> dict | None:
        return self.records[-1] if self.records else None

    def find(self, generation: int) -> dict | None:
        return next((r for r in self.records if r["id"] == generation), None)

    def expected_files(self) -> dict[str, set]:
        """``{array key: files}`` every record lists (a file once written stays)."""
        out: dict[str, set] = {}
        for record in self.records:
            for key, files in record_arrays(record).items():
                out.setdefault(key, set()).update(files)
        return out

    def append(self, record: dict) -> None:
        """Write ``record`` durably as the next generation (assigns its id)."""
        record["id"] = (self.records[-1]["id"] + 1) if self.records else 1
        for _ in range(2):
            path = self.folder / f"{record['id']:08d}.json"
            try:
                durable_put(path, json.dumps(record, separators=(",", ":")).encode("utf-8"),
                            exclusive=True)
                break
            except FileExistsError:  # an unreadable record holds the id: ids never go back
                ids = [int(m.group(1)) for p in self.folder.iterdir() if (m := _RECORD.match(p.name))]
                record["id"] = max(ids) + 1
        else:
            raise FileExistsError(path)
        self.records.append(record)

    def prune(self, limit: int) -> list[dict]:
        """Delete the oldest records beyond ``limit``; return them."""
        dropped = self.records[: max(0, len(self.records) - limit)]
        for record in dropped:
            (self.folder / f"{record['id']:08d}.json").unlink(missing_ok=True)
        if dropped:
            self.records = self.records[len(dropped):]
            fsync_dir(self.folder)
        return dropped

    def referenced_blobs(self) -> set[str]:
        return {sha for r in self.records for files in record_arrays(r).values()
                for sha in files.values()}


def collect_blobs(store: DurableLocalStore, history: History, live, candidates=None) -> int:
    """Delete blobs that no kept record and no array in ``live`` names.

    ``candidates``: only these digests are considered (None: every blob on disk).
    Returns how many were deleted.
    """
    if not store.blobs.is_dir():
        return 0
    with store.lock:
        keep = history.referenced_blobs()
        for array, files in store.journal.items():
            if array in live:
                keep.update(files.values())
        if candidates is None:
            candidates = [p.name for p in store.blobs.iterdir() if _SHA.match(p.name)]
        deleted = 0
        for digest in set(candidates) - keep:
            try:
                (store.blobs / digest).unlink()
                deleted += 1
            except FileNotFoundError:
                pass
    return deleted


# ---- what changed ---------------------------------------------------------------------------
def _value_name(value: int, classes: list) -> str:
    """Name of scribble value ``value`` (1 = background, c + 1 = structure c)."""
    c = value - 1
    return classes[c]["name"] if 0 <= c < len(classes) else f"value {value}"


def describe(before: dict | None, after: dict) -> str:
    """What changed from record ``before`` to record ``after``, in words."""
    if before is None:
        return "history started"
    parts = []
    old_c, new_c = before["content"].get("classes", []), after["content"].get("classes", [])
    old_names = [c["name"] for c in old_c]
    new_names = [c["name"] for c in new_c]
    if old_names != new_names:
        added = [n for n in new_names if n not in old_names]
        removed = [n for n in old_names if n not in new_names]
        if added and not removed:
            parts.append(", ".join(f"class {n!r} added" for n in added))
        elif removed and not added:
            parts.append(", ".join(f"class {n!r} removed" for n in removed))
        elif len(old_names) == len(new_names):
            parts += [f"class {a!r} renamed to {b!r}" for a, b in zip(old_names, new_names) if a != b]
        else:
            parts.append("classes changed")
    elif [c["color"] for c in old_c] != [c["color"] for c in new_c]:
        parts.append(", ".join(f"class {n['name']!r} recoloured"
                               for o, n in zip(old_c, new_c) if o["color"] != n["color"]))
    if before["content"].get("boxes") != after["content"].get("boxes"):
        parts.append(f"boxes: {len(before['content'].get('boxes', []))} -> "
                     f"{len(after['content'].get('boxes', []))}")
    n_rev = len(after["content"].get("reviewed", [])) - len(before["content"].get("reviewed", []))
    if n_rev > 0:
        parts.append(f"{n_rev} suggestion{'s' * (n_rev > 1)} reviewed")
    for key in sorted(set(before["content"]) | set(after["content"])):
        if key not in ("classes", "boxes", "reviewed") and \
                before["content"].get(key) != after["content"].get(key):
            parts.append(f"{key} changed")
    if old_names != new_names:  # renumbered: voxel counts are not comparable per value
        pass
    elif before["counts"] != after["counts"]:
        deltas = []
        for value in sorted({*before["counts"], *after["counts"]}, key=int):
            delta = after["counts"].get(value, 0) - before["counts"].get(value, 0)
            if delta and int(value):
                deltas.append((delta, _value_name(int(value), new_c)))
        deltas.sort(key=lambda d: -abs(d[0]))
        text = ", ".join(f"{d:+,} voxels of class {n!r}" if i == 0 else f"{d:+,} of {n!r}"
                         for i, (d, n) in enumerate(deltas))
        if text:
            parts.append(f"scribbles: {text}")
    elif before["arrays"]["scribbles"]["files"] != after["arrays"]["scribbles"]["files"]:
        parts.append("scribbles rewritten")
    old_m, new_m = before["arrays"]["masks"], after["arrays"]["masks"]
    for name in sorted(set(old_m) | set(new_m)):
        if name not in new_m:
            parts.append(f"mask {name!r} removed")
        elif (name not in old_m or old_m[name]["files"] != new_m[name]["files"]) \
                and old_names == new_names:  # a class change renumbers every mask
            parts.append(f"mask {name!r} saved")
    return "; ".join(parts) or "no change"
