"""Headless reading and writing of medical volumes with exact geometry.

Never imports Qt or napari. Public API: :func:`read_volume`, :func:`can_read`,
:func:`write_labels`, :func:`write_volume`, :class:`Volume`, :class:`Geometry`,
:func:`list_samples`, :func:`load_sample`; label checks :func:`check_labels`,
:func:`grid_differences`, :func:`read_label_volume`; label tables
:func:`default_color`, :func:`check_color`, :func:`label_table_paths`,
:func:`smallest_uint`. Atomic file writes: :mod:`napari_labeleff.io.atomic`.
"""

from ._geometry import Geometry, check_spacing
from ._labels import check_labels, grid_differences, read_label_volume
from ._labeltable import check_color, default_color
from ._read import can_read, read_volume
from ._samples import Sample, list_samples, load_sample
from ._volume import Volume
from ._write import label_table_paths, smallest_uint, write_labels, write_volume

__all__ = [
    "Geometry",
    "Sample",
    "Volume",
    "can_read",
    "check_color",
    "check_spacing",
    "check_labels",
    "default_color",
    "grid_differences",
    "label_table_paths",
    "list_samples",
    "load_sample",
    "read_label_volume",
    "read_volume",
    "smallest_uint",
    "write_labels",
    "write_volume",
]
