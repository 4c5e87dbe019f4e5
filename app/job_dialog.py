"""A progress dialog for one long background job (the first-run demo-zoo build) that can be hidden.

The dialog is modeless: the window behind it stays usable. **Hide** closes the dialog while the job
keeps running — the Tasks panel goes on showing its progress, and the status bar says so — and
**Cancel** asks the job to stop. The dialog closes by itself when the job ends, however it ends;
what to do with the result is the caller's business (it connects to the job's own signals).
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from app.tasks_panel import EtaEstimate, progress_text
from app.workers import Job


class JobProgressDialog(QDialog):
    """Shows ``job``'s progress under an explanation ``text``; emits ``hidden`` when the user hides it."""

    hidden = Signal()

    def __init__(self, job: Job, text: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.job = job
        self.setWindowTitle(job.title)
        self.setModal(False)
        self.setWindowModality(Qt.WindowModality.NonModal)
        intro = QLabel(text)
        intro.setWordWrap(True)
        self.status = QLabel("Waiting to start…")
        self.bar = QProgressBar(maximum=1000)
        self.hide_button = QPushButton("Hide")
        self.hide_button.setToolTip("Keep working while this runs; the Tasks panel shows its progress")
        self.hide_button.clicked.connect(self.hide_to_background)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_job)
        buttons = QDialogButtonBox()
        buttons.addButton(self.hide_button, QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.addButton(self.cancel_button, QDialogButtonBox.ButtonRole.RejectRole)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.bar)
        layout.addWidget(self.status)
        layout.addWidget(buttons)
        self.setMinimumWidth(420)
        self.eta = EtaEstimate()
        job.progressed.connect(self._on_progress)
        job.stateChanged.connect(self._on_state)

    def _on_progress(self, progress) -> None:
        self.bar.setValue(int(progress.fraction * 1000))
        self.status.setText(progress_text(progress, self.eta.update(progress))
                            + (f" · {progress.message}" if progress.message else ""))

    def _on_state(self, _state: str) -> None:
        if self.job.state.finished:
            self.done(QDialog.DialogCode.Accepted)

    def hide_to_background(self) -> None:
        """Close the dialog; the job runs on."""
        self.done(QDialog.DialogCode.Accepted)
        self.hidden.emit()

    def cancel_job(self) -> None:
        self.job.cancel()
        self.cancel_button.setEnabled(False)
        self.status.setText("Cancelling…")

    def reject(self) -> None:
        """Escape or the window's close button hide the dialog; they never cancel the job."""
        self.hide_to_background()
