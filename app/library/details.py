"""The library's details view: one checkpoint's facts, its fit to the base, its tensors and metadata."""

from __future__ import annotations

import html
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtWidgets import (QAbstractItemView, QGridLayout, QHeaderView, QLabel, QLineEdit, QStackedWidget,
                               QTableView, QTableWidget, QTableWidgetItem, QTabWidget, QVBoxLayout, QWidget)

from app import theme
from app.formatting import human_bytes, human_count
from app.library.model import LibraryEntry
from engine.checkpoints import TensorInfo
from engine.runtime import dtype_name

Index = QModelIndex | QPersistentModelIndex


class TensorTableModel(QAbstractTableModel):
    """Name, shape, dtype, layer and size of every tensor of one checkpoint."""

    HEADERS = ("Tensor", "Shape", "Dtype", "Layer", "Size")

    def __init__(self, parent=None):
        super().__init__(parent)
        self.infos: list[TensorInfo] = []

    def set_infos(self, infos: list[TensorInfo]) -> None:
        self.beginResetModel()
        self.infos = infos
        self.endResetModel()

    def rowCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.infos)

    def columnCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.HEADERS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.DisplayRole) -> Any:
        if orientation == Qt.Horizontal and role == Qt.DisplayRole:
            return self.HEADERS[section]
        if orientation == Qt.Horizontal and role == Qt.TextAlignmentRole:
            return int((Qt.AlignRight if section in (3, 4) else Qt.AlignLeft) | Qt.AlignVCenter)
        return None

    def data(self, index: Index, role: int = Qt.DisplayRole) -> Any:
        if not index.isValid():
            return None
        info = self.infos[index.row()]
        col = index.column()
        if role == Qt.DisplayRole:
            return (info.name, "×".join(map(str, info.shape)) or "scalar", dtype_name(info.dtype),
                    "" if info.layer is None else str(info.layer), human_bytes(info.nbytes))[col]
        if role == Qt.UserRole:  # sort key
            return (info.name, info.numel, dtype_name(info.dtype), -1 if info.layer is None else info.layer,
                    info.nbytes)[col]
        if role == Qt.ToolTipRole and col == 0:
            return info.name
        if role == Qt.TextAlignmentRole and col in (3, 4):
            return int(Qt.AlignRight | Qt.AlignVCenter)
        if role == Qt.ForegroundRole and col in (1, 2, 3, 4):
            return theme.color("muted")
        return None


