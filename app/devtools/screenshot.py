"""``--screenshot``: wait until the window is idle (nothing inspecting, building, running or being scored
live), optionally select a node or start a run, save a PNG of the window (or of one dock) and quit with
exit code 0."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from PySide6.QtCore import QObject, QTimer
from PySide6.QtWidgets import QApplication, QWidget

from app.live import OPENING
from app.main_window import MainWindow
from app.workers import Job, JobState
from engine.runtime import Progress

log = logging.getLogger(__name__)

POLL_MS = 100
SETTLE_MS = 600
IDLE_TIMEOUT_S = 900


class ScreenshotTaker(QObject):
    """Drives one capture: idle → (select node) → (start a run and wait for mid-run progress) → grab."""

    def __init__(self, window: MainWindow, out: Path, *, select: str | None = None, run: bool = False,
                 part: str = "window"):
        super().__init__(window)
        self.window = window
        self.out = out
        self.select = select
        self.run = run
        self.part = part
        self.exit_code = 0
        self._started = time.monotonic()
        self._timer = QTimer(self, interval=POLL_MS)
        self._timer.timeout.connect(self._poll)

    def start(self) -> None:
        self._timer.start()

    def _idle(self) -> bool:
        """Nothing inspecting, building or running, and live tuning (when on) has shown the full split."""
        w = self.window
        live = w.document.live
        settled = live.state != OPENING and (live.loop is None or live.loop.idle(0.0))
        return not w.jobs.active(visible_only=False) and not w.library.pending and settled

    def _poll(self) -> None:
        if time.monotonic() - self._started > IDLE_TIMEOUT_S:
            log.error("the window did not become idle in %d s; capturing anyway", IDLE_TIMEOUT_S)
        elif not self._idle():
            return
        self._timer.stop()
        if self.part == "inspector":  # the inspector gets the window's full height
            self.window.tasks_dock.hide()
            self.window.results_dock.hide()
        if self.select:
            self.window.scene.select_node(self.select)
        if self.run:
            job = self.window.run_graph()
            if job is None:
                self.exit_code = 1
                self._finish()
                return
            job.progressed.connect(self._on_progress)
            job.stateChanged.connect(lambda _s: self._on_run_state(job))
            return
        QTimer.singleShot(SETTLE_MS, self._grab)

    def _on_run_state(self, job: Job) -> None:
        """The run ended before it could be caught half-way: capture how it ended."""
        if job.state.finished:
            if job.state is not JobState.DONE:
                log.error("the run did not finish: %s", job.error or job.state.value)
                self.exit_code = 1
            self._grab()

    def _on_progress(self, p: Progress) -> None:
        if 0.3 <= p.fraction < 0.9 and p.phase == "merging":
            self._grab()

    def _target(self) -> QWidget:
        return {"window": self.window, "inspector": self.window.inspector_dock,
                "library": self.window.library_dock}[self.part]

    def _grab(self) -> None:
        if self.out is None:
            return
        out, self.out = self.out, None
        out.parent.mkdir(parents=True, exist_ok=True)
        if not self._target().grab().save(str(out)):
            log.error("cannot write %s", out)
            self.exit_code = 1
        else:
            log.info("screenshot saved to %s", out)
        self._finish()

    def _finish(self) -> None:
        self.window.document.shutdown(30_000)  # join the live loop's thread and the jobs before the process exits
        self.window.autosave.discard()
        QApplication.instance().exit(self.exit_code)
