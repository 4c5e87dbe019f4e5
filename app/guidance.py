"""Help for finding one's way: dismissible notices above the graph and the keyboard-shortcut list."""

from __future__ import annotations

from typing import Callable, Iterable

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QFrame, QHBoxLayout, QHeaderView, QLabel, QPushButton,
                               QTableWidget, QTableWidgetItem, QToolButton, QVBoxLayout, QWidget)

from app import theme


class NoticeBanner(QFrame):
    """A non-modal notice with optional buttons and a close button; ``buttons`` maps label → slot."""

    def __init__(self, text: str, buttons: Iterable[tuple[str, Callable[[], None]]] = (), icon: str = "info",
                 parent: QWidget | None = None):
        super().__init__(parent, objectName="Banner")
        mark = QLabel()
        mark.setPixmap(theme.icon(icon, "accent").pixmap(18, 18))
        self.text = QLabel(text, wordWrap=True)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 6, 6)
        layout.addWidget(mark)
        layout.addWidget(self.text, 1)
        self.buttons: dict[str, QPushButton] = {}
        for label, slot in buttons:
            button = QPushButton(label)
            button.clicked.connect(lambda _c=False, s=slot: s())
            layout.addWidget(button)
            self.buttons[label] = button
        self.close_button = QToolButton(toolTip="Dismiss", autoRaise=True)
        self.close_button.setIcon(theme.icon("close"))
        self.close_button.clicked.connect(self.dismiss)
        layout.addWidget(self.close_button)

    def dismiss(self) -> None:
        self.hide()
        self.deleteLater()


def shortcut_rows(actions: Iterable[QAction]) -> list[tuple[str, str]]:
    """(command, shortcut) for every action with a shortcut, sorted by command, without repeats."""
    rows = set()
    for act in actions:
        keys = [k.toString(QKeySequence.SequenceFormat.NativeText) for k in act.shortcuts() if not k.isEmpty()]
        if keys:
            command = act.text().replace("&&", "\0").replace("&", "").replace("\0", "&").rstrip("…")
            rows.add((command, ", ".join(keys)))
    return sorted(rows)


class ShortcutsDialog(QDialog):
    """Every keyboard shortcut of ``actions``, generated from them (so it cannot go stale)."""

    def __init__(self, actions: Iterable[QAction], parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Keyboard Shortcuts")
        rows = shortcut_rows(actions)
        self.table = QTableWidget(len(rows), 2)
        self.table.setHorizontalHeaderLabels(["Command", "Shortcut"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        for r, (command, keys) in enumerate(rows):
            self.table.setItem(r, 0, QTableWidgetItem(command))
            self.table.setItem(r, 1, QTableWidgetItem(keys))
        note = QLabel("In the graph: Tab or double-click adds a node, Space+drag pans, the wheel zooms. "
                      "In the Inspector: Shift with the arrow keys or a slider drag gives fine steps; the wheel "
                      "changes a control only after a click on it.", objectName="Muted", wordWrap=True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table, 1)
        layout.addWidget(note)
        layout.addWidget(buttons)
        self.resize(460, 520)
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
