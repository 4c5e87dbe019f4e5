"""The Tasks panel: one row per visible background job with a progress bar, phase, ETA and Cancel."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QFrame, QGridLayout, QHBoxLayout, QLabel, QProgressBar, QScrollArea, QToolButton,
                               QVBoxLayout, QWidget)

from app import theme
from app.formatting import format_duration
from app.document import Document
from app.workers import Job, JobState
from engine.runtime import Progress

KIND_ICONS = {"merge": "merge", "evaluate": "evaluate", "zoo": "checkpoint", "inspect": "search"}


MIN_ETA_FRACTION, MIN_ETA_SECONDS = 0.05, 2.0  # no remaining time is shown before this much of a phase
ETA_SMOOTHING = 0.3  # weight of the newest estimate


class EtaEstimate:
    """Remaining seconds of a job's current phase, fed its progress reports: None until enough of the
    phase is done, then the rate-based estimate smoothed (the previous one, counted down by the time
    since, keeps 70 %); a new phase starts afresh."""

    def __init__(self) -> None:
        self._phase: str | None = None
        self._eta: float | None = None
        self._at = 0.0

    def update(self, p: Progress) -> float | None:
        if p.phase != self._phase or p.elapsed_s < self._at:
            self._phase, self._eta = p.phase, None
        raw = p.eta_s
        if raw is None or p.fraction < MIN_ETA_FRACTION or p.elapsed_s < MIN_ETA_SECONDS or p.fraction >= 1:
            self._at = p.elapsed_s
            return None
        if self._eta is None:
            self._eta = raw
        else:
            carried = max(0.0, self._eta - (p.elapsed_s - self._at))
            self._eta = ETA_SMOOTHING * raw + (1 - ETA_SMOOTHING) * carried
        self._at = p.elapsed_s
        return self._eta


def progress_text(p: Progress, eta_s: float | None = None) -> str:
    """``merging · 42% · ETA 0:12`` for a progress report and the remaining time (``EtaEstimate``)."""
    parts = [p.phase, f"{p.fraction:.0%}"]
    if eta_s is not None and p.fraction < 1:
        parts.append(f"ETA {format_duration(eta_s)}")
    return " · ".join(parts)


class TaskRow(QFrame):
    """One job: kind icon, title, status line, progress bar and a Cancel (then Remove) button."""

    def __init__(self, job: Job, panel: "TasksPanel"):
        super().__init__(objectName="Card")
        self.job = job
        self._panel = panel
        icon = QLabel()
        icon.setPixmap(theme.icon(KIND_ICONS.get(job.kind, "tasks")).pixmap(18, 18))
        self.title = QLabel(job.title)
        self.title.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.status = QLabel("Queued", objectName="Muted")
        self.status.setAlignment(Qt.AlignRight | Qt.AlignVCenter)
        self.bar = QProgressBar(maximum=1000, textVisible=False)
        self.bar.setFixedHeight(8)
        self.button = QToolButton(toolTip="Cancel this task")
        self.button.setIcon(theme.icon("stop", "err"))
        self.button.clicked.connect(self._on_button)
        grid = QGridLayout(self)
        grid.setContentsMargins(8, 6, 6, 6)
        grid.setHorizontalSpacing(8)
        grid.setVerticalSpacing(4)
        grid.addWidget(icon, 0, 0)
        grid.addWidget(self.title, 0, 1)
        grid.addWidget(self.status, 0, 2)
        grid.addWidget(self.button, 0, 3, 2, 1)
        grid.addWidget(self.bar, 1, 0, 1, 3)
        grid.setColumnStretch(1, 1)
        self.eta = EtaEstimate()
        job.progressed.connect(self._on_progress)
        job.stateChanged.connect(self._on_state)
        self._on_state(job.state.value)

    def _on_progress(self, p: Progress) -> None:
        self.bar.setValue(int(p.fraction * 1000))
        self.status.setText(progress_text(p, self.eta.update(p)))

    def _on_state(self, state: str) -> None:
        st = JobState(state)
        if st is JobState.RUNNING:
            self.status.setText("starting…")
            self.bar.setMaximum(1000)
        elif st.finished:
            self.button.setIcon(theme.icon("close"))
            self.button.setToolTip("Remove from the list")
            if st is JobState.DONE:
                self.bar.setValue(1000)
                self.status.setText(f"done in {format_duration(self.job.elapsed_s)}")
            elif st is JobState.CANCELLED:
                self.status.setText("cancelled")
            else:
                self.status.setText("failed")
                self.status.setObjectName("Problem")
                self.status.setToolTip(self.job.error)
                self.title.setToolTip(self.job.error)
            self.status.style().polish(self.status)

    def _on_button(self) -> None:
        if self.job.state.finished:
            self._panel.remove_row(self)
        else:
            self.job.cancel()
            self.status.setText("cancelling…")


class TasksPanel(QWidget):
    """Lists the visible jobs of ``document``'s JobManager, newest at the top; opening another project
    clears the finished ones (they belong to the previous project)."""

    def __init__(self, document: Document, parent: QWidget | None = None):
        super().__init__(parent)
        self.jobs = jobs = document.jobs
        self.rows: list[TaskRow] = []
        title = QLabel("TASKS", objectName="Section")
        self.clear_button = QToolButton(text="Clear finished", toolTip="Remove finished tasks from the list")
        self.clear_button.clicked.connect(self.clear_finished)
        header = QHBoxLayout()
        header.setContentsMargins(8, 0, 4, 0)
        header.addWidget(title)
        header.addStretch(1)
        header.addWidget(self.clear_button)
        self.empty = QLabel("No tasks yet. Run the graph with F5.", objectName="Hint", alignment=Qt.AlignCenter)
        body = QWidget()
        self._list = QVBoxLayout(body)
        self._list.setContentsMargins(6, 2, 6, 6)
        self._list.setSpacing(6)
        self._list.addWidget(self.empty)
        self._list.addStretch(1)
        scroll = QScrollArea(widgetResizable=True)
        scroll.setWidget(body)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(header)
        layout.addWidget(scroll)
        jobs.jobAdded.connect(self._add)
        document.opened.connect(self.clear_finished)

    def row_for(self, job: Job) -> TaskRow | None:
        return next((r for r in self.rows if r.job is job), None)

    def _add(self, job: Job) -> None:
        if not job.visible:
            return
        row = TaskRow(job, self)
        self.rows.insert(0, row)
        self._list.insertWidget(1, row)
        self.empty.hide()

    def remove_row(self, row: TaskRow) -> None:
        self.rows.remove(row)
        self.jobs.forget(row.job)
        row.deleteLater()
        self.empty.setVisible(not self.rows)

    def clear_finished(self) -> None:
        for row in [r for r in self.rows if r.job.state.finished]:
            self.remove_row(row)
