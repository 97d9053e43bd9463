"""Class editor: names and colours of the structures; background always exists.

Selecting a class makes it the brush label of the Scribbles layer (value c + 1) and the
class of new boxes. Edits go through the session (which validates and autosaves) and
then emit ``state.classes_changed``; the main widget recolours the layers.
"""

from __future__ import annotations

from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QColorDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .._errors import LabelEffError


class ClassesPanel(QGroupBox):
    """List of classes with add / remove / rename / recolour.

    Parameters
    ----------
    state : ViewerState
    on_remove : callable
        ``on_remove(c)`` relabels the layers after structure ``c`` was removed (owned
        by the main widget, which knows the layers).
    """

    def __init__(self, state, on_remove, parent: QWidget | None = None):
        super().__init__("Classes and boxes", parent)
        self.state = state
        self._on_remove = on_remove
        self.list = QListWidget()
        self.list.setMinimumHeight(6 * self.list.fontMetrics().height() + 12)
        self.list.setMaximumHeight(10 * self.list.fontMetrics().height())
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("class name")
        self.color_btn = QPushButton("Colour…")
        self.add_btn = QPushButton("Add class")
        self.remove_btn = QPushButton("Remove")
        self.depth = QSpinBox()
        self.depth.setRange(0, 999)
        self.depth.setToolTip(
            "A box drawn on a slice also covers this many slices before and after it "
            "(applies to new boxes and to the selected ones). 0 = a 2D box; two "
            "rectangles of one class on different slices also make a 3D box."
        )

        row = QHBoxLayout()
        row.addWidget(self.name_edit, 1)
        row.addWidget(self.color_btn)
        buttons = QHBoxLayout()
        buttons.addWidget(self.add_btn)
        buttons.addWidget(self.remove_btn)
        lay = QVBoxLayout(self)
        lay.addWidget(self.list)
        lay.addLayout(row)
        lay.addLayout(buttons)
        depth_row = QHBoxLayout()
        depth_row.addWidget(QLabel("boxes span ± slices"))
        depth_row.addWidget(self.depth)
        lay.addLayout(depth_row)

        self.list.currentRowChanged.connect(self._on_select)
        self.name_edit.editingFinished.connect(self._rename)
        self.color_btn.clicked.connect(self._pick_color)
        self.add_btn.clicked.connect(lambda: self.add_class())
        self.remove_btn.clicked.connect(self._remove_current)
        self.depth.valueChanged.connect(self.set_box_depth)
        state.classes_changed.connect(self.refresh)
        state.image_changed.connect(self.refresh)
        self.refresh()

    # ---- view ---------------------------------------------------------------------
    def refresh(self) -> None:
        """Rebuild the list from ``state.classes``, keeping the selection."""
        row = max(self.list.currentRow(), 1 if self.state.n_structures else 0)
        self.list.blockSignals(True)
        self.list.clear()
        for c, info in enumerate(self.state.classes):
            item = QListWidgetItem(info.name if c else f"{info.name} (background)")
            item.setData(Qt.ItemDataRole.DecorationRole, QColor.fromRgbF(*info.color))
            self.list.addItem(item)
        self.list.blockSignals(False)
        if self.state.classes:
            self.list.setCurrentRow(min(row, len(self.state.classes) - 1))
            self._on_select(self.list.currentRow())

    @property
    def current_class(self) -> int:
        """Selected class index (0 = background)."""
        return max(self.list.currentRow(), 0)

    def select_class(self, c: int) -> None:
        self.list.setCurrentRow(c)

    def _on_select(self, c: int) -> None:
        if c < 0 or c >= len(self.state.classes):
            return
        self.name_edit.setText(self.state.classes[c].name)
        self.remove_btn.setEnabled(c > 0)
        if self.state.scribbles_layer is not None:
            self.state.scribbles_layer.selected_label = c + 1
        boxes = self.state.boxes_layer
        if boxes is not None and c > 0:
            boxes.feature_defaults = {**boxes.feature_defaults.iloc[0].to_dict(), "class_id": c}
            boxes.current_edge_color = self.state.classes[c].color

    def set_box_depth(self, n: int) -> None:
        """New and selected boxes extend ``n`` slices before and after their slice."""
        boxes = self.state.boxes_layer
        if boxes is None:
            return
        boxes.feature_defaults = {**boxes.feature_defaults.iloc[0].to_dict(), "before": n, "after": n}
        selected = sorted(boxes.selected_data)
        if selected:
            features = boxes.features.copy()
            features.loc[selected, ["before", "after"]] = n
            boxes.features = features

    # ---- edits ----------------------------------------------------------------------
    def _edit(self, fn, *args) -> bool:
        """Apply one session edit; show its LabelEffError instead of raising."""
        if self.state.session is None:
            show_info("Classes: choose an image first")
            return False
        try:
            fn(*args)
        except LabelEffError as err:
            show_error(f"Classes: {err}")
            self.refresh()
            return False
        return True

    def add_class(self, name: str | None = None, color=None) -> int | None:
        """Append a structure (default name "structure <c>"); returns its index c."""
        session = self.state.session
        if session is None:
            show_info("Classes: choose an image first")
            return None
        c = len(session.classes)
        if not self._edit(session.add_class, name or f"structure {c}", color):
            return None
        self.state.classes_changed.emit()
        self.select_class(c)
        return c

    def rename_class(self, c: int, name: str) -> None:
        if c < len(self.state.classes) and name.strip() != self.state.classes[c].name:
            if self._edit(self.state.session.rename_class, c, name):
                self.state.classes_changed.emit()

    def recolor_class(self, c: int, rgb) -> None:
        """Set class c's colour (RGB floats 0..1)."""
        if self._edit(self.state.session.recolor_class, c, tuple(rgb)):
            self.state.classes_changed.emit()

    def remove_class(self, c: int) -> None:
        """Remove structure c (>= 1): its scribbles, boxes and mask voxels are cleared
        and the structures after it move down by one."""
        if c < 1 or c >= len(self.state.classes):
            return
        name = self.state.classes[c].name
        if not self._edit(self._on_remove, c):
            return
        self.state.classes_changed.emit()
        self.select_class(min(c, self.state.n_structures))
        show_info(f"Removed class {name!r} with its scribbles, boxes and mask voxels")

    def _rename(self) -> None:
        self.rename_class(self.current_class, self.name_edit.text())

    def _pick_color(self) -> None:
        c = self.current_class
        if c >= len(self.state.classes):
            return
        current = QColor.fromRgbF(*self.state.classes[c].color)
        color = QColorDialog.getColor(current, self, "Class colour")
        if color.isValid():
            self.recolor_class(c, color.getRgbF()[:3])

    def _remove_current(self) -> None:
        self.remove_class(self.current_class)
