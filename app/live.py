"""The live controller: one merge node of the document kept resident while its sliders move.

``LiveController`` belongs to the ``app.document.Document``. It follows the document by itself:
selecting a merge node makes it the live node (``follow_default`` picks the first merge feeding an
Evaluate node when a project opens); an edit of its inputs or of its Evaluate node reloads it; an
invalid graph around it is refused with the reason (never scored) and resumes once valid again.

``follow`` opens an engine ``LiveSession`` for the node in a background thread (streaming its inputs
onto the device), then hands it to an engine ``LiveLoop`` — the worker thread that applies parameter
values with newest-wins coalescing and cancels stale work. A slider tick arrives as the document's
``paramsChanged(node, key)`` and goes to the loop as ``set_param(node, key, value)``: the controller
keeps its own copy of the node's parameters and changes only that key (the recipe is not copied or
serialised). Every result comes back on the UI thread as ``resultReady(LiveEvent)``. Sweeps run on
the same session between frames.

The controller never blocks the UI thread: opening, merging, scoring and sweeping all happen on the
opener thread or the loop thread.
"""

from __future__ import annotations

import copy
import logging
import threading
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from PySide6.QtCore import QObject, QTimer, Signal

from engine.errors import Cancelled, EngineInputError
from engine.graph.node_kinds import MERGE, nodes_of
from engine.graph.recipe import Edge
from engine.graph.validate import validate
from engine.live import Axis, LiveLoop, LiveSession, LoopJob, SweepResult, sweep
from engine.live.evaluation import evaluate_node, split_for
from engine.runtime import CancelToken

if TYPE_CHECKING:
    from app.document import Document

log = logging.getLogger(__name__)

OFF, OPENING, LIVE, STREAMING, FAILED = "off", "opening", "live", "streaming", "failed"
REFOLLOW_MS = 300  # an input edit reloads the live node this long after the last such edit
QUICK_BUDGET_S = 0.06  # scoring time of a quick frame: the subset is sized to it once per session


