"""Export panel: save the final (or refined) mask as NIfTI with the source geometry.

Goes through the npe2 writer function (:func:`._writer.write_labels`), so the panel and
napari's File > Save write the same files: the mask plus 3D Slicer / ITK-SNAP label
tables, atomically, never onto the source image. An existing mask file is replaced
only after the user confirmed it.
"""

from __future__ import annotations

import os
from pathlib import Path

from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
)

from .._errors import LabelEffError
from ..io import label_table_paths
from ._reader import layer_name
from ._writer import write_labels

TARGETS = ("final mask", "refined mask")


def default_mask_path(source_path) -> str:
    """``<folder of the source>/<source name>_mask.nii.gz`` (home folder without source)."""
    if not source_path:
        return str(Path.home() / "mask.nii.gz")
    src = Path(source_path)
    folder = src if src.is_dir() else src.parent
    return str(folder / f"{layer_name(src)}_mask.nii.gz")


def _is_source(path, source) -> bool:
    try:
        return source is not None and os.path.samefile(path, source)
    except OSError:
        return False


class ExportPanel(QGroupBox):
    """Choose which mask and where; Save.

    Parameters
    ----------
    state : ViewerState
    """

    def __init__(self, state, parent=None):
        super().__init__("Export", parent)
        self.state = state
        self.target = QComboBox()
        self.target.addItems(TARGETS)
        self.path = QLineEdit()
        self.path.setPlaceholderText("mask.nii.gz")
        self.browse_btn = QPushButton("…")
        self.browse_btn.setMaximumWidth(32)
        self.save_btn = QPushButton("Save NIfTI")
        row = QHBoxLayout()
        row.addWidget(self.path, 1)
        row.addWidget(self.browse_btn)
        lay = QVBoxLayout(self)
        lay.addWidget(self.target)
        lay.addLayout(row)
        lay.addWidget(self.save_btn)
        self.browse_btn.clicked.connect(self._browse)
        self.save_btn.clicked.connect(lambda: self.save())
        state.image_changed.connect(self._on_image_changed)
        self._on_image_changed()

    def _on_image_changed(self) -> None:
        layer = self.state.image_layer
        meta = layer.metadata if layer else {}
        source = None if meta.get("labeleff_sample") else meta.get("source_path")
        self.path.setText(default_mask_path(source) if layer else "")

    def confirm_overwrite(self, existing) -> bool:
        """Ask whether to replace the files ``existing`` (list of Path); True = yes."""
        names = "\n".join(str(p) for p in existing[:4])
        answer = QMessageBox.question(
            self,
            "Replace mask?",
            f"These files exist already and would be replaced:\n{names}\n\nReplace them?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save mask", self.path.text(), "NIfTI (*.nii.gz *.nii)"
        )
        if path:
            self.path.setText(path)

    def save(self, path: str | None = None, target: str | None = None) -> list[str] | None:
        """Write the chosen mask; returns the written files, or None (reason notified)."""
        target = target or self.target.currentText()
        layer = self.state.final_layer if target == "final mask" else self.state.refined_layer
        if layer is None:
            show_info("Export: choose an image and refine first")
            return None
        path = path or self.path.text().strip()
        if not path:
            show_info("Export: choose an output file")
            return None
        existing = [p for p in (Path(path), *label_table_paths(path)) if p.exists()]
        if existing and _is_source(path, layer.metadata.get("source_path")):
            existing = []  # the writer refuses this one; nothing to ask
        if existing and not self.confirm_overwrite(existing):
            show_info(f"Export: kept the existing {existing[0]}; nothing was written")
            return None
        # The layer's metadata is refreshed from the class table on every class change.
        try:
            written = write_labels(
                path, layer.data, {"metadata": layer.metadata, "affine": layer.affine.affine_matrix}
            )
        except LabelEffError:  # already shown as a notification by the writer
            return None
        if target == "final mask":
            self.state.final_dirty = False
        rules_note = ""
        session = self.state.session
        if session is not None and session.rules:  # the session's rules travel with the mask
            try:
                from ..rules import write_beside

                written = [*written, str(write_beside(session.rules_object(), written[0]))]
                rules_note = " and its rules"
            except (LabelEffError, OSError) as err:
                show_error(f"Export: the mask is saved; its rules were not: {err}")
        show_info(f"Saved {target}{rules_note} to {written[0]} (+ label tables for 3D Slicer "
                  "and ITK-SNAP)")
        return written
