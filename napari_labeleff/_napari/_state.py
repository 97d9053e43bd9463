"""Per-viewer annotation state shared by the dock-widget panels.

One :class:`ViewerState` exists per viewer. The main widget creates and owns it and
passes it explicitly to every panel (no module globals, no singleton, no layer names
parsed back into ids). Panels react to its psygnal signals instead of polling each
other.

Conventions (see ``napari_labeleff/__init__.py``): ``classes[0]`` is the background
class and always exists; structure ``c`` (1..K) is ``classes[c]``. Its scribble value
is ``c + 1`` (background scribble = 1, 0 = unannotated) and its mask value is ``c``.
The classes, scribbles, boxes and saved masks live in the
:class:`~napari_labeleff.session.AnnotationSession` (the autosave store); the layers
show them (the Scribbles layer's data *is* ``session.scribbles``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np
from psygnal import Signal

from ._layers import annotation_metadata, shapes_to_boxes

if TYPE_CHECKING:
    from napari import Viewer
    from napari.layers import Image, Labels, Shapes

    from ..active import Suggestion
    from ..engine import RefineResult
    from ..io import Geometry
    from ..session import AnnotationSession

#: Review status values of a suggestion (see :attr:`ViewerState.review_status`).
REVIEW_STATES = ("pending", "annotated", "confirmed", "skipped")


@dataclass(eq=False)
class ViewerState:
    """Everything the LabelEff panels of one viewer share.

    Attributes
    ----------
    The fields come in five groups; each is typed, and only the owner named in its
    group sets it (the others read it or react to the signals below).

    **The volume** (set by the main widget when it binds an image)

    viewer : napari.Viewer
    image_layer : napari.layers.Image or None
        The volume being annotated, data (Z, Y, X) (lazy data stays lazy).
    channel_layers : list of napari.layers.Image
        All channel layers of a multi-channel volume, in channel order (the reader
        opens (C, Z, Y, X) as one layer per channel); ``[image_layer]`` otherwise.
    geometry : Geometry or None
        Voxel-to-world geometry used for layer affines and for export: the reader's
        source geometry, or the image layer's affine for images from elsewhere.
    session : AnnotationSession or None
        Autosave store of scribbles, boxes, classes and masks for this volume; edit
        classes through its methods (they validate and save), then emit
        ``classes_changed``.

    **The annotation layers** (created or adopted by the main widget; None until then)

    scribbles_layer : napari.layers.Labels or None
        Its data *is* ``session.scribbles``.
    boxes_layer : napari.layers.Shapes or None
    refined_layer, final_layer : napari.layers.Labels or None
    uncertainty_layer : napari.layers.Image or None
        The optional uncertainty overlay (refine panel).

    **Results** (refine and project panels)

    result : RefineResult or None
        The last successful refinement (kept when a later one is cancelled or fails).
    prior : ndarray or None
        (K + 1, Z, Y, X) class probabilities of a cohort project's model for this
        volume, passed to refinement as ``prior`` (set by the project panel).
    project_refine : callable or None
        Set by the project panel while a project volume is open:
        ``Project.refine_steps`` bound to the volume, called by the refine panel as
        ``project_refine(scribbles, boxes, method=..., device=..., state=..., rules=...)``
        instead of ``engine.refine_steps`` (the project's network in the loop).

    **Active learning** (review panel)

    suggestions : list of Suggestion
        Current active-learning ranking, best first.
    review_status : dict of int to str
        ``suggestion position in suggestions -> one of REVIEW_STATES``.

    **Flags**

    busy : bool
        True while a worker runs for this state; Run buttons are disabled (set through
        :meth:`set_busy`, which emits ``busy_changed``).
    scribbles_dirty : bool
        Scribbles or boxes changed since ``result`` was computed.
    final_dirty : bool
        The final mask changed since it was last exported.
    """

    # the volume
    viewer: Viewer
    image_layer: Image | None = None
    channel_layers: list[Image] = field(default_factory=list)
    geometry: Geometry | None = None
    session: AnnotationSession | None = None
    # the annotation layers
    scribbles_layer: Labels | None = None
    boxes_layer: Shapes | None = None
    refined_layer: Labels | None = None
    final_layer: Labels | None = None
    uncertainty_layer: Image | None = None
    # results
    result: RefineResult | None = None
    prior: np.ndarray | None = None
    project_refine: Callable | None = None
    # active learning
    suggestions: list[Suggestion] = field(default_factory=list)
    review_status: dict[int, str] = field(default_factory=dict)
    # flags
    busy: bool = False
    scribbles_dirty: bool = False
    final_dirty: bool = False

    #: The image layer (and so the volume, geometry, session) was (re)bound.
    image_changed = Signal()
    #: Classes were added, removed, renamed or recoloured.
    classes_changed = Signal()
    #: Scribbles or boxes changed: ``(kind, region)`` with kind "scribbles" or "boxes"
    #: and region ``(z0, y0, x0, z1, y1, x1)`` of the touched voxels, or None for all.
    annotations_changed = Signal(str, object)
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
    def classes(self) -> list:
        """``session.classes`` (:class:`~napari_labeleff.session.LabelClass`: ``name``,
        ``color`` RGB 0..1); index 0 is background. Empty without a session."""
        return self.session.classes if self.session is not None else []

    @property
    def n_structures(self) -> int:
        """K, the number of structures (background excluded)."""
        return max(len(self.classes) - 1, 0)

    def class_colors(self) -> dict[int, tuple]:
        """``mask value -> RGB (0..1)`` for 0..K (0 = background)."""
        return {c: tuple(info.color) for c, info in enumerate(self.classes)}

    def label_names(self) -> dict[int, str]:
        """``mask value -> name`` for 0..K (0 = background)."""
        return {c: info.name for c, info in enumerate(self.classes)}

    def layer_metadata(self, role: str) -> dict:
        """``metadata`` for this image's annotation layer of ``role`` (see
        :func:`~napari_labeleff._napari._layers.annotation_metadata`)."""
        source = self.image_layer.metadata.get("source_path") if self.image_layer else None
        return annotation_metadata(
            role, self.geometry, source, self.label_names(), self.class_colors()
        )

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
