"""Class editor: names and colours of the structures; background always exists.

Selecting a class makes it the brush label of the Scribbles layer (value c + 1) and the
class of new boxes. Edits go through the session (which validates and autosaves) and
then emit ``state.classes_changed``; the main widget recolours the layers.

The rules box below the classes holds the session's anatomical rules
(:mod:`napari_labeleff.rules`): pick a template, add or remove a rule, and list where the
current mask breaks a rule, with a jump to the slice.
"""

from __future__ import annotations

import numpy as np
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QColorDialog,
    QComboBox,
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
from ..rules import RELATIONS, TEMPLATES, Rules, template_message
from ._collapsible import collapsible

#: relations offered by the "add rule" row, with the extra value each needs
RULE_VALUES = {"n_pieces": "pieces", "within": "mm", "volume": "lo..hi mm^3"}


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
        self.rules_box = RulesBox(state)
        lay.addWidget(self.rules_box)

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
        dropped = self.rules_box.rules_naming(name)
        if not self._edit(self._on_remove, c):
            return
        if dropped:
            self.rules_box.drop_class_rules(name, dropped)
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


class RulesBox(QGroupBox):
    """The session's anatomical rules: template, add / remove, violations with jump-to.

    Parameters
    ----------
    state : ViewerState
    """

    def __init__(self, state, parent: QWidget | None = None):
        super().__init__("Rules", parent)
        self.state = state
        self.template = QComboBox()
        self.template.addItems(sorted(TEMPLATES))
        self.template_btn = QPushButton("Use template")
        self.template_btn.setToolTip(
            "Replace the rules with the template's, matched to the classes by name "
            "(the message says which structures no class matched)")
        self.rules_list = QListWidget()
        self.rules_list.setMaximumHeight(7 * self.rules_list.fontMetrics().height())
        self.relation = QComboBox()
        self.relation.addItems([r for r in RELATIONS if r != "one_piece"] + ["one_piece"])
        self.class_a = QComboBox()
        self.class_b = QComboBox()
        self.value = QLineEdit()
        self.value.setPlaceholderText("value")
        self.add_btn = QPushButton("Add rule")
        self.remove_btn = QPushButton("Remove rule")
        self.check_btn = QPushButton("Check mask")
        self.check_btn.setToolTip("List where the final mask (else the refined mask) "
                                  "breaks a rule; double-click an item to go to its slice")
        self.violations = QListWidget()
        self.violations.setMaximumHeight(7 * self.violations.fontMetrics().height())
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self._items: list = []  # (slice, bbox) per row of ``violations``

        top = QHBoxLayout()
        top.addWidget(self.template, 1)
        top.addWidget(self.template_btn)
        add = QHBoxLayout()
        for w in (self.relation, self.class_a, self.class_b, self.value):
            add.addWidget(w)
        buttons = QHBoxLayout()
        for w in (self.add_btn, self.remove_btn, self.check_btn):
            buttons.addWidget(w)
        # folded until needed (or until the volume has rules), so the Refine panel
        # below stays in view
        lay = collapsible(self, "Anatomical rules between the classes, enforced in refine "
                                "and checked on the masks (tick to show)")
        lay.addLayout(top)
        lay.addWidget(self.rules_list)
        lay.addLayout(add)
        lay.addLayout(buttons)
        lay.addWidget(self.violations)
        lay.addWidget(self.status)

        self.template_btn.clicked.connect(lambda: self.use_template(self.template.currentText()))
        self.add_btn.clicked.connect(self._add_from_row)
        self.remove_btn.clicked.connect(self._remove_current)
        self.check_btn.clicked.connect(self.check)
        self.relation.currentTextChanged.connect(self._on_relation)
        self.violations.itemDoubleClicked.connect(
            lambda item: self.jump_to(self.violations.row(item)))
        state.classes_changed.connect(self.refresh)
        state.image_changed.connect(self.refresh)
        state.refined.connect(self._on_refined)
        self._on_relation(self.relation.currentText())
        self.refresh()

    # ---- model ------------------------------------------------------------------------
    def _names(self) -> list[str]:
        return [c.name for c in self.state.classes[1:]]

    def rules(self) -> Rules | None:
        """The session's rules for the current classes (None without any); a rule
        naming a missing class raises LabelEffError."""
        session = self.state.session
        return None if session is None else session.rules_object()

    def _set(self, rules) -> bool:
        session = self.state.session
        if session is None:
            show_info("Rules: choose an image first")
            return False
        try:
            session.set_rules(rules)
        except LabelEffError as err:
            show_error(f"Rules: {err}")
            return False
        self.refresh()
        return True

    def use_template(self, name: str) -> bool:
        """Replace the rules with template ``name`` matched onto the classes."""
        if self.state.session is None:
            show_info("Rules: choose an image first")
            return False
        try:
            rules = Rules.template(name, self._names(), geometry=self.state.geometry)
        except LabelEffError as err:
            show_error(f"Rules: {err}")
            return False
        if self._set(rules):
            if self.template.findText(name) >= 0:
                self.template.setCurrentText(name)
            show_info(f"Rules: template {name!r}: {template_message(rules)}")
            return True
        return False

    def add_rule(self, rule: tuple) -> bool:
        """Add one rule tuple (e.g. ``("one_piece", "myocardium")``); contradictions and
        unknown classes are refused with a notification."""
        current = [tuple(r) for r in self.state.session.rules] if self.state.session else []
        return self._set([*current, tuple(rule)])

    def remove_rule(self, row: int) -> bool:
        session = self.state.session
        if session is None or not 0 <= row < len(session.rules):
            return False
        return self._set([tuple(r) for i, r in enumerate(session.rules) if i != row])

    def rules_naming(self, name: str) -> list:
        """The session's rule lists that name class ``name``."""
        session = self.state.session
        if session is None:
            return []
        return [r for r in session.rules if name in r[1:]]

    def drop_class_rules(self, name: str, dropped: list) -> None:
        """After class ``name`` was removed: drop the rules naming it, say which."""
        keep = [tuple(r) for r in self.state.session.rules if r not in dropped]
        if self._set(keep):
            show_info(f"Rules: removed {len(dropped)} rule(s) naming class {name!r}: "
                      + "; ".join(" ".join(map(str, r)) for r in dropped))

    # ---- violations ----------------------------------------------------------------------
    def current_mask(self):
        """The final mask when it has voxels, else the refined mask (or None)."""
        for layer in (self.state.final_layer, self.state.refined_layer):
            if layer is not None and np.any(layer.data):
                return np.asarray(layer.data)
        return None

    def check(self, extra: list | None = None) -> list:
        """List the violations of the current mask (and ``extra`` lines, e.g. the
        refinement's conflicts); returns the violations."""
        self.violations.clear()
        self._items = []
        for line in extra or []:
            self.violations.addItem(f"conflict: {line}")
            self._items.append(None)
        try:
            rules = self.rules()
        except LabelEffError as err:
            self.status.setText(str(err))
            return []
        mask = self.current_mask()
        if rules is None or mask is None:
            self.status.setText("no rules" if rules is None else "no mask to check yet")
            return []
        try:
            found = rules.violations(mask, spacing=self.state.spacing)
        except LabelEffError as err:
            show_error(f"Rules: {err}")
            return []
        for v in found:
            self.violations.addItem(v.message)
            self._items.append((v.slice, v.bbox))
        self.status.setText(f"{len(found)} violation(s) of {len(rules)} rule(s)"
                            if found else f"the mask keeps all {len(rules)} rules")
        return found

    def jump_to(self, row: int) -> None:
        """Show the slice and the centre of violation ``row``."""
        if not 0 <= row < len(self._items) or self._items[row] is None:
            return
        z, box = self._items[row]
        layer = self.state.image_layer
        if layer is None:
            return
        cy, cx = (box[1] + box[4] - 1) / 2, (box[2] + box[5] - 1) / 2
        world = np.asarray(layer.data_to_world((z, cy, cx)), dtype=float)
        viewer = self.state.viewer
        viewer.dims.set_point(range(viewer.dims.ndim - 3, viewer.dims.ndim), world[-3:])
        shown = list(viewer.dims.displayed)
        viewer.scene.camera.center = tuple(world[-3:][shown])

    def _on_refined(self, result) -> None:
        info = getattr(result, "info", {}).get("rules") if result is not None else None
        if self.state.session is not None and self.state.session.rules:
            self.check(extra=(info or {}).get("conflicts", []))

    # ---- view ----------------------------------------------------------------------------
    def refresh(self) -> None:
        names = self._names()
        for combo in (self.class_a, self.class_b):
            keep = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            if keep in names:
                combo.setCurrentText(keep)
            combo.blockSignals(False)
        self.rules_list.clear()
        enabled = self.state.session is not None
        if enabled and self.state.session.rules:
            self.setChecked(True)  # a volume with rules shows them
        for w in (self.template_btn, self.add_btn, self.remove_btn, self.check_btn):
            w.setEnabled(enabled)
        if not enabled:
            return
        try:
            rules = self.rules()
        except LabelEffError as err:  # a rule names a class that is gone
            for r in self.state.session.rules:
                self.rules_list.addItem(" ".join(map(str, r)))
            self.status.setText(str(err))
            return
        for r in rules or []:
            self.rules_list.addItem(rules.text(r))

    def _on_relation(self, relation: str) -> None:
        pair = relation not in ("one_piece", "n_pieces", "volume")
        self.class_b.setEnabled(pair)
        self.value.setEnabled(relation in RULE_VALUES)
        self.value.setPlaceholderText(RULE_VALUES.get(relation, ""))

    def _add_from_row(self) -> None:
        rel, a, b = self.relation.currentText(), self.class_a.currentText(), self.class_b.currentText()
        text = self.value.text().strip()
        try:
            if rel == "n_pieces":
                rule = (rel, a, int(text))
            elif rel == "within":
                rule = (rel, a, b, float(text))
            elif rel == "volume":
                lo, _, hi = text.partition("..")
                rule = (rel, a, float(lo) if lo.strip() else None,
                        float(hi) if hi.strip() else None)
            elif rel == "one_piece":
                rule = (rel, a)
            else:
                rule = (rel, a, b)
        except ValueError:
            show_error(f"Rules: value {text!r} for {rel}: expected {RULE_VALUES.get(rel)}")
            return
        self.add_rule(rule)

    def _remove_current(self) -> None:
        self.remove_rule(self.rules_list.currentRow())
