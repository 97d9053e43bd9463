"""Headless per-volume annotation state with autosave to a zarr store.

One :class:`AnnotationSession` holds everything a user drew on one volume (classes,
scribbles, boxes, masks, reviewed suggestions) and persists it, so a crash loses at
most the stroke in progress and reopening the same volume (recognised by a content
checksum, not by its path) restores the work.

Store layout (``<image>.labeleff.zarr`` next to the image, or
``<checksum>.labeleff.zarr`` in a chosen folder or the user data dir)::

    zarr.json                 zarr v3 group
    scribbles/                uint8 (Z, Y, X), chunks SCRIBBLE_CHUNKS
    masks/<name>.<token>/     uint8 (Z, Y, X), one array per saved version
    session.json              checksum, shape, geometry, classes, boxes, reviewed,
                              and which mask array is current (written atomically)

Crash safety: zarr 3's ``LocalStore`` already writes every chunk to a temporary file
and renames it into place (``zarr.storage._local._atomic_write``), so a SIGKILL never
leaves a torn chunk; scribble saves rewrite only whole chunks from memory. A mask is
written as a new array and becomes current only when ``session.json`` is atomically
replaced, so a mask is either the old or the new one. Leftover temporary files and
unreferenced mask arrays are removed on open.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr

from ._errors import LabelEffError
from .io import Geometry
from .io._atomic import TMP_MARK, atomic_write_text
from .io._labeltable import check_color, default_color

STORE_SUFFIX = ".labeleff.zarr"
SCRIBBLE_CHUNKS = (16, 64, 64)
META_NAME = "session.json"
FORMAT_VERSION = 1
_CHECKSUM_BLOCK_BYTES = 32 * 2**20
_MASK_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def user_store_dir() -> Path:
    """Per-user folder for stores of images whose folder is not writable."""
    import platformdirs

    return Path(platformdirs.user_data_dir("napari-labeleff"))


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


@dataclass
class LabelClass:
    """A class: ``name`` and display ``color`` (RGB floats in 0..1)."""

    name: str
    color: tuple[float, float, float]

    def to_dict(self) -> dict:
        return {"name": self.name, "color": [float(v) for v in self.color]}


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


def _as_uint8_labels(values, what: str) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind not in "uib":
        raise LabelEffError(f"{what} must hold integers, got dtype {values.dtype}")
    if values.size and (values.min() < 0 or values.max() > 255):
        raise LabelEffError(f"{what} values must be in 0..255, got {values.min()}..{values.max()}")
    return values.astype(np.uint8, copy=False)


@dataclass(eq=False)
class AnnotationSession:
    """Annotation state of one volume, persisted in a zarr store.

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
    store_path : Path
        The zarr store.
    restored : bool
        True when :meth:`open` found an existing store for this content.
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
    _mask_keys: dict[str, str] = field(default_factory=dict, repr=False)

    # ---- opening -----------------------------------------------------------------------
    @classmethod
    def open(cls, data, geometry, *, image_path=None, store_dir=None) -> "AnnotationSession":
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
        """
        if not isinstance(geometry, Geometry):
            raise LabelEffError(f"geometry must be a Geometry, got {type(geometry).__name__}")
        if getattr(data, "ndim", 0) not in (3, 4):
            raise LabelEffError(
                f"data must be a (Z, Y, X) or (C, Z, Y, X) array, got shape {getattr(data, 'shape', None)}"
            )
        checksum = volume_checksum(data)
        shape = tuple(int(n) for n in data.shape[-3:])
        image_path = Path(image_path).expanduser().absolute() if image_path is not None else None
        store_dir = Path(store_dir).expanduser().absolute() if store_dir is not None else None
        for candidate in _candidates(checksum, image_path, store_dir):
            meta = _read_meta(candidate)
            if meta and meta.get("checksum") == checksum and tuple(meta.get("shape", ())) == shape:
                return cls._restore(candidate, meta, geometry, image_path)
        session = cls(
            checksum=checksum,
            shape=shape,
            geometry=geometry,
            image_path=image_path,
            classes=[LabelClass("background", default_color(0))],
            scribbles=np.zeros(shape, np.uint8),
        )
        session._create_store(_new_store_path(checksum, image_path, store_dir))
        return session

    @classmethod
    def _restore(cls, store_path: Path, meta: dict, geometry, image_path) -> "AnnotationSession":
        keys = dict(meta.get("masks", {}))
        try:
            _remove_leftovers(store_path, set(keys.values()))
            group = zarr.open_group(str(store_path), mode="r")
            session = cls(
                checksum=meta["checksum"],
                shape=tuple(meta["shape"]),
                geometry=geometry,
                image_path=image_path,
                classes=[LabelClass(c["name"], tuple(c["color"])) for c in meta["classes"]],
                scribbles=np.asarray(group["scribbles"][...], dtype=np.uint8),
                boxes=[tuple(int(v) for v in b) for b in meta.get("boxes", [])],
                masks={name: np.asarray(group[key][...]) for name, key in keys.items()},
                reviewed=list(meta.get("reviewed", [])),
                store_path=store_path,
                restored=True,
                _mask_keys=keys,
            )
        except (KeyError, TypeError, ValueError, OSError) as err:
            raise LabelEffError(
                f"autosave store {store_path} is damaged ({type(err).__name__}: {err}); "
                "move it away to start afresh"
            ) from err
        _register(session.checksum, store_path)
        return session

    def _create_store(self, path: Path) -> None:
        group = zarr.open_group(str(path), mode="w")
        group.create_array("scribbles", shape=self.shape, chunks=SCRIBBLE_CHUNKS, dtype="u1",
                           fill_value=0)
        group.create_group("masks")
        self.store_path = path
        self.save_meta()
        _register(self.checksum, path)

    # ---- saving ------------------------------------------------------------------------
    def save_scribbles(self, region=None) -> None:
        """Write the scribble chunks touched by ``region`` (tuple of slices; None = all).

        Whole chunks are rewritten from memory, each atomically.
        """
        region = _check_region(() if region is None else region, self.shape)
        if np.shape(self.scribbles) != self.shape:
            raise LabelEffError(f"scribbles have shape {np.shape(self.scribbles)}, expected {self.shape}")
        block = _as_uint8_labels(self.scribbles[region], "scribbles")
        zarr.open_array(str(self.store_path / "scribbles"), mode="r+")[region] = block

    def save_meta(self) -> None:
        """Atomically write classes, boxes, reviewed suggestions and the mask index."""
        meta = {
            "version": FORMAT_VERSION,
            "checksum": self.checksum,
            "shape": list(self.shape),
            "geometry": self.geometry.to_dict(),
            "image_path": str(self.image_path) if self.image_path else None,
            "classes": [c.to_dict() for c in self.classes],
            "boxes": [[int(v) for v in b] for b in self.boxes],
            "reviewed": self.reviewed,
            "masks": self._mask_keys,
        }
        atomic_write_text(self.store_path / META_NAME, json.dumps(meta, indent=1))

    def save_mask(self, name: str, mask) -> None:
        """Save ``mask`` ((Z, Y, X), 0..255) under ``name`` (letters, digits, _ or -)."""
        if not isinstance(name, str) or not _MASK_NAME.match(name):
            raise LabelEffError(f"name={name!r} must be 1-64 letters, digits, '_' or '-'")
        mask = _as_uint8_labels(mask, "mask")
        if mask.shape != self.shape:
            raise LabelEffError(f"mask has shape {mask.shape}, expected {self.shape}")
        key = f"masks/{name}.{uuid.uuid4().hex[:8]}"
        group = zarr.open_group(str(self.store_path), mode="r+")
        group.create_array(key, shape=self.shape, chunks=SCRIBBLE_CHUNKS, dtype="u1", fill_value=0)[...] = mask
        old = self._mask_keys.get(name)
        self._mask_keys[name] = key
        self.masks[name] = mask.copy()
        self.save_meta()
        if old:
            shutil.rmtree(self.store_path / old, ignore_errors=True)

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
        self.reviewed.append({**entry, "status": status})
        self.save_meta()

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
        self.classes.append(LabelClass(name, color))
        self.save_meta()
        return len(self.classes) - 1

    def rename_class(self, index: int, name: str) -> None:
        index = self._check_index(index)
        self.classes[index].name = self._check_name(name, skip=index)
        self.save_meta()

    def recolor_class(self, index: int, color) -> None:
        self.classes[self._check_index(index)].color = check_color(color)
        self.save_meta()

    def remove_class(self, index: int, *, force: bool = False) -> None:
        """Remove structure ``index``; higher classes move down by one.

        Refuses the background, and a class with scribbles unless ``force`` (then its
        scribbles are erased, its boxes dropped and its mask voxels become background).
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
        self.scribbles = _drop_value(self.scribbles, index + 1)
        self.boxes = [(b[0] - (b[0] > index), *b[1:]) for b in self.boxes if b[0] != index]
        del self.classes[index]
        self.save_scribbles()
        for name, mask in list(self.masks.items()):
            self.save_mask(name, _drop_value(mask, index))
        self.save_meta()


def _drop_value(labels: np.ndarray, value: int) -> np.ndarray:
    """``value`` -> 0 and every higher label moves down by one."""
    out = labels.copy()
    out[labels == value] = 0
    out[labels > value] -= 1
    return out


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


def _read_meta(store: Path) -> dict | None:
    try:
        return json.loads((store / META_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


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


def _remove_leftovers(store: Path, current_masks: set) -> None:
    """Delete temporary files of interrupted writes and unreferenced mask versions."""
    for pattern in ("*.partial", f"*{TMP_MARK}*"):
        for tmp in store.rglob(pattern):
            tmp.unlink(missing_ok=True)
    masks = store / "masks"
    if masks.is_dir():
        for entry in masks.iterdir():
            if entry.is_dir() and f"masks/{entry.name}" not in current_masks:
                shutil.rmtree(entry, ignore_errors=True)