class DetailsPanel(QWidget):
    """Shows the selected library entry (or a hint when none is selected)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.title = QLabel(objectName="Title")
        self.path = QLabel(objectName="Muted", wordWrap=True)
        self.path.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.facts = QLabel(wordWrap=True)
        self.fit = QLabel(wordWrap=True)
        self.fit.setTextFormat(Qt.RichText)

        self.tensors = TensorTableModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.tensors)
        self.proxy.setFilterCaseSensitivity(Qt.CaseInsensitive)
        self.proxy.setSortRole(Qt.UserRole)
        self.filter = QLineEdit(placeholderText="Filter tensors (e.g. layers.3 or self_attn)", clearButtonEnabled=True)
        self.filter.addAction(theme.icon("search", "muted"), QLineEdit.LeadingPosition)
        self.filter.textChanged.connect(self._on_filter)
        self.count = QLabel(objectName="Muted")
        self.table = QTableView(sortingEnabled=True, alternatingRowColors=True, showGrid=False)
        self.table.setModel(self.proxy)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setTextElideMode(Qt.ElideMiddle)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.Stretch)
        for col in range(1, 5):
            self.table.horizontalHeader().setSectionResizeMode(col, QHeaderView.ResizeToContents)
        self.table.sortByColumn(-1, Qt.AscendingOrder)
        tensors_tab = QWidget()
        tl = QVBoxLayout(tensors_tab)
        tl.setContentsMargins(0, 6, 0, 0)
        tl.addWidget(self.filter)
        tl.addWidget(self.table, 1)
        tl.addWidget(self.count)

        self.metadata = QTableWidget(0, 2, alternatingRowColors=True, showGrid=False)
        self.metadata.setHorizontalHeaderLabels(["Key", "Value"])
        self.metadata.verticalHeader().hide()
        self.metadata.horizontalHeader().setStretchLastSection(True)
        self.metadata.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.tabs = QTabWidget(documentMode=True)
        self.tabs.addTab(tensors_tab, "Tensors")
        self.tabs.addTab(self.metadata, "Metadata")

        body = QWidget()
        grid = QGridLayout(body)
        grid.setContentsMargins(10, 8, 10, 6)
        grid.addWidget(self.title, 0, 0)
        grid.addWidget(self.path, 1, 0)
        grid.addWidget(self.facts, 2, 0)
        grid.addWidget(self.fit, 3, 0)
        grid.addWidget(self.tabs, 4, 0)
        grid.setRowStretch(4, 1)
        hint = QLabel("Select a checkpoint to see its tensors, metadata and whether it fits the base.",
                      objectName="Hint", wordWrap=True, alignment=Qt.AlignCenter)
        self.stack = QStackedWidget()
        self.stack.addWidget(hint)
        self.stack.addWidget(body)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.stack)
        self.entry: LibraryEntry | None = None

    def show_entry(self, entry: LibraryEntry | None, base: LibraryEntry | None = None) -> None:
        """Fill the view from ``entry`` (None: the hint); ``base`` is the library's base for the fit line."""
        self.entry = entry
        if entry is None or entry.inspection is None:
            self.stack.setCurrentIndex(0)
            self.tensors.set_infos([])
            return
        self.stack.setCurrentIndex(1)
        s = entry.inspection.summary
        self.title.setText(entry.name)
        self.path.setText(entry.path)
        arch = f"{s.architecture} · " if s.architecture else ""
        kind = "LoRA adapter (task vector)" if s.kind == "delta" else s.format
        dtypes = ", ".join(f"{k} ×{v}" for k, v in sorted(s.dtypes.items(), key=lambda kv: -kv[1]))
        self.facts.setText(f"{arch}{kind} · {human_count(s.num_params)} parameters · {human_bytes(s.num_bytes)} · "
                           f"{s.num_tensors} tensors · {s.num_layers or 'no'} layers · {dtypes}")
        self.fit.setText(self._fit_text(entry, base))
        headers = entry.inspection.headers
        self.tensors.set_infos([headers.info(n) for n in headers.names])
        self._on_filter(self.filter.text())
        rows = [*sorted(s.metadata.items()), *(("note", n) for n in s.notes)]
        self.metadata.setRowCount(len(rows))
        for r, (k, v) in enumerate(rows):
            self.metadata.setItem(r, 0, QTableWidgetItem(k))
            value = QTableWidgetItem(v if len(v) < 500 else v[:500] + " …")
            value.setToolTip(v[:4000])
            self.metadata.setItem(r, 1, value)
        self.metadata.resizeColumnToContents(0)

    @staticmethod
    def _fit_text(entry: LibraryEntry, base: LibraryEntry | None) -> str:
        def span(role: str, text: str) -> str:
            return f'<span style="color:{theme.color(role).name()}">{html.escape(text)}</span>'

        if base is None:
            return span("muted", "No base chosen: select a checkpoint and use “Use as base” to check fits.")
        if entry is base:
            return span("ok", "This is the base: the other checkpoints are checked against it.")
        if entry.compat is None:
            return span("muted", f"Checking the fit to {base.name}…")
        if entry.compat.compatible:
            differs = entry.compat.dtype_differs
            extra = f" ({len(differs)} tensors in another dtype)" if differs else ""
            return span("ok", f"✓ Fits the base {base.name}: same tensor names and shapes{extra}.")
        return span("warn", f"✗ Does not fit the base {base.name}: {entry.compat.reason()}")

    def _on_filter(self, text: str) -> None:
        self.proxy.setFilterFixedString(text.strip())
        total = self.tensors.rowCount()
        shown = self.proxy.rowCount()
        self.count.setText(f"{shown} of {total} tensors" if text.strip() else f"{total} tensors")
