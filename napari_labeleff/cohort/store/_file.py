"""``project.json``: one atomic file, a readable previous generation, recovery.

The file is replaced atomically after its current (readable) content was copied to
``project.json.prev``; the in-memory copy changes only after a successful write, so a
failed save (disk full) leaves both the file and the object as they were. A damaged
``project.json`` is set aside (never overwritten) and the ``.prev`` generation restored.
"""

from __future__ import annotations

import copy
import json
import os
import uuid
import warnings
from datetime import datetime
from pathlib import Path

from ..._errors import LabelEffError
from ...io.atomic import atomic_write_text
from ._records import VolumeRecord, now

PROJECT_FILE = "project.json"
PREV_SUFFIX = ".prev"
FORMAT = "napari-labeleff project"
FORMAT_VERSION = 1


def check_class_names(names) -> list[str]:
    """Structure names (background excluded): 1..254 distinct non-empty strings."""
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


def _acquire(folder: Path):
    from ..._lock import StoreLock

    return StoreLock.acquire(folder, what="project")


class ProjectFile:
    """The project folder's ``project.json`` and its writer lock.

    Attributes
    ----------
    folder : Path
    data : dict
        The current generation (read it; change it through :meth:`edit` + :meth:`commit`).
    read_only : bool
    """

    def __init__(self, folder: Path, data: dict, lock, read_only: bool):
        self.folder = folder
        self.data = data
        self.lock = lock
        self.read_only = read_only

    @classmethod
    def create(cls, folder, class_names) -> "ProjectFile":
        """A new project file in ``folder`` (absent or empty), open for writing."""
        folder = Path(folder).expanduser().absolute()
        names = check_class_names(class_names)
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
            "format": FORMAT, "version": FORMAT_VERSION, "generation": 0, "created": now(),
            "class_names": names, "channels": None, "volumes": [], "models": [],
            "published": None, "pending_run": None,
        }
        file = cls(folder, {}, lock, read_only=False)
        try:
            file.commit(data)
        except LabelEffError:
            lock.release()
            raise
        return file

    @classmethod
    def open(cls, folder, read_only: bool = False, *, stacklevel: int = 2) -> "ProjectFile":
        """Open an existing project file (taking the writer lock unless ``read_only``).

        ``stacklevel``: as in :func:`warnings.warn`, for the recovery warning (2: the
        caller of this method)."""
        folder = Path(folder).expanduser().absolute()
        main, prev = folder / PROJECT_FILE, folder / (PROJECT_FILE + PREV_SUFFIX)
        if not main.exists() and not prev.exists():
            raise LabelEffError(
                f"folder={str(folder)!r} is not a napari-labeleff project (no {PROJECT_FILE}); "
                "create one with Project.create / labeleff project create"
            )
        lock = None if read_only else _acquire(folder)
        try:
            data, problem = load(main)
            if problem is not None:
                data = recover(folder, problem, read_only, stacklevel=stacklevel + 1)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return cls(folder, data, lock, read_only)

    def reload(self, *, stacklevel: int = 2) -> None:
        """Re-read ``project.json`` (a read-only view following another writer)."""
        data, problem = load(self.folder / PROJECT_FILE)
        if problem is not None:
            data = recover(self.folder, problem, read_only=True, stacklevel=stacklevel + 1)
        self.data = data

    def close(self) -> None:
        """Release the writer lock (idempotent); the data stays readable."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        self.read_only = True

    def writer(self, what: str) -> None:
        """Raise unless open for writing; ``what`` names the refused action."""
        if self.read_only:
            raise LabelEffError(
                f"cannot {what}: project {self.folder} is open read-only (or closed); "
                "open it with Project.open(folder) in one process to change it"
            )

    def edit(self) -> dict:
        """A deep copy of the data to change and :meth:`commit`."""
        return copy.deepcopy(self.data)

    def commit(self, data: dict) -> None:
        """Write ``data`` as the new generation; memory changes only on success."""
        data = dict(data)
        data["generation"] = int(self.data.get("generation", -1)) + 1
        main = self.folder / PROJECT_FILE
        text = json.dumps(data, indent=1)
        if main.exists():
            try:
                current = main.read_text(encoding="utf-8")
            except OSError as err:
                raise LabelEffError(f"cannot read {main}: {err.strerror or err}; nothing was written") from err
            if parse(current)[1] is None:  # keep only a readable generation as .prev
                atomic_write_text(self.folder / (PROJECT_FILE + PREV_SUFFIX), current)
        atomic_write_text(main, text)
        self.data = data


def parse(text: str):
    """(data, None) for a valid project file's text, else (None, what is wrong)."""
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


def load(path: Path):
    """(data, None) or (None, problem) for the file at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, "missing"
    except (OSError, UnicodeDecodeError) as err:
        return None, f"unreadable ({err})"
    return parse(text)


def recover(folder: Path, problem: str, read_only: bool, *, stacklevel: int = 2) -> dict:
    """``project.json`` is damaged: use ``project.json.prev``; set the damaged file aside.

    ``stacklevel``: passed to :func:`warnings.warn` (2: the caller of this function)."""
    main, prev = folder / PROJECT_FILE, folder / (PROJECT_FILE + PREV_SUFFIX)
    data, prev_problem = load(prev)
    if data is None:
        raise LabelEffError(
            f"{main} is {problem} and its previous generation {prev.name} is {prev_problem}; "
            "nothing was changed: restore project.json from a backup"
        )
    if read_only:
        warnings.warn(f"{main} is {problem}; reading its previous generation {prev.name} "
                      "(open the project for writing to restore it)", UserWarning, stacklevel=stacklevel)
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
        UserWarning, stacklevel=stacklevel,
    )
    return data
