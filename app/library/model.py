"""The library's table model: one row per checkpoint, with its inspection and its fit to the base.

Rows are added as *pending* while a worker inspects the file, then filled in (or removed when the
file cannot be read). One entry may be the *base*; every other entry shows whether it fits it.
Dragging rows out gives ``application/x-weightsmith-checkpoint`` (a UTF-8 JSON list of paths).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QMimeData, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QFont

from app import theme
from app.formatting import human_bytes, human_count, main_dtype
from app.library.inspect import Inspection
from engine.checkpoints import CompatReport

CHECKPOINT_MIME = "application/x-weightsmith-checkpoint"

COLUMNS = ("Name", "Size", "Dtype", "Params", "Layers", "Fits")
NAME, SIZE, DTYPE, PARAMS, LAYERS, FITS = range(len(COLUMNS))
PathRole = Qt.UserRole + 1
FormatRole = Qt.UserRole + 2  # the Name column's second line: format and architecture
Index = QModelIndex | QPersistentModelIndex


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
GENERIC_STEMS = ("model", "pytorch_model", "adapter_model", "diffusion_pytorch_model")


def display_name(path: str) -> str:
    """A checkpoint's short name: a file's stem, or its folder's name for generic file names
    (``…/llama-ft/model.safetensors`` → ``llama-ft``)."""
    p = Path(path)
    if p.suffix not in WEIGHT_SUFFIXES:
        return p.name
    return p.parent.name if p.stem in GENERIC_STEMS and p.parent.name else p.stem


def checkpoint_mime(paths: list[str]) -> QMimeData:
    """The drag payload that creates Checkpoint nodes in the graph."""
    mime = QMimeData()
    mime.setData(CHECKPOINT_MIME, json.dumps(paths).encode("utf-8"))
    return mime


@dataclass
class LibraryEntry:
    path: str
    inspection: Inspection | None = None
    compat: CompatReport | None = None

    @property
    def pending(self) -> bool:
        return self.inspection is None

    @property
    def name(self) -> str:
        return display_name(self.path)


class LibraryModel(QAbstractTableModel):
    """Library entries in the order they were added."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.entries: list[LibraryEntry] = []
        self.base_path: str | None = None

    # ---- queries -----------------------------------------------------------------------------
    def entry(self, path: str) -> LibraryEntry | None:
        return next((e for e in self.entries if e.path == path), None)

    def row_of(self, path: str) -> int:
        return next((i for i, e in enumerate(self.entries) if e.path == path), -1)

    def paths(self) -> list[str]:
        return [e.path for e in self.entries]

    def ready(self) -> list[LibraryEntry]:
        return [e for e in self.entries if not e.pending]

    def base_entry(self) -> LibraryEntry | None:
        return self.entry(self.base_path) if self.base_path else None

    # ---- edits -------------------------------------------------------------------------------
    def add_pending(self, path: str) -> bool:
        """Add a row for ``path`` while it is inspected; False when it is already listed."""
        if self.entry(path) is not None:
            return False
        row = len(self.entries)
        self.beginInsertRows(QModelIndex(), row, row)
        self.entries.append(LibraryEntry(path))
        self.endInsertRows()
        return True

    def set_inspection(self, inspection: Inspection) -> None:
        row = self.row_of(inspection.path)
        if row < 0:
            return
        self.entries[row].inspection = inspection
        self._changed(row)

    def remove(self, path: str) -> None:
        row = self.row_of(path)
        if row < 0:
            return
        self.beginRemoveRows(QModelIndex(), row, row)
        del self.entries[row]
        self.endRemoveRows()
        if path == self.base_path:
            self.set_base(None)

    def set_base(self, path: str | None) -> None:
        """Make ``path`` the base (None: no base); clears every fit until it is recomputed."""
        self.base_path = path
        for e in self.entries:
            e.compat = None
        if self.entries:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self.entries) - 1, len(COLUMNS) - 1))

    def set_compat(self, base_path: str, reports: dict[str, CompatReport]) -> None:
        """Store fits computed against ``base_path`` (ignored when the base has changed since)."""
        if base_path != self.base_path:
            return
        for path, report in reports.items():
            row = self.row_of(path)
            if row >= 0:
                self.entries[row].compat = report
                self._changed(row)

    def _changed(self, row: int) -> None:
        self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))

    # ---- Qt model ----------------------------------------------------------------------------
    def rowCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.entries)

    def columnCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.DisplayRole) -> Any:
        if orientation == Qt.Horizontal and role == Qt.DisplayRole:
            return COLUMNS[section]
        if orientation == Qt.Horizontal and role == Qt.TextAlignmentRole:
            return int((Qt.AlignRight if section in (SIZE, PARAMS, LAYERS) else Qt.AlignLeft) | Qt.AlignVCenter)
        return None

    def flags(self, index: Index) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.NoItemFlags
        flags = Qt.ItemIsEnabled | Qt.ItemIsSelectable
        if not self.entries[index.row()].pending:
            flags |= Qt.ItemIsDragEnabled
        return flags

    def data(self, index: Index, role: int = Qt.DisplayRole) -> Any:
        if not index.isValid():
            return None
        e = self.entries[index.row()]
        col = index.column()
        if role == PathRole:
            return e.path
        if role == FormatRole:
            return self._format(e)
        if role == Qt.DisplayRole:
            return self._text(e, col)
        if role == Qt.ToolTipRole:
            return self._tooltip(e, col)
        if role == Qt.DecorationRole and col == NAME:
            if e.path == self.base_path:
                return theme.icon("base", "warn")
            kind = e.inspection.summary.kind if e.inspection else "model"
            return theme.icon("task-vector" if kind == "delta" else "checkpoint", "muted" if e.pending else "icon")
        if role == Qt.DecorationRole and col == FITS and e.compat is not None:
            return theme.icon("check", "ok") if e.compat.compatible else theme.icon("warning", "warn")
        if role == Qt.ForegroundRole and (e.pending or col == DTYPE):
            return theme.color("muted")
        if role == Qt.FontRole and col == NAME and e.path == self.base_path:
            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.TextAlignmentRole and col in (SIZE, PARAMS, LAYERS):
            return int(Qt.AlignRight | Qt.AlignVCenter)
        return None

    def _text(self, e: LibraryEntry, col: int) -> str:
        if col == NAME:
            return e.name
        if e.pending:
            return ""
        s = e.inspection.summary
        if col == SIZE:
            return human_bytes(s.num_bytes)
        if col == DTYPE:
            return main_dtype(s.dtypes)
        if col == PARAMS:
            return human_count(s.num_params)
        if col == LAYERS:
            return str(s.num_layers) if s.num_layers else "–"
        if col == FITS:
            if e.path == self.base_path:
                return "base"
            if e.compat is None:
                return "" if self.base_path is None else "…"
            return "fits" if e.compat.compatible else "no"
        return ""

    @staticmethod
    def _format(e: LibraryEntry) -> str:
        if e.pending:
            return "inspecting…"
        s = e.inspection.summary
        fmt = "LoRA adapter" if s.kind == "delta" else s.format
        return f"{fmt} · {s.architecture}" if s.architecture else fmt

    def _tooltip(self, e: LibraryEntry, col: int) -> str:
        if col == DTYPE and e.inspection is not None:
            return "Tensors by dtype: " + ", ".join(f"{k} ×{v}" for k, v in e.inspection.summary.dtypes.items())
        if col == FITS and e.compat is not None:
            if not e.compat.compatible:
                return f"Does not fit the base: {e.compat.reason()}"
            if e.compat.vocabulary:  # rows of the embeddings differ: merged by token
                return f"Fits the base: {e.compat.vocabulary}."
            return "Same tensor names and shapes as the base."
        if col == FITS and e.path == self.base_path:
            return "The base: other checkpoints are checked against it."
        return e.path

    def mimeTypes(self) -> list[str]:
        return [CHECKPOINT_MIME]

    def mimeData(self, indexes: list[QModelIndex]) -> QMimeData:
        rows = sorted({i.row() for i in indexes})
        return checkpoint_mime([self.entries[r].path for r in rows if not self.entries[r].pending])

    def supportedDragActions(self) -> Qt.DropAction:
        return Qt.CopyAction
