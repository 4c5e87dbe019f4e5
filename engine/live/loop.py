"""``LiveLoop``: the worker thread that drives a live session while sliders move.

Coalescing rules (newest value wins, stale work is cancelled, never queued):

- ``submit(params)`` replaces any value still waiting; the replaced values are dropped and counted
  (``applied`` counts the frames that reached the listener; a pre-empted frame's value counts as dropped).
- A new value pre-empts the *quick frame* (update the weights, score the quick subset) in flight: it is
  cancelled between batches and the newest value starts at once, so releasing a drag never waits for
  a stale value's scores. Only when no frame has reached the listener for ``frame_floor_s`` does the
  frame in flight finish first, so a continuous drag still shows a frame at least that often. In the
  streaming fallback, where a frame re-reads the checkpoints, a new value always cancels it.
- Once a value has been still for ``settle_s`` the full split is scored; a new value cancels that.
- Jobs (sweeps) run between frames; slider values that arrive meanwhile wait (only the newest), and the
  session returns to the newest value afterwards.

Events reach ``listener`` on the loop thread (a GUI forwards them to its own thread).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from engine.errors import Cancelled, EngineInputError
from engine.live.session import STREAMING, LiveReport, LiveSession
from engine.live.updaters import UpdateStats
from engine.runtime import CancelToken

log = logging.getLogger(__name__)

QUICK, FULL, ERROR = "quick", "full", "error"


@dataclass
class LiveEvent:
    """A result of the loop. ``submitted``: ``time.perf_counter()`` at the ``submit`` of this value;
    ``latency_s``: from then to this event; ``dropped``: values replaced or pre-empted before they showed."""

    kind: str
    seq: int
    params: dict[str, Any]
    report: LiveReport | None = None
    update: UpdateStats | None = None
    submitted: float = 0.0
    latency_s: float = 0.0
    dropped: int = 0
    error: str = ""


@dataclass
class LoopJob:
    """Work run on the loop thread between frames: ``fn(session, cancel)``, then ``done(result, error)``."""

    fn: Callable[[LiveSession, CancelToken], Any]
    done: Callable[[Any, BaseException | None], None]
    token: CancelToken = field(default_factory=CancelToken)

    def cancel(self) -> None:
        self.token.cancel()


@dataclass
class _Request:
    seq: int
    params: dict[str, Any]
    submitted: float
    finished: float = 0.0


class LiveLoop:
    """Runs ``session`` on its own thread; see the module docstring for the coalescing rules."""

    def __init__(self, session: LiveSession, listener: Callable[[LiveEvent], None], *, settle_s: float = 0.35,
                 evaluate: bool = True, frame_floor_s: float = 0.25):
        self.session = session
        self.listener = listener
        self.settle_s = settle_s
        self.frame_floor_s = frame_floor_s
        self._last_frame = 0.0  # when the newest quick frame reached the listener
        self.evaluate = evaluate and session.evaluator is not None
        self.submitted = self.applied = self.dropped = self.cancelled = 0
        self._seq = itertools.count(1)
        self._cond = threading.Condition()
        self._pending: _Request | None = None
        self._jobs: list[LoopJob] = []
        self._inflight: tuple[str, CancelToken] | None = None
        self._latest: _Request | None = None
        self._settled: _Request | None = None  # quick-scored, waiting for its full evaluation
        self._closed = False
        self._dropped_since_event = 0
        self._thread = threading.Thread(target=self._main, name="ws-live", daemon=True)
        self._thread.start()

    # ---- caller side -----------------------------------------------------------------------------
    def submit(self, params: dict[str, Any]) -> int:
        """Ask for ``params``; returns the value's sequence number (events carry it)."""
        with self._cond:
            req = _Request(next(self._seq), dict(params), time.perf_counter())
            self.submitted += 1
            if self._pending is not None:
                self.dropped += 1
                self._dropped_since_event += 1
            self._pending = req
            if self._inflight is not None:
                kind, token = self._inflight
                frames_flow = req.submitted - self._last_frame < self.frame_floor_s
                if kind == FULL or (kind == QUICK and (self.session.mode == STREAMING or frames_flow)):
                    token.cancel()
            self._cond.notify_all()
            return req.seq

    def run_job(self, job: LoopJob) -> LoopJob:
        """Queue ``job`` to run on the loop thread before the next frame."""
        with self._cond:
            self._jobs.append(job)
            if self._inflight is not None and self._inflight[0] == FULL:
                self._inflight[1].cancel()
            self._cond.notify_all()
        return job

    def idle(self, timeout: float = 10.0) -> bool:
        """Wait until nothing is pending or running, the full evaluation included; False on timeout."""
        end = time.perf_counter() + timeout
        with self._cond:
            while self._pending is not None or self._jobs or self._inflight is not None or self._settled is not None:
                left = end - time.perf_counter()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread (cancelling what runs) and wait for it."""
        with self._cond:
            self._closed = True
            if self._inflight is not None:
                self._inflight[1].cancel()
            for job in self._jobs:
                job.cancel()
            self._cond.notify_all()
        self._thread.join(timeout)

    # ---- loop thread -----------------------------------------------------------------------------
    def _emit(self, event: LiveEvent) -> None:
        try:
            self.listener(event)
        except Exception:  # a listener bug must not kill the loop
            log.exception("live listener failed")

    def _next(self) -> tuple[str, Any, CancelToken] | None:
        """Block until there is work: a job, the newest value, or a settled value's full evaluation."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                if self._jobs:
                    job = self._jobs.pop(0)
                    work = ("job", job, job.token)
                elif self._pending is not None:
                    work = (QUICK, self._pending, CancelToken())
                    self._pending = None
                elif self._settled is not None:
                    wait = self._settled.finished + self.settle_s - time.perf_counter()
                    if wait > 0:
                        self._cond.wait(wait)
                        continue
                    work = (FULL, self._settled, CancelToken())
                else:
                    self._cond.wait()
                    continue
                self._settled = None
                self._inflight = (work[0], work[2])
                return work

    def _main(self) -> None:
        while True:
            work = self._next()
            if work is None:
                return
            kind, item, token = work
            try:
                if kind == QUICK:
                    self._frame(item, token)
                elif kind == FULL:
                    report = self.session.evaluate(full=True, cancel=token)
                    report.references = self.session.references(full=True, cancel=token)
                    self._emit(LiveEvent(FULL, item.seq, item.params, report, submitted=item.submitted,
                                         latency_s=time.perf_counter() - item.submitted))
                else:
                    self._job(item, token)
            except Cancelled:
                with self._cond:
                    if kind == QUICK:  # a pre-empted frame: its value was superseded before it could show
                        self.dropped += 1
                        self._dropped_since_event += 1
                    else:
                        self.cancelled += 1
            except (EngineInputError, RuntimeError, ValueError) as exc:
                self._emit(LiveEvent(ERROR, getattr(item, "seq", 0), getattr(item, "params", {}), error=str(exc)))
            finally:
                with self._cond:
                    self._inflight = None
                    self._cond.notify_all()

    def _frame(self, req: _Request, token: CancelToken) -> None:
        stats = self.session.update(req.params, cancel=token)
        report = None
        if self.evaluate:
            report = self.session.evaluate(full=False, cancel=token)
            report.update = stats
            report.references = self.session.references(full=False, cancel=token)
        with self._cond:
            self.applied += 1
            dropped, self._dropped_since_event = self._dropped_since_event, 0
            req.finished = self._last_frame = time.perf_counter()
            self._latest = req
            if self.evaluate and self._pending is None:
                self._settled = req
        self._emit(LiveEvent(QUICK, req.seq, req.params, report, stats, req.submitted, req.finished - req.submitted,
                             dropped))

    def _job(self, job: LoopJob, token: CancelToken) -> None:
        result, error = None, None
        try:
            result = job.fn(self.session, token)
        except Exception as exc:  # handed to the job's owner
            error = exc
        finally:
            with self._cond:  # come back to the newest value the sliders asked for
                if self._pending is None and self._latest is not None:
                    self._pending = _Request(self._latest.seq, self._latest.params, time.perf_counter())
        job.done(result, error)
