"""Label QA panel: the project's doubtful masks, listed and jumped to (issue 9).

Thin: :func:`napari_labeleff.cohort.services.label_qa` does the work in the widget's worker
seam; this module lists the items and, on selection, opens the volume through the
project panel and moves the viewer to the doubtful region's centre.
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import ComboBox, Container
from napari.utils.notifications import show_info
from qtpy.QtWidgets import (
    QCheckBox,
    QGroupBox,
    QLabel,
    QPushButton,
    QTableWidgetItem,
)

from ._collapsible import collapsible
from ._table import make_table

_COLUMNS = ("volume", "score", "flag", "reason")
#: folds choice text -> ``label_qa(folds=...)``
FOLDS = {"2-fold models": 2, "3-fold models": 3, "published model": 0}


class LabelQAPanel(QGroupBox):
    """List the project's doubtful accepted/imported masks and jump to them.

    Parameters
    ----------
    viewer : napari.Viewer
    project_panel : ProjectPanel
        Holds the open ``project`` and opens volumes (``open_volume``).
    runner : Runner
        The worker seam the check runs in.
    """

    def __init__(self, viewer, project_panel, runner, parent=None):
        super().__init__("Label QA", parent)
        self.viewer = viewer
        self.project_panel = project_panel
        self.runner = runner
        self.items: list = []
        self.models = ComboBox(label="compare with", choices=list(FOLDS),
                               value="2-fold models")
        self.models.tooltip = ("k-fold models never trained on the mask they check "
                               "(trained once, then reused); the published model is "
                               "faster but may have learned the mask's errors")
        self.form = Container(widgets=[self.models])
        self.show_all = QCheckBox("list every mask")
        self.check_btn = QPushButton("Check labels")
        self.check_btn.clicked.connect(self.run_check)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.table = make_table(_COLUMNS)
        self.table.itemSelectionChanged.connect(self._on_selection)
        lay = collapsible(self, "Tick to check a project's accepted and imported masks")
        lay.addWidget(self.form.native)
        lay.addWidget(self.show_all)
        lay.addWidget(self.check_btn)
        lay.addWidget(self.summary)
        lay.addWidget(self.table)

    def run_check(self) -> bool:
        """Score the masks in the background; False (with a message) without a project."""
        project = self.project_panel.project
        if project is None:
            show_info("Label QA: open a project first")
            return False
        from ..cohort.services import label_qa

        return self.runner.start(label_qa, project, desc="Label QA",
                                 on_returned=self.show_items,
                                 folds=FOLDS[self.models.value], include_all=True)

    def show_items(self, items) -> None:
        """Fill the table (doubtful first) from ``label_qa`` items."""
        self.items = [it for it in items if it.doubtful or self.show_all.isChecked()]
        n_bad = sum(it.doubtful for it in items)
        self.summary.setText(f"{n_bad} doubtful of {len(items)} masks"
                             + ("" if n_bad else ": nothing to fix"))
        self.table.blockSignals(True)
        self.table.setRowCount(len(self.items))
        for row, it in enumerate(self.items):
            cells = (it.volume_id, f"{it.score:.1f}", "doubtful" if it.doubtful else "ok",
                     it.reason)
            for col, text in enumerate(cells):
                cell = QTableWidgetItem(text)
                cell.setToolTip(it.reason)
                self.table.setItem(row, col, cell)
        self.table.clearSelection()
        self.table.blockSignals(False)

    def select(self, row: int) -> None:
        """Select an item: open its volume and jump to its doubtful region."""
        self.table.selectRow(row)

    def _on_selection(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return
        it = self.items[rows[0].row()]
        self.project_panel._guard("Open volume", self.project_panel.open_volume, it.volume_id)
        self.jump(it)

    def jump(self, it) -> None:
        """Move the viewer to the centre of the item's box (or keep the slice)."""
        if it.bbox is None:
            return
        layer = self.project_panel.state.image_layer
        if layer is None:
            return
        lo, hi = np.array(it.bbox[:3], float), np.array(it.bbox[3:], float)
        world = np.asarray(layer.data_to_world((lo + hi - 1) / 2), dtype=float)
        self.viewer.dims.set_point(range(3), tuple(world))
