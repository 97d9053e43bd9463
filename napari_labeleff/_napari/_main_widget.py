"""The LabelEff dock widget: picks the image, owns the ViewerState, hosts the panels.

It binds one image layer at a time: it creates (or adopts, e.g. from the sample data)
the "Scribbles" labels layer, the "Boxes" shapes layer and the "Refined mask" / "Final
mask" labels layers, all sharing the image's affine, restores autosaved work for the
volume, and forwards layer events to the state's signals. The panels (one module each)
do the rest.
"""

from __future__ import annotations

import weakref

import numpy as np
import pandas as pd
from napari.layers import Image, Labels, Shapes
from napari.utils.notifications import show_info
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QApplication,
    QComboBox,
    QFormLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from ..io import Geometry
from ._autosave import Autosave, open_session, warn_once
from ._classes_panel import ClassesPanel
from ._export_panel import ExportPanel
from ._history_dialog import HistoryDialog
from ._layers import (
    BOX_FEATURES,
    boxes_to_shapes,
    mask_colormap,
    painted_region,
    scribble_colormap,
    shapes_to_boxes,
)
from ._project_panel import ProjectPanel
from ._qa_panel import LabelQAPanel
from ._refine_panel import RefinePanel
from ._review_panel import ReviewPanel
from ._state import ViewerState
from ._worker import IOQueue, Runner, report_error

#: Roles of the annotation layers -> state attribute holding them.
ROLE_ATTR = {
    "scribbles": "scribbles_layer",
    "boxes": "boxes_layer",
    "refined": "refined_layer",
    "final": "final_layer",
    "uncertainty": "uncertainty_layer",
}
#: Volumes at least this large (all channels) are checksummed and their store read in
#: the background on bind; smaller ones take milliseconds and bind at once.
BIND_IN_BACKGROUND_BYTES = 16 * 2**20
LAYER_NAMES = {
    "scribbles": "Scribbles",
    "boxes": "Boxes",
    "refined": "Refined mask",
    "final": "Final mask",
}


def set_boxes(layer, boxes) -> None:
    """Replace the rectangles of a Boxes shapes layer by engine ``boxes``."""
    shapes, features = boxes_to_shapes(boxes)
    layer.data = []
    if shapes:
        layer.add_rectangles(shapes)
        layer.features = pd.DataFrame(features)


def _same_layer(a, b) -> bool:
    """True if ``a`` and ``b`` are the same layer. napari hands plugins proxies of its
    layers (``PublicOnlyProxy``) while events carry the layers themselves, so identity
    alone misses; the layer's ``unique_id`` does not."""
    if a is None or b is None:
        return False
    return a is b or getattr(a, "unique_id", object()) == getattr(b, "unique_id", None)


def _call_alive(ref, method: str) -> None:
    """Call ``method`` of the widget ``ref`` points to, if it (and its Qt object) lives."""
    widget = ref()
    if widget is None:
        return
    try:
        getattr(widget, method)()
    except RuntimeError:  # its C++ object was deleted
        pass


def image_geometry(layer) -> Geometry:
    """Source geometry from our reader's metadata, else from the layer's affine."""
    stored = layer.metadata.get("geometry")
    if stored is not None:
        return Geometry.from_dict(stored)
    return Geometry.from_napari_affine(layer.affine.affine_matrix)


