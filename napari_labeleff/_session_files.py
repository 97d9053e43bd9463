"""The files of an annotation store: session.json generations and the arrays they name,
the checksum that recognises a volume, and the checks of label values and regions.

Reading and checking only (no writes): :mod:`napari_labeleff.session` decides what to do
with what is found here.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from pathlib import Path

import numpy as np
import zarr
from zarr.storage import LocalStore

from ._errors import LabelEffError
from ._history import ARRAY_KEY as _ARRAY_KEY
from .io import check_labels

STORE_SUFFIX = ".labeleff.zarr"
SCRIBBLE_CHUNKS = (16, 64, 64)
META_NAME = "session.json"
PREV_NAME = "session.json.prev"
#: Version written; versions this code reads are 1..FORMAT_VERSION (1 had no
#: "scribbles" key: the array was always "scribbles"; 3 added the history, whose
#: invariants (scribble chunks are never deleted, array files are never written in
#: place) older versions would break, so they refuse it).
FORMAT_VERSION = 3
DAMAGED_FILE = re.compile(r"^session\.json\.damaged-[0-9T]+-[0-9a-f]{8}$")
#: session.json keys that are the store's bookkeeping rather than the user's work
#: (the work is recorded in each generation of the history and restored).
_CHECKSUM_BLOCK_BYTES = 32 * 2**20
BOOKKEEPING = ("version", "checksum", "shape", "geometry", "image_path", "scribbles",
               "masks", "history_limit", "damaged")


class RecoveredStoreWarning(UserWarning):
    """A damaged store was restored from its previous generation (or its history)."""


def new_token() -> str:
    """Random suffix of a new array or file name."""
    return uuid.uuid4().hex[:8]


class _Damaged(Exception):
    """An array of the store cannot be read."""


def _array_keys(store: Path) -> list[str]:
    """Keys of the scribble and mask arrays present in ``store``."""
    keys = [p.name for p in store.glob("scribbles*") if p.is_dir()]
    masks = store / "masks"
    if masks.is_dir():
        keys += [f"masks/{p.name}" for p in masks.iterdir() if p.is_dir()]
    return [k for k in keys if _ARRAY_KEY.match(k)]


def _read_arrays(store: Path, meta: dict, expected: dict | None = None) -> dict:
    """``{None: scribbles, name: mask, ...}`` read from ``store``; _Damaged if unreadable.

    ``expected``: ``{array key: files}`` the history lists as written; a listed file
    that is missing is damage (zarr would read its chunk as unannotated).
    """
    out = {}
    keys = {None: meta.get("scribbles", "scribbles"), **meta.get("masks", {})}
    for name, key in keys.items():
        missing = sorted(f for f in (expected or {}).get(key, ()) if not (store / key / f).is_file())
        if missing:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise _Damaged(
                f"array {store / key} is missing {len(missing)} file(s) the history lists as "
                f"written ({shown}); read as is, those voxels would show as unannotated"
            )
        try:
            array = zarr.open_array(store=LocalStore(store, read_only=True), path=key, mode="r")
            if tuple(array.shape) != tuple(meta["shape"]) or array.dtype != np.uint8:
                raise ValueError(f"shape {array.shape} / dtype {array.dtype} is not the volume's uint8 grid")
            out[name] = np.asarray(array[...], dtype=np.uint8)
        except Exception as err:
            raise _Damaged(f"array {store / key} cannot be read ({type(err).__name__}: {err})") from err
    return out


def _load_meta(path: Path):
    """The meta dict of ``path``, or a string saying why it is not usable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return "is missing"
    except UnicodeDecodeError as err:
        return f"is not valid JSON (not UTF-8 text: {err})"
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    try:
        meta = json.loads(text)
    except ValueError as err:
        return f"is not valid JSON ({err})"
    problem = _check_meta(meta)
    return meta if problem is None else problem


def _check_meta(meta) -> str | None:
    if not isinstance(meta, dict):
        return "is not a JSON object"
    version = meta.get("version")
    if not isinstance(version, int) or version < 1:
        return f"has no valid format version ({version!r})"
    try:
        assert isinstance(meta["checksum"], str)
        assert isinstance(meta["shape"], list) and len(meta["shape"]) == 3
        assert all(isinstance(n, int) and n >= 0 for n in meta["shape"])
        if version > FORMAT_VERSION:
            return None  # reported by _generations with its own message
        classes = meta["classes"]
        assert isinstance(classes, list) and classes
        for c in classes:
            assert isinstance(c["name"], str) and len(c["color"]) == 3
            [float(v) for v in c["color"]]
        for b in meta.get("boxes", []):
            assert len(b) == 7 and all(isinstance(v, int) for v in b)
        assert isinstance(meta.get("reviewed", []), list)
        masks = meta.get("masks", {})
        assert isinstance(masks, dict)
        assert all(isinstance(k, str) and isinstance(v, str) and _ARRAY_KEY.match(v)
                   for k, v in masks.items())
        assert _ARRAY_KEY.match(meta.get("scribbles", "scribbles"))
        assert all(isinstance(d, str) and (_ARRAY_KEY.match(d) or DAMAGED_FILE.match(d))
                   for d in meta.get("damaged", []))
        limit = meta.get("history_limit", 1)
        assert isinstance(limit, int) and not isinstance(limit, bool) and limit >= 1
    except (AssertionError, KeyError, TypeError, ValueError) as err:
        return f"does not have the expected content ({type(err).__name__} {err})".replace(" )", ")")
    return None


