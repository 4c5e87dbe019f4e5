"""Unhandled exceptions: log them with their traceback and show a dialog naming the log file.

``CrashReporter.install()`` replaces ``sys.excepthook`` (exceptions on the UI thread, including those
PySide6 reports from slots) and ``threading.excepthook`` (worker threads). Either way the traceback goes
to the log first; then the UI thread shows a dialog — the error, where the log is, the traceback under
"Show Details…" — and the app keeps running, so the user can save their work. A thread's report is
queued onto the UI thread through a signal. A second error while the dialog is open is only logged.
``enable_fault_log`` makes a hard crash (segfault in a native library) leave a Python stack in the
log folder too.
"""

from __future__ import annotations

import faulthandler
import logging
import sys
import threading
import traceback
from pathlib import Path
from types import TracebackType
from typing import IO

from PySide6.QtCore import QObject, QUrl, Signal, Slot
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QApplication, QMessageBox

log = logging.getLogger(__name__)

FAULT_LOG = "faults.log"


class CrashReporter(QObject):
    """Turns unhandled exceptions into a log record plus a dialog; create it on the UI thread."""

    _report = Signal(str, str)

    def __init__(self, log_path: str | Path, parent: QObject | None = None):
        super().__init__(parent)
        self.log_path = Path(log_path)
        self._showing = False
        self._previous: tuple | None = None
        self._report.connect(self._show)

    def install(self) -> "CrashReporter":
        """Become the process's exception hooks (``uninstall`` restores the previous ones)."""
        self._previous = (sys.excepthook, threading.excepthook)
        sys.excepthook = self.excepthook
        threading.excepthook = self.thread_excepthook
        return self

    def uninstall(self) -> None:
        if self._previous is not None:
            sys.excepthook, threading.excepthook = self._previous
            self._previous = None

    def excepthook(self, exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        """``sys.excepthook``: Ctrl+C keeps Python's behaviour; anything else is logged and reported."""
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc, tb)
            return
        self.report(exc_type, exc, tb, where="the main thread")

    def thread_excepthook(self, args: threading.ExceptHookArgs) -> None:
        """``threading.excepthook``: like ``excepthook`` for an exception that ended a thread."""
        if args.exc_type is SystemExit or args.exc_value is None:
            return
        name = args.thread.name if args.thread is not None else "a worker thread"
        self.report(args.exc_type, args.exc_value, args.exc_traceback, where=f"thread '{name}'")

    def report(self, exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None, *,
               where: str) -> None:
        """Log the exception with its traceback and queue the dialog on the UI thread."""
        log.critical("unhandled exception in %s", where, exc_info=(exc_type, exc, tb))
        for handler in logging.getLogger().handlers:
            handler.flush()
        summary = f"{exc_type.__name__}: {exc}" if str(exc) else exc_type.__name__
        self._report.emit(summary, "".join(traceback.format_exception(exc_type, exc, tb)))

    @Slot(str, str)
    def _show(self, summary: str, details: str) -> None:
        if QApplication.instance() is None:
            print(details, file=sys.stderr)
            return
        if self._showing:
            return
        self._showing = True
        try:
            self.dialog(summary, details).exec()
        finally:
            self._showing = False

    def dialog(self, summary: str, details: str) -> QMessageBox:
        """The message box for one error, with a button that opens the log's folder."""
        box = QMessageBox(QMessageBox.Icon.Critical, "Weightsmith: unexpected error",
                          f"Something went wrong that Weightsmith did not expect:\n\n{summary}",
                          QMessageBox.StandardButton.Ok, QApplication.activeWindow())
        box.setInformativeText(f"The app is still running; save your work if you can. The details are in "
                               f"the log file:\n{self.log_path}\n\nPlease attach it if you report this.")
        box.setDetailedText(details)
        open_folder = box.addButton("Open Log Folder", QMessageBox.ButtonRole.ActionRole)
        open_folder.clicked.connect(
            lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.log_path.parent))))
        return box


_fault_file: IO[str] | None = None


def enable_fault_log(log_dir: str | Path) -> Path | None:
    """Dump Python's stack to ``log_dir/faults.log`` on a fatal signal; returns the path (None if unwritable)."""
    global _fault_file
    path = Path(log_dir) / FAULT_LOG
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a", encoding="utf-8")  # noqa: SIM115  (held open for the process's lifetime)
    except OSError as exc:
        log.warning("cannot open %s for crash dumps (%s)", path, exc)
        return None
    if _fault_file is not None:
        _fault_file.close()
    _fault_file = handle
    faulthandler.enable(file=handle, all_threads=True)
    return path
