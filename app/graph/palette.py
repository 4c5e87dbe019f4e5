"""The node palette: a searchable list of every node type and every merge method.

Choosing "Merge ▸ TIES" gives a merge node with that method and the method's default parameters.
The list is rebuilt from the registries each time it is shown, so node types and methods registered
later (evaluation, plugins) appear without changes here. Entries can also be dragged onto the graph.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from PySide6.QtCore import QMimeData, QPoint, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QKeyEvent, QPainter, QPalette, QPixmap
from PySide6.QtWidgets import QFrame, QLabel, QLineEdit, QListWidget, QListWidgetItem, QVBoxLayout, QWidget

from app.graph.style import category_color
from engine.errors import EngineInputError
from engine.graph.node_kinds import MERGE, all_node_kinds, node_kind
from engine.methods import all_methods, get_method

NODE_MIME = "application/x-weightsmith-node"


@dataclass(frozen=True)
class PaletteEntry:
    """One thing the palette can add: a node type with the parameters it starts from."""

    label: str
    node_type: str
    params: Mapping[str, Any] = field(default_factory=dict)
    help: str = ""

    @property
    def search_text(self) -> str:
        return f"{self.label} {self.node_type} {' '.join(map(str, self.params.values()))} {self.help}".lower()

    def to_mime(self) -> QMimeData:
        mime = QMimeData()
        mime.setData(NODE_MIME, json.dumps({"type": self.node_type, "params": dict(self.params)}).encode())
        return mime


def default_params(node_type: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A new node's parameters: the type's defaults, for a merge its method's defaults, then ``params``."""
    given = dict(params or {})
    out = {p.name: copy.deepcopy(p.default) for p in node_kind(node_type).params}
    method_param = node_kind(node_type).method_param
    if method_param:
        out[method_param] = given.get(method_param, out.get(method_param))
        try:
            out.update(copy.deepcopy(get_method(str(out[method_param])).defaults()))
        except EngineInputError:
            pass  # an unknown method stays as given; validation reports it on the node
    out.update(copy.deepcopy(given))
    return out


def switch_method_params(params: Mapping[str, Any], method: str) -> dict[str, Any]:
    """A merge node's parameters after choosing ``method``: its defaults, keeping values of the
    parameters both methods share (use with SetParamsCommand)."""
    new = default_params(MERGE.name, {"method": method})
    for key, value in params.items():
        if key != "method" and key in new:
            new[key] = copy.deepcopy(value)
    return new


def palette_entries() -> list[PaletteEntry]:
    """Every node type, with the merge type expanded into one entry per registered method."""
    entries: list[PaletteEntry] = []
    for ntype in all_node_kinds():
        if not ntype.method_param:
            entries.append(PaletteEntry(ntype.label, ntype.name, {}, ntype.help))
            continue
        for spec in all_methods():
            needs = ", ".join(sorted(r.value for r in spec.requirements))
            entries.append(PaletteEntry(f"{ntype.label} ▸ {spec.label}", ntype.name, {ntype.method_param: spec.name},
                                        f"{spec.summary} ({spec.group}; {needs})"))
    return entries


def _dot_icon(color: QColor, dpr: float) -> QIcon:
    size = 12
    pix = QPixmap(int(size * dpr), int(size * dpr))
    pix.setDevicePixelRatio(dpr)
    pix.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pix)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(color)
    painter.drawRoundedRect(1, 1, size - 2, size - 2, 3, 3)
    painter.end()
    return QIcon(pix)


class _EntryList(QListWidget):
    """The list of entries; dragging an entry carries it as NODE_MIME."""

    def mimeData(self, items: list[QListWidgetItem]) -> QMimeData:  # noqa: N802 (Qt's name)
        return items[0].data(Qt.ItemDataRole.UserRole).to_mime()

    def mimeTypes(self) -> list[str]:  # noqa: N802 (Qt's name)
        return [NODE_MIME]


