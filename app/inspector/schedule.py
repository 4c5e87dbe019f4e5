"""The per-layer schedule editor: a small curve with draggable anchors plus a table of the anchors.

A schedule is the engine's gradient list (``engine.methods.schedule``): anchors spread evenly over the
model's depth, linearly interpolated between them. Drag an anchor up or down; double-click the curve
to add an anchor, right-click one to remove it (the curve keeps its shape); or type values in the table.
"""

from __future__ import annotations

import math
import uuid

from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QMouseEvent, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import (QAbstractItemView, QDoubleSpinBox, QHBoxLayout, QHeaderView, QLabel,
                               QStyledItemDelegate, QTableWidget, QTableWidgetItem, QToolButton, QVBoxLayout, QWidget)

from app import theme
from engine.methods.base import Param

HANDLE_R = 5.0
MAX_ANCHORS = 16


def resample(anchors: list[float], n: int) -> list[float]:
    """``n`` evenly spread anchors that follow the piecewise-linear curve through ``anchors``."""
    if len(anchors) == 1:
        return [anchors[0]] * n
    out = []
    for i in range(n):
        t = i / (n - 1) * (len(anchors) - 1)
        k = min(int(t), len(anchors) - 2)
        out.append(anchors[k] + (anchors[k + 1] - anchors[k]) * (t - k))
    return [round(v, 4) for v in out]


def curve_range(param: Param, anchors: list[float]) -> tuple[float, float]:
    """The value span the curve shows: a bounded range up to one unit wide is shown whole (density);
    otherwise zero to the anchors with some headroom, inside the declared range."""
    if param.min is not None and param.max is not None and param.max - param.min <= 1:
        return min(param.min, *anchors), max(param.max, *anchors)
    lo, hi = min(0.0, *anchors), max(0.0, *anchors)
    pad = 0.25 * (hi - lo) if hi > lo else 0.5
    lo, hi = (lo - pad if lo < 0 else lo), hi + pad
    if param.min is not None:
        lo = max(lo, min(param.min, *anchors))
    if param.max is not None:
        hi = min(hi, max(param.max, *anchors))
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


