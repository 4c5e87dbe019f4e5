"""The Log panel: the engine's and the app's log records, coloured by level, newest at the bottom.

``LogPanel.attach()`` installs a logging handler on the ``engine`` and ``app`` loggers; records from
any thread reach the panel through a queued signal. ``detach()`` removes it (the window does so on close).
"""

from __future__ import annotations

import contextlib
import html
import logging
import time

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPlainTextEdit, QToolButton, QVBoxLayout, QWidget

from app import theme

LOGGERS = ("engine", "app")
MAX_LINES = 5000


class _Bridge(QObject):
    record = Signal(int, str)


class _PanelHandler(logging.Handler):
    def __init__(self, bridge: _Bridge):
        super().__init__(logging.INFO)
        self.bridge = bridge

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(RuntimeError):  # the panel is gone (window closed while a worker logs)
            self.bridge.record.emit(record.levelno, record.getMessage())


class LogPanel(QWidget):
    """A read-only, level-coloured log view with a Clear button."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.view = QPlainTextEdit(readOnly=True, objectName="LogView")
        self.view.setMaximumBlockCount(MAX_LINES)
        self.view.setPlaceholderText("Messages from merges, inspections and evaluations appear here.")
        title = QLabel("LOG", objectName="Section")
        clear = QToolButton(toolTip="Clear the log")
        clear.setIcon(theme.icon("delete"))
        clear.clicked.connect(self.view.clear)
        header = QHBoxLayout()
        header.setContentsMargins(8, 0, 4, 0)
        header.addWidget(title)
        header.addStretch(1)
        header.addWidget(clear)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(header)
        layout.addWidget(self.view)
        self._bridge = _Bridge(self)
        self._bridge.record.connect(self.append)
        self._handler = _PanelHandler(self._bridge)

    def attach(self) -> None:
        for name in LOGGERS:
            logging.getLogger(name).addHandler(self._handler)

    def detach(self) -> None:
        for name in LOGGERS:
            logging.getLogger(name).removeHandler(self._handler)

    def append(self, level: int, message: str) -> None:
        """Add one line (time, level, message) in the level's colour."""
        role = "err" if level >= logging.ERROR else "warn" if level >= logging.WARNING else "text"
        label = logging.getLevelName(level).lower()
        stamp = time.strftime("%H:%M:%S")
        text = html.escape(message).replace("\n", "<br>&nbsp;&nbsp;")
        self.view.appendHtml(f'<span style="color:{theme.color("muted").name()}">{stamp}</span> '
                             f'<span style="color:{theme.color(role).name()}"><b>{label}</b> {text}</span>')

    def text(self) -> str:
        return self.view.toPlainText()
