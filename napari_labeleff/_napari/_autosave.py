"""Autosave: every annotation change goes to the volume's AnnotationSession at once.

* a brush stroke saves only the scribble chunks it touched (the Scribbles layer's data
  is ``session.scribbles`` itself, so there is nothing to copy);
* a box change, a class change and a reviewed suggestion rewrite the small
  ``session.json`` atomically (class edits save through the session's own methods);
* a new refined mask and every change of the final mask are saved as masks
  ``"refined"`` / ``"final"``.

A crash or SIGKILL therefore loses at most the stroke in progress. Reopening the same
content (any path) restores everything (see :meth:`LabelEffWidget.bind`).
"""

from __future__ import annotations

import logging
import tempfile

from napari.utils.notifications import show_error, show_warning

from .._errors import LabelEffError
from ..session import AnnotationSession

logger = logging.getLogger(__name__)


class Autosave:
    """Connects a :class:`ViewerState`'s signals to its session's save methods.

    Parameters
    ----------
    state : ViewerState
    store_dir : str or Path, optional
        Folder for new stores; None = next to the image when writable, else the user
        data folder (see :meth:`AnnotationSession.open`).
    """

    def __init__(self, state, store_dir=None):
        self.state = state
        self.store_dir = store_dir
        self._attached = False

    def open(self) -> AnnotationSession:
        """Open (or create) the session of the bound image's content."""
        state = self.state
        data = state.image_snapshot() if len(state.channel_layers) > 1 else state.image_layer.data
        source = state.image_layer.metadata.get("source_path")
        try:
            return AnnotationSession.open(
                data, state.geometry, image_path=source, store_dir=self.store_dir
            )
        except (LabelEffError, OSError) as err:
            fallback = tempfile.mkdtemp(prefix="labeleff-autosave-")
            show_warning(
                f"Autosave folder not usable ({err}); saving this session to {fallback} instead"
            )
            return AnnotationSession.open(data, state.geometry, image_path=None, store_dir=fallback)

    def attach(self) -> None:
        state = self.state
        state.annotations_changed.connect(self._on_annotations)
        state.refined.connect(self._on_refined)
        state.final_changed.connect(self._on_final)
        self._attached = True

    def detach(self) -> None:
        if not self._attached:
            return
        state = self.state
        state.annotations_changed.disconnect(self._on_annotations)
        state.refined.disconnect(self._on_refined)
        state.final_changed.disconnect(self._on_final)
        self._attached = False

    # ---- savers ------------------------------------------------------------------------
    def _guard(self, what: str, fn, *args) -> None:
        """Run one save; a failure is shown (work stays in memory) but never raised."""
        try:
            fn(*args)
        except (LabelEffError, OSError) as err:
            logger.exception("autosave of %s failed", what)
            show_error(f"Autosave of {what} failed: {err}")

    def save_scribbles(self, region=None) -> None:
        """Save the scribbles (``region`` = (z0, y0, x0, z1, y1, x1), None = all)."""
        state = self.state
        session, layer = state.session, state.scribbles_layer
        if session is None or layer is None:
            return
        if layer.data is not session.scribbles:  # the layer's array was replaced
            session.scribbles = layer.data
            region = None
        slices = None if region is None else tuple(slice(a, b) for a, b in zip(region[:3], region[3:]))
        self._guard("scribbles", session.save_scribbles, slices)

    def save_boxes(self) -> None:
        state = self.state
        if state.session is not None:
            self._guard("boxes", state.session.set_boxes, state.boxes_snapshot() or [])

    def _on_annotations(self, kind: str, region) -> None:
        if kind == "boxes":
            self.save_boxes()
        else:
            self.save_scribbles(region)

    def _on_refined(self, result) -> None:
        if self.state.session is not None:
            self._guard("refined mask", self.state.session.save_mask, "refined", result.labels)

    def _on_final(self) -> None:
        state = self.state
        if state.session is not None and state.final_layer is not None:
            self._guard("final mask", state.session.save_mask, "final", state.final_layer.data)