class CurveWidget(QWidget):
    """Paints the anchors over the depth of the model; emits ``dragged(anchors)`` while dragging and
    ``released(anchors)`` when a gesture ends."""

    dragged = Signal(list)
    released = Signal(list)

    def __init__(self, param: Param, parent: QWidget | None = None):
        super().__init__(parent)
        self.param = param
        self.anchors: list[float] = [param.default, param.default]
        self.num_layers = 0
        self.lo, self.hi = curve_range(param, self.anchors)
        self._drag: int | None = None
        self._hover: int | None = None
        self.setMouseTracking(True)
        self.setMinimumHeight(120)
        self.setToolTip("Drag an anchor up or down · double-click to add one · right-click one to remove it")

    def sizeHint(self) -> QSize:
        return QSize(260, 130)

    def set_anchors(self, anchors: list[float], num_layers: int) -> None:
        self.anchors = list(anchors)
        self.num_layers = num_layers
        if self._drag is None:
            self.lo, self.hi = curve_range(self.param, self.anchors)
        self.update()

    # ---- geometry ----------------------------------------------------------------------------
    def _plot(self) -> QRectF:
        return QRectF(self.rect()).adjusted(34, 10, -12, -20)

    def _point(self, i: int) -> QPointF:
        r = self._plot()
        n = len(self.anchors)
        x = r.left() + (r.width() * i / (n - 1) if n > 1 else r.width() / 2)
        frac = (self.anchors[i] - self.lo) / (self.hi - self.lo) if self.hi > self.lo else 0.5
        return QPointF(x, r.bottom() - frac * r.height())

    def _value_at(self, y: float) -> float:
        r = self._plot()
        v = self.lo + (r.bottom() - y) / r.height() * (self.hi - self.lo)
        if self.param.min is not None:
            v = max(self.param.min, v)
        if self.param.max is not None:
            v = min(self.param.max, v)
        return round(v, 3)

    def _anchor_at(self, pos: QPointF) -> int | None:
        best = min(range(len(self.anchors)), key=lambda i: (self._point(i) - pos).manhattanLength(), default=None)
        if best is not None and (self._point(best) - pos).manhattanLength() <= 3 * HANDLE_R:
            return best
        return None

    # ---- painting ----------------------------------------------------------------------------
    def paintEvent(self, _event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing)
        r = self._plot()
        p.setPen(QPen(theme.color("border"), 1))
        p.setBrush(theme.color("base"))
        p.drawRoundedRect(r.adjusted(-4, -4, 4, 4), 5, 5)
        font = p.font()
        font.setPointSizeF(font.pointSizeF() * 0.85)
        p.setFont(font)
        for frac in (0.0, 0.5, 1.0):  # value grid
            y = r.bottom() - frac * r.height()
            p.setPen(QPen(theme.color("grid"), 1))
            p.drawLine(QPointF(r.left(), y), QPointF(r.right(), y))
            p.setPen(theme.color("muted"))
            p.drawText(QRectF(0, y - 8, r.left() - 6, 16), Qt.AlignRight | Qt.AlignVCenter,
                       f"{self.lo + frac * (self.hi - self.lo):.2g}")
        if 0 < self.num_layers <= 96:  # one tick per layer
            p.setPen(QPen(theme.color("muted"), 1))
            for k in range(self.num_layers):
                x = r.left() + (r.width() * k / (self.num_layers - 1) if self.num_layers > 1 else r.width() / 2)
                p.drawLine(QPointF(x, r.bottom() + 4), QPointF(x, r.bottom() + 7))
        p.setPen(theme.color("muted"))
        last = f"layer {self.num_layers - 1}" if self.num_layers else "last layer"
        p.drawText(QRectF(r.left(), r.bottom() + 6, r.width(), 14), Qt.AlignLeft, "layer 0")
        p.drawText(QRectF(r.left(), r.bottom() + 6, r.width(), 14), Qt.AlignRight, last)

        accent = theme.color("accent")
        points = [self._point(i) for i in range(len(self.anchors))]
        area = QPainterPath(QPointF(points[0].x(), r.bottom()))
        for pt in points:
            area.lineTo(pt)
        area.lineTo(QPointF(points[-1].x(), r.bottom()))
        fill = QColor(accent)
        fill.setAlpha(40)
        p.fillPath(area, fill)
        p.setPen(QPen(accent, 2))
        for a, b in zip(points, points[1:]):
            p.drawLine(a, b)
        for i, pt in enumerate(points):
            active = i in (self._drag, self._hover)
            p.setPen(QPen(accent, 2))
            p.setBrush(QBrush(accent if active else theme.color("base")))
            radius = HANDLE_R + (1.5 if active else 0)
            p.drawEllipse(pt, radius, radius)
        p.end()

    # ---- mouse -------------------------------------------------------------------------------
    def mousePressEvent(self, event: QMouseEvent) -> None:
        i = self._anchor_at(event.position())
        if event.button() == Qt.LeftButton and i is not None:
            self._drag = i
        elif event.button() == Qt.RightButton and i is not None and len(self.anchors) > 2:
            del self.anchors[i]
            self.released.emit(list(self.anchors))

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._drag is not None:
            self.anchors[self._drag] = self._value_at(event.position().y())
            self.update()
            self.dragged.emit(list(self.anchors))
            return
        hover = self._anchor_at(event.position())
        if hover != self._hover:
            self._hover = hover
            self.setCursor(Qt.SizeVerCursor if hover is not None else Qt.ArrowCursor)
            self.update()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._drag is not None:
            self._drag = None
            self.lo, self.hi = curve_range(self.param, self.anchors)
            self.update()
            self.released.emit(list(self.anchors))

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        if self._anchor_at(event.position()) is None and len(self.anchors) < MAX_ANCHORS:
            self.released.emit(resample(self.anchors, len(self.anchors) + 1))

    def leaveEvent(self, _event) -> None:
        self._hover = None
        self.update()


class _ValueDelegate(QStyledItemDelegate):
    """Edits anchor values with a spin box limited to the parameter's declared range."""

    def __init__(self, param: Param, parent: QWidget):
        super().__init__(parent)
        self.param = param

    def createEditor(self, parent: QWidget, option, index) -> QWidget:
        box = QDoubleSpinBox(parent, decimals=3, singleStep=0.05)
        box.setRange(self.param.min if self.param.min is not None else -1e6,
                     self.param.max if self.param.max is not None else 1e6)
        return box


