"""Dock sections that stay folded until they are needed."""

from __future__ import annotations

from qtpy.QtWidgets import QGroupBox, QVBoxLayout, QWidget


def collapsible(box: QGroupBox, tooltip: str) -> QVBoxLayout:
    """Make ``box`` a folded section: its title carries a tick box that shows its
    content. Returns the content's layout (fill it instead of the box's own)."""
    body = QWidget()
    box.setCheckable(True)
    box.setChecked(False)
    body.setVisible(False)
    box.toggled.connect(body.setVisible)
    box.setToolTip(tooltip)
    outer = QVBoxLayout(box)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(body)
    return QVBoxLayout(body)
