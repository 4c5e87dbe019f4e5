"""The run history table: one row per evaluated merge, the live result on top.

Columns: run number, method, parameters, one column per task in the task's primary metric (accuracy,
perplexity…, its direction in the header: ``ppl ↓``), the average of that metric when every task shares
it, and the mean normalized score (against each task's expert, higher is better: the one average that
is fair across tasks of different metrics). Quick (subset) results show their standard error and are
drawn muted until the full split is scored; cells are tinted by normalized score so strong and weak
tasks stand out. Clicking a header sorts the runs best first in that column's direction (the live row
stays on top). The pinned reference run is marked ◆. The same model, without a live row and numbered
by time, shows the live trail (``trail=True``).
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
CELL_ROLES = frozenset((Qt.DisplayRole, Qt.TextAlignmentRole, Qt.FontRole, Qt.ForegroundRole, Qt.BackgroundRole,
                        Qt.ToolTipRole))  # the roles the history answers
SHORT = {"perplexity": "ppl", "accuracy": "acc", "accuracy_norm": "acc norm", "exact_match": "EM",
         "normalized_score": "norm", "regex_match": "regex"}
PIN = "◆"
Index = QModelIndex | QPersistentModelIndex


class HistoryModel(QAbstractTableModel):
    """Rows: the live record (when any), then the run records. ``records`` also keeps the sweeps. With
    ``trail``, the rows are numbered by their time (the live trail has no ids)."""

    def __init__(self, parent=None, *, trail: bool = False):
        super().__init__(parent)
        self.trail = trail
        self.records: list[dict[str, Any]] = []
        self.live: dict[str, Any] | None = None
        self.tasks: list[str] = []
        self.metrics: dict[str, tuple[str, bool]] = {}
        self._rows: list[dict[str, Any]] = []
        self._sort: tuple[int, Qt.SortOrder] = (0, Qt.DescendingOrder)
        self._cells: dict[tuple[int, int, int], Any] = {}  # (row, column, role) → what ``data`` returned

    # ---- content ---------------------------------------------------------------------------------
    def set_records(self, records: list[dict[str, Any]]) -> None:
        """Show ``records`` (runs and sweeps; only the runs become rows)."""
        self.records = list(records)
        self._rebuild()

    def add(self, record: dict[str, Any]) -> None:
        """Append one record."""
        self.records.append(record)
        self._rebuild()

    def remove(self, ids: set[int]) -> None:
        """Drop the records with these ids."""
        self.records = [r for r in self.records if r.get("id") not in ids]
        self._rebuild()

    def set_live(self, record: dict[str, Any] | None) -> None:
        """Show (or clear) the live row; a same-shaped update only repaints the row."""
        had = self.live is not None
        self.live = record
        if had and record is not None and rec.task_names([*rec.runs(self.records), record]) == self.tasks:
            self._rows[0] = record
            self._cells = {k: v for k, v in self._cells.items() if k[0] != 0}
            self.dataChanged.emit(self.index(0, 0), self.index(0, self.columnCount() - 1))
            return
        self._rebuild()

    def repaint(self) -> None:
        """Redraw every cell (a flag such as ``pinned`` changed on records already shown)."""
        self._cells.clear()
        if self._rows:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self._rows) - 1, self.columnCount() - 1))

    def record_at(self, row: int) -> dict[str, Any] | None:
        """The record shown in ``row`` (None outside the table)."""
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def is_live_row(self, row: int) -> bool:
        """Whether ``row`` is the live result."""
        return self.live is not None and row == 0

    def _rebuild(self) -> None:
        self.beginResetModel()
        runs = rec.runs(self.records)
        # the history's order first: the live row only adds its new tasks at the end, so that the columns
        # do not move when it appears or goes (a reopened project has none)
        self.tasks = rec.task_names(runs + ([self.live] if self.live else []))
        self.metrics = rec.task_metrics(runs + ([self.live] if self.live else []))
        column, order = self._sort
        runs = sorted(runs, key=lambda r: self._sort_key(r, column), reverse=order == Qt.DescendingOrder)
        self._rows = ([self.live] if self.live is not None else []) + runs
        self._cells.clear()
        self.endResetModel()

    # ---- columns ---------------------------------------------------------------------------------
    def headers(self) -> list[str]:
        """The column titles: a task's shows its metric and direction (``python`` / ``ppl ↓``)."""
        first = ("Time",) if self.trail else FIXED[:1]
        tasks = [f"{t}\n{self._short(t)}" for t in self.tasks]
        return [*first, *FIXED[1:], *tasks, *TAIL]

    def _short(self, task: str) -> str:
        name, higher = self.metrics.get(task, ("accuracy", True))
        return f"{SHORT.get(name, name.replace('_', ' '))} {'↑' if higher else '↓'}"

    def column_metric(self, column: int) -> tuple[str, bool] | None:
        """The metric and direction of a numeric column (None for the run number, method and parameters)."""
        n_fixed, n_tasks = len(FIXED), len(self.tasks)
        if column < n_fixed:
            return None
        if column < n_fixed + n_tasks:
            return self.metrics.get(self.tasks[column - n_fixed], ("accuracy", True))
        if column == n_fixed + n_tasks:
            shared = set(self.metrics.values())
            return shared.pop() if len(shared) == 1 else ("accuracy", True)
        return rec.NORMALIZED, True

    def _value(self, r: Mapping[str, Any], column: int) -> Any:
        """The raw value behind a cell (used for display, sorting and tests)."""
        n_fixed, n_tasks = len(FIXED), len(self.tasks)
        if column == 0:
            return r.get("time", "")[-8:] if self.trail else r.get("id", 0)
        if column == 1:
            return rec.method_label(r.get("method", ""))
        if column == 2:
            return rec.params_summary(r.get("params", {}))
        if column < n_fixed + n_tasks:
            return rec.metric(r, self.tasks[column - n_fixed])
        if column == n_fixed + n_tasks:
            common = rec.common_average(r)
            return common[1] if common is not None else None
        return rec.mean_normalized(r)[0]

    def _sort_key(self, r: Mapping[str, Any], column: int) -> tuple:
        """Sort key: numbers oriented so that descending order puts the best first."""
        value = self._value(r, column)
        metric = self.column_metric(column)
        if value is not None and metric is not None and not metric[1]:
            value = -value
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
            if section == len(FIXED) + len(self.tasks):
                return ("Mean of the tasks' metric, when every task has the same one (tasks of different "
                        "metrics are averaged only as normalized scores)")
            if section > len(FIXED) + len(self.tasks):
                return ("Mean normalized score: each task's metric against its own expert's, 100 = as good as "
                        "the expert, higher is better (over the tasks that have an expert score)")
            name, higher = self.column_metric(section)
            return (f"{name.replace('_', ' ')} on {self.tasks[section - len(FIXED)]} "
                    f"({'higher' if higher else 'lower'} is better; sorting puts the best first)")
        return None

    def data(self, index: Index, role: int = Qt.DisplayRole) -> Any:
        if not index.isValid() or role not in CELL_ROLES:
            return None
        key = (index.row(), index.column(), role)
        if key not in self._cells:  # a view asks for every role of every cell it paints, often
            self._cells[key] = self._cell(index.row(), index.column(), role)
        return self._cells[key]

    def _cell(self, row: int, col: int, role: int) -> Any:
        r = self._rows[row]
        live = self.is_live_row(row)
        numeric = col >= len(FIXED)
        if role == Qt.DisplayRole:
            value = self._value(r, col)
            if col == 0:
                return "live" if live else f"{PIN} {value}" if r.get("pinned") else str(value)
            if not numeric:
                return value
            name = self.column_metric(col)[0]
            err = None
            if not r.get("full") and len(FIXED) <= col < len(FIXED) + len(self.tasks):
                err = rec.stderr(r, self.tasks[col - len(FIXED)])
            return rec.format_value(name, value, err)
        if role == Qt.TextAlignmentRole:
            return int((Qt.AlignRight if numeric else Qt.AlignLeft) | Qt.AlignVCenter)
        if role == Qt.FontRole:
            font = QFont()
            font.setItalic(live)
            font.setBold(col == self.columnCount() - 1 or (col == 0 and bool(r.get("pinned"))))
            return font
        if role == Qt.ForegroundRole:
            if numeric and not r.get("full"):
                return theme.color("muted")
            if col == 0 and (live or r.get("pinned")):
                return theme.color("accent")
            return None
        if role == Qt.BackgroundRole and len(FIXED) <= col < len(FIXED) + len(self.tasks):
            norm = rec.metric(r, self.tasks[col - len(FIXED)], rec.NORMALIZED)
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
            name = rec.primary(r, t)
            parts = [f"{t}: {scope}, {r.get('examples', {}).get(t, '?')} examples"]
            for other in dict.fromkeys((name, *row.get("metrics", {}))):
                if other not in ("normalized_score", "normalized_accuracy") and rec.metric(r, t, other) is not None:
                    parts.append(f"{rec.metric_label(other, rec.higher_is_better(r, t, other))}: "
                                 f"{rec.format_value(other, rec.metric(r, t, other), rec.stderr(r, t, other))}")
            expert = row.get("expert_score", row.get("expert_accuracy"))
            norm = rec.metric(r, t, rec.NORMALIZED)
            if expert is not None and norm is not None:
                parts.append(f"expert {rec.format_value(name, expert)} → normalized score {norm * 100:.1f}")
            return "\n".join(parts)
        if col == len(self.headers()) - 1:
            _value, n = rec.mean_normalized(r)
            return f"mean over {n} of {len(r.get('tasks', {}))} tasks (the others have no expert score)"
        pinned = "\npinned: the bars compare against this run" if r.get("pinned") else ""
        return f"{r.get('source', '')} · {scope} · node {r.get('node', '')} · {r.get('time', '')}\n" \
               f"{rec.params_summary(r.get('params', {}))}{pinned}"

    def sort(self, column: int, order: Qt.SortOrder = Qt.AscendingOrder) -> None:
        """Sort the runs by ``column`` (descending: newest or best first); the live row stays on top."""
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
        """The records of the selected rows, in row order."""
        model: HistoryModel = self.model()
        rows = sorted({i.row() for i in self.selectionModel().selectedRows()})
        return [model.record_at(r) for r in rows if model.record_at(r) is not None]