class ScheduleEditor(QWidget):
    """Curve + table for one layer-varying float value; ``edited(anchors, merge_key)`` on every change
    (one merge key per drag gesture, so a drag is one undo step)."""

    edited = Signal(object, str)

    def __init__(self, param: Param, parent: QWidget | None = None):
        super().__init__(parent)
        self.param = param
        self.curve = CurveWidget(param)
        self.curve.dragged.connect(self._on_dragged)
        self.curve.released.connect(self._on_released)
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["Depth", "≈ Layer", "Value"])
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.table.setItemDelegateForColumn(2, _ValueDelegate(param, self.table))
        self.table.setEditTriggers(QAbstractItemView.DoubleClicked | QAbstractItemView.EditKeyPressed
                                   | QAbstractItemView.AnyKeyPressed)
        self.table.itemChanged.connect(self._on_item_changed)
        self.count = QLabel(objectName="Muted")
        buttons = QHBoxLayout()
        buttons.setSpacing(2)
        buttons.addWidget(self.count)
        buttons.addStretch(1)
        for text, tip, slot in (("+", "Add an anchor (keeps the curve's shape)", lambda: self._resize(+1)),
                                ("−", "Remove an anchor (keeps the curve's shape)", lambda: self._resize(-1)),
                                ("Flat", "Set every anchor to the mean value", self._flatten)):
            b = QToolButton(text=text, toolTip=tip)
            b.clicked.connect(slot)
            buttons.addWidget(b)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 4)
        layout.setSpacing(4)
        layout.addWidget(self.curve)
        layout.addLayout(buttons)
        layout.addWidget(self.table)
        self._num_layers = 0
        self._merge_key = ""
        self._filling = False

    @property
    def anchors(self) -> list[float]:
        return list(self.curve.anchors)

    def set_anchors(self, anchors: list[float], num_layers: int = 0) -> None:
        """Show ``anchors`` (no signal); ``num_layers`` of the model, when known, labels the depth."""
        self._num_layers = num_layers
        self.curve.set_anchors(anchors, num_layers)
        self._fill_table(anchors)

    def _fill_table(self, anchors: list[float]) -> None:
        self._filling = True
        self.table.setRowCount(len(anchors))
        n = len(anchors)
        for i, v in enumerate(anchors):
            t = i / (n - 1) if n > 1 else 0.0
            depth = QTableWidgetItem(f"{t:.0%}")
            layer = QTableWidgetItem(f"{t * (self._num_layers - 1):.1f}" if self._num_layers > 1 else "–")
            value = QTableWidgetItem()
            value.setData(Qt.EditRole, float(v))
            for item in (depth, layer):
                item.setFlags(Qt.ItemIsEnabled)
                item.setForeground(theme.color("muted"))
            for col, item in enumerate((depth, layer, value)):
                item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
                self.table.setItem(i, col, item)
        rows = self.table.verticalHeader().defaultSectionSize() * min(n, 6)
        self.table.setFixedHeight(self.table.horizontalHeader().sizeHint().height() + rows + 4)
        self.count.setText(f"{n} anchors over {self._num_layers} layers" if self._num_layers else f"{n} anchors")
        self._filling = False

    def _on_dragged(self, anchors: list[float]) -> None:
        if not self._merge_key:
            self._merge_key = uuid.uuid4().hex
        self._fill_table(anchors)
        self.edited.emit(anchors, self._merge_key)

    def _on_released(self, anchors: list[float]) -> None:
        key, self._merge_key = self._merge_key, ""
        self.set_anchors(anchors, self._num_layers)
        self.edited.emit(anchors, key)

    def _on_item_changed(self, item: QTableWidgetItem) -> None:
        if self._filling or item.column() != 2:
            return
        value = float(item.data(Qt.EditRole))
        if not math.isfinite(value):
            return
        anchors = self.anchors
        anchors[item.row()] = value
        self.set_anchors(anchors, self._num_layers)
        self.edited.emit(anchors, "")

    def _resize(self, delta: int) -> None:
        n = min(MAX_ANCHORS, max(2, len(self.anchors) + delta))
        if n != len(self.anchors):
            self._on_released(resample(self.anchors, n))

    def _flatten(self) -> None:
        mean = round(sum(self.anchors) / len(self.anchors), 4)
        self._on_released([mean] * len(self.anchors))
