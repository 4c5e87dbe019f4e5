"""Logging for the desktop app: a rotating file in the user's log folder, plus the terminal.

``setup_logging()`` is called once at start-up. The file (``weightsmith.log``, rotated at 2 MB, five
old files kept) is what the crash dialog and Help ▸ About point to, so a user can attach it to a bug
report. It lives in ``platformdirs.user_log_dir("weightsmith")`` — or ``$WEIGHTSMITH_HOME/logs`` when
that variable puts the app's folders in one place (tests, portable installs). Qt's own warnings and
Python warnings go to the same log.
"""

from __future__ import annotations

import logging
import os
import sys
from logging.handlers import RotatingFileHandler
from pathlib import Path

import platformdirs
from PySide6.QtCore import QtMsgType, qInstallMessageHandler

LOG_NAME = "weightsmith.log"
MAX_BYTES = 2 * 1024 * 1024
BACKUPS = 5
FORMAT = "%(asctime)s %(levelname)s [%(threadName)s] %(name)s: %(message)s"

log = logging.getLogger(__name__)


def default_log_dir() -> Path:
    """The folder of the log file: ``$WEIGHTSMITH_HOME/logs`` if set, else the platform's user log dir."""
    home = os.environ.get("WEIGHTSMITH_HOME")
    if home:
        return Path(home) / "logs"
    return Path(platformdirs.user_log_dir("weightsmith", appauthor=False))


def log_file() -> Path | None:
    """The file the root logger writes to (None before ``setup_logging``)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, RotatingFileHandler):
            return Path(handler.baseFilename)
    return None


def setup_logging(log_dir: str | Path | None = None, *, level: int = logging.INFO, console: bool = True) -> Path:
    """Send the app's and engine's log records to a rotating file (and stderr); return the file's path.

    Calling it again replaces the file handler (a new folder) instead of adding a second one. When the
    folder cannot be created (read-only home), logging goes to stderr only and the intended path is
    still returned, with a warning.
    """
    folder = Path(log_dir) if log_dir is not None else default_log_dir()
    path = folder / LOG_NAME
    root = logging.getLogger()
    root.setLevel(level)
    formatter = logging.Formatter(FORMAT)
    for handler in [h for h in root.handlers if isinstance(h, RotatingFileHandler)]:
        root.removeHandler(handler)
        handler.close()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        file_handler = RotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
    except OSError as exc:
        file_handler = None
        problem = f"cannot write the log file {path} ({exc}); logging to the terminal only"
    else:
        file_handler.setFormatter(formatter)
        root.addHandler(file_handler)
        problem = ""
    if console and sys.stderr is not None and not any(type(h) is logging.StreamHandler for h in root.handlers):
        stream = logging.StreamHandler()
        stream.setFormatter(formatter)
        root.addHandler(stream)
    logging.captureWarnings(True)
    _route_qt_messages()
    if problem:
        log.warning(problem)
    return path


def _route_qt_messages() -> None:
    """Forward Qt's debug/warning/critical messages into the ``qt`` logger."""
    qt_log = logging.getLogger("qt")
    levels = {QtMsgType.QtDebugMsg: logging.DEBUG, QtMsgType.QtInfoMsg: logging.INFO,
              QtMsgType.QtWarningMsg: logging.WARNING, QtMsgType.QtCriticalMsg: logging.ERROR,
              QtMsgType.QtFatalMsg: logging.CRITICAL}

    def handler(kind, _context, message: str) -> None:
        qt_log.log(levels.get(kind, logging.WARNING), message)

    qInstallMessageHandler(handler)
