"""The napari layer (thin): reader, writer, sample data, dock widgets, the worker seam.

Names other packages may use (the ``labeleff gui`` command): :func:`layer_name`,
:func:`volume_layer_data` (the plugin reader's own layer construction). Imported on
first use: this package imports napari.
"""

from .._lazy import lazy_names

_LAZY = {"layer_name": "_reader", "volume_layer_data": "_reader"}

__all__ = sorted(_LAZY)

__getattr__ = lazy_names(__name__, _LAZY)
