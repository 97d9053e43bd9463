"""napari-labeleff: label-efficient 3D medical image segmentation.

The headless core (``io``, ``engine``, ``active``, ``session``, ``cli``) never imports
Qt, napari or magicgui; the napari layer lives in ``napari_labeleff._napari``.

Conventions used everywhere in the package:

* volumes are numpy arrays in (Z, Y, X) order (multi-channel: (C, Z, Y, X));
* ``spacing`` is a 3-tuple in millimetres in the same (Z, Y, X) order;
* scribbles: integer (Z, Y, X) array, 0 = unannotated, 1 = background,
  c + 1 = structure c (c = 1..K);
* boxes: list of ``(c, z0, y0, x0, z1, y1, x1)`` voxel indices, inclusive-exclusive,
  c = structure (1..K);
* masks: (Z, Y, X) integer array, 0 = background, c = structure c.
"""

__version__ = "0.1.0"

from ._errors import LabelEffError

__all__ = ["LabelEffError", "__version__"]
