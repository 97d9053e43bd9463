"""Atomic file replacement: write to a temporary file in the target folder, then rename.

The package's own piece of plumbing (no dependency offers a multi-file variant): a
crash, a full disk or a read-only folder leaves either the old files or the complete
new ones, never a partial file. ``os.replace`` is atomic on POSIX and Windows when
source and target are on the same file system, which is why the temporary file is
created next to its target.

Durability: each temporary file is flushed to disk (``fsync``) before it is renamed,
and the folder is fsynced after the rename, so a finished write also survives a power
cut or an OS crash (a SIGKILL alone never loses a completed write: the page cache
belongs to the kernel).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

from .._errors import LabelEffError

TMP_MARK = ".labeleff-tmp"
# mkstemp creates files with mode 0600; finished files get the usual 0666 & ~umask.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def fsync_file(path) -> None:
    """Flush ``path``'s content to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder) -> None:
    """Flush ``folder``'s entries (a rename or a new file in it) to disk (POSIX only)."""
    if os.name == "nt":  # folders cannot be opened on Windows; NTFS journals renames
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems (e.g. certain network mounts) refuse; nothing better to do
    finally:
        os.close(fd)


def durable_put(path, data: bytes, *, exclusive: bool = False, sync_dir: bool = True) -> None:
    """Write ``data`` to ``path`` atomically and durably.

    The bytes go to ``<path>.<random>.partial`` in the same folder, are fsynced and the
    file is renamed onto ``path`` (``exclusive``: hard-linked, failing with
    FileExistsError if ``path`` exists). A crash at any point leaves the old file or the
    new one, never a torn file. ``sync_dir=False`` leaves the folder fsync to the caller
    (batching many files of one folder).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone already after a successful replace
    if sync_dir:
        fsync_dir(path.parent)


def _suffix(path: Path) -> str:
    """Full suffix (``.nii.gz`` for ``mask.nii.gz``): writers pick formats by name."""
    return "".join(path.suffixes[-2:]) if path.name.endswith(".gz") else path.suffix


@contextmanager
def atomic_paths(*paths):
    """Yield temporary paths that replace ``paths`` when the block succeeds.

    Parameters
    ----------
    *paths : str or Path
        Final file paths. Each temporary file lives in its target's folder and keeps
        the target's suffix (so format-by-extension writers still work).

    Yields
    ------
    list of Path
        One temporary path per target, in the same order.

    Raises
    ------
    LabelEffError
        When a file cannot be created or written (read-only folder, disk full, ...);
        every temporary file is removed and the targets are left untouched.
    """
    finals = [Path(p) for p in paths]
    temps: list[Path] = []
    where = finals[0]  # the target reported when something fails
    try:
        try:
            for where in finals:
                fd, name = tempfile.mkstemp(
                    dir=where.parent, prefix=f".{where.name}.", suffix=TMP_MARK + _suffix(where)
                )
                os.close(fd)
                temps.append(Path(name))
            where = finals[0]
            yield temps
            for tmp in temps:
                os.chmod(tmp, 0o666 & ~_UMASK)
                fsync_file(tmp)
            for tmp, where in zip(temps, finals):
                os.replace(tmp, where)
            for folder in dict.fromkeys(f.parent for f in finals):
                fsync_dir(folder)
        except OSError as err:
            for tmp, final in zip(temps, finals):
                if err.filename is not None and str(err.filename) == str(tmp):
                    where = final
            reason = err.strerror or str(err)
            raise LabelEffError(f"cannot write {where}: {reason}; nothing was written") from err
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    path = Path(path)
    with atomic_paths(path) as (tmp,):
        tmp.write_text(text, encoding="utf-8")
    return path
