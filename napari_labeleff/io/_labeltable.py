"""Label-name tables written next to a mask: 3D Slicer ``.ctbl`` and ITK-SNAP ``.txt``.

No library in the dependency set writes these two small text formats, so they are
written here. Formats:

* 3D Slicer colour table (``# Color table file`` header; ``index name R G B A``,
  0-255, spaces in names replaced by ``_``), loadable with *Add data*.
* ITK-SNAP label description file (``IDX R G B A VIS MSH "LABEL"``), loadable with
  *Segmentation > Import Label Descriptions*.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .._errors import LabelEffError

#: Default RGB colours (floats 0..1) of structures 1, 2, ...; index 0 = background.
DEFAULT_COLORS = (
    (0.0, 0.0, 0.0),
    (0.902, 0.294, 0.208),
    (0.302, 0.733, 0.835),
    (0.0, 0.627, 0.529),
    (0.953, 0.608, 0.498),
    (0.235, 0.329, 0.533),
    (0.569, 0.82, 0.761),
    (0.494, 0.38, 0.282),
    (0.863, 0.0, 0.0),
    (0.69, 0.612, 0.522),
)


def default_color(index: int) -> tuple[float, float, float]:
    """Colour of class ``index`` (0 = background) from :data:`DEFAULT_COLORS`, cycling."""
    if index == 0:
        return DEFAULT_COLORS[0]
    return DEFAULT_COLORS[1 + (index - 1) % (len(DEFAULT_COLORS) - 1)]


def check_color(color, what: str = "color") -> tuple[float, float, float]:
    """``color`` as 3 RGB floats in 0..1, or a :class:`LabelEffError` naming ``what``."""
    try:
        rgb = np.asarray(color, dtype=float)
    except (TypeError, ValueError):
        rgb = np.zeros(0)
    if rgb.shape != (3,) or not np.all((rgb >= 0) & (rgb <= 1)):
        raise LabelEffError(f"{what}={color!r} must be 3 RGB floats in 0..1")
    return tuple(float(v) for v in rgb)


def _as_table(values, what: str) -> dict[int, object]:
    """Normalise a sequence (index = label) or a mapping {label: value}."""
    if values is None:
        return {}
    if isinstance(values, Mapping):
        return {int(k): v for k, v in values.items()}
    if isinstance(values, Sequence) and not isinstance(values, str):
        return dict(enumerate(values))
    raise LabelEffError(f"{what} must be a sequence indexed by label or a mapping, got {values!r}")


def label_entries(max_label: int, label_names=None, colors=None):
    """Rows ``(label, name, (r, g, b) 0..255)`` for labels 0..max(max_label, named labels).

    ``label_names`` / ``colors``: sequence indexed by label (0 = background) or a
    mapping {label: value}; colours are RGB floats in 0..1. Missing entries get
    ``"background"`` / ``"label_<c>"`` and :func:`default_color`.
    """
    names = _as_table(label_names, "label_names")
    cols = _as_table(colors, "colors")
    rows = []
    for c in range(max([max_label, *names, *cols]) + 1):
        name = str(names.get(c, "background" if c == 0 else f"label_{c}")).strip()
        rgb = check_color(cols.get(c, default_color(c)), f"colors[{c}]")
        rows.append((c, name or f"label_{c}", tuple(int(round(v * 255)) for v in rgb)))
    return rows


def slicer_ctbl(rows) -> str:
    lines = ["# Color table file written by napari-labeleff", f"# {len(rows)} values"]
    for c, name, (r, g, b) in rows:
        alpha = 0 if c == 0 else 255
        lines.append(f"{c} {'_'.join(name.split())} {r} {g} {b} {alpha}")
    return "\n".join(lines) + "\n"


def itksnap_txt(rows) -> str:
    lines = [
        "################################################",
        "# ITK-SnAP Label Description File (written by napari-labeleff)",
        "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL",
        "################################################",
    ]
    for c, name, (r, g, b) in rows:
        visible = 0 if c == 0 else 1
        label = "Clear Label" if c == 0 else name.replace('"', "'")
        lines.append(f'{c:5d} {r:5d} {g:4d} {b:4d} {visible:8d} {visible:2d} {visible:2d}    "{label}"')
    return "\n".join(lines) + "\n"
