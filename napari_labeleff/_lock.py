"""One writer per store: an exclusive ``writer.lock`` file with the holder's identity.

A store (a per-volume annotation store, a cohort project folder) may be written by one
process at a time. :meth:`StoreLock.acquire` creates ``<folder>/writer.lock``
atomically and exclusively (the complete JSON content is written to a temporary file
first and hard-linked into place, which fails if the lock exists; on file systems
without hard links it falls back to ``O_CREAT | O_EXCL``). The file holds::

    {"pid": 1234, "host": "ws-7", "started": "2026-11-30T12:00:00+00:00",
     "proc_start": 123456 or null, "what": "annotation store", "token": "..."}

A second writer gets a :class:`LabelEffError` naming the holder. A lock whose holder is
dead is *stale* and is taken over with a :class:`StaleLockWarning`: same host and the
pid is gone, or the pid now belongs to another process (Linux: the process start time
in ``/proc/<pid>/stat`` differs from ``proc_start``). A lock held from another host is
never taken over automatically (we cannot see its processes); the message says how to
remove it by hand.

Within one process the same rule holds (two viewers on one store conflict), but a lock
whose :class:`StoreLock` object was garbage-collected is released by a finaliser, and
every lock still held is released at interpreter exit.

Examples
--------
>>> with StoreLock.acquire(folder, what="project") as lock:   # doctest: +SKIP
...     ...                                    # write the store
>>> StoreLock.holder(folder)                   # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import time
import uuid
import warnings
import weakref
from pathlib import Path

from ._errors import LabelEffError
from .io.atomic import fsync_dir

LOCK_NAME = "writer.lock"
# A lock file that cannot be parsed is either being written right now (only on file
# systems without hard links) or damaged; after this many seconds it counts as stale.
_UNREADABLE_GRACE_S = 10.0


class StoreLockedError(LabelEffError):
    """The store is open for writing in another live process (or object)."""


class StaleLockWarning(UserWarning):
    """A lock left by a process that no longer runs was taken over."""


def _host() -> str:
    return socket.gethostname()


def _proc_start(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux), else None."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as fh:
            stat = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    try:  # the command name (field 2) may contain spaces and parentheses
        return int(stat[stat.rindex(")") + 2 :].split()[19])
    except (ValueError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        ok = kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return bool(ok) and code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True




def _read(path: Path) -> dict | None:
    """The lock's JSON; ``{}`` when it exists but cannot be parsed; None when absent."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        info = json.loads(text)
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def _describe(info: dict) -> str:
    return (
        f"process {info.get('pid', '?')} on host {info.get('host', '?')} "
        f"since {info.get('started', '?')}"
    )


def _stale_reason(path: Path, info: dict) -> str | None:
    """Why the lock ``info`` (read from ``path``) is stale, or None if it may be live."""
    if not info:
        try:
            age = time.time() - path.stat().st_mtime
        except OSError:
            return "it disappeared"
        return f"it is unreadable and {age:.0f} s old" if age > _UNREADABLE_GRACE_S else None
    if info.get("host") != _host():
        return None
    try:
        pid = int(info.get("pid"))
    except (TypeError, ValueError):
        return "it names no valid process id"
    if pid == os.getpid():
        # Our own process: live unless no StoreLock object of ours still holds it.
        return None if _HELD.get(str(path)) == info.get("token") else "this process no longer holds it"
    if not _pid_alive(pid):
        return f"process {pid} no longer runs"
    recorded, now = info.get("proc_start"), _proc_start(pid)
    if recorded is not None and now is not None and int(recorded) != now:
        return f"process id {pid} now belongs to another program"
    return None


# path (str) -> token of the StoreLock object of this process that holds it
_HELD: dict[str, str] = {}


def _release_file(path: str, token: str) -> None:
    """Remove the lock file at ``path`` if it still carries ``token``."""
    if _HELD.get(path) == token:
        del _HELD[path]
    lock = Path(path)
    info = _read(lock)
    if info and info.get("token") == token:
        try:
            lock.unlink()
        except OSError:
            return
        fsync_dir(lock.parent)


