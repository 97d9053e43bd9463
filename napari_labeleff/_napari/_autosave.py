"""Autosave: every annotation change goes to the volume's AnnotationSession.

* a brush stroke saves only the scribble chunks it touched, on the next turn of the
  event loop (napari's ``Labels.data_setitem`` announces a change *before* writing it;
  the Scribbles layer's data is ``session.scribbles`` itself, so nothing is copied);
* a box change, a class change and a reviewed suggestion rewrite the small
  ``session.json`` atomically, at once (class edits save through the session);
* a new refined mask, an accepted / undone final mask and painting on the Final mask
  layer are saved as masks ``"refined"`` / ``"final"`` in the background (the
  :class:`~._worker.IOQueue`), painting after :data:`FINAL_DEBOUNCE_MS` of quiet;
  :meth:`Autosave.flush` writes whatever is pending (before switching image, restoring
  a generation of the history, and when the viewer's window closes);
* opening the store (checksum of the whole volume, reading the saved arrays) also runs
  in the background (:func:`open_session`).

If the volume's store cannot be used, work goes to a persistent fallback folder in the
user data dir and the dock shows a persistent warning (:attr:`Autosave.banner`); if the
store is open for writing in another window or process, the volume opens read-only
(annotation layers locked, banner says who holds it).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from napari.utils.notifications import show_error, show_warning
from psygnal import Signal
from qtpy.QtCore import QTimer

from .._errors import LabelEffError
from .._lock import StoreLockedError
from .. import session as _session
from ..session import AnnotationSession, volume_checksum

logger = logging.getLogger(__name__)

#: Quiet time after the last brush stroke on the Final mask before it is saved (ms).
FINAL_DEBOUNCE_MS = 800


def fallback_store_dir():
    """Persistent folder for stores of volumes whose own store cannot be used."""
    return _session.user_store_dir() / "fallback"


def open_session(arrays, geometry, image_path, store_dir):
    """Checksum the image and open its session (headless; runs in a worker).

    Parameters
    ----------
    arrays : tuple of array-like
        The channel layers' data ((Z, Y, X) each), stacked to (C, Z, Y, X) if several.
    geometry, image_path, store_dir
        As for :meth:`AnnotationSession.open`.

    Returns
    -------
    (AnnotationSession, banner, notes)
        ``banner``: persistent warning text ("" when all is well); ``notes``: list of
        ``(severity, message)`` to show once.
    """
    data = arrays[0] if len(arrays) == 1 else np.stack([np.asarray(a) for a in arrays])
    checksum = volume_checksum(data)
    notes, banner = [], ""

    def attempt(**kwargs):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            session = AnnotationSession.open(data, geometry, checksum=checksum, **kwargs)
        notes.extend(("warning", str(w.message)) for w in caught)
        return session

    try:
        return attempt(image_path=image_path, store_dir=store_dir), banner, notes
    except StoreLockedError as err:
        session = attempt(image_path=image_path, store_dir=store_dir, read_only=True)
        banner = f"Read-only: nothing you change here is saved. {err}"
        return session, banner, notes
    except (LabelEffError, OSError) as err:
        problem = str(err)
    fallback = fallback_store_dir()
    session = attempt(image_path=None, store_dir=fallback)
    banner = (
        f"Autosave is NOT using this volume's usual store: {problem}. Your work is being "
        f"saved to {session.store_path} instead (a persistent folder); it is found again "
        "when you reopen this volume"
    )
    logger.warning(banner)
    return session, banner, notes


class Autosave:
    """Connects a :class:`ViewerState`'s signals to its session's save methods.

    Parameters
    ----------
    state : ViewerState
    io : IOQueue
        Background channel for mask saves.
    store_dir : str or Path, optional
        Folder for new stores; None = next to the image when writable, else the user
        data folder (see :meth:`AnnotationSession.open`).
    """

    #: The persistent warning changed (text; "" = none).
    banner_changed = Signal(str)

    def __init__(self, state, io, store_dir=None):
        self.state = state
        self.io = io
        self.store_dir = store_dir
        self.banner = ""
        self._attached = False
        self._final_layer = None
        self._final_timer = QTimer()
        self._final_timer.setSingleShot(True)
        self._final_timer.setInterval(FINAL_DEBOUNCE_MS)
        self._final_timer.timeout.connect(self._save_final)
        self._regions: list = []  # scribble regions announced, not yet saved
        self._scribble_timer = QTimer()
        self._scribble_timer.setSingleShot(True)
        self._scribble_timer.setInterval(0)
        self._scribble_timer.timeout.connect(self._save_regions)

    def set_banner(self, text: str) -> None:
        if text != self.banner:
            self.banner = text
            self.banner_changed.emit(text)

    def open_args(self) -> tuple:
        """Arguments of :func:`open_session` for the bound image (GUI thread)."""
        state = self.state
        layers = state.channel_layers or [state.image_layer]
        meta = state.image_layer.metadata
        # shipped samples: no store next to the package's file (the user data dir)
        path = None if meta.get("labeleff_sample") else meta.get("source_path")
        return (tuple(layer.data for layer in layers), state.geometry, path, self.store_dir)

    def attach(self) -> None:
        state = self.state
        state.annotations_changed.connect(self._on_annotations)
        state.refined.connect(self._on_refined)
        state.final_changed.connect(self._on_final)
        self._final_layer = state.final_layer
        if self._final_layer is not None:
            self._final_layer.events.paint.connect(self._on_final_paint)
        self._attached = True

    def detach(self) -> None:
        if not self._attached:
            return
        state = self.state
        state.annotations_changed.disconnect(self._on_annotations)
        state.refined.disconnect(self._on_refined)
        state.final_changed.disconnect(self._on_final)
        if self._final_layer is not None:
            self._final_layer.events.paint.disconnect(self._on_final_paint)
            self._final_layer = None
        self._attached = False

    def flush(self) -> None:
        """Save what is pending (strokes, debounced final mask, queued mask saves) now."""
        self._scribble_timer.stop()
        self._save_regions()
        if self._final_timer.isActive():
            self._final_timer.stop()
            self._save_final()
        self.io.flush()

    # ---- savers ------------------------------------------------------------------------
    def _can_save(self) -> bool:
        session = self.state.session
        return session is not None and not session.read_only

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
        if not self._can_save() or layer is None:
            return
        if layer.data is not session.scribbles:  # the layer's array was replaced
            session.scribbles = layer.data
            region = None
        slices = None if region is None else tuple(slice(a, b) for a, b in zip(region[:3], region[3:]))
        self._guard("scribbles", session.save_scribbles, slices)

    def save_boxes(self) -> None:
        if self._can_save():
            self._guard("boxes", self.state.session.set_boxes, self.state.boxes_snapshot() or [])

    def save_mask(self, name: str, data) -> None:
        """Queue saving ``data`` as mask ``name``.

        Not copied here: a copy of a 512 x 512 x 300 mask alone can freeze the viewer
        for a few hundred ms on a busy machine. ``session.save_mask`` copies it first
        thing in the worker; a stroke painted during that copy triggers another save
        (queued behind this one), so the last save always holds the final state and a
        save never lacks an edit that was finished before it started.
        """
        if not self._can_save() or data is None:
            return
        session = self.state.session
        self.io.submit(("mask", id(session), name), session.save_mask, name, data,
                       desc=f"Autosave of the {name} mask")

    def _on_annotations(self, kind: str, region) -> None:
        if kind == "boxes":
            self.save_boxes()
        else:
            self._regions.append(region)
            self._scribble_timer.start()

    def _save_regions(self) -> None:
        regions, self._regions = self._regions, []
        if not regions:
            return
        if any(r is None for r in regions):
            self.save_scribbles(None)
            return
        for region in dict.fromkeys(tuple(int(v) for v in r) for r in regions):
            self.save_scribbles(region)

    def _on_refined(self, result) -> None:
        self.save_mask("refined", result.labels)

    def _on_final(self) -> None:
        self._final_timer.stop()
        self._save_final()

    def _on_final_paint(self, event=None) -> None:
        self.state.final_dirty = True
        self._final_timer.start()

    def _save_final(self) -> None:
        layer = self.state.final_layer
        if layer is not None:
            self.save_mask("final", layer.data)


def warn_once(notes) -> None:
    """Show the ``(severity, message)`` notes of :func:`open_session`."""
    for severity, message in notes:
        (show_warning if severity == "warning" else show_error)(message)
