"""Deprecated location of :mod:`napari_labeleff.io.atomic` (kept so older imports work)."""

from .atomic import (  # noqa: F401
    TMP_MARK,
    atomic_paths,
    atomic_write_text,
    durable_put,
    fsync_dir,
    fsync_file,
)
