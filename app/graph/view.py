"""GraphView: the widget showing a GraphScene, with zoom, pan, rubber-band selection and shortcuts.

Mouse: wheel zooms under the cursor (touchpad scrolling pans, Ctrl+scroll zooms); middle-drag or
Space+drag pans; left-drag on empty space selects with a rubber band; double-click on empty space,
Tab or the context menu opens the node palette at the cursor.
Keys (while the view has focus): Delete/Backspace, Ctrl+C/X/V/D/A, +/−, F (zoom to fit).
"""

from __future__ import annotations

import math

from PySide6.QtCore import QEvent, QPoint, QPointF, QRectF, Qt
from PySide6.QtGui import (QColor, QContextMenuEvent, QKeyEvent, QKeySequence, QMouseEvent, QPainter, QPen,
                           QWheelEvent)
from PySide6.QtWidgets import QFrame, QGraphicsView, QMenu, QWidget

from app.graph import clipboard, style
from app.graph.items import EdgeItem, NodeItem, PortItem
from app.graph.palette import PaletteEntry, PalettePopup
from app.graph.scene import GraphScene

MIN_ZOOM, MAX_ZOOM = 0.15, 3.0
ZOOM_STEP = 1.2


class GraphView(QGraphicsView):
    """The merge-graph editor widget for a ``GraphScene``."""

    def __init__(self, scene: GraphScene, parent: QWidget | None = None):
        super().__init__(scene, parent)
        self.graph_scene = scene
        self.setRenderHints(QPainter.RenderHint.Antialiasing | QPainter.RenderHint.TextAntialiasing
                            | QPainter.RenderHint.SmoothPixmapTransform)
        self.setDragMode(QGraphicsView.DragMode.RubberBandDrag)
        self.setRubberBandSelectionMode(Qt.ItemSelectionMode.IntersectsItemShape)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.FullViewportUpdate)
        self.setCacheMode(QGraphicsView.CacheModeFlag.CacheBackground)  # the grid is drawn once per view change
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setAcceptDrops(True)
        self._pan_from: QPoint | None = None
        self._space_down = False
        self._popup_at = QPoint()
        self.palette_popup = PalettePopup(self)
        self.palette_popup.entryChosen.connect(self._add_from_palette)
        self.centerOn(0, 0)

    # ---- zoom ----------------------------------------------------------------------------------
    def zoom(self) -> float:
        return self.transform().m11()

    def set_zoom(self, factor: float) -> None:
        """Zoom to an absolute factor (clamped), keeping the view centre fixed."""
        factor = min(MAX_ZOOM, max(MIN_ZOOM, factor))
        anchor = self.transformationAnchor()
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.scale(factor / self.zoom(), factor / self.zoom())
        self.setTransformationAnchor(anchor)

    def zoom_in(self) -> None:
        self.set_zoom(self.zoom() * ZOOM_STEP)

    def zoom_out(self) -> None:
        self.set_zoom(self.zoom() / ZOOM_STEP)

    def zoom_to_fit(self) -> None:
        """Show every node, never magnified beyond 100 %."""
        rect = QRectF()
        for item in self.scene().items():
            if isinstance(item, NodeItem):
                rect = rect.united(item.sceneBoundingRect())
        if rect.isEmpty():
            self.resetTransform()
            self.centerOn(0, 0)
            return
        rect.adjust(-40, -40, 40, 40)
        self.fitInView(rect, Qt.AspectRatioMode.KeepAspectRatio)
        self.set_zoom(min(self.zoom(), 1.0))
        self.centerOn(rect.center())

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802 (Qt's name)
        touchpad_scroll = not event.pixelDelta().isNull() and not event.modifiers() & Qt.KeyboardModifier.ControlModifier
        if touchpad_scroll:
            super().wheelEvent(event)  # two-finger scrolling pans
            return
        steps = event.angleDelta().y() / 120.0
        if steps:
            target = min(MAX_ZOOM, max(MIN_ZOOM, self.zoom() * math.pow(ZOOM_STEP, steps)))
            self.scale(target / self.zoom(), target / self.zoom())  # anchored under the mouse
        event.accept()

    # ---- pan -----------------------------------------------------------------------------------
    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 (Qt's name)
        if event.button() == Qt.MouseButton.MiddleButton or (
                event.button() == Qt.MouseButton.LeftButton and self._space_down):
            self._pan_from = event.position().toPoint()
            self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 (Qt's name)
        if self._pan_from is not None:
            delta = event.position().toPoint() - self._pan_from
            self._pan_from = event.position().toPoint()
            self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() - delta.x())
            self.verticalScrollBar().setValue(self.verticalScrollBar().value() - delta.y())
            event.accept()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802 (Qt's name)
        if self._pan_from is not None and event.button() in (Qt.MouseButton.MiddleButton, Qt.MouseButton.LeftButton):
            self._pan_from = None
            self.viewport().setCursor(Qt.CursorShape.OpenHandCursor if self._space_down else Qt.CursorShape.ArrowCursor)
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:  # noqa: N802 (Qt's name)
        if event.button() == Qt.MouseButton.LeftButton and self._item_at(event.position().toPoint()) is None:
            self.open_palette(event.position().toPoint())
            return
        super().mouseDoubleClickEvent(event)

    # ---- palette and context menu --------------------------------------------------------------
    def open_palette(self, view_pos: QPoint | None = None) -> None:
        """Show the node palette at ``view_pos`` (default: the cursor, or the centre); the chosen
        node is added there."""
        if view_pos is None:
            cursor = self.viewport().mapFromGlobal(self.cursor().pos())
            view_pos = cursor if self.viewport().rect().contains(cursor) else self.viewport().rect().center()
        self._popup_at = view_pos
        self.palette_popup.popup(self.viewport().mapToGlobal(view_pos))

    def _add_from_palette(self, entry: PaletteEntry) -> None:
        self.add_entry(entry, self._popup_at)
        self.setFocus()

    def add_entry(self, entry: PaletteEntry, view_pos: QPoint | None = None) -> str:
        """Add a palette entry's node centred on ``view_pos`` (default: the middle of the view); for a
        docked ``NodePalette``, connect its ``entryChosen`` here."""
        if view_pos is None:
            view_pos = self.viewport().rect().center()
        corner = self.mapToScene(view_pos) - QPointF(style.NODE_WIDTH / 2, style.HEADER_H / 2)
        return self.graph_scene.add_node_at(entry.node_type, corner, dict(entry.params))

    def contextMenuEvent(self, event: QContextMenuEvent) -> None:  # noqa: N802 (Qt's name)
        item = self._item_at(event.pos())
        while item is not None and not isinstance(item, (NodeItem, EdgeItem)):
            item = item.parentItem()
        if item is None:
            self.open_palette(event.pos())
            return
        if not item.isSelected():
            self.scene().clearSelection()
            item.setSelected(True)
        menu = QMenu(self)
        if isinstance(item, NodeItem):
            menu.addAction("Copy", self.copy_to_clipboard)
            menu.addAction("Duplicate", self.graph_scene.duplicate_selected)
        menu.addAction("Delete", self.graph_scene.delete_selected)
        menu.exec(event.globalPos())

    # ---- clipboard -----------------------------------------------------------------------------
    def copy_to_clipboard(self) -> None:
        data = self.graph_scene.copy_selected()
        if data["nodes"]:
            clipboard.put_nodes(data)

    def cut_to_clipboard(self) -> None:
        self.copy_to_clipboard()
        self.graph_scene.delete_selected()

    def paste_from_clipboard(self) -> list[str]:
        """Paste the clipboard's nodes under the cursor when it is over the view, else slightly offset."""
        data = clipboard.get_nodes()
        if data is None:
            return []
        cursor = self.viewport().mapFromGlobal(self.cursor().pos())
        positions = [n["ui"]["pos"] for n in data["nodes"] if isinstance(n, dict) and "pos" in n.get("ui", {})]
        if positions and self.viewport().rect().contains(cursor):
            target = self.mapToScene(cursor)
            left, top = min(p[0] for p in positions), min(p[1] for p in positions)
            return self.graph_scene.paste(data, (target.x() - left, target.y() - top))
        return self.graph_scene.paste(data)

    # ---- keys ----------------------------------------------------------------------------------
    _SHORTCUTS = {
        QKeySequence.StandardKey.Delete: "delete", QKeySequence.StandardKey.Copy: "copy",
        QKeySequence.StandardKey.Cut: "cut", QKeySequence.StandardKey.Paste: "paste",
        QKeySequence.StandardKey.SelectAll: "select_all", QKeySequence.StandardKey.ZoomIn: "zoom_in",
        QKeySequence.StandardKey.ZoomOut: "zoom_out",
    }

    _PLAIN_KEYS = {
        Qt.Key.Key_Backspace: "delete", Qt.Key.Key_Delete: "delete", Qt.Key.Key_F: "fit",
        Qt.Key.Key_Plus: "zoom_in", Qt.Key.Key_Equal: "zoom_in", Qt.Key.Key_Minus: "zoom_out", Qt.Key.Key_Tab: "palette",
    }

    def _action_for(self, event: QKeyEvent) -> str | None:
        """The view's action for a key press, or None to leave the key to others."""
        for key, name in self._SHORTCUTS.items():
            if event.matches(key):
                return name
        mods = event.modifiers() & ~(Qt.KeyboardModifier.KeypadModifier | Qt.KeyboardModifier.ShiftModifier)
        if mods == Qt.KeyboardModifier.ControlModifier and event.key() == Qt.Key.Key_D:
            return "duplicate"
        return self._PLAIN_KEYS.get(event.key()) if mods == Qt.KeyboardModifier.NoModifier else None

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ShortcutOverride and self._action_for(event):
            event.accept()  # the view's own keys win over window shortcuts while it has focus
            return True
        if event.type() == QEvent.Type.KeyPress and event.key() == Qt.Key.Key_Tab:
            self.keyPressEvent(event)  # Tab would otherwise move the focus
            return True
        return super().event(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 (Qt's name)
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space_down = True
            self.viewport().setCursor(Qt.CursorShape.OpenHandCursor)
            return
        action = self._action_for(event)
        handlers = {
            "delete": self.graph_scene.delete_selected, "copy": self.copy_to_clipboard, "cut": self.cut_to_clipboard,
            "paste": self.paste_from_clipboard, "duplicate": self.graph_scene.duplicate_selected,
            "select_all": lambda: [item.setSelected(True) for item in self.scene().items()
                                   if isinstance(item, NodeItem)],
            "zoom_in": self.zoom_in, "zoom_out": self.zoom_out, "fit": self.zoom_to_fit, "palette": self.open_palette,
        }
        if action is not None:
            handlers[action]()
            return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event: QKeyEvent) -> None:  # noqa: N802 (Qt's name)
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space_down = False
            if self._pan_from is None:
                self.viewport().unsetCursor()
            return
        super().keyReleaseEvent(event)

    # ---- background ----------------------------------------------------------------------------
    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.PaletteChange:
            self.resetCachedContent()  # the cached grid has the old theme's colours
        super().changeEvent(event)

    def drawBackground(self, painter: QPainter, rect: QRectF) -> None:  # noqa: N802 (Qt's name)
        """A flat canvas with a subtle grid: fine lines fade out when zoomed out, coarse lines stay."""
        pal = self.palette()
        painter.fillRect(rect, style.canvas_color(pal))
        line = QColor(pal.color(pal.ColorRole.Text))
        zoom = self.zoom()
        for step, alpha in ((style.GRID, 0.035), (style.GRID * 5, 0.06)):
            if step * zoom < 8:
                continue
            line.setAlphaF(alpha)
            painter.setPen(QPen(line, 0))  # cosmetic: one device pixel at any zoom
            left = math.floor(rect.left() / step) * step
            top = math.floor(rect.top() / step) * step
            x = left
            while x < rect.right():
                painter.drawLine(QPointF(x, rect.top()), QPointF(x, rect.bottom()))
                x += step
            y = top
            while y < rect.bottom():
                painter.drawLine(QPointF(rect.left(), y), QPointF(rect.right(), y))
                y += step

    def _item_at(self, pos: QPoint) -> NodeItem | PortItem | EdgeItem | None:
        """The topmost node, port or edge under a viewport position (ignores the drag line)."""
        for item in self.items(pos):
            if isinstance(item, (NodeItem, PortItem, EdgeItem)):
                return item
        return None
