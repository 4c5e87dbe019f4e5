"""Background jobs: results, readable failures, cancellation, and the Tasks panel rows."""

from __future__ import annotations

import threading
import time

import pytest
from PySide6.QtCore import QThread

from app.document import Document
from app.tasks_panel import TasksPanel, progress_text
from app.workers import JobManager, JobState
from engine.errors import CheckpointError
from engine.runtime import Progress


@pytest.fixture
def jobs(qtbot) -> JobManager:
    manager = JobManager()
    yield manager
    manager.cancel_all()
    manager.wait(5000)


def test_a_job_runs_off_the_ui_thread_and_reports_on_it(qtbot, jobs) -> None:
    seen: dict[str, object] = {}

    def work(progress, cancel):
        seen["worker"] = threading.get_ident()
        progress(Progress("merging", 1, 2, elapsed_s=1.0))
        return 42

    job = jobs.submit("answer", work)
    reports = []
    job.progressed.connect(lambda p: reports.append((p.fraction, QThread.currentThread())))
    with qtbot.waitSignal(job.succeeded, timeout=5000) as blocker:
        pass
    assert blocker.args == [42] and job.state is JobState.DONE
    assert seen["worker"] != threading.get_ident()
    assert reports == [(0.5, QThread.currentThread())]


def test_bad_input_fails_with_its_message_and_bugs_do_not_crash(qtbot, jobs) -> None:
    error = CheckpointError("not a readable safetensors file", path="/x/broken.safetensors")

    def bad(_p, _c):
        raise error

    def bug(_p, _c):
        raise ZeroDivisionError("oops")

    first, second = jobs.submit("bad", bad), jobs.submit("bug", bug)
    qtbot.waitUntil(lambda: first.state.finished and second.state.finished, timeout=5000)
    assert first.state is JobState.FAILED and first.error == str(error)
    assert second.state is JobState.FAILED and "ZeroDivisionError: oops" in second.error
    third = jobs.submit("after", lambda _p, _c: "still working")
    qtbot.waitUntil(lambda: third.state is JobState.DONE, timeout=5000)


def test_cancel_running_and_queued_jobs(qtbot, jobs) -> None:
    started = threading.Event()

    def slow(_p, cancel):
        started.set()
        while True:
            cancel.raise_if_cancelled()
            time.sleep(0.005)

    busy = []
    jobs.busyChanged.connect(busy.append)
    running = jobs.submit("slow", slow)
    queued = jobs.submit("never", lambda _p, _c: "ran")  # heavy jobs run one at a time
    assert started.wait(5)
    assert jobs.busy
    jobs.cancel_all()
    qtbot.waitUntil(lambda: running.state.finished and queued.state.finished, timeout=5000)
    assert running.state is JobState.CANCELLED and queued.state is JobState.CANCELLED
    assert queued.result is None and not jobs.busy
    assert busy == [True, False]


def test_tasks_panel_shows_progress_eta_and_outcome(qtbot) -> None:
    document = Document()
    jobs = document.jobs
    panel = TasksPanel(document)
    qtbot.addWidget(panel)
    gate = threading.Event()

    def work(progress, _cancel):
        progress(Progress("merging", 3, 10, elapsed_s=3.0))
        gate.wait(5)
        return None

    job = jobs.submit("Merge → out", work)
    row = panel.row_for(job)
    qtbot.waitUntil(lambda: row.bar.value() == 300, timeout=5000)
    assert row.status.text() == "merging · 30% · ETA 7.0 s"
    gate.set()
    qtbot.waitUntil(lambda: job.state is JobState.DONE, timeout=5000)
    assert row.status.text().startswith("done in")
    panel.clear_finished()
    assert panel.rows == [] and job not in jobs.jobs
    assert progress_text(Progress("merging", 0, 10)) == "merging · 0%"