class LabelEffWidget(QWidget):
    """Main dock widget of napari-labeleff.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.state = ViewerState(napari_viewer)
        self.runner = Runner(self.state)
        self.io = IOQueue()
        self.autosave = Autosave(self.state, self.io)
        self._bind_token = None
        self.banner = QLabel("")
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet("QLabel { background: #8a3b00; color: white; padding: 4px; }")
        self.banner.setVisible(False)
        self.autosave.banner_changed.connect(self._show_banner)

        self.image_combo = QComboBox()
        self.image_combo.setToolTip("The 3D volume to annotate")
        self.history_button = QPushButton("History...")
        self.history_button.setToolTip(
            "Earlier generations of your scribbles, masks, classes and boxes on this volume "
            "(kept across restarts); restore one"
        )
        self.history_button.setEnabled(False)
        self.history_button.clicked.connect(self.open_history)
        self.history_dialog: HistoryDialog | None = None
        self.classes_panel = ClassesPanel(self.state, on_remove=self._drop_class)
        self.refine_panel = RefinePanel(
            napari_viewer, self.state, self.runner, lambda: self.classes_panel.current_class
        )
        self.review_panel = ReviewPanel(
            napari_viewer,
            self.state,
            self.runner,
            show_uncertainty=lambda: self.refine_panel.show_uncertainty.setChecked(True),
        )
        self.export_panel = ExportPanel(self.state)
        self.project_panel = ProjectPanel(
            napari_viewer, self, show_uncertainty=self._show_uncertainty_overlay
        )
        self.qa_panel = LabelQAPanel(napari_viewer, self.project_panel, self.runner)

        body = QWidget()
        col = QVBoxLayout(body)
        col.addWidget(self.banner)
        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("", self.history_button)
        col.addLayout(form)
        for panel in (self.project_panel, self.qa_panel, self.classes_panel,
                      self.refine_panel, self.review_panel, self.export_panel):
            col.addWidget(panel)
        col.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._scroll = scroll
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)

        self.state.classes_changed.connect(self._apply_classes)
        self.image_combo.currentIndexChanged.connect(self._on_combo)
        layers = napari_viewer.layers
        layers.events.inserted.connect(self._on_layer_inserted)
        layers.events.removed.connect(self._on_layer_removed)
        layers.events.moved.connect(self._refresh_combo)
        self._refresh_combo()
        self._auto_bind()
        # weak: the application and its timers must not keep a closed viewer alive
        me = weakref.ref(self)
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(lambda: _call_alive(me, "flush_saves"))

    def showEvent(self, event) -> None:  # noqa: N802 (Qt API)
        """Once styled, be wide enough for the panels and the scroll bar (no clipping)."""
        scroll = self._scroll
        scroll.setMinimumWidth(
            scroll.widget().minimumSizeHint().width()
            + scroll.verticalScrollBar().sizeHint().width()
            + 2 * scroll.frameWidth()
        )
        super().showEvent(event)

    def hideEvent(self, event) -> None:  # noqa: N802 (Qt API)
        """The viewer's window is closing (or the dock was hidden): save what is pending.

        (``Viewer.close()`` removes the layers first, which saves them too; the window's
        close button hides the window and this widget with it.)"""
        self.flush_saves()
        super().hideEvent(event)

    def flush_saves(self) -> None:
        """Write what is pending now (strokes, the debounced final mask, queued mask
        saves); called when the viewer's window closes and when the application quits.
        Never raises: a failure is shown like any autosave failure."""
        if self.state.session is None or self.state.session.read_only:
            return
        try:
            self.autosave.flush()
            self.autosave.save_scribbles()  # edits without paint events (undo) too
        except Exception as err:  # noqa: BLE001 - closing must go on
            report_error(err, "Saving pending work before closing")

    # ---- history ---------------------------------------------------------------------------
    def open_history(self) -> HistoryDialog | None:
        """Show the "History..." dialog of the bound volume (None without one)."""
        if self.state.session is None:
            return None
        if self.history_dialog is None:
            self.history_dialog = HistoryDialog(self.state, self.restore_generation, parent=self)
        self.history_dialog.refresh()
        self.history_dialog.show()
        self.history_dialog.raise_()
        return self.history_dialog

    def restore_generation(self, generation: int) -> None:
        """Restore a generation of the history into the session and the layers.

        What is pending is saved first, so the state before the restore is a generation
        of its own (the restore can be undone the same way).
        """
        state, session = self.state, self.state.session
        if state.busy:
            self.runner.cancel()  # its result belongs to the state being replaced
        self.autosave.flush()
        self.autosave.save_scribbles()
        session.restore(generation)
        self._show_session()
        show_info(f"Restored generation #{generation}; your previous work is the generation "
                  "before this one in the history")

    def _show_session(self) -> None:
        """Put the session's content into the layers after it changed underneath them."""
        state, session = self.state, self.state.session
        if state.scribbles_layer is not None:
            state.scribbles_layer.data = session.scribbles
        for role in ("refined", "final"):
            layer = getattr(state, ROLE_ATTR[role])
            if layer is not None:
                layer.data = session.masks.get(role, np.zeros(state.shape, np.uint8))
        if state.boxes_layer is not None:
            with state.boxes_layer.events.data.blocker(), state.boxes_layer.events.features.blocker():
                set_boxes(state.boxes_layer, session.boxes)
        state.result = None  # computed from other scribbles (maybe other classes)
        state.classes_changed.emit()

    def _show_uncertainty_overlay(self) -> None:
        box = self.refine_panel.show_uncertainty
        if box.isChecked():
            self.refine_panel._show_uncertainty(True)  # refresh it with the new result
        else:
            box.setChecked(True)

    # ---- choosing the image --------------------------------------------------------------
    def _candidate_images(self) -> list:
        """Image layers that can be annotated: 3D, one per multi-channel volume."""
        out = []
        for layer in self.viewer.layers:
            if not isinstance(layer, Image) or layer.ndim != 3 or layer.rgb:
                continue
            if layer.metadata.get("labeleff_role"):
                continue  # our own overlays (uncertainty)
            if layer.metadata.get("channel_index", 0) != 0:
                continue  # channels 1.. come along with channel 0
            out.append(layer)
        return out

    def _refresh_combo(self, event=None) -> None:
        images = self._candidate_images()
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        for layer in images:
            self.image_combo.addItem(layer.name)
        bound = self.state.image_layer
        if bound in images:
            self.image_combo.setCurrentIndex(images.index(bound))
        self.image_combo.blockSignals(False)

    def _on_layer_inserted(self, event=None) -> None:
        self._refresh_combo()
        # Bind after the current event loop turn: a reader or sample adds the image and
        # its example scribbles/boxes one after the other, and those should be adopted.
        QTimer.singleShot(0, self._auto_bind)

    def _auto_bind(self) -> None:
        """Bind the newest image if none is bound yet."""
        images = self._candidate_images()
        if self.state.image_layer is None and images:
            self.bind(images[-1])

    def _on_combo(self, index: int) -> None:
        images = self._candidate_images()
        if 0 <= index < len(images) and images[index] is not self.state.image_layer:
            self.bind(images[index])

    def _show_banner(self, text: str) -> None:
        self.banner.setText(text)
        self.banner.setVisible(bool(text))

    def _on_layer_removed(self, event) -> None:
        layer = event.value
        state = self.state
        if _same_layer(layer, state.image_layer):
            self.unbind()
        elif any(_same_layer(layer, getattr(state, attr))
                 for attr in ("scribbles_layer", "final_layer")):
            # strokes and painting not yet saved (next turn, debounce) are saved now, while
            # the layer is still bound (closing the window removes the layers one by one)
            self.flush_saves()
        for attr in ROLE_ATTR.values():
            if _same_layer(getattr(state, attr), layer):
                setattr(state, attr, None)
        self._refresh_combo()
        QTimer.singleShot(0, self._auto_bind)

    def _channel_layers(self, image) -> list:
        n = image.metadata.get("n_channels")
        source = image.metadata.get("source_path")
        if not n or source is None:
            return [image]
        siblings = {
            ly.metadata.get("channel_index"): ly
            for ly in self.viewer.layers
            if isinstance(ly, Image) and ly.metadata.get("source_path") == source
        }
        return [siblings[i] for i in range(n) if i in siblings] or [image]

    # ---- binding ---------------------------------------------------------------------------
    def bind(self, image) -> None:
        """Annotate ``image``: open its autosave session (restoring earlier work on the
        same content), then create or adopt its annotation layers.

        The checksum of the volume and the reading of its store run in the background
        (:class:`~._worker.IOQueue`); the layers appear when that is done.
        """
        if self.state.busy:
            self.runner.cancel()
        self.unbind()
        state = self.state
        state.image_layer = image
        state.channel_layers = self._channel_layers(image)
        state.geometry = image_geometry(image)
        token = self._bind_token = object()
        done = lambda opened: self._finish_bind(token, image, opened)  # noqa: E731
        nbytes = sum(int(np.prod(ly.data.shape)) * np.dtype(ly.data.dtype).itemsize
                     for ly in state.channel_layers)
        if nbytes < BIND_IN_BACKGROUND_BYTES:  # milliseconds: no reason to wait for a frame
            try:
                opened = open_session(*self.autosave.open_args())
            except Exception as err:  # noqa: BLE001 - shown like the worker's errors
                report_error(err, "Opening the autosave store")
                return
            done(opened)
            return
        self.io.submit("bind", open_session, *self.autosave.open_args(),
                       desc="Opening the autosave store", on_done=done)

    def _finish_bind(self, token, image, opened) -> None:
        session, banner, notes = opened
        state = self.state
        if token is not self._bind_token or state.image_layer is not image:
            session.close()  # the user moved on meanwhile
            return
        state.session = session
        warn_once(notes)
        self.autosave.set_banner(banner)
        adopted = self._adoptable_layers()
        if session.restored:
            self._notify_restored()
        elif not session.read_only:
            self._seed_session(adopted)
        self._make_layers(adopted)
        if session.read_only:
            for attr in ("scribbles_layer", "boxes_layer", "refined_layer", "final_layer"):
                getattr(state, attr).editable = False
        self.autosave.attach()
        self._connect_layer_events()
        self._apply_classes()
        self.history_button.setEnabled(True)
        state.image_changed.emit()
        self._refresh_combo()

    @property
    def binding(self) -> bool:
        """True while the bound image's store is being opened in the background."""
        return self._bind_token is not None and self.state.session is None

    def unbind(self) -> None:
        """Detach from the current image; its annotation layers leave the viewer (their
        content is in the autosave store)."""
        state = self.state
        self._bind_token = None
        self.history_button.setEnabled(False)
        if self.history_dialog is not None:
            self.history_dialog.close()
        if state.image_layer is None:
            return
        if state.busy:
            self.runner.cancel()  # its result belongs to this image
        self.autosave.save_scribbles()  # catches edits without paint events (undo)
        self.autosave.flush()  # debounced / queued mask saves reach the disk first
        self.autosave.detach()
        self._disconnect_layer_events()
        for attr in ROLE_ATTR.values():
            layer = getattr(state, attr)
            setattr(state, attr, None)
            if layer is not None and layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        state.image_layer = None
        state.channel_layers = []
        state.geometry = None
        if state.session is not None:
            state.session.close()  # lets another window or process open this volume
        state.session = None
        state.result = None
        state.set_suggestions([])
        self.autosave.set_banner("")

    def _adoptable_layers(self) -> dict:
        """Annotation layers already in the viewer for this image (same source path and
        shape), e.g. the sample data's example scribbles and boxes: role -> layer."""
        state = self.state
        source = state.image_layer.metadata.get("source_path")
        found = {}
        for layer in self.viewer.layers:
            role = layer.metadata.get("labeleff_role")
            if role not in ROLE_ATTR or role in found:
                continue
            if layer.metadata.get("source_path") != source:
                continue
            if role != "boxes" and tuple(layer.data.shape) != state.shape:
                continue
            found[role] = layer
        return found

    def _seed_session(self, adopted: dict) -> None:
        """Fill a new session from adopted layers (classes, scribbles, boxes), or give
        it one structure to start painting."""
        session = self.state.session
        scribbles = adopted.get("scribbles")
        for name, color in (scribbles.metadata.get("classes", []) if scribbles else [])[1:]:
            session.add_class(name, color)
        if len(session.classes) < 2:
            session.add_class("structure 1")
        if scribbles is not None:
            session.scribbles[...] = np.asarray(scribbles.data, dtype=np.uint8)
            session.save_scribbles()
        boxes = adopted.get("boxes")
        if boxes is not None and len(boxes.data):
            session.set_boxes(shapes_to_boxes(boxes.data, boxes.features, self.state.shape))

    def _notify_restored(self) -> None:
        session = self.state.session
        n_scribbled = int(np.count_nonzero(session.scribbles))
        show_info(
            f"Restored autosaved work for this volume: {n_scribbled} scribbled voxels, "
            f"{len(session.boxes)} boxes, {len(session.classes) - 1} structures"
            + (f", masks {', '.join(sorted(session.masks))}" if session.masks else "")
            + f" (from {session.store_path})"
        )

    def _make_layers(self, adopted: dict) -> None:
        """Show the session's content in the annotation layers, reusing adopted ones."""
        state, session = self.state, self.state.session
        affine = state.image_layer.affine.affine_matrix
        contents = {
            "final": session.masks.get("final", np.zeros(state.shape, np.uint8)),
            "refined": session.masks.get("refined", np.zeros(state.shape, np.uint8)),
            "scribbles": session.scribbles,  # shared: painting edits the session's array
        }
        for role, data in contents.items():
            layer = adopted.get(role)
            if layer is None:
                layer = self.viewer.add_layer(Labels(data, name=LAYER_NAMES[role], affine=affine))
            else:
                layer.data = data
            layer.metadata.update(state.layer_metadata(role))
            setattr(state, ROLE_ATTR[role], layer)
        state.refined_layer.opacity = 0.45
        state.final_layer.contour = 2
        boxes = adopted.get("boxes")
        rebuild = boxes is None or session.restored  # else: keep the boxes as drawn
        if boxes is None:
            boxes = self.viewer.add_layer(
                Shapes(
                    ndim=3,
                    name=LAYER_NAMES["boxes"],
                    affine=affine,
                    features=pd.DataFrame({k: pd.Series(dtype=int) for k in BOX_FEATURES}),
                    face_color="transparent",
                    edge_width=1.5,
                )
            )
        if rebuild:
            set_boxes(boxes, session.boxes)
        boxes.feature_defaults = {"class_id": 1, "before": 0, "after": 0}
        boxes.metadata.update(state.layer_metadata("boxes"))
        state.boxes_layer = boxes
        self.viewer.layers.selection.active = state.scribbles_layer
        state.scribbles_layer.mode = "paint"

    # ---- layer events -> state signals --------------------------------------------------------
    def _connect_layer_events(self) -> None:
        state = self.state
        state.scribbles_layer.events.paint.connect(self._on_paint)
        state.scribbles_layer.events.data.connect(self._on_scribbles_replaced)
        state.boxes_layer.events.data.connect(self._on_boxes)
        state.boxes_layer.events.features.connect(self._on_boxes)

    def _disconnect_layer_events(self) -> None:
        state = self.state
        if state.scribbles_layer is not None:
            state.scribbles_layer.events.paint.disconnect(self._on_paint)
            state.scribbles_layer.events.data.disconnect(self._on_scribbles_replaced)
        if state.boxes_layer is not None:
            state.boxes_layer.events.data.disconnect(self._on_boxes)
            state.boxes_layer.events.features.disconnect(self._on_boxes)

    def _on_paint(self, event) -> None:
        region = painted_region(event.value, self.state.shape)
        if region is not None:
            self.state.annotations_changed.emit("scribbles", region)

    def _on_scribbles_replaced(self, event=None) -> None:
        self.state.annotations_changed.emit("scribbles", None)

    def _on_boxes(self, event=None) -> None:
        if getattr(event, "action", "added") in ("adding", "removing", "changing"):
            return  # wait for the completed change
        self._color_boxes()
        self.state.annotations_changed.emit("boxes", None)

    # ---- classes ---------------------------------------------------------------------------
    def _apply_classes(self) -> None:
        """Push class names/colours into the layers (colormaps, metadata)."""
        state = self.state
        colors = state.class_colors()
        if state.scribbles_layer is not None:
            state.scribbles_layer.colormap = scribble_colormap(colors)
            state.scribbles_layer.metadata.update(state.layer_metadata("scribbles"))
        for role in ("refined", "final"):
            layer = getattr(state, ROLE_ATTR[role])
            if layer is not None:
                layer.colormap = mask_colormap(colors)
                layer.metadata.update(state.layer_metadata(role))
        self._color_boxes()

    def _color_boxes(self) -> None:
        layer, classes = self.state.boxes_layer, self.state.classes
        if layer is None or len(layer.data) == 0:
            return
        ids = np.asarray(layer.features["class_id"], dtype=int)
        colors = [classes[c].color if 0 < c < len(classes) else "#ffffff" for c in ids]
        with layer.events.data.blocker(), layer.events.features.blocker():
            layer.edge_color = colors

    def _drop_class(self, c: int) -> None:
        """Remove structure c through the session, then show the relabelled data."""
        state, session = self.state, self.state.session
        if state.busy:
            self.runner.cancel()  # its result would use the old class numbers
        self.autosave.flush()  # the masks in the session are what the layers show
        session.remove_class(c, force=True)
        if state.scribbles_layer is not None:
            state.scribbles_layer.data = session.scribbles
        for role in ("refined", "final"):
            layer = getattr(state, ROLE_ATTR[role])
            if layer is not None and role in session.masks:
                layer.data = session.masks[role]
        if state.boxes_layer is not None:
            with state.boxes_layer.events.data.blocker(), state.boxes_layer.events.features.blocker():
                set_boxes(state.boxes_layer, session.boxes)
        state.result = None  # its class count no longer matches
        show_info("Refine again: the classes changed")
