"""Model versions: ``models/<version>/`` folders, their records, the published pointer.

Also the scores a model gave each volume (``VolumeRecord.scores``) and the *inbox*
through which read-only processes (batch jobs beside a writer) hand scores to the
writer: ``<project>/inbox/scores-*.json``, merged when a writer next opens the project.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from pathlib import Path

from ..._errors import LabelEffError
from ...io.atomic import atomic_write_text
from ._records import PublishedModel, Room, now

_VERSION = re.compile(r"^v(\d{4,})$")
INBOX = "inbox"


def next_version(models: list[dict], folder: Path) -> str:
    """The version after every one recorded in ``models`` or present in ``folder``."""
    numbers = [int(m.group(1)) for m in (_VERSION.match(x["version"]) for x in models) if m]
    if folder.is_dir():
        numbers += [int(m.group(1)) for m in (_VERSION.match(p.name) for p in folder.iterdir()) if m]
    return f"v{max(numbers, default=0) + 1:04d}"


def check_scores(scores: dict) -> dict:
    """``model`` (version) plus numbers (or None); a clear error otherwise."""
    for key, value in scores.items():
        if key != "model" and value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float))):
            raise LabelEffError(f"score {key}={value!r} must be a number (or None)")
    return dict(scores)


class Models(Room):
    """Model versions of a project (``store``: the ProjectStore)."""

    @property
    def records(self) -> list[dict]:
        return copy.deepcopy(self._file.data["models"])

    @property
    def published(self) -> PublishedModel | None:
        version = self._file.data.get("published")
        for m in self._file.data["models"]:
            if m["version"] == version:
                return PublishedModel.from_record(m)
        return None

    def folder(self, version) -> Path:
        return self._file.folder / "models" / str(version)

    def require_published(self) -> PublishedModel:
        """The published model, trained for the project's current classes."""
        published = self.published
        if published is None:
            raise LabelEffError(
                f"project {self._file.folder.name} has no published model yet; train first "
                "(Project.train / labeleff project train)"
            )
        trained = list(published.class_names)
        classes = list(self._file.data["class_names"])
        if trained != classes:
            raise LabelEffError(
                f"the class list changed after training: model {published} knows {trained}, "
                f"the project now has {classes}; retrain (labeleff project train) "
                "before predicting"
            )
        return published

    def record_scores(self, vid: str, scores: dict) -> None:
        """Store model-estimated scores of ``vid`` (writer only)."""
        self._file.writer("record scores")
        self._store.volumes.get(vid)
        self._store.volumes.update(vid, scores=check_scores(scores))

    # ---- scores from readers -------------------------------------------------------------------
    def hand_over_scores(self, scores: dict[str, dict]) -> Path | None:
        """Leave scores (volume id -> scores) for the writer: ``inbox/scores-*.json``.

        A read-only process (a batch job while napari holds the project) calls this;
        the writer merges the file when it next opens the project
        (:meth:`merge_inbox`). Returns the file written (None when nothing to hand).
        """
        scores = {str(v): check_scores(s) for v, s in scores.items() if s}
        if not scores:
            return None
        inbox = self._file.folder / INBOX
        inbox.mkdir(exist_ok=True)
        path = inbox / f"scores-{now().replace(':', '')}-{uuid.uuid4().hex[:8]}.json"
        atomic_write_text(path, json.dumps({"written": now(), "scores": scores}, indent=1))
        return path

    def merge_inbox(self) -> list[str]:
        """Record the scores read-only processes left (writer only); returns the volume
        ids updated. A file is deleted once merged; an unreadable one is kept."""
        self._file.writer("merge scores")
        inbox = self._file.folder / INBOX
        if not inbox.is_dir():
            return []
        files = sorted(inbox.glob("scores-*.json"))
        merged: dict[str, dict] = {}
        readable = []
        for path in files:  # in time order: the newest scores of a volume win
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                merged.update({str(v): dict(s) for v, s in data["scores"].items()})
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue
            readable.append(path)
        known = set(self._store.volumes.ids)
        merged = {v: s for v, s in merged.items() if v in known}
        if merged:
            data = self._file.edit()
            for v in data["volumes"]:
                if v["id"] in merged:
                    v["scores"] = check_scores(merged[v["id"]])
            self._file.commit(data)
        for path in readable:
            path.unlink(missing_ok=True)
        return sorted(merged)

    # ---- training runs ------------------------------------------------------------------------
    def pending_run(self) -> dict | None:
        return self._file.data.get("pending_run")

    def start_run(self, run: str, version: str, digest: str) -> None:
        """Record the run in progress (resumed by the next training with ``digest``)."""
        data = self._file.edit()
        data["pending_run"] = {"run": run, "version": version, "digest": digest, "started": now()}
        self._file.commit(data)

    def record_version(self, entry: dict, publish: bool) -> None:
        """Add a trained version's record (``entry``), publish it if ``publish``, and
        clear the pending run."""
        data = self._file.edit()
        if publish:
            for m in data["models"]:
                if m["status"] == "published":
                    m["status"] = "superseded"
            data["published"] = entry["version"]
        data["models"] = [m for m in data["models"] if m["version"] != entry["version"]] + [entry]
        data["pending_run"] = None
        self._file.commit(data)