class StoreLock:
    """Exclusive writer lock of one store folder (see the module docstring).

    Create with :meth:`acquire`; release with :meth:`release` or a ``with`` block.

    Attributes
    ----------
    path : Path
        ``<folder>/writer.lock``.
    info : dict
        What the lock file holds (pid, host, started, proc_start, what, token).
    """

    def __init__(self, path: Path, info: dict):
        self.path = path
        self.info = info
        self._finalizer = weakref.finalize(self, _release_file, str(path), info["token"])

    # ---- public API --------------------------------------------------------------------
    @classmethod
    def acquire(cls, folder, *, what: str = "store") -> "StoreLock":
        """Take the writer lock of ``folder`` or raise if another live writer holds it.

        Parameters
        ----------
        folder : str or Path
            An existing folder (the store).
        what : str
            Words for messages, e.g. ``"annotation store"`` or ``"project"``.

        Returns
        -------
        StoreLock

        Raises
        ------
        StoreLockedError
            (a LabelEffError) The folder is open for writing in a live process (named
            with pid, host and start time).
        LabelEffError
            The lock file cannot be created (read-only folder).

        Warns
        -----
        StaleLockWarning
            When a lock left by a dead process is taken over.
        """
        folder = Path(folder).expanduser().absolute()
        if not folder.is_dir():
            raise LabelEffError(f"cannot lock {what} {folder}: it is not a folder")
        path = folder / LOCK_NAME
        token = uuid.uuid4().hex
        info = {
            "pid": os.getpid(),
            "host": _host(),
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "proc_start": _proc_start(os.getpid()),
            "what": str(what),
            "token": token,
        }
        for _attempt in range(20):
            try:
                _create_exclusive(path, info)
            except FileExistsError:
                pass
            except OSError as err:
                raise LabelEffError(
                    f"cannot write the lock file {path} ({err.strerror or err}); "
                    f"open the {what} read-only (read_only=True) or make its folder writable"
                ) from err
            else:
                _HELD[str(path)] = token
                return cls(path, info)
            holder = _read(path)
            if holder is None:  # released meanwhile: try again
                continue
            reason = _stale_reason(path, holder)
            if reason is None:
                if not holder:
                    time.sleep(0.05)  # being written by a process without hard links
                    continue
                if holder.get("pid") == os.getpid() and holder.get("host") == _host():
                    where = "in this process (another window or object); close it there"
                else:
                    where = "elsewhere; close it there"
                raise StoreLockedError(
                    f"{what} {folder} is open in {_describe(holder)} {where}, or open it "
                    f"read-only (read_only=True). If that process no longer runs on "
                    f"{holder.get('host', '?')}, delete {path}"
                )
            if _take_over(path, holder):
                warnings.warn(
                    f"took over the writer lock of {what} {folder} left by "
                    f"{_describe(holder)}: {reason}",
                    StaleLockWarning,
                    stacklevel=2,
                )
        raise LabelEffError(f"cannot lock {what} {folder}: {path} keeps changing; try again")

    @staticmethod
    def holder(folder) -> dict | None:
        """What ``<folder>/writer.lock`` says (pid, host, started, ...), or None.

        An unreadable lock file gives ``{}``. Whether the holder still runs is not
        checked (see :meth:`is_stale`).
        """
        return _read(Path(folder).expanduser().absolute() / LOCK_NAME)

    @staticmethod
    def is_stale(folder) -> bool:
        """True when ``folder`` has a lock file whose holder is known to be dead."""
        path = Path(folder).expanduser().absolute() / LOCK_NAME
        info = _read(path)
        return info is not None and _stale_reason(path, info) is not None

    @property
    def held(self) -> bool:
        """True until :meth:`release` (or until another process took the lock over)."""
        if not self._finalizer.alive:
            return False
        info = _read(self.path)
        return bool(info) and info.get("token") == self.info["token"]

    def release(self) -> None:
        """Remove the lock file (only if it is still ours). Idempotent."""
        self._finalizer()

    def __enter__(self) -> "StoreLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "held" if self._finalizer.alive else "released"
        return f"StoreLock({str(self.path)!r}, {state})"


def _write_new(path: Path, data: bytes) -> None:
    """Create ``path`` (FileExistsError if it exists) holding ``data``, fsynced."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_exclusive(path: Path, info: dict) -> None:
    """Create ``path`` holding ``info`` as JSON; FileExistsError if it exists."""
    data = json.dumps(info).encode("utf-8")
    tmp = path.with_name(f".{path.name}.{info['token']}.labeleff-tmp")
    _write_new(tmp, data)
    try:
        try:
            os.link(tmp, path)  # atomic and exclusive; the content is complete already
        except FileExistsError:
            raise
        except OSError:  # no hard links here (some network or FAT file systems)
            _write_new(path, data)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def _take_over(path: Path, stale: dict) -> bool:
    """Remove the stale lock ``stale`` at ``path``; False if it changed meanwhile."""
    aside = path.with_name(f".{path.name}.{uuid.uuid4().hex}.stale.labeleff-tmp")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    moved = _read(aside)
    if moved != stale:  # another process replaced it meanwhile: put theirs back
        try:
            os.link(aside, path)
        except OSError:
            pass
        aside.unlink(missing_ok=True)
        return False
    aside.unlink(missing_ok=True)
    return True