def _generations(store: Path) -> list:
    """``[(path, meta or reason)]`` for session.json and session.json.prev.

    Raises LabelEffError when a readable generation was written by a newer format.
    """
    out = []
    for name in (META_NAME, PREV_NAME):
        path = store / name
        meta = _load_meta(path)
        if isinstance(meta, dict) and meta["version"] > FORMAT_VERSION:
            raise LabelEffError(
                f"autosave store {store} was written by a newer napari-labeleff ({path.name} "
                f"has format version {meta['version']}; this version reads up to "
                f"{FORMAT_VERSION}); nothing was changed. Upgrade napari-labeleff to open it"
            )
        out.append((path, meta))
    return out


def _belongs(store: Path, checksum: str, shape: tuple) -> bool:
    """True if ``store`` should hold this content's work.

    A readable generation decides by checksum and shape. When no generation is
    readable the store's name decides (``<checksum>.labeleff.zarr``, or a store next
    to an image, which the caller looks at first): its work must not be silently
    replaced by a fresh store elsewhere, so :meth:`AnnotationSession._restore` then
    reports the damage.
    """
    metas = [_load_meta(store / name) for name in (META_NAME, PREV_NAME)]
    readable = [m for m in metas if isinstance(m, dict)]
    if readable:
        return any(m["checksum"] == checksum and tuple(m["shape"]) == shape for m in readable)
    name = store.name[: -len(STORE_SUFFIX)] if store.name.endswith(STORE_SUFFIX) else ""
    if re.fullmatch(r"[0-9a-f]{64}", name):
        return name == checksum
    return any((store / n).exists() for n in (META_NAME, PREV_NAME, "zarr.json"))


def _counts_of(record: dict) -> np.ndarray:
    """Scribble voxels per value (256 entries) recorded in a generation."""
    counts = np.zeros(256, np.int64)
    for value, n in record["counts"].items():
        counts[int(value)] = n
    return counts


def _drop_value(labels: np.ndarray, value: int) -> np.ndarray:
    """``value`` -> 0 and every higher label moves down by one."""
    out = labels.copy()
    out[labels == value] = 0
    out[labels > value] -= 1
    return out


def volume_checksum(data) -> str:
    """SHA-256 over shape, dtype and voxel content (little-endian), read blockwise.

    Parameters
    ----------
    data : ndarray, numpy.memmap or dask.array.Array
        Any shape; lazy arrays are read slab by slab along axis 0.

    Returns
    -------
    str
        64 hexadecimal characters; equal for equal content whatever the path.
    """
    if not hasattr(data, "shape") or not hasattr(data, "dtype"):
        raise LabelEffError(f"data must be an array, got {type(data).__name__}")
    dtype = np.dtype(data.dtype).newbyteorder("<")
    digest = hashlib.sha256(json.dumps({"shape": list(data.shape), "dtype": dtype.str}).encode())
    if data.ndim == 0 or data.shape[0] == 0:
        digest.update(np.ascontiguousarray(np.asarray(data), dtype=dtype))
        return digest.hexdigest()
    row_bytes = max(1, int(np.prod(data.shape[1:])) * dtype.itemsize)
    step = max(1, _CHECKSUM_BLOCK_BYTES // row_bytes)
    chunks = getattr(data, "chunks", None)
    if chunks is not None and isinstance(chunks[0], tuple):  # dask: whole chunks per slab
        step = max(chunks[0][0], step - step % chunks[0][0])
    for start in range(0, data.shape[0], step):
        digest.update(np.ascontiguousarray(np.asarray(data[start : start + step]), dtype=dtype))
    return digest.hexdigest()


def _check_region(region, shape) -> tuple[slice, ...]:
    """Normalise ``region`` (tuple of slices) and grow it to whole scribble chunks."""
    if not isinstance(region, tuple) or len(region) > 3 or not all(
        isinstance(s, slice) for s in region
    ):
        raise LabelEffError(f"region={region!r} must be a tuple of up to 3 slices (Z, Y, X)")
    out = []
    for s, n, c in zip(region + (slice(None),) * (3 - len(region)), shape, SCRIBBLE_CHUNKS):
        start, stop, step = s.indices(n)
        if step != 1:
            raise LabelEffError(f"region={region!r} must use slices with step 1")
        out.append(slice(start // c * c, min(n, -(-max(stop, start) // c) * c)))
    return tuple(out)


def as_uint8_labels(values, what: str) -> np.ndarray:
    """``values`` as a uint8 label array; LabelEffError unless integers in 0..255.

    The package's one label check (:func:`napari_labeleff.io.check_labels`), under the
    name the session has always used.
    """
    return check_labels(values, what)


_as_uint8_labels = as_uint8_labels  # old name
