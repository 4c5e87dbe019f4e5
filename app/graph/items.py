"""Graphics items of the merge graph: nodes with typed ports, bezier edges, the edge being dragged.

Items only draw and report gestures; what they show is pushed into them by ``GraphScene`` from the
recipe. Connection drags from ports are handled by the scene (see ``GraphScene.mousePressEvent``).
"""

from __future__ import annotations

from typing import Any, Sequence

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QPainter, QPainterPath, QPainterPathStroker, QPalette, QPen
from PySide6.QtWidgets import (QGraphicsItem, QGraphicsPathItem, QGraphicsSceneHoverEvent,
                               QStyleOptionGraphicsItem, QWidget)

from app.graph import style
from engine.graph.node_kinds import NodeKind, Port


def _palette(item: QGraphicsItem) -> QPalette:
    scene = item.scene()
    return scene.palette() if scene is not None else QPalette()


def node_font(item: QGraphicsItem, points: float, bold: bool = False) -> QFont:
    """The scene's font family at ``points`` (node text stays readable at 100 % zoom: titles 11 pt,
    subtitles and ports 10 pt, see ``style``)."""
    scene = item.scene()
    font = QFont(scene.font()) if scene is not None else QFont()
    font.setPointSizeF(points)
    font.setBold(bold)
    return font


def node_height(node_type: NodeKind | None) -> float:
    """The height of a node card of this type (header, subtitle, one row per input port)."""
    inputs = node_type.inputs if node_type else ()
    return style.HEADER_H + style.SUBTITLE_H + max(len(inputs), 1) * style.PORT_ROW_H + 6


def bezier(p0: QPointF, p1: QPointF) -> QPainterPath:
    """A horizontal S-curve from an output (p0, leaving right) to an input (p1, entering from the left);
    edges running backwards swing wider so they stay readable."""
    dx = max(abs(p1.x() - p0.x()) * 0.5, 50.0)
    if p1.x() < p0.x():
        dx = max(dx, min(160.0, 60.0 + abs(p1.y() - p0.y()) * 0.4))
    path = QPainterPath(p0)
    path.cubicTo(QPointF(p0.x() + dx, p0.y()), QPointF(p1.x() - dx, p1.y()), p1)
    return path


class HoverHighlight:
    """Mixin for items drawn emphasised while the mouse is over them (``self._hover``, set in __init__)."""

    def hoverEnterEvent(self, event: QGraphicsSceneHoverEvent) -> None:  # noqa: N802 (Qt's name)
        self._hover = True
        self.update()

    def hoverLeaveEvent(self, event: QGraphicsSceneHoverEvent) -> None:  # noqa: N802 (Qt's name)
        self._hover = False
        self.update()


class PortItem(HoverHighlight, QGraphicsItem):
    """An input port (``port`` given) on a node's left edge, or the output port on its right edge."""

    def __init__(self, node: "NodeItem", port: Port | None):
        super().__init__(node)
        self.node = node
        self.port = port
        self.name = port.name if port is not None else ""
        self.kinds: tuple[str | None, ...] = port.kinds if port is not None else (node.node_type.output,)
        self.connected = False
        self.highlight: bool | None = None  # True: acceptable drop target, False: refused, None: neither
        self._hover = False
        self.setAcceptHoverEvents(True)
        self.setCursor(Qt.CursorShape.CrossCursor)
        self._update_tooltip()

    @property
    def is_output(self) -> bool:
        return self.port is None

    def set_output_kind(self, kind: str | None) -> None:
        if self.is_output and self.kinds != (kind,):
            self.kinds = (kind,)
            self._update_tooltip()
            self.update()

    def _update_tooltip(self) -> None:
        kinds = " or ".join(style.kind_name(k) for k in self.kinds)
        if self.is_output:
            self.setToolTip(f"Output: {kinds}\nDrag onto an input port to connect.")
        else:
            many = "several connections, in order" if self.port.multiple else "one connection"
            optional = ", optional" if self.port.optional else ""
            self.setToolTip(f"{self.port.label or self.port.name}: {kinds} ({many}{optional})")

    def boundingRect(self) -> QRectF:  # noqa: N802 (Qt's name)
        return QRectF(-11, -13, 22, 26)

    def shape(self) -> QPainterPath:
        path = QPainterPath()
        path.addEllipse(QPointF(0, 0), 10, 10)
        return path

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        pal = _palette(self)
        grow = 1.35 if (self._hover or self.highlight is not None) else 1.0
        r = style.PORT_RADIUS * grow
        h = r * 1.6 if (self.port is not None and self.port.multiple) else r
        rect = QRectF(-r, -h, 2 * r, 2 * h)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        if self.highlight is not None:
            halo = QColor(style.KIND_COLORS["results"] if self.highlight else style.ERROR_COLOR)
            halo.setAlphaF(0.35)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(halo)
            painter.drawRoundedRect(rect.adjusted(-4, -4, 4, 4), r + 4, r + 4)
        body = style.node_body_color(pal)
        painter.setPen(QPen(body, 1.5))
        clip = QPainterPath()
        clip.addRoundedRect(rect, r, r)
        painter.save()
        painter.setClipPath(clip)
        span = rect.width() / len(self.kinds)
        for i, kind in enumerate(self.kinds):  # one vertical band per accepted kind
            painter.fillRect(QRectF(rect.left() + i * span, rect.top(), span, rect.height()), style.kind_color(kind))
        painter.restore()
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRoundedRect(rect, r, r)
        if not self.is_output and not self.connected:  # hollow centre: nothing connected yet
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(body)
            painter.drawRoundedRect(rect.adjusted(r * 0.55, r * 0.55, -r * 0.55, -r * 0.55), r * 0.45, r * 0.45)


