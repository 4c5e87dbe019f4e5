"""The run history table: one row per evaluated merge, the live result pinned on top.

Columns: run number, method, parameters, one accuracy column per task, the average accuracy and the
average normalized accuracy (merged / expert). Quick (subset) results show their standard error and
are drawn muted until the full split is scored; cells are tinted by normalized accuracy so strong and
weak tasks stand out. Clicking a header sorts the runs (the live row stays on top).
"""

from __future__ import annotations

from typing import Any, Mapping

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableView, QWidget

from app import theme
from app.results import records as rec

FIXED = ("#", "Method", "Parameters")
TAIL = ("Average", "Normalized")
Index = QModelIndex | QPersistentModelIndex


class HistoryModel(QAbstractTableModel):
    """Rows: the live record (when any), then the run records. ``records`` also keeps the sweeps."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.records: list[dict[str, Any]] = []
        self.live: dict[str, Any] | None = None
        self.tasks: list[str] = []
        self._rows: list[dict[str, Any]] = []
        self._sort: tuple[int, Qt.SortOrder] = (0, Qt.DescendingOrder)

    # ---- content ---------------------------------------------------------------------------------
    def set_records(self, records: list[dict[str, Any]]) -> None:
        self.records = list(records)
        self._rebuild()

    def add(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        self._rebuild()

    def remove(self, ids: set[int]) -> None:
        self.records = [r for r in self.records if r.get("id") not in ids]
        self._rebuild()

    def set_live(self, record: dict[str, Any] | None) -> None:
        """Show (or clear) the live row; a same-shaped update only repaints the row."""
        had = self.live is not None
        self.live = record
        if had and record is not None and rec.task_names([record, *rec.runs(self.records)]) == self.tasks:
            self._rows[0] = record
            self.dataChanged.emit(self.index(0, 0), self.index(0, self.columnCount() - 1))
            return
        self._rebuild()

    def record_at(self, row: int) -> dict[str, Any] | None:
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def is_live_row(self, row: int) -> bool:
        return self.live is not None and row == 0

    def _rebuild(self) -> None:
        self.beginResetModel()
        runs = rec.runs(self.records)
        self.tasks = rec.task_names(([self.live] if self.live else []) + runs)
        column, order = self._sort
        runs = sorted(runs, key=lambda r: self._sort_key(r, column), reverse=order == Qt.DescendingOrder)
        self._rows = ([self.live] if self.live is not None else []) + runs
        self.endResetModel()

    # ---- columns ---------------------------------------------------------------------------------
    def headers(self) -> list[str]:
        return [*FIXED, *self.tasks, *TAIL]

    def _value(self, r: Mapping[str, Any], column: int) -> Any:
        """The raw value behind a cell (used for display, sorting and tests)."""
        n_fixed, n_tasks = len(FIXED), len(self.tasks)
        if column == 0:
            return r.get("id", 0)
        if column == 1:
            return rec.method_label(r.get("method", ""))
        if column == 2:
            return rec.params_summary(r.get("params", {}))
        if column < n_fixed + n_tasks:
            return rec.metric(r, self.tasks[column - n_fixed])
        key = ("accuracy", "normalized_accuracy")[column - n_fixed - n_tasks]
        value = r.get("average", {}).get(key)
        return float(value) if isinstance(value, (int, float)) else None

    def _sort_key(self, r: Mapping[str, Any], column: int) -> tuple:
        value = self._value(r, column)
        return (value is not None, value if value is not None else 0)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: N802 (Qt's name)
        return 0 if parent.isValid() else len(FIXED) + len(self.tasks) + len(TAIL)

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: N802 (Qt's name)
        return 0 if parent.isValid() else len(self._rows)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.DisplayRole) -> Any:  # noqa: N802
        if orientation != Qt.Horizontal:
            return None
        if role == Qt.DisplayRole:
            return self.headers()[section]
        if role == Qt.ToolTipRole and section >= len(FIXED):
            if section >= len(FIXED) + len(self.tasks):
                return ("Mean accuracy over the tasks" if section == len(self.headers()) - 2 else
                        "Mean of accuracy ÷ the task's own expert's accuracy")
            return f"Accuracy on {self.headers()[section]}"
        return None

    def data(self, index: Index, role: int = Qt.DisplayRole) -> Any:
        if not index.isValid():
            return None
        r = self._rows[index.row()]
        col = index.column()
        live = self.is_live_row(index.row())
        value = self._value(r, col)
        numeric = col >= len(FIXED)
        if role == Qt.DisplayRole:
            if col == 0:
                return "live" if live else str(value)
            if not numeric:
                return value
            if value is None:
                return "–"
            text = f"{value * 100:.1f}"
            if not r.get("full") and len(FIXED) <= col < len(FIXED) + len(self.tasks):
                err = rec.metric(r, self.tasks[col - len(FIXED)], "accuracy_stderr")
                if err is not None:
                    text += f" ±{err * 100:.1f}"
            return text
        if role == Qt.TextAlignmentRole:
            return int((Qt.AlignRight if numeric else Qt.AlignLeft) | Qt.AlignVCenter)
        if role == Qt.FontRole:
            font = QFont()
            font.setItalic(live)
            font.setBold(col == len(self.headers()) - 1)
            return font
        if role == Qt.ForegroundRole:
            if numeric and not r.get("full"):
                return theme.color("muted")
            if col == 0 and live:
                return theme.color("accent")
            return None
        if role == Qt.BackgroundRole and len(FIXED) <= col < len(FIXED) + len(self.tasks):
            norm = rec.metric(r, self.tasks[col - len(FIXED)], "normalized_accuracy")
            if norm is None:
                return None
            good = theme.color("ok")
            return QColor(good.red(), good.green(), good.blue(), int(10 + 70 * max(0.0, min(1.0, norm)) ** 3))
        if role == Qt.ToolTipRole:
            return self._tooltip(r, col)
        return None

    def _tooltip(self, r: Mapping[str, Any], col: int) -> str:
        scope = "full split" if r.get("full") else "quick subset"
        if len(FIXED) <= col < len(FIXED) + len(self.tasks):
            t = self.tasks[col - len(FIXED)]
            row = r.get("tasks", {}).get(t, {})
            parts = [f"{t}: {scope}, {r.get('examples', {}).get(t, '?')} examples"]
            if row.get("accuracy_stderr") is not None:
                parts.append(f"standard error ±{row['accuracy_stderr'] * 100:.2f} points")
            if row.get("expert_accuracy") is not None:
                parts.append(f"expert {row['expert_accuracy'] * 100:.1f} → normalized "
                             f"{(row.get('normalized_accuracy') or 0) * 100:.1f}")
            return "\n".join(parts)
        return f"{r.get('source', '')} · {scope} · node {r.get('node', '')} · {r.get('time', '')}\n" \
               f"{rec.params_summary(r.get('params', {}))}"

    def sort(self, column: int, order: Qt.SortOrder = Qt.AscendingOrder) -> None:
        self._sort = (column, order)
        self._rebuild()


class HistoryView(QTableView):
    """The history table with sensible column sizes and multi-row selection (the runs to compare)."""

    def __init__(self, model: HistoryModel, parent: QWidget | None = None):
        super().__init__(parent)
        self.setModel(model)
        self.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.setAlternatingRowColors(True)
        self.setSortingEnabled(True)
        self.setShowGrid(False)
        self.setWordWrap(False)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(24)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeToContents)
        header.setStretchLastSection(False)
        header.setSortIndicator(0, Qt.DescendingOrder)
        header.setHighlightSections(False)
        model.modelReset.connect(self._fit)

    def _fit(self) -> None:
        header = self.horizontalHeader()
        if self.model().columnCount() > 2:
            header.setSectionResizeMode(2, QHeaderView.Interactive)
            header.resizeSection(2, min(220, max(120, self.sizeHintForColumn(2))))

    def selected_records(self) -> list[dict[str, Any]]:
        model: HistoryModel = self.model()
        rows = sorted({i.row() for i in self.selectionModel().selectedRows()})
        return [model.record_at(r) for r in rows if model.record_at(r) is not None]
