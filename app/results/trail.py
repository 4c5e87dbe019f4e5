"""The live trail: where live tuning came to rest, kept apart from the run history.

Every time a slider rests, live tuning scores the full split; that result is an automatic point, not
a decision, so it goes to this trail (newest first, at most ``TRAIL_LIMIT`` points, for this session
only) rather than into the history. The trail folds away under the history table; its points can be
selected to compare them in the plots, kept (they then join the history) or restored (double-click).
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QToolButton, QVBoxLayout, QWidget

from app import theme
from app.results import records as rec
from app.results.history import HistoryModel, HistoryView

TRAIL_LIMIT = 50


class LiveTrail(QWidget):
    """A foldable table of the live trail. ``keepRequested(records)`` asks to file points in the history,
    ``restoreRequested(record)`` to put one back into the graph; ``selectionChanged()`` when the chosen
    points change."""

    keepRequested = Signal(list)
    restoreRequested = Signal(dict)
    selectionChanged = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._chosen: list[int] = []  # ids of the points the plots were last told about
        self.model = HistoryModel(self, trail=True)
        self.view = HistoryView(self.model)
        self.toggle = QToolButton(checkable=True, arrowType=Qt.RightArrow, autoRaise=True,
                                  toolButtonStyle=Qt.ToolButtonTextBesideIcon,
                                  toolTip="Where live tuning came to rest (scored on the full split); not in the "
                                          "history until you keep a point")
        self.toggle.toggled.connect(self.set_expanded)
        self.keep_button = QToolButton(text="Keep selected", toolTip="File the selected trail points in the history")
        self.keep_button.setIcon(theme.icon("add"))
        self.keep_button.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self.keep_button.clicked.connect(lambda: self.keepRequested.emit(self.view.selected_records()))
        self.clear_button = QToolButton(toolTip="Clear the live trail")
        self.clear_button.setIcon(theme.icon("delete"))
        self.clear_button.clicked.connect(self.clear)
        self.view.doubleClicked.connect(lambda index: self.restoreRequested.emit(self.model.record_at(index.row())))
        self.view.selectionModel().selectionChanged.connect(lambda *_: self._on_selection())
        self.model.modelReset.connect(self._on_selection)
        head = QHBoxLayout()
        head.setContentsMargins(4, 2, 4, 2)
        head.addWidget(self.toggle)
        head.addStretch(1)
        head.addWidget(self.keep_button)
        head.addWidget(self.clear_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addLayout(head)
        layout.addWidget(self.view, 1)
        self.set_expanded(False)
        self._count()

    def records(self) -> list[dict[str, Any]]:
        """The trail's points, oldest first."""
        return list(self.model.records)

    def add(self, record: dict[str, Any]) -> bool:
        """Add a settled live result (not the same run as the newest point); True when added."""
        points = self.model.records
        if points and rec.same_run(points[-1], record):
            return False
        self.model.set_records((points + [record])[-TRAIL_LIMIT:])
        self._count()
        return True

    def clear(self) -> None:
        """Forget every point."""
        self.model.set_records([])
        self._count()

    def selected(self) -> list[dict[str, Any]]:
        """The chosen points (none while the trail is folded)."""
        return self.view.selected_records() if self.is_expanded() else []

    def is_expanded(self) -> bool:
        """Whether the trail's table shows."""
        return self.toggle.isChecked()

    def set_expanded(self, on: bool) -> None:
        """Unfold (or fold) the trail's table."""
        if self.toggle.isChecked() != on:
            self.toggle.setChecked(on)  # comes back here through ``toggled``
            return
        self.toggle.setArrowType(Qt.DownArrow if on else Qt.RightArrow)
        self.view.setVisible(on)
        self.keep_button.setVisible(on)
        self.clear_button.setVisible(on)
        self._on_selection()

    def _count(self) -> None:
        self.toggle.setText(f"Live trail ({len(self.model.records)})")

    def _on_selection(self) -> None:
        """Emit ``selectionChanged`` when the chosen points changed (a point added to a folded trail, or
        a reset that selected nothing before or after, changes nothing the plots show)."""
        self.keep_button.setEnabled(bool(self.view.selected_records()))
        chosen = [id(r) for r in self.selected()]
        if chosen != self._chosen:
            self._chosen = chosen
            self.selectionChanged.emit()
