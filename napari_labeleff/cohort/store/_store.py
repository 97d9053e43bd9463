"""The project store: one object holding a project folder's rooms (persistence only)."""

from __future__ import annotations

from pathlib import Path

from ._file import ProjectFile
from ._labels import Labels
from ._log import AnnotationLog
from ._models import Models
from ._volumes import Volumes


class ProjectStore:
    """A project folder on disk: ``file`` (project.json + lock), ``volumes``,
    ``labels`` (per-volume annotation stores), ``log`` (annotations.jsonl), ``models``.

    Create with :meth:`create`, open with :meth:`open`. No training, no prediction:
    those are the ``training``, ``prediction`` and ``services`` rooms of the cohort
    package; :class:`~napari_labeleff.cohort.Project` puts them together.
    """

    def __init__(self, file: ProjectFile):
        self.file = file
        self.volumes = Volumes(self)
        self.labels = Labels(self)
        self.models = Models(self)
        self.log = AnnotationLog(file.folder)

    @classmethod
    def create(cls, folder, class_names) -> "ProjectStore":
        return cls(ProjectFile.create(folder, class_names))

    @classmethod
    def open(cls, folder, read_only: bool = False, *, stacklevel: int = 2) -> "ProjectStore":
        """Open a project folder; a writer merges what readers left in the inbox."""
        store = cls(ProjectFile.open(folder, read_only, stacklevel=stacklevel + 1))
        if not read_only:
            try:
                store.models.merge_inbox()
            except BaseException:
                store.file.close()
                raise
        return store

    @property
    def folder(self) -> Path:
        return self.file.folder

    @property
    def read_only(self) -> bool:
        return self.file.read_only

    @property
    def class_names(self) -> list[str]:
        return list(self.file.data["class_names"])

    def log_entries(self, vid: str, entries: list[dict], seconds: float) -> None:
        """Append one operation to the annotation log with the published model version."""
        published = self.models.published
        self.log.append(vid, entries, seconds, published.version if published else None)