class NodePalette(QWidget):
    """Search box + list of node types and merge methods; ``entryChosen`` fires on Enter or double-click."""

    entryChosen = Signal(object)  # PaletteEntry

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.search = QLineEdit(placeholderText="Search nodes and merge methods…", clearButtonEnabled=True)
        self.list = _EntryList()
        self.list.setDragEnabled(True)
        self.list.setUniformItemSizes(True)
        self.help = QLabel(wordWrap=True)
        self.help.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.help.setMinimumHeight(self.help.fontMetrics().lineSpacing() * 3)
        self.help.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.search)
        layout.addWidget(self.list, 1)
        layout.addWidget(self.help)
        self.search.textChanged.connect(self._filter)
        self.search.installEventFilter(self)
        self.list.itemActivated.connect(self._choose)
        self.list.currentItemChanged.connect(self._show_help)
        self.refresh()

    def refresh(self) -> None:
        """Rebuild the list from the node-type and method registries."""
        self.list.clear()
        dpr = self.devicePixelRatioF()
        for entry in palette_entries():
            item = QListWidgetItem(_dot_icon(category_color(entry.node_type), dpr), entry.label)
            item.setData(Qt.ItemDataRole.UserRole, entry)
            item.setToolTip(entry.help)
            self.list.addItem(item)
        self._filter(self.search.text())

    def entries(self, visible_only: bool = True) -> list[PaletteEntry]:
        return [self.list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.list.count())
                if not (visible_only and self.list.item(i).isHidden())]

    def _filter(self, text: str) -> None:
        words = text.lower().split()
        first = by_label = None  # Return takes the first entry whose name matches, else the first match
        for i in range(self.list.count()):
            item = self.list.item(i)
            entry: PaletteEntry = item.data(Qt.ItemDataRole.UserRole)
            hidden = not all(w in entry.search_text for w in words)
            item.setHidden(hidden)
            if not hidden and first is None:
                first = item
            if not hidden and by_label is None and all(w in entry.label.lower() for w in words):
                by_label = item
        self.list.setCurrentItem(by_label or first)
        if first is None:
            self.help.setText("No node or method matches.")

    def _show_help(self, item: QListWidgetItem | None) -> None:
        if item is not None:
            self.help.setText(item.data(Qt.ItemDataRole.UserRole).help)

    def _choose(self, item: QListWidgetItem | None) -> None:
        if item is not None and not item.isHidden():
            self.entryChosen.emit(item.data(Qt.ItemDataRole.UserRole))

    def _step(self, delta: int) -> None:
        """Move the current row to the next visible item up or down."""
        row = self.list.currentRow()
        for _ in range(self.list.count()):
            row += delta
            if not 0 <= row < self.list.count():
                return
            if not self.list.item(row).isHidden():
                self.list.setCurrentRow(row)
                return

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 (Qt's name)
        if obj is self.search and isinstance(event, QKeyEvent) and event.type() == QKeyEvent.Type.KeyPress:
            key = event.key()
            if key in (Qt.Key.Key_Down, Qt.Key.Key_Up):
                self._step(1 if key == Qt.Key.Key_Down else -1)
                return True
            if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                self._choose(self.list.currentItem())
                return True
        return super().eventFilter(obj, event)


class PalettePopup(QFrame):
    """The palette as a popup at the cursor (the graph view opens it with Tab, double-click or the
    context menu); ``entryChosen`` fires and the popup closes."""

    entryChosen = Signal(object)  # PaletteEntry

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent, Qt.WindowType.Popup)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.palette_widget = NodePalette(self)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.palette_widget)
        self.resize(300, 360)
        self.palette_widget.entryChosen.connect(self._chosen)

    def popup(self, global_pos: QPoint) -> None:
        self.palette_widget.search.clear()
        self.palette_widget.refresh()
        self.move(global_pos)
        self.show()
        self.palette_widget.search.setFocus()

    def _chosen(self, entry: PaletteEntry) -> None:
        self.hide()
        self.entryChosen.emit(entry)