class LiveController(QObject):
    """Owns the live session of one merge node of ``document`` and the loop thread that drives it.

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

    def __init__(self, document: "Document", *, device: str = "auto", settle_s: float = 0.35):
        super().__init__(document)
        self.document = document
        self.device = device
        self.settle_s = settle_s
        self.state = OFF
        self.message = ""
        self.node_id = ""
        self.split = "test"
        self.params: dict[str, Any] = {}  # the followed node's parameters, as last sent to the loop
        self.session: LiveSession | None = None
        self.loop: LiveLoop | None = None
        self._generation = 0
        self._open_cancel: CancelToken | None = None
        self._sweep: LoopJob | None = None
        self._refollow = QTimer(self, singleShot=True, interval=REFOLLOW_MS)
        self._refollow.timeout.connect(self._follow_again)
        self._after_replace = QTimer(self, singleShot=True, interval=0)
        self._after_replace.timeout.connect(self.follow_default)
        self._opened.connect(self._on_opened)
        self._event.connect(self.resultReady)
        self._swept.connect(self._on_swept)
        document.currentNodeChanged.connect(self._on_current_node)
        document.paramsChanged.connect(self._on_params_changed)
        document.edgeAdded.connect(self._on_edge_changed)
        document.edgeRemoved.connect(self._on_edge_changed)
        document.nodeRemoved.connect(self._on_node_removed)
        document.recipeReplaced.connect(self._after_replace.start)

    # ---- which node is live ----------------------------------------------------------------------
    def graph_problems(self, node_id: str) -> list[str]:
        """What makes the graph around ``node_id`` (its inputs and its Evaluate node) invalid."""
        recipe = self.document.recipe
        scope = {node_id, *recipe.upstream(node_id), evaluate_node(recipe, node_id)}
        return [f"{p.node_id}: {p.message}" if p.node_id else p.message
                for p in validate(recipe, open_files=False) if not p.node_id or p.node_id in scope]

    def follow(self, node_id: str) -> None:
        """Start tuning ``node_id`` of the document (an invalid graph around it is refused instead)."""
        problems = self.graph_problems(node_id)
        if problems:  # an invalid graph is never scored, recorded or plotted
            self.refuse(node_id, "not scored: the graph is invalid (" + "; ".join(problems[:2]) + ")")
            return
        self.stop()
        self._generation += 1
        generation = self._generation
        recipe = self.document.recipe
        self.node_id = node_id
        self.split = split_for(recipe, node_id)
        self.params = copy.deepcopy(recipe.node(node_id).params)
        self._set_state(OPENING, f"loading the inputs of '{node_id}'…")
        snapshot = recipe.copy()
        cancel = self._open_cancel = CancelToken()

        def work() -> None:
            try:
                session = LiveSession(snapshot, node_id, device=self.device, quick_budget_s=QUICK_BUDGET_S,
                                      progress=self.progressed.emit, cancel=cancel)
            except Cancelled:
                return
            except (EngineInputError, RuntimeError, ValueError, OSError) as exc:
                self._opened.emit(None, exc, generation)
                return
            self._opened.emit(session, None, generation)

        threading.Thread(target=work, name="ws-live-open", daemon=True).start()

    def follow_default(self) -> None:
        """Follow the first merge node that feeds an Evaluate node (the demo project's merge)."""
        recipe = self.document.recipe
        for nid in nodes_of(recipe, MERGE):
            if evaluate_node(recipe, nid):
                self.follow(nid)
                return
        self.stop()

    def refuse(self, node_id: str, message: str) -> None:
        """Do not tune ``node_id``: its graph is invalid (``message`` says why); nothing is scored meanwhile."""
        self.stop()
        self.node_id = node_id
        self._set_state(FAILED, message)

    def _follow_again(self) -> None:
        if self.node_id in self.document.recipe.nodes:
            self.follow(self.node_id)
        else:
            self.follow_default()

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
        self.loop.submit(self.params)  # the values set while the inputs were loading

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

    # ---- following the document ------------------------------------------------------------------
    def _on_current_node(self, node_id: str) -> None:
        if node_id != self.node_id and node_id in nodes_of(self.document.recipe, MERGE):
            self.follow(node_id)

    def _on_params_changed(self, node_id: str, key: str) -> None:
        recipe = self.document.recipe
        followed = self.node_id
        if followed not in recipe.nodes:
            return
        if node_id == followed:
            problems = self.graph_problems(followed)
            if problems:
                self.refuse(followed, "not scored: the graph is invalid (" + "; ".join(problems[:2]) + ")")
            elif self.loop is None and self.state == FAILED:
                self.follow(followed)  # valid again: resume
            elif key:
                self.set_param(followed, key, recipe.nodes[followed].params[key])
            else:
                self.set_params(recipe.nodes[followed].params)
        elif node_id in (*recipe.upstream(followed), evaluate_node(recipe, followed)):
            self._refollow.start()  # an input or the task suite changed: reload

    def _on_edge_changed(self, edge: Edge) -> None:
        recipe = self.document.recipe
        followed = self.node_id
        if followed in recipe.nodes and (followed in (edge.dst, edge.src) or edge.dst in recipe.upstream(followed)):
            self._refollow.start()

    def _on_node_removed(self, node_id: str) -> None:
        if node_id == self.node_id:
            self._refollow.start()

    # ---- values ----------------------------------------------------------------------------------
    def set_param(self, node_id: str, key: str, value: Any) -> int:
        """One parameter of the followed node changed (a slider tick): send the node's parameters with
        ``key`` set to ``value`` to the loop; returns the value's number (0 while the inputs load, or
        for another node)."""
        if node_id != self.node_id:
            return 0
        self.params[key] = copy.deepcopy(value)
        return self.loop.submit(self.params) if self.loop is not None else 0

    def set_params(self, params: Mapping[str, Any]) -> int:
        """All the followed node's parameters changed (a method switch, a restored run); returns the
        value's number (0 while the inputs load)."""
        self.params = copy.deepcopy(dict(params))
        return self.loop.submit(self.params) if self.loop is not None else 0

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
        """Cancel the running sweep, if any."""
        if self._sweep is not None:
            self._sweep.cancel()

    def _on_swept(self, result: SweepResult | None, error: BaseException | None) -> None:
        self._sweep = None
        if error is None:
            self.sweepFinished.emit(result)
        elif not isinstance(error, Cancelled):
            self.sweepFailed.emit(str(error))
