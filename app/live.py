"""The live controller: a merge node kept resident while its sliders move, results as Qt signals.

``LiveController.follow(recipe, node_id)`` opens an engine ``LiveSession`` for the node in a background
thread (streaming its inputs onto the device), then hands it to an engine ``LiveLoop`` — the worker
thread that applies parameter values with newest-wins coalescing and cancels stale work.
``set_params`` feeds slider values (from any number of events per second); every result comes back
on the UI thread as ``resultReady(LiveEvent)``. Sweeps run on the same session between frames.

The controller never blocks the UI thread: opening, merging, scoring and sweeping all happen on the
opener thread or the loop thread.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Sequence

from PySide6.QtCore import QObject, Signal

from engine.errors import Cancelled, EngineInputError
from engine.graph import Recipe
from engine.live import Axis, LiveLoop, LiveSession, LoopJob, SweepResult, sweep
from engine.runtime import CancelToken

log = logging.getLogger(__name__)

OFF, OPENING, LIVE, STREAMING, FAILED = "off", "opening", "live", "streaming", "failed"


class LiveController(QObject):
    """Owns the live session of one merge node and the loop thread that drives it.

    Signals (always delivered on the UI thread): ``stateChanged(state, message)`` with a state of
    ``off``/``opening``/``live``/``streaming``/``failed``; ``resultReady(LiveEvent)`` for quick and full
    results and errors; ``progressed(Progress)`` while opening or sweeping; ``sweepFinished(SweepResult)``
    and ``sweepFailed(message)``.
    """

    stateChanged = Signal(str, str)
    resultReady = Signal(object)
    progressed = Signal(object)
    sweepFinished = Signal(object)
    sweepFailed = Signal(str)

    _opened = Signal(object, object, int)  # session or None, error or None, generation
    _event = Signal(object)
    _swept = Signal(object, object)

    def __init__(self, parent: QObject | None = None, *, device: str = "auto", settle_s: float = 0.35):
        super().__init__(parent)
        self.device = device
        self.settle_s = settle_s
        self.state = OFF
        self.message = ""
        self.node_id = ""
        self.session: LiveSession | None = None
        self.loop: LiveLoop | None = None
        self._generation = 0
        self._open_cancel: CancelToken | None = None
        self._waiting: dict[str, Any] | None = None
        self._sweep: LoopJob | None = None
        self._opened.connect(self._on_opened)
        self._event.connect(self.resultReady)
        self._swept.connect(self._on_swept)

    # ---- following a node ------------------------------------------------------------------------
    def follow(self, recipe: Recipe, node_id: str) -> None:
        """Start tuning ``node_id`` of ``recipe`` (a snapshot is taken: later edits come through set_params)."""
        self.stop()
        self._generation += 1
        generation = self._generation
        self.node_id = node_id
        self._waiting = dict(recipe.node(node_id).params)
        self._set_state(OPENING, f"loading the inputs of '{node_id}'…")
        snapshot = recipe.copy()
        cancel = self._open_cancel = CancelToken()

        def work() -> None:
            try:
                session = LiveSession(snapshot, node_id, device=self.device, progress=self.progressed.emit,
                                      cancel=cancel)
            except Cancelled:
                return
            except (EngineInputError, RuntimeError, ValueError, OSError) as exc:
                self._opened.emit(None, exc, generation)
                return
            self._opened.emit(session, None, generation)

        threading.Thread(target=work, name="ws-live-open", daemon=True).start()

    def refuse(self, node_id: str, message: str) -> None:
        """Do not tune ``node_id``: its graph is invalid (``message`` says why); nothing is scored meanwhile."""
        self.stop()
        self.node_id = node_id
        self._set_state(FAILED, message)

    def _on_opened(self, session: LiveSession | None, error: BaseException | None, generation: int) -> None:
        if generation != self._generation:
            if session is not None:
                session.close()
            return
        if session is None:
            self._set_state(FAILED, str(error))
            return
        self.session = session
        self.loop = LiveLoop(session, self._event.emit, settle_s=self.settle_s)
        self._set_state(LIVE if session.mode == "resident" else STREAMING, session.message)
        if self._waiting is not None:
            self.loop.submit(self._waiting)
            self._waiting = None

    def stop(self) -> None:
        """Stop following (cancel what runs, free the device memory)."""
        self._generation += 1
        if self._open_cancel is not None:
            self._open_cancel.cancel()
            self._open_cancel = None
        if self.loop is not None:
            self.loop.close()
            self.loop = None
        if self.session is not None:
            self.session.close()
            self.session = None
        self._sweep = None
        if self.state != OFF:
            self._set_state(OFF, "")

    def _set_state(self, state: str, message: str) -> None:
        self.state, self.message = state, message
        self.stateChanged.emit(state, message)

    # ---- values ----------------------------------------------------------------------------------
    def set_params(self, params: dict[str, Any]) -> int:
        """Feed the followed node's parameters (call on every slider event); returns the value's number."""
        if self.loop is None:
            self._waiting = dict(params)
            return 0
        return self.loop.submit(params)

    # ---- sweeps ----------------------------------------------------------------------------------
    def sweep(self, params: dict[str, Any], axes: Sequence[Axis], *, full: bool = True) -> bool:
        """Sweep one or two parameters around ``params`` on the live session; False when none is open."""
        if self.loop is None or self.session is None:
            return False
        if self._sweep is not None:
            self._sweep.cancel()

        def fn(session: LiveSession, cancel: CancelToken) -> SweepResult:
            return sweep(session, params, axes, full=full, cancel=cancel, progress=self.progressed.emit)

        self._sweep = self.loop.run_job(LoopJob(fn, lambda result, error: self._swept.emit(result, error)))
        return True

    def cancel_sweep(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()

    def _on_swept(self, result: SweepResult | None, error: BaseException | None) -> None:
        self._sweep = None
        if error is None:
            self.sweepFinished.emit(result)
        elif not isinstance(error, Cancelled):
            self.sweepFailed.emit(str(error))
