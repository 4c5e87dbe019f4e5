"""The window a launch shows first: the studio's frame at its saved place while the engine loads.

The studio needs the engine and the engine needs torch, whose import is most of the start-up time
(2–4 s on a 2-core machine). ``StartupWindow`` is a plain window (no torch, no engine) shown at once,
at the saved geometry, with what is loading and a busy bar that keeps moving; ``EngineLoader`` imports
torch and the studio's modules on a background thread and says when they are in, on the UI thread.
Then ``launch`` builds the studio window in the same place and closes this one. Closing it while
the engine loads quits, as closing the studio would.
"""

from __future__ import annotations

import base64
import importlib
import logging
import threading
import traceback
from pathlib import Path

from typing import Any, Callable

from PySide6.QtCore import QByteArray, QObject, Qt, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import QLabel, QMainWindow, QProgressBar, QVBoxLayout, QWidget

import engine
from app.settings import AppPaths, Settings

log = logging.getLogger(__name__)

LOGO = Path(__file__).resolve().parent.parent / "resources" / "icons" / "app" / "weightsmith-128.png"
# What the studio needs, in the order it is loaded, with the words the window shows meanwhile.
STEPS = (("PyTorch", "torch"), ("plots", "app.plotting"), ("the studio", "app.main_window"))


class EngineLoader(QObject):
    """Imports ``STEPS`` on a background thread; its signals arrive on the thread that created it."""

    stepStarted = Signal(str)  # what is loading now
    loaded = Signal()
    failed = Signal(str)  # the traceback

    def __init__(self, steps: tuple[tuple[str, str], ...] = STEPS, parent: QObject | None = None):
        super().__init__(parent)
        self.steps = steps
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        """Start importing; ``loaded`` or ``failed`` follows."""
        self.thread = threading.Thread(target=self._run, name="engine-import", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for words, module in self.steps:
                self.stepStarted.emit(words)
                importlib.import_module(module)
        except BaseException:  # noqa: BLE001 - a broken install is reported in the window, not lost on a thread
            self.failed.emit(traceback.format_exc())
        else:
            self.loaded.emit()


class StartupWindow(QMainWindow):
    """Logo, version, what is loading and a busy bar, at the studio window's saved size and place."""

    def __init__(self, settings: Settings):
        super().__init__()
        self.studio: QMainWindow | None = None  # the studio window, once built
        self.studio_args: tuple = ()  # what ``open_studio`` builds it with (``launch``)
        self.setWindowTitle("Weightsmith")
        self.resize(1500, 920)  # the studio's default size, so that a first start does not jump
        if settings.window_geometry:
            self.restoreGeometry(QByteArray(base64.b64decode(settings.window_geometry)))
        logo = QLabel(alignment=Qt.AlignmentFlag.AlignCenter)
        logo.setPixmap(QPixmap(str(LOGO)).scaled(96, 96, Qt.AspectRatioMode.KeepAspectRatio,
                                                 Qt.TransformationMode.SmoothTransformation))
        name = QLabel("Weightsmith", alignment=Qt.AlignmentFlag.AlignCenter, objectName="Title")
        font = name.font()
        font.setPointSizeF(font.pointSizeF() * 1.6)
        font.setBold(True)
        name.setFont(font)
        self.status = QLabel(f"version {engine.__version__}\nStarting…", alignment=Qt.AlignmentFlag.AlignCenter,
                             objectName="Muted")
        self.bar = QProgressBar(maximum=0, textVisible=False)  # maximum 0: busy
        self.bar.setFixedWidth(260)
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.addStretch(1)
        for widget in (logo, name, self.status):
            layout.addWidget(widget)
        layout.addWidget(self.bar, 0, Qt.AlignmentFlag.AlignHCenter)
        layout.addStretch(1)
        self.setCentralWidget(central)

    def show_step(self, words: str) -> None:
        """Say what is loading now."""
        self.status.setText(f"version {engine.__version__}\nLoading {words}…")

    def show_failure(self, text: str) -> None:
        """The engine did not load: say so in the window, with the error's last line, and stop the bar."""
        log.error("the merge engine did not load:\n%s", text)
        last = text.strip().splitlines()[-1] if text.strip() else "unknown error"
        self.status.setText(f"The merge engine did not load: {last}\nThe full error is in the log. "
                            "Reinstalling (make run) usually fixes a broken installation.")
        self.bar.setMaximum(1)
        self.bar.setValue(0)

    def open_studio(self) -> None:
        """Build and show the studio window in this one's place, then close this one (``launch``)."""
        from app.main_window import MainWindow  # imported by the loader: no wait here
        from app.startup import open_startup_project

        paths, settings, project, on_studio = self.studio_args
        if not self.isVisible():  # closed while loading: the application is quitting
            return
        window = MainWindow(paths, settings)
        if not settings.window_geometry:
            window.setGeometry(self.geometry())
        window.show()
        self.close()
        self.studio = window
        try:
            window.offer_recovery()
        except Exception:  # noqa: BLE001 - a broken autosave must never block a start
            log.exception("crash recovery failed; starting without it")
        open_startup_project(window, project)
        if on_studio is not None:
            on_studio(window)


def launch(paths: AppPaths, settings: Settings, project: str | None,
           on_studio: Callable[[Any], None] | None = None) -> StartupWindow:
    """Show the start-up window now and the studio once the engine is in: the studio takes the saved
    geometry, offers crash recovery and opens ``project`` (else the most recent one, else the demo);
    ``on_studio(window)`` is called after it is shown. Returns the start-up window (keep a reference:
    it holds the studio's)."""
    shell = StartupWindow(settings)
    shell.studio_args = (paths, settings, project, on_studio)
    loader = EngineLoader(parent=shell)
    loader.stepStarted.connect(shell.show_step)  # slots of the window: queued onto the UI thread
    loader.failed.connect(shell.show_failure)
    loader.loaded.connect(shell.open_studio)
    shell.show()
    loader.start()
    return shell
