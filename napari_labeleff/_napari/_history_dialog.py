"""The "History..." dialog: the generations of the user's work on the bound volume.

Lists :meth:`AnnotationSession.history` (newest first: id, time, what changed) and
restores the chosen generation into the layers after a confirmation. The restore
itself goes through the main widget (``on_restore``), which first saves what is
pending, so the state before the restore is a generation of its own and the restore
can be undone from this same list.
"""

from __future__ import annotations

from collections.abc import Callable

from napari.utils.notifications import show_error
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
)

from .._errors import LabelEffError


def confirm_restore(parent, text: str) -> bool:
    """Ask before restoring (a module function so tests can answer for the user)."""
    answer = QMessageBox.question(
        parent, "Restore this generation?", text,
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
        QMessageBox.StandardButton.Cancel,
    )
    return answer == QMessageBox.StandardButton.Yes


class HistoryDialog(QDialog):
    """List the generations of ``state.session`` and restore one.

    Parameters
    ----------
    state : ViewerState
        Its ``session`` is read each time the list is refreshed.
    on_restore : callable
        ``on_restore(generation_id)``: restores the generation into the session and
        the layers (the main widget's :meth:`~LabelEffWidget.restore_generation`).
    parent : QWidget, optional
    """

    def __init__(self, state, on_restore: Callable[[int], None], parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("LabelEff history")
        self.state = state
        self.on_restore = on_restore
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.list = QListWidget()
        self.list.setToolTip("Each save (a brush stroke, a class or box change, a mask) is one "
                             "generation; the newest is at the top")
        self.restore_button = QPushButton("Restore")
        self.restore_button.setToolTip("Bring the chosen generation back into the layers; "
                                       "your current work stays in the history")
        self.refresh_button = QPushButton("Refresh")
        self.close_button = QPushButton("Close")
        buttons = QHBoxLayout()
        for button in (self.restore_button, self.refresh_button, self.close_button):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.info)
        layout.addWidget(self.list)
        layout.addLayout(buttons)
        self.restore_button.clicked.connect(self.restore_selected)
        self.refresh_button.clicked.connect(self.refresh)
        self.close_button.clicked.connect(self.close)
        self.list.itemSelectionChanged.connect(self._update_buttons)
        self.list.itemDoubleClicked.connect(lambda item: self.restore_selected())
        self.resize(560, 420)
        self.refresh()

    def refresh(self) -> None:
        """Reread the history from the session."""
        session = self.state.session
        self.list.clear()
        if session is None:
            self.info.setText("No volume is bound.")
            self._update_buttons()
            return
        generations = session.history()
        for generation in generations:
            item = QListWidgetItem(str(generation))
            item.setData(Qt.ItemDataRole.UserRole, generation.id)
            self.list.addItem(item)
        note = " (read-only: restoring is not possible)" if session.read_only else ""
        self.info.setText(
            f"{len(generations)} generation(s) kept of at most {session.history_limit}, "
            f"newest first{note}. Restoring one keeps your current work as a generation too."
        )
        if generations:
            self.list.setCurrentRow(0)
        self._update_buttons()

    def selected_id(self) -> int | None:
        item = self.list.currentItem()
        return None if item is None else int(item.data(Qt.ItemDataRole.UserRole))

    def _update_buttons(self) -> None:
        session = self.state.session
        self.restore_button.setEnabled(
            session is not None and not session.read_only and self.list.currentRow() > 0
        )

    def restore_selected(self) -> bool:
        """Restore the selected generation after a confirmation; True if restored."""
        gid = self.selected_id()
        if gid is None or not self.restore_button.isEnabled():
            return False
        text = self.list.currentItem().text()
        if not confirm_restore(self, f"Restore generation {text}?\n\nScribbles, masks, classes "
                               "and boxes become what they were then. Your current work is "
                               "kept as a generation, so you can restore it again."):
            return False
        try:
            self.on_restore(gid)
        except LabelEffError as err:
            show_error(f"Restoring generation #{gid} failed: {err}")
            return False
        finally:
            self.refresh()
        return True