class NodeItem(QGraphicsItem):
    """A node: rounded card with a tinted header (id and type), a subtitle with badges, typed ports,
    and a red outline carrying the validation problems as tooltip."""

    def __init__(self, node_id: str, node_type: NodeKind | None, type_name: str):
        super().__init__()
        self.node_id = node_id
        self.node_type = node_type
        self.type_name = type_name
        self.type_label = node_type.label if node_type else type_name
        self.subtitle = ""
        self.badges: list[tuple[str, QColor]] = []
        self.help = node_type.help if node_type else ""
        self.problems: list[str] = []
        self.edges: set[EdgeItem] = set()
        inputs: Sequence[Port] = node_type.inputs if node_type else ()
        self.height = node_height(node_type)
        self.inputs = {p.name: PortItem(self, p) for p in inputs}
        for i, item in enumerate(self.inputs.values()):
            item.setPos(0, self._row_y(i))
        self.output = PortItem(self, None) if node_type and node_type.output else None
        if self.output is not None:
            self.output.setPos(style.NODE_WIDTH, self._row_y(0))
        self.setFlags(QGraphicsItem.GraphicsItemFlag.ItemIsMovable | QGraphicsItem.GraphicsItemFlag.ItemIsSelectable
                      | QGraphicsItem.GraphicsItemFlag.ItemSendsGeometryChanges)
        self.setAcceptHoverEvents(True)
        self._update_tooltip()

    @staticmethod
    def _row_y(i: int) -> float:
        return style.HEADER_H + style.SUBTITLE_H + (i + 0.5) * style.PORT_ROW_H

    # ---- content set by the scene --------------------------------------------------------------
    def set_content(self, subtitle: str, badges: list[tuple[str, QColor]], help_text: str) -> None:
        self.subtitle, self.badges, self.help = subtitle, badges, help_text
        self._update_tooltip()
        self.update()

    def set_problems(self, problems: list[str]) -> None:
        if problems != self.problems:
            self.problems = problems
            self._update_tooltip()
            self.update()

    def set_connected(self, connected_ports: set[str]) -> None:
        for name, port in self.inputs.items():
            if port.connected != (name in connected_ports):
                port.connected = name in connected_ports
                port.update()

    def _update_tooltip(self) -> None:
        head = f"{self.node_id} — {self.type_label}"
        body = "\n".join(f"⚠ {p}" for p in self.problems) if self.problems else self.help
        self.setToolTip(f"{head}\n{body}" if body else head)

    # ---- geometry ------------------------------------------------------------------------------
    def rect(self) -> QRectF:
        return QRectF(0, 0, style.NODE_WIDTH, self.height)

    def boundingRect(self) -> QRectF:  # noqa: N802 (Qt's name)
        return self.rect().adjusted(-5, -9, 9, 7)

    def shape(self) -> QPainterPath:
        path = QPainterPath()
        path.addRoundedRect(self.rect(), style.CORNER, style.CORNER)
        return path

    def output_scene_pos(self) -> QPointF:
        if self.output is not None:
            return self.output.scenePos()
        return self.mapToScene(QPointF(style.NODE_WIDTH, self.height / 2))

    def input_scene_pos(self, port: str) -> QPointF:
        item = self.inputs.get(port)
        return item.scenePos() if item is not None else self.mapToScene(QPointF(0, self.height / 2))

    def nearest_input(self, scene_pos: QPointF) -> PortItem | None:
        """The input port closest in height to ``scene_pos`` (for drops on the node body)."""
        if not self.inputs:
            return None
        return min(self.inputs.values(), key=lambda p: abs(p.scenePos().y() - scene_pos.y()))

    def itemChange(self, change: QGraphicsItem.GraphicsItemChange, value: Any) -> Any:  # noqa: N802 (Qt's name)
        if change == QGraphicsItem.GraphicsItemChange.ItemPositionHasChanged:
            for edge in self.edges:
                edge.update_path()
        elif change == QGraphicsItem.GraphicsItemChange.ItemSelectedHasChanged:
            self.setZValue(1 if value else 0)
        return super().itemChange(change, value)

    # ---- drawing -------------------------------------------------------------------------------
    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        pal = _palette(self)
        dark = style.is_dark(pal)
        text = pal.color(QPalette.ColorRole.Text)
        muted = style.muted_text(pal)
        body_color = style.node_body_color(pal)
        rect = self.rect()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setRenderHint(QPainter.RenderHint.TextAntialiasing)
        body = QPainterPath()
        body.addRoundedRect(rect, style.CORNER, style.CORNER)

        painter.fillPath(body.translated(0, 2), QColor(0, 0, 0, 90 if dark else 28))
        painter.fillPath(body, body_color)
        header = QPainterPath()
        header.addRect(QRectF(0, 0, rect.width(), style.HEADER_H))
        accent = style.category_color(self.type_name)
        painter.fillPath(body.intersected(header), style.mix(body_color, accent, 0.38 if dark else 0.22))
        painter.fillRect(QRectF(0, style.HEADER_H - 1, rect.width(), 1), style.mix(body_color, accent, 0.6))

        self._paint_texts(painter, text, muted)
        self._paint_badges(painter)

        if self.problems:
            painter.setPen(QPen(style.ERROR_COLOR, 2.0))
        else:
            painter.setPen(QPen(style.mix(body_color, text, 0.25), 1.0))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawPath(body)
        if self.isSelected():
            painter.setPen(QPen(pal.color(QPalette.ColorRole.Highlight), 2.0))
            painter.drawRoundedRect(rect.adjusted(-3.5, -3.5, 3.5, 3.5), style.CORNER + 3, style.CORNER + 3)
        if self.problems:
            self._paint_problem_mark(painter)

    def _paint_texts(self, painter: QPainter, text: QColor, muted: QColor) -> None:
        pad = 10.0
        small = node_font(self, style.TEXT_PT)
        small_fm = QFontMetricsF(small)
        type_w = small_fm.horizontalAdvance(self.type_label)
        painter.setFont(small)
        painter.setPen(muted)
        header_rect = QRectF(pad, 0, style.NODE_WIDTH - 2 * pad, style.HEADER_H)
        painter.drawText(header_rect, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, self.type_label)
        title_font = node_font(self, style.TITLE_PT, bold=True)
        painter.setFont(title_font)
        painter.setPen(text)
        title = QFontMetricsF(title_font).elidedText(self.node_id, Qt.TextElideMode.ElideRight,
                                                     header_rect.width() - type_w - 8)
        painter.drawText(header_rect, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, title)

        badges_w = sum(small_fm.horizontalAdvance(t) + 14 for t, _ in self.badges)
        sub_rect = QRectF(pad, style.HEADER_H, style.NODE_WIDTH - 2 * pad - badges_w, style.SUBTITLE_H)
        painter.setFont(small)
        painter.setPen(muted)
        painter.drawText(sub_rect, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                         small_fm.elidedText(self.subtitle, Qt.TextElideMode.ElideMiddle, sub_rect.width()))

        for i, (name, port) in enumerate(self.inputs.items()):
            y = self._row_y(i)
            painter.setPen(text)
            painter.drawText(QRectF(pad + 4, y - style.PORT_ROW_H / 2, style.NODE_WIDTH / 2, style.PORT_ROW_H),
                             Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, port.port.label or name)
        if self.output is not None:
            painter.setPen(muted)
            painter.drawText(QRectF(style.NODE_WIDTH / 2, self._row_y(0) - style.PORT_ROW_H / 2,
                                    style.NODE_WIDTH / 2 - pad - 4, style.PORT_ROW_H),
                             Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                             style.kind_name(self.output.kinds[0]))

    def _paint_badges(self, painter: QPainter) -> None:
        small = node_font(self, style.BADGE_PT, bold=True)
        fm = QFontMetricsF(small)
        painter.setFont(small)
        x = style.NODE_WIDTH - 10.0
        for label, color in reversed(self.badges):
            w = fm.horizontalAdvance(label) + 10
            x -= w
            pill = QRectF(x, style.HEADER_H + 3.5, w, style.SUBTITLE_H - 7)
            fill = QColor(color)
            fill.setAlphaF(0.2)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(fill)
            painter.drawRoundedRect(pill, pill.height() / 2, pill.height() / 2)
            painter.setPen(color.darker(115) if not style.is_dark(_palette(self)) else color.lighter(115))
            painter.drawText(pill, Qt.AlignmentFlag.AlignCenter, label)
            x -= 4

    def _paint_problem_mark(self, painter: QPainter) -> None:
        center = QPointF(style.NODE_WIDTH - 1, 1)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(style.ERROR_COLOR)
        painter.drawEllipse(center, 7.5, 7.5)
        painter.setPen(QColor("white"))
        painter.setFont(node_font(self, style.BADGE_PT, bold=True))
        painter.drawText(QRectF(center.x() - 7.5, center.y() - 7.5, 15, 15), Qt.AlignmentFlag.AlignCenter, "!")


