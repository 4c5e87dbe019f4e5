"""The live loop's coalescing (newest value wins, stale work cancelled, never queued) and sweeps."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from zoo_helpers import reduced_zoo, single_thread

from engine.errors import Cancelled
from engine.graph import Recipe
from engine.live import FULL, QUICK, Axis, LiveLoop, LiveSession, LoopJob, linspace, sweep
from engine.live.session import RESIDENT, LiveReport
from engine.live.updaters import UpdateStats


class SlowSession:
    """Stands in for a LiveSession: a frame takes ``frame_s``; a full evaluation polls its cancel token."""

    def __init__(self, frame_s: float = 0.03, full_s: float = 0.5):
        self.mode = RESIDENT
        self.evaluator = object()
        self.frame_s, self.full_s = frame_s, full_s
        self.applied: list[dict] = []
        self.full_started = threading.Event()

    def update(self, params, cancel=None):
        time.sleep(self.frame_s)
        self.applied.append(dict(params))
        return UpdateStats(1, scaled=1, ops=1)

    def evaluate(self, *, full=False, cancel=None):
        if full:
            self.full_started.set()
            end = time.perf_counter() + self.full_s
            while time.perf_counter() < end:
                if cancel is not None:
                    cancel.raise_if_cancelled()
                time.sleep(0.005)
        return LiveReport(dict(self.applied[-1]), full, {"t": {"accuracy": 0.5}}, {"accuracy": 0.5}, {"t": 10}, 0.0)

    def references(self, *, full=False, cancel=None):
        return {}


def collect(session, **kw):
    events = []
    loop = LiveLoop(session, events.append, **kw)
    return loop, events


def test_newest_value_wins_and_stale_values_are_dropped():
    session = SlowSession(frame_s=0.03)
    loop, events = collect(session, settle_s=0.05)
    try:
        for i in range(40):  # a drag at ~500 events per second
            loop.submit({"lambda": i / 40})
            time.sleep(0.002)
        assert loop.idle(10)
    finally:
        loop.close()
    quick = [e for e in events if e.kind == QUICK]
    assert session.applied[-1] == {"lambda": 39 / 40}  # the newest value was applied
    assert len(session.applied) < 40 and loop.dropped == 40 - len(session.applied)  # never queued
    assert [e.seq for e in quick] == sorted(e.seq for e in quick)  # results come in order
    assert sum(e.dropped for e in quick) == loop.dropped
    full = [e for e in events if e.kind == FULL]
    assert len(full) == 1 and full[0].params == {"lambda": 39 / 40}  # the full split only for the settled value


def test_a_new_value_cancels_the_full_evaluation():
    session = SlowSession(frame_s=0.0, full_s=5.0)
    loop, events = collect(session, settle_s=0.01)
    try:
        loop.submit({"lambda": 0.1})
        assert session.full_started.wait(5)
        start = time.perf_counter()
        loop.submit({"lambda": 0.2})
        while not any(e.kind == QUICK and e.params == {"lambda": 0.2} for e in events):
            time.sleep(0.005)
            assert time.perf_counter() - start < 2, "the stale full evaluation was not cancelled"
        assert loop.cancelled >= 1
    finally:
        loop.close()
    assert not any(e.kind == FULL and e.params == {"lambda": 0.1} for e in events)


class ScoringSession(SlowSession):
    """A session whose quick scoring takes ``quick_s`` and polls its cancel token between batches."""

    def __init__(self, quick_s: float):
        super().__init__(frame_s=0.0, full_s=5.0)
        self.quick_s = quick_s

    def evaluate(self, *, full=False, cancel=None):
        if not full:
            end = time.perf_counter() + self.quick_s
            while time.perf_counter() < end:
                cancel.raise_if_cancelled()
                time.sleep(0.005)
        return super().evaluate(full=full, cancel=cancel)


def test_a_new_value_preempts_the_frame_being_scored():
    session = ScoringSession(quick_s=0.6)
    loop, events = collect(session, settle_s=30.0, frame_floor_s=0.4)
    try:
        loop.submit({"lambda": 0.1})
        while not events:
            time.sleep(0.002)
        loop.submit({"lambda": 0.2})  # starts scoring at once ...
        time.sleep(0.05)
        released = time.perf_counter()
        loop.submit({"lambda": 0.3})  # ... and is pre-empted: the drag was released here
        while not any(e.params == {"lambda": 0.3} for e in events):
            time.sleep(0.005)
        waited = time.perf_counter() - released
    finally:
        loop.close()
    assert [e.params["lambda"] for e in events if e.kind == QUICK] == [0.1, 0.3]
    assert loop.dropped == 1 and loop.cancelled == 0  # the pre-empted value counts as dropped: it never showed
    assert [e.dropped for e in events if e.kind == QUICK] == [0, 1]
    assert waited < 0.6 + 0.3, "the released value waited for the stale one's scores"


def test_a_drag_still_shows_frames_when_every_value_would_preempt():
    session = ScoringSession(quick_s=0.05)
    loop, events = collect(session, settle_s=30.0, frame_floor_s=0.2)
    try:
        start = time.perf_counter()
        i = 0
        while time.perf_counter() - start < 1.5:  # values far faster than frames
            loop.submit({"lambda": i})
            i += 1
            time.sleep(0.01)
    finally:
        loop.close()
    assert len([e for e in events if e.kind == QUICK]) >= 4


def test_jobs_run_between_frames_and_the_session_returns_to_the_newest_value():
    session = SlowSession(frame_s=0.0, full_s=0.0)
    loop, events = collect(session, settle_s=0.01)
    done = threading.Event()
    result = {}
    try:
        loop.submit({"lambda": 0.3})
        assert loop.idle(5)

        def job(s, cancel):
            s.update({"lambda": 9.0})
            return "swept"

        loop.run_job(LoopJob(job, lambda r, e: (result.update(r=r, e=e), done.set())))
        assert done.wait(5) and result == {"r": "swept", "e": None}
        assert loop.idle(5)
    finally:
        loop.close()
    assert session.applied[-1] == {"lambda": 0.3}


def test_a_cancelled_job_reports_cancellation():
    session = SlowSession()
    loop, _ = collect(session)
    done = threading.Event()
    errors = []
    try:
        def job(s, cancel):
            while True:
                cancel.raise_if_cancelled()
                time.sleep(0.005)

        handle = loop.run_job(LoopJob(job, lambda r, e: (errors.append(e), done.set())))
        time.sleep(0.05)
        handle.cancel()
        assert done.wait(5)
    finally:
        loop.close()
    assert isinstance(errors[0], Cancelled)


@pytest.fixture(scope="module")
def zoo_session():
    with single_thread():
        recipe = Recipe.load(reduced_zoo() / "demo.json")
        yield recipe, LiveSession(recipe, "merge", device="cpu")


def test_sweeps_produce_the_expected_grid(zoo_session):
    recipe, session = zoo_session
    params = dict(recipe.nodes["merge"].params)
    one = sweep(session, params, [Axis("lambda", linspace(0, 1, 3))], full=False)
    assert one.shape == (3,) and one.axes[0].values == (0.0, 0.5, 1.0)
    tasks = one.tasks
    assert set(tasks) == {t.name for t in session.evaluator.tasks}
    for i, lam in enumerate(one.axes[0].values):  # each point equals scoring that value directly
        session.update({**params, "lambda": lam})
        report = session.evaluate(full=False)
        assert [one.grids["accuracy"][t][i] for t in tasks] == [report.tasks[t]["accuracy"] for t in tasks]
        assert one.average["accuracy"][i] == pytest.approx(report.average["accuracy"])
    two = sweep(session, params, [Axis("weight:digits", (0.0, 1.0)), Axis("lambda", (0.2, 0.4, 0.6))], full=False)
    assert two.shape == (2, 3) and two.grids["normalized_accuracy"][tasks[0]].shape == (2, 3)
    session.update(params | {"weight": {"digits": 1.0}, "lambda": 0.6})
    assert two.grids["accuracy"]["digits"][1, 2] == session.evaluate(full=False).tasks["digits"]["accuracy"]
    assert np.isfinite(two.average["accuracy"]).all()
    again = type(two).from_json(two.to_json())
    assert again.shape == two.shape
    assert np.array_equal(again.grids["accuracy"]["digits"], two.grids["accuracy"]["digits"])


def test_a_sweep_may_use_another_method_than_the_current_one(zoo_session):
    recipe, session = zoo_session
    session.update({"method": "linear"})
    result = sweep(session, {"method": "ties", "density": 0.3}, [Axis("density", (0.2, 0.4))], full=False)
    assert result.shape == (2,) and session.params == {"method": "ties", "density": 0.4}
