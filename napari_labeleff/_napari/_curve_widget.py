"""The project's learning curve in the dock (issue 19): the running score per accepted
volume as a small plot, the work spent on each volume, and how much the network leads.

Thin: the numbers are :meth:`napari_labeleff.cohort.Project.curve` (one
:class:`~napari_labeleff.cohort.services.CurveItem` per accepted volume, in the order
accepted) and :meth:`~napari_labeleff.cohort.Project.network_lead`; this module only
draws them. The plot is a ``QWidget`` painted with ``QPainter`` (no plotting library).
The cohort package is imported when a curve is first shown (the dock opens without it).
"""

from __future__ import annotations

from qtpy.QtCore import QPointF, QRectF, QSize, Qt
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPalette, QPen
from qtpy.QtWidgets import (
    QGroupBox,
    QHeaderView,
    QLabel,
    QSizePolicy,
    QTableWidgetItem,
    QWidget,
)

from ._collapsible import collapsible
from ._table import make_table

COLUMNS = ("#", "volume", "Dice", "interactions", "time")
#: Table rows shown without scrolling.
VISIBLE_ROWS = 5
#: Colour of the running-score dots and line.
SCORE_COLOUR = QColor(255, 165, 0)


class CurvePlot(QWidget):
    """The running score (the model's Dice on each accepted mask before it trained on
    it) against the accept order.

    One filled dot per volume with a score, joined by a line; a short grey tick on the
    axis for a volume accepted without one (no model then). Dashed lines at
    :data:`~napari_labeleff.cohort.services.LEAD_MIN` (below it the graph method works
    alone) and :data:`~napari_labeleff.cohort.services.LEAD_FULL` (the network leads
    fully).
    """

    #: Plot margins in pixels: left (y labels), top (title), right, bottom (x labels).
    MARGINS = (30, 18, 10, 18)
    TITLE = "model Dice on each mask before accepting it"
    RADIUS = 3.5
    #: Horizontal room between the axes and the first / last dot, in pixels.
    PAD = 8.0

    def __init__(self, parent=None):
        super().__init__(parent)
        self._items: list = []
        self._lead_lines: tuple = ()  # (LEAD_MIN, LEAD_FULL) once a curve was shown
        self.setMinimumHeight(120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def sizeHint(self) -> QSize:
        return QSize(260, 130)

    def set_items(self, items) -> None:
        """Show ``items`` (``CurveItem`` list, in the order accepted)."""
        if not self._lead_lines:
            from ..cohort.services import LEAD_FULL, LEAD_MIN

            self._lead_lines = (LEAD_MIN, LEAD_FULL)
            self.setToolTip(
                "Running score: the published model's Dice on each accepted mask, measured "
                "before any model trained on it, in the order accepted. Dashed: "
                f"{LEAD_MIN:.2f} (below: the graph method alone) and {LEAD_FULL:.2f} "
                "(the network leads refine fully)."
            )
        self._items = list(items)
        self.update()

    # ---- geometry (what paintEvent draws; tests read it too) -----------------------------
    def _area(self) -> QRectF:
        left, top, right, bottom = self.MARGINS
        return QRectF(left, top, max(self.width() - left - right, 1.0),
                      max(self.height() - top - bottom, 1.0))

    def _x(self, order: int) -> float:
        """Pixel x of the ``order``-th accepted volume (1-based)."""
        area, n = self._area(), len(self._items)
        if n <= 1:
            return area.center().x()
        pad = min(self.PAD, area.width() / 4)  # dots clear of the axes
        return area.left() + pad + (order - 1) * (area.width() - 2 * pad) / (n - 1)

    def _y(self, dice: float) -> float:
        area = self._area()
        return area.bottom() - min(max(float(dice), 0.0), 1.0) * area.height()

    def points(self) -> list[tuple[int, QPointF]]:
        """(accept order, centre in pixels) of each dot: the volumes with a score."""
        return [(i, QPointF(self._x(i), self._y(it.model_dice_before)))
                for i, it in enumerate(self._items, 1) if it.model_dice_before is not None]

    # ---- painting ---------------------------------------------------------------------------
    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        text = self.palette().color(QPalette.ColorRole.WindowText)
        faint = QColor(text)
        faint.setAlpha(110)
        font = painter.font()
        font.setPointSizeF(max(font.pointSizeF() * 0.8, 6.0))
        painter.setFont(font)
        area = self._area()
        painter.setPen(faint)
        painter.drawText(QRectF(area.left(), 0, area.width(), area.top() - 4),
                         Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignBottom, self.TITLE)
        self._draw_axes(painter, area, text, faint)
        if not self._items:
            painter.setPen(text)
            painter.drawText(area, Qt.AlignmentFlag.AlignCenter, "no accepted volume yet")
            painter.end()
            return
        self._draw_orders(painter, area, text, faint)
        points = self.points()
        if len(points) > 1:
            path = QPainterPath(points[0][1])
            for _, p in points[1:]:
                path.lineTo(p)
            painter.setPen(QPen(SCORE_COLOUR, 1.5))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawPath(path)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(SCORE_COLOUR)
        for _, p in points:
            painter.drawEllipse(p, self.RADIUS, self.RADIUS)
        painter.end()

    def _draw_axes(self, painter, area: QRectF, text: QColor, faint: QColor) -> None:
        painter.setPen(QPen(faint, 1.0))
        painter.drawLine(area.bottomLeft(), area.bottomRight())
        painter.drawLine(area.bottomLeft(), area.topLeft())
        dashed = QPen(faint, 1.0, Qt.PenStyle.DashLine)
        height = painter.fontMetrics().height()
        for value in self._lead_lines:
            y = self._y(value)
            painter.setPen(dashed)
            painter.drawLine(QPointF(area.left(), y), QPointF(area.right(), y))
        painter.setPen(text)
        for value in (0.0, 0.5, 1.0):
            box = QRectF(0, self._y(value) - height / 2, area.left() - 4, height)
            painter.drawText(box, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                             f"{value:.1f}")

    def _draw_orders(self, painter, area: QRectF, text: QColor, faint: QColor) -> None:
        """Accept order under the axis (as many as fit) and a tick per unscored volume."""
        n = len(self._items)
        width = painter.fontMetrics().horizontalAdvance(str(n)) + 6
        every = max(1, int(width * n / max(area.width(), 1.0)) + 1)
        height = painter.fontMetrics().height()
        for i, it in enumerate(self._items, 1):
            x = self._x(i)
            if it.model_dice_before is None:
                painter.setPen(QPen(faint, 2.0))
                painter.drawLine(QPointF(x, area.bottom() - 5), QPointF(x, area.bottom()))
            if (i - 1) % every == 0 or i == n:
                painter.setPen(text)
                painter.drawText(QRectF(x - width, area.bottom() + 1, 2 * width, height),
                                 Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop, str(i))


class CurveSection(QGroupBox):
    """"Learning curve": the plot, a compact table (model Dice, interactions and time
    per accepted volume) and the line saying how much the network leads refine.

    Folded until it first has an accepted volume to show (then it opens by itself).
    """

    def __init__(self, parent=None):
        super().__init__("Learning curve", parent)
        self.plot = CurvePlot()
        self.table = make_table(COLUMNS)
        header = self.table.horizontalHeader()
        for col in range(len(COLUMNS)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.Stretch if col == 1
                                        else QHeaderView.ResizeMode.ResizeToContents)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # long volume ids
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._fit_table(0)
        self.lead_label = QLabel("network lead: -")
        self.lead_label.setWordWrap(True)
        self._opened = False
        lay = collapsible(self, "Tick to show how the model did on each volume before it "
                                "learned from it, and the work each volume took")
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.plot)
        lay.addWidget(self.table)
        lay.addWidget(self.lead_label)

    def _fit_table(self, rows: int) -> None:
        """Room for ``rows`` rows (1 to VISIBLE_ROWS; more scroll)."""
        table = self.table
        rows = min(max(rows, 1), VISIBLE_ROWS)
        table.setFixedHeight(table.horizontalHeader().sizeHint().height()
                             + rows * table.verticalHeader().defaultSectionSize()
                             + 2 * table.frameWidth())

    def show_curve(self, items, lead=None) -> None:
        """Show ``items`` (``Project.curve()``) and ``lead`` (``Project.network_lead()``:
        (lead, reason), or None when there is no project)."""
        items = list(items)
        self.plot.set_items(items)
        self.table.setRowCount(len(items))
        self._fit_table(len(items))
        for row, it in enumerate(items):
            dice = "-" if it.model_dice_before is None else f"{it.model_dice_before:.3f}"
            cells = (str(row + 1), it.volume_id, dice, str(it.interactions),
                     f"{it.seconds / 60:.1f} min")
            for col, value in enumerate(cells):
                item = QTableWidgetItem(value)
                item.setToolTip(f"{it.volume_id}: model {it.model or 'none'}; accepted {it.accepted}")
                self.table.setItem(row, col, item)
        self.lead_label.setText("network lead: -" if lead is None else f"network lead: {lead[1]}")
        if items and not self._opened:
            self._opened = True
            self.setChecked(True)