class EdgeItem(HoverHighlight, QGraphicsPathItem):
    """A connection drawn as a bezier curve in the colour of the kind it carries; selectable."""

    def __init__(self, edge: Any, src: NodeItem, dst: NodeItem):
        super().__init__()
        self.edge = edge
        self.src, self.dst = src, dst
        self.kind: str | None = None
        self.slot_offset = 0.0  # vertical spread of edges sharing a multi-input port, in their order
        self._hover = False
        self.setZValue(-1)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable)
        self.setAcceptHoverEvents(True)
        self.setPen(QPen(Qt.GlobalColor.transparent, 4.0))  # only sizes the bounding rect; paint() draws
        self.setToolTip(f"{edge.src} → {edge.dst}.{edge.port}")
        src.edges.add(self)
        dst.edges.add(self)
        self.update_path()

    def detach(self) -> None:
        self.src.edges.discard(self)
        self.dst.edges.discard(self)

    def set_kind(self, kind: str | None) -> None:
        if kind != self.kind:
            self.kind = kind
            self.update()

    def set_slot(self, index: int, count: int) -> None:
        """Place this edge's end as number ``index`` of the ``count`` edges into its port."""
        spacing = min(5.0, 2 * style.PORT_RADIUS * 1.6 / max(count, 1))
        offset = (index - (count - 1) / 2) * spacing
        if offset != self.slot_offset:
            self.slot_offset = offset
            self.update_path()

    def update_path(self) -> None:
        end = self.dst.input_scene_pos(self.edge.port) + QPointF(0, self.slot_offset)
        self.setPath(bezier(self.src.output_scene_pos(), end))

    def shape(self) -> QPainterPath:
        stroker = QPainterPathStroker()
        stroker.setWidth(12)
        return stroker.createStroke(self.path())

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        if self.isSelected():
            color, width = _palette(self).color(QPalette.ColorRole.Highlight), 3.2
        else:
            color, width = style.kind_color(self.kind), 3.0 if self._hover else 2.2
        painter.setPen(QPen(color, width, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawPath(self.path())


class DragEdgeItem(QGraphicsPathItem):
    """The dashed curve following the mouse while a connection is dragged (red, dotted where refused)."""

    def __init__(self, color: QColor):
        super().__init__()
        self.color = color
        self.setZValue(2)

    def set_ends(self, out_pos: QPointF, in_pos: QPointF, refused: bool) -> None:
        self.setPen(QPen(style.ERROR_COLOR if refused else self.color, 2.2,
                         Qt.PenStyle.DotLine if refused else Qt.PenStyle.DashLine, Qt.PenCapStyle.RoundCap))
        self.setPath(bezier(out_pos, in_pos))
