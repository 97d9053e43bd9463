"""Model versions: ``models/<version>/`` folders, their records, the published pointer,
and the scores a model gave each volume (``VolumeRecord.scores``)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

from ..._errors import LabelEffError
from ._records import PublishedModel, Room, now

_VERSION = re.compile(r"^v(\d{4,})$")


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
