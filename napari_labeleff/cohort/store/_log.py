"""``annotations.jsonl``: the append-only log of what was drawn, when, for how long.

One line per (operation, class): time, volume, kind, class, voxels, seconds, model
version, ``op`` (one id per interaction). Lines are appended with one write; a failed
write is truncated back, and a torn last line from a crash is skipped when reading.
"""

from __future__ import annotations

import errno
import json
import math
import os
import uuid
from pathlib import Path

import numpy as np

from ..._errors import LabelEffError
from ._records import now

LOG_FILE = "annotations.jsonl"


def check_seconds(seconds) -> float:
    """``seconds`` as a finite float >= 0, else a clear error."""
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(seconds, bool) or not math.isfinite(value) or value < 0:
        raise LabelEffError(f"seconds={seconds!r} must be a finite number >= 0")
    return value


class AnnotationLog:
    """The project's ``annotations.jsonl``."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOG_FILE

    def append(self, vid: str, entries: list[dict], seconds: float, model: str | None) -> None:
        """One operation (possibly several classes) = one ``op`` id = one interaction.

        ``entries``: dicts with ``kind``, ``class`` and ``voxels``; ``seconds`` is
        logged on the first; ``model`` is the published version (or None)."""
        seconds = check_seconds(seconds)
        op = uuid.uuid4().hex[:12]
        lines = []
        for i, e in enumerate(entries):
            voxels = e.get("voxels", 0)
            if isinstance(voxels, bool) or not isinstance(voxels, (int, np.integer)) or voxels < 0:
                raise LabelEffError(f"voxels={voxels!r} must be an integer >= 0")
            lines.append(json.dumps({
                "time": now(), "volume": vid, "kind": e["kind"], "class": e.get("class"),
                "voxels": int(voxels), "seconds": seconds if i == 0 else 0.0,
                "model": model, "op": op,
            }))
        append_lines(self.path, lines)

    def entries(self, vid: str | None = None) -> list[dict]:
        """Entries (for one volume, or all); a torn last line (a crash mid-write) is skipped."""
        out = []
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return out
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and (vid is None or entry.get("volume") == vid):
                out.append(entry)
        return out

    def totals(self, volume_ids) -> dict[str, dict]:
        """Per volume: ``seconds`` spent, ``interactions`` (operations), ``voxels`` drawn."""
        totals = {v: {"seconds": 0.0, "interactions": 0, "voxels": 0} for v in volume_ids}
        ops: dict[str, set] = {v: set() for v in totals}
        for e in self.entries():
            v = e.get("volume")
            if v not in totals:
                continue
            totals[v]["seconds"] += float(e.get("seconds") or 0.0)
            totals[v]["voxels"] += int(e.get("voxels") or 0) if e.get("kind") not in ("accept", "import") else 0
            ops[v].add(e.get("op"))
        for v, t in totals.items():
            t["interactions"] = len(ops[v])
        return totals


def append_lines(path: Path, lines: list[str]) -> None:
    """Append whole lines with one write; on failure truncate back (no torn line)."""
    payload = ("\n".join(lines) + "\n").encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    except OSError as err:
        raise LabelEffError(f"cannot write {path}: {err.strerror or err}; nothing was logged") from err
    try:
        size = os.fstat(fd).st_size
        if size:  # a torn line from a crash: start on a fresh line
            with open(path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    payload = b"\n" + payload
        try:
            written = os.write(fd, payload)
            if written != len(payload):
                raise OSError(errno.ENOSPC, "short write")
            os.fsync(fd)
        except OSError as err:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            raise LabelEffError(f"cannot write {path}: {err.strerror or err}; nothing was logged") from err
    finally:
        os.close(fd)
