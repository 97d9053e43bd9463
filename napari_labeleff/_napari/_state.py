"""Per-viewer annotation state shared by the dock-widget panels.

One :class:`ViewerState` exists per viewer. The main widget creates and owns it and
passes it explicitly to every panel (no module globals, no singleton, no layer names
parsed back into ids). Panels react to its psygnal signals instead of polling each
other.

Conventions (see ``napari_labeleff/__init__.py``): ``classes[0]`` is the background
class and always exists; structure ``c`` (1..K) is ``classes[c]``. Its scribble value
is ``c + 1`` (background scribble = 1, 0 = unannotated) and its mask value is ``c``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from psygnal import Signal

from ._layers import shapes_to_boxes

if TYPE_CHECKING:
    from ..active import Suggestion
    from ..engine import RefineResult
    from ..io import Geometry

#: Review status values of a suggestion (see :attr:`ViewerState.review_status`).
REVIEW_STATES = ("pending", "annotated", "confirmed", "skipped")

#: Colours given to new structures, in order (background has its own).
PALETTE = (
    "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4",
    "#f032e6", "#bfef45", "#fabed4", "#469990", "#dcbeff", "#9a6324",
)
BACKGROUND_COLOR = "#5a6f8c"


@dataclass
class ClassInfo:
    """Name and display colour (``"#rrggbb"``) of one class."""

    name: str
    color: str


def default_classes() -> list[ClassInfo]:
    """Background plus one structure: the state of a fresh annotation."""
    return [ClassInfo("background", BACKGROUND_COLOR), ClassInfo("structure 1", PALETTE[0])]


@dataclass(eq=False)
class ViewerState:
    """Everything the LabelEff panels of one viewer share.

    Attributes
    ----------
    viewer : napari.Viewer
    image_layer : napari.layers.Image or None
        The volume being annotated, data (Z, Y, X) (lazy data stays lazy).
    channel_layers : list of napari.layers.Image
        All channel layers of a multi-channel volume, in channel order (the reader
        opens (C, Z, Y, X) as one layer per channel); ``[image_layer]`` otherwise.
    geometry : Geometry or None
        Voxel-to-world geometry used for layer affines and for export: the reader's
        source geometry, or the image layer's affine for images from elsewhere.
    session : napari_labeleff.session.AnnotationSession or None
        Autosave store of scribbles, boxes, classes and masks for this volume.
    classes : list of ClassInfo
        ``classes[0]`` is background; ``classes[c]`` is structure c.
    scribbles_layer, boxes_layer, refined_layer, final_layer, uncertainty_layer
        The layers bound to this state (None until created).
    result : RefineResult or None
        The last successful refinement (kept when a later one is cancelled or fails).
    suggestions : list of Suggestion
        Current active-learning ranking, best first.
    review_status : dict
        ``suggestion position in suggestions -> one of REVIEW_STATES``.
    busy : bool
        True while a worker runs for this state; Run buttons are disabled.
    scribbles_dirty : bool
        Scribbles or boxes changed since ``result`` was computed.
    final_dirty : bool
        The final mask changed since it was last exported.
    """

    viewer: Any
    image_layer: Any = None
    channel_layers: list = field(default_factory=list)
    geometry: Geometry | None = None
    session: Any = None
    classes: list[ClassInfo] = field(default_factory=default_classes)
    scribbles_layer: Any = None
    boxes_layer: Any = None
    refined_layer: Any = None
    final_layer: Any = None
    uncertainty_layer: Any = None
    result: RefineResult | None = None
    suggestions: list[Suggestion] = field(default_factory=list)
    review_status: dict[int, str] = field(default_factory=dict)
    busy: bool = False
    scribbles_dirty: bool = False
    final_dirty: bool = False

    #: The image layer (and so the volume, geometry, session) was (re)bound.
    image_changed = Signal()
    #: Classes were added, removed, renamed or recoloured.
    classes_changed = Signal()
    #: Scribbles or boxes changed: region (z0, y0, x0, z1, y1, x1) or None for all.
    annotations_changed = Signal(object)
    #: A refinement finished; carries the RefineResult.
    refined = Signal(object)
    #: ``suggestions`` or ``review_status`` changed.
    suggestions_changed = Signal()
    #: ``busy`` flipped; carries the new value.
    busy_changed = Signal(bool)
    #: The final mask changed.
    final_changed = Signal()

    # ---- classes ------------------------------------------------------------------
    @property
    def n_structures(self) -> int:
        """K, the number of structures (background excluded)."""
        return len(self.classes) - 1

    def class_colors(self) -> dict[int, str]:
        """``mask value -> colour`` for 0..K (0 = background)."""
        return {c: info.color for c, info in enumerate(self.classes)}

    def label_names(self) -> dict[int, str]:
        """``mask value -> name`` for 0..K (0 = background)."""
        return {c: info.name for c, info in enumerate(self.classes)}

    def next_color(self) -> str:
        """A palette colour not used yet (cycling when all are used)."""
        used = {info.color.lower() for info in self.classes}
        free = [c for c in PALETTE if c not in used]
        return free[0] if free else PALETTE[self.n_structures % len(PALETTE)]

    # ---- geometry -----------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int] | None:
        """(Z, Y, X) shape of the annotated grid, or None without an image."""
        if self.image_layer is None:
            return None
        return tuple(int(s) for s in self.image_layer.data.shape[-3:])

    @property
    def spacing(self) -> tuple[float, float, float]:
        """(Z, Y, X) voxel size in mm."""
        if self.geometry is None:
            return (1.0, 1.0, 1.0)
        return self.geometry.spacing

    # ---- busy / dirty ---------------------------------------------------------------
    def set_busy(self, busy: bool) -> None:
        if busy != self.busy:
            self.busy = busy
            self.busy_changed.emit(busy)

    def set_suggestions(self, suggestions: list) -> None:
        """Replace the ranking; every suggestion starts ``"pending"``."""
        self.suggestions = list(suggestions)
        self.review_status = {i: "pending" for i in range(len(self.suggestions))}
        self.suggestions_changed.emit()

    def set_review_status(self, position: int, status: str) -> None:
        if status not in REVIEW_STATES:
            raise ValueError(f"status must be one of {REVIEW_STATES}, got {status!r}")
        self.review_status[position] = status
        self.suggestions_changed.emit()

    # ---- snapshots for workers (take them on the GUI thread) ----------------------------
    def image_snapshot(self) -> np.ndarray:
        """The image as an in-memory array: (Z, Y, X), or (C, Z, Y, X) for several
        channel layers. Lazy data is loaded here."""
        layers = self.channel_layers or [self.image_layer]
        arrays = [np.asarray(layer.data) for layer in layers]
        return arrays[0] if len(arrays) == 1 else np.stack(arrays)

    def scribbles_snapshot(self) -> np.ndarray | None:
        """Copy of the scribbles (Z, Y, X), taken on the GUI thread for a worker."""
        if self.scribbles_layer is None:
            return None
        return np.array(self.scribbles_layer.data, copy=True)

    def boxes_snapshot(self) -> list[tuple[int, ...]] | None:
        """Engine boxes ``(c, z0, y0, x0, z1, y1, x1)`` from the Boxes layer, or None."""
        layer = self.boxes_layer
        if layer is None or len(layer.data) == 0:
            return None
        return shapes_to_boxes(layer.data, layer.features, self.shape) or None
