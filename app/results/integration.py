"""Wires the results, live tuning and analysis views into the main window through its public attributes.

- The Results dock gets the ``ResultsPanel``; an Analysis dock is added beside it.
- Selecting a merge node makes it the live node (the first merge feeding an Evaluate node is chosen
  when a project opens); its parameter changes — every slider event the Inspector turns into a recipe
  edit — go to the ``LiveController``, which coalesces them.
- The results history lives in ``window.results_history`` (saved with the project); restoring a run
  is an undoable edit of the graph.
- "Sweep this parameter" in the Inspector opens the sweep dialog for the live node.
- The status bar shows the last slider-to-plot latency.
"""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtCore import QObject, Qt, QTimer
from PySide6.QtWidgets import QDockWidget, QLabel, QMainWindow, QWidget

from app.analysis import AnalysisPanel
from app.commands import ReplaceRecipeCommand, SetParamsCommand
from app.live import FAILED, LIVE, OFF, STREAMING, LiveController
from app.results.panel import ResultsPanel
from app.results.sweep_dialog import SweepDialog
from app.scrolling import scrollable
from engine.graph.validate import validate
from engine.live.evaluation import evaluate_node, split_for
from engine.methods import get_method

REFOLLOW_MS = 300


class ResultsIntegration(QObject):
    """The results side of the window; ``install(window)`` creates one."""

    def __init__(self, window: QMainWindow):
        super().__init__(window)
        self.window = window
        self.controller = LiveController(self, device=window.settings.device)
        self.panel = ResultsPanel(self.controller)
        self.analysis = AnalysisPanel(window.jobs)
        self._fill(window.results_container, self.panel)
        self.analysis_dock = QDockWidget("Analysis", window, objectName="AnalysisDock")
        self.analysis_dock.setWidget(scrollable(self.analysis))
        window.addDockWidget(Qt.BottomDockWidgetArea, self.analysis_dock)
        window.tabifyDockWidget(window.results_dock, self.analysis_dock)
        window.results_dock.raise_()
        self.latency = QLabel("slider → plot –")
        self.latency.setToolTip("Time from the last slider value to the redrawn results plot")
        window.statusBar().addPermanentWidget(self.latency)
        self._pending_sweep: str | None = None
        self._refollow = QTimer(self, singleShot=True, interval=REFOLLOW_MS)
        self._refollow.timeout.connect(self._follow_again)

        window.scene.nodeSelected.connect(self.on_node_selected)
        window.recipe.subscribe(self.on_recipe_event)
        self.panel.historyChanged.connect(self.save_history)
        self.panel.restoreRequested.connect(self.restore)
        self.panel.sweepRequested.connect(self.open_sweep_dialog)
        self.panel.latencyChanged.connect(lambda ms: self.latency.setText(f"slider → plot {ms:.0f} ms"))
        self.controller.progressed.connect(self.panel.show_progress)
        self.controller.stateChanged.connect(self._on_live_state)
        window.inspector.sweepRequested.connect(self.sweep_from_inspector)
        self.panel.set_records(list(window.results_history))
        self.follow_default()

    @staticmethod
    def _fill(container: QWidget, widget: QWidget) -> None:
        layout = container.layout()
        while layout.count():
            old = layout.takeAt(0).widget()
            if old is not None:
                old.hide()
                old.deleteLater()
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(widget)

    # ---- which node is live ----------------------------------------------------------------------
    def graph_problems(self, node_id: str) -> list[str]:
        """What makes the graph around ``node_id`` (its inputs and its Evaluate node) invalid."""
        recipe = self.window.recipe
        scope = {node_id, *recipe.upstream(node_id), evaluate_node(recipe, node_id)}
        return [f"{p.node_id}: {p.message}" if p.node_id else p.message
                for p in validate(recipe, open_files=False) if not p.node_id or p.node_id in scope]

    def follow(self, node_id: str) -> None:
        recipe = self.window.recipe
        problems = self.graph_problems(node_id)
        if problems:  # an invalid graph is never scored, recorded or plotted
            self.controller.refuse(node_id, "not scored: the graph is invalid (" + "; ".join(problems[:2]) + ")")
            return
        self.controller.device = self.window.settings.device
        self.panel.recipe_json = recipe.to_json()
        self.panel.split = split_for(recipe, node_id)
        self.controller.follow(recipe, node_id)
        self.analysis.set_target(recipe, node_id)

    def follow_default(self) -> None:
        """Follow the first merge node that feeds an Evaluate node (the demo project's merge)."""
        recipe = self.window.recipe
        for nid, node in recipe.nodes.items():
            if node.type == "merge" and evaluate_node(recipe, nid):
                self.follow(nid)
                return
        self.controller.stop()

    def on_node_selected(self, node_id: str) -> None:
        node = self.window.recipe.nodes.get(node_id)
        if node is not None and node.type == "merge" and node_id != self.controller.node_id:
            self.follow(node_id)

    def _follow_again(self) -> None:
        if self.controller.node_id in self.window.recipe.nodes:
            self.follow(self.controller.node_id)
        else:
            self.follow_default()

    def on_recipe_event(self, event: str, details: dict[str, Any]) -> None:
        followed = self.controller.node_id
        recipe = self.window.recipe
        if event == "reset":
            QTimer.singleShot(0, self._after_reset)
        elif followed not in recipe.nodes:
            if event == "node_removed" and details.get("node_id") == followed:
                self._refollow.start()
        elif event == "params_changed" and details.get("node_id") == followed:
            problems = self.graph_problems(followed)
            if problems:
                self.controller.refuse(followed, "not scored: the graph is invalid (" + "; ".join(problems[:2]) + ")")
            elif self.controller.loop is None and self.controller.state == FAILED:
                self.follow(followed)  # valid again: resume
            else:
                self.panel.recipe_json = recipe.to_json()
                self.controller.set_params(recipe.nodes[followed].params)
                self.analysis.refresh_params()
        elif event == "params_changed" and details.get("node_id") in (*recipe.upstream(followed),
                                                                       evaluate_node(recipe, followed)):
            self._refollow.start()  # an input or the task suite changed: reload
        elif event in ("edge_added", "edge_removed"):
            edge = details["edge"]
            if followed in (edge.dst, edge.src) or edge.dst in recipe.upstream(followed):
                self._refollow.start()

    def _after_reset(self) -> None:
        self.panel.set_records(list(self.window.results_history))
        self.follow_default()

    def _on_live_state(self, state: str, _message: str) -> None:
        """Once the inputs are resident their size is known: small models are analysed right away; a
        sweep asked for while the session was opening starts now."""
        session = self.controller.session
        if state == LIVE and session is not None and session.resident is not None:
            self.analysis.set_target(self.window.recipe, self.controller.node_id,
                                     params_per_model=session.resident.numel)
        if state in (LIVE, STREAMING) and self._pending_sweep is not None:
            path, self._pending_sweep = self._pending_sweep, None
            self.open_sweep_dialog(path)
        elif state in (OFF, FAILED):
            self._pending_sweep = None

    # ---- history ---------------------------------------------------------------------------------
    def save_history(self, records: list[dict[str, Any]]) -> None:
        self.window.results_history = records

    def restore(self, record: dict[str, Any]) -> None:
        """Put a run's parameters back on its node (or its whole recipe, if the graph changed since)."""
        recipe, node_id = self.window.recipe, record.get("node", "")
        saved = record.get("recipe") or {}
        now = sorted(json.dumps(e.to_json()) for e in recipe.input_edges(node_id)) if node_id in recipe.nodes else None
        same_inputs = now == sorted(json.dumps(e) for e in saved.get("edges", []) if e.get("to") == node_id)
        label = f"Restore run #{record.get('id', '?')}"
        if same_inputs:
            self.window.undo_stack.push(SetParamsCommand(recipe, node_id, record["params"]))
        elif saved:
            self.window.undo_stack.push(ReplaceRecipeCommand(recipe, saved, text=label))
        else:
            return
        self.window.statusBar().showMessage(f"{label}: its {record.get('method', '')} parameters are back in the graph",
                                            5000)

    # ---- sweeps ----------------------------------------------------------------------------------
    def sweep_from_inspector(self, node_id: str, path: str) -> None:
        """"Sweep this parameter" on a merge node: make it the live node if needed, then ask for the range."""
        if node_id == self.controller.node_id and self.controller.session is not None:
            self.open_sweep_dialog(path)
            return
        self._pending_sweep = path
        if node_id != self.controller.node_id:
            self.follow(node_id)
        self.window.results_dock.raise_()

    def open_sweep_dialog(self, first: str | None = None) -> bool:
        """Ask what to sweep around the live node's current parameters and start the sweep."""
        session, node_id = self.controller.session, self.controller.node_id
        if session is None or node_id not in self.window.recipe.nodes:
            self.window.statusBar().showMessage("Sweeps run on the live merge node; select one first", 5000)
            return False
        params = dict(self.window.recipe.nodes[node_id].params)
        spec = get_method(params.get("method", session.spec.name))
        dialog = SweepDialog(spec, session.keys, params, first=first, parent=self.window)
        if not dialog.exec():
            return False
        return self.controller.sweep(params, dialog.axes(), full=dialog.full())

    # ---- housekeeping ----------------------------------------------------------------------------
    def restyle(self) -> None:
        self.panel.restyle()
        self.analysis.restyle()

    def shutdown(self) -> None:
        """The window is closing for good: stop live tuning (cancel what runs, join its thread)."""
        self.controller.stop()
