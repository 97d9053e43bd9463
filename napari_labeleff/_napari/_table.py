"""The read-only, single-row-selection tables of the dock's panels."""

from __future__ import annotations

from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget


def make_table(columns, *, fit_columns: bool = True) -> QTableWidget:
    """A read-only table with one selectable row at a time and no row numbers.

    Parameters
    ----------
    columns : sequence of str
        Header labels.
    fit_columns : bool
        Size every column but the last to its contents; the last one stretches.
    """
    table = QTableWidget(0, len(columns))
    table.setHorizontalHeaderLabels(list(columns))
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.verticalHeader().setVisible(False)
    if fit_columns:
        header = table.horizontalHeader()
        for col in range(len(columns) - 1):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
    return table
