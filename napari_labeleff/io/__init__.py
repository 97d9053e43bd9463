"""Headless reading and writing of medical volumes with exact geometry.

Never imports Qt or napari. Public API: :func:`read_volume`, :func:`can_read`,
:func:`write_labels`, :func:`write_volume`, :class:`Volume`, :class:`Geometry`,
:func:`list_samples`, :func:`load_sample`.
"""

from ._geometry import Geometry
from ._read import can_read, read_volume
from ._samples import Sample, list_samples, load_sample
from ._volume import Volume
from ._write import label_table_paths, write_labels, write_volume

__all__ = [
    "Geometry",
    "Sample",
    "Volume",
    "can_read",
    "label_table_paths",
    "list_samples",
    "load_sample",
    "read_volume",
    "write_labels",
    "write_volume",
]
