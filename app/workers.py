"""Background jobs: merges, evaluations, zoo builds and file inspection run off the UI thread.

A job wraps a plain function ``fn(progress, cancel) -> result``: ``progress`` takes an engine
``Progress`` report and ``cancel`` is the engine's ``CancelToken`` the function polls. ``JobManager``
runs it in a ``QThreadPool`` (heavy work one at a time, quick inspections beside it) and turns what
happens in the worker into queued Qt signals on the ``Job``, so every slot runs on the UI thread.
Bad input (``EngineInputError``) fails with its readable message; anything else fails too, with the
traceback in the log, and the app keeps working.
"""

from __future__ import annotations

import logging
import time
from enum import Enum
from typing import Any, Callable

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from engine.errors import Cancelled, EngineInputError
from engine.runtime import CancelToken, Progress

log = logging.getLogger(__name__)

JobFn = Callable[[Callable[[Progress], None], CancelToken], Any]


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


class Job(QObject):
    """One background task as the UI sees it: title, state, latest progress, result or error.

    Public signals fire on the UI thread: ``progressed(Progress)``, ``stateChanged(str)`` on every
    state change, and exactly one of ``succeeded(result)``, ``failed(message)``, ``cancelled()``.
    """

    progressed = Signal(object)
    stateChanged = Signal(str)
    succeeded = Signal(object)
    failed = Signal(str)
    cancelled = Signal()

    # emitted from the worker thread; queued onto this object's (UI) thread
    _started = Signal()
    _reported = Signal(object)
    _ended = Signal(str, object)

    def __init__(self, title: str, fn: JobFn, *, kind: str = "merge", visible: bool = True, heavy: bool = True):
        super().__init__()
        self.title = title
        self.kind = kind
        self.visible = visible
        self.heavy = heavy
        self.state = JobState.QUEUED
        self.progress: Progress | None = None
        self.result: Any = None
        self.error = ""
        self.token = CancelToken()
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self._fn = fn
        self._started.connect(self._on_started)
        self._reported.connect(self._on_reported)
        self._ended.connect(self._on_ended)

    @property
    def elapsed_s(self) -> float:
        if self.started_at is None:
            return 0.0
        return (self.ended_at or time.perf_counter()) - self.started_at

    def cancel(self) -> None:
        """Ask the job to stop (it stops at its next check); a queued job never starts."""
        self.token.cancel()

    # ---- worker side -------------------------------------------------------------------------
    def execute(self) -> None:
        """Run ``fn`` on the calling (worker) thread and report how it ended."""
        if self.token.cancelled:
            self._ended.emit(JobState.CANCELLED.value, None)
            return
        self._started.emit()
        try:
            result = self._fn(self._reported.emit, self.token)
            if self.token.cancelled:
                raise Cancelled("cancelled by the user")
        except Cancelled:
            self._ended.emit(JobState.CANCELLED.value, None)
        except EngineInputError as exc:
            self._ended.emit(JobState.FAILED.value, str(exc))
        except MemoryError:
            self._ended.emit(JobState.FAILED.value, "out of memory (try the CPU device or fewer models at once)")
        except Exception as exc:  # the app must keep working whatever a job hits
            log.exception("%s failed", self.title)
            self._ended.emit(JobState.FAILED.value, f"unexpected error: {type(exc).__name__}: {exc}")
        else:
            self._ended.emit(JobState.DONE.value, result)

    # ---- UI side -----------------------------------------------------------------------------
    def _set_state(self, state: JobState) -> None:
        self.state = state
        self.stateChanged.emit(state.value)

    def _on_started(self) -> None:
        self.started_at = time.perf_counter()
        self._set_state(JobState.RUNNING)

    def _on_reported(self, progress: Progress) -> None:
        if not self.state.finished:
            self.progress = progress
            self.progressed.emit(progress)

    def _on_ended(self, state: str, payload: Any) -> None:
        self.ended_at = time.perf_counter()
        if self.started_at is None:
            self.started_at = self.ended_at
        st = JobState(state)
        if st is JobState.DONE:
            self.result = payload
        elif st is JobState.FAILED:
            self.error = str(payload)
        self._set_state(st)
        if st is JobState.DONE:
            self.succeeded.emit(payload)
        elif st is JobState.FAILED:
            self.failed.emit(self.error)
        else:
            self.cancelled.emit()


class _Runnable(QRunnable):
    def __init__(self, job: Job):
        super().__init__()
        self.job = job

    def run(self) -> None:
        self.job.execute()


class JobManager(QObject):
    """Starts jobs and keeps them (for the Tasks panel) until they are cleared.

    Heavy jobs (merges, zoo builds) run one at a time in submission order; light ones (inspection)
    run on their own small pool so a long merge never delays the library.
    """

    jobAdded = Signal(object)
    jobFinished = Signal(object)
    busyChanged = Signal(bool)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._heavy = QThreadPool(self)
        self._heavy.setMaxThreadCount(1)
        self._light = QThreadPool(self)
        self._light.setMaxThreadCount(2)
        self.jobs: list[Job] = []

    def submit(self, title: str, fn: JobFn, *, kind: str = "merge", visible: bool = True, heavy: bool = True) -> Job:
        """Queue ``fn`` as a job and return it (connect to its signals right away)."""
        job = Job(title, fn, kind=kind, visible=visible, heavy=heavy)
        was_busy = self.busy
        self.jobs.append(job)
        job.stateChanged.connect(self._on_job_state)  # a bound slot: dropped by Qt if the manager is destroyed
        self.jobAdded.emit(job)
        (self._heavy if heavy else self._light).start(_Runnable(job))
        if not was_busy and self.busy:
            self.busyChanged.emit(True)
        return job

    def active(self, *, visible_only: bool = True) -> list[Job]:
        """Jobs queued or running (by default only those the Tasks panel shows)."""
        return [j for j in self.jobs if not j.state.finished and (j.visible or not visible_only)]

    @property
    def busy(self) -> bool:
        """Whether any visible job is queued or running."""
        return bool(self.active())

    def cancel_all(self) -> None:
        for job in self.active(visible_only=False):
            job.cancel()

    def forget(self, job: Job) -> None:
        """Drop a finished job from the list."""
        if job.state.finished and job in self.jobs:
            self.jobs.remove(job)

    def wait(self, timeout_ms: int = -1) -> bool:
        """Block until every job has ended (used at exit, after ``cancel_all``)."""
        return self._heavy.waitForDone(timeout_ms) and self._light.waitForDone(timeout_ms)

    def _on_job_state(self, _state: object) -> None:
        self._on_state(self.sender())

    def _on_state(self, job: Job) -> None:
        if not isinstance(job, Job) or not job.state.finished:
            return
        if not job.visible:
            self.jobs.remove(job)
        self.jobFinished.emit(job)
        if not self.busy and job.visible:
            self.busyChanged.emit(False)
