"""The Results panel: live status, the run history, the live trail, and the comparison plots side by side.

The panel takes the ``app.document.Document``. Live results arrive from its ``LiveController``: every
quick frame updates the *live* row on top of the history and moves the live bars/radar in place; once
a value settles and the full split is scored, the point joins the *live trail* (``LiveTrail``), not
the history. The history (the document's ``results``, saved with the project) grows only by decision:
Keep (the live result or trail points), Run, and sweeps. A filed run keeps the recipe it was scored
with, taken when it is filed (never on every frame).

Every task is shown in its primary metric (accuracy, perplexity…) with that metric's direction: the
bars put each metric on its own axes and star the best run per task, the history sorts best first,
averages across tasks of different metrics are mean normalized scores. The bars compare the live
result (and any selected runs or trail points) against the experts, the base and the *pinned* run
(one history run the user pins as the reference; drawn as marks). Sweeps show as curves (one
parameter) or heatmaps (two) of the average normalized score or one task's metric; "Apply best" sets
the merge node to the best point by that metric's direction, as one undoable edit. Restoring a run is
an undoable edit of the document too. The panel measures the time from a slider value to the redrawn
plot and reports it through ``latencyChanged``; short notes for the status bar go out through
``statusMessage``.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QComboBox, QFileDialog, QHBoxLayout, QLabel, QMenu, QSplitter, QTabWidget, QToolButton,
                               QVBoxLayout, QWidget)

from app import theme
from app.commands import ReplaceRecipeCommand, SetParamsCommand
from app.document import Document
from app.live import FAILED, LIVE, OFF, OPENING, STREAMING
from app.plotting import series_color
from app.results import records as rec
from app.results.history import HistoryModel, HistoryView
from app.results.plots import Metric, ParetoPlot, RadarPlot, Series, SweepPlot, TaskBarsPlot
from app.results.sweep_dialog import PointTimings, SweepDialog
from app.results.trail import LiveTrail
from engine.errors import EngineInputError
from engine.live import FULL, QUICK, LiveEvent, SweepResult
from engine.methods import get_method
from engine.runtime import Progress

LIVE_LABEL = "live"
STATE_TEXT = {OFF: "Live tuning off", OPENING: "Preparing live session…", LIVE: "Live", STREAMING: "Live (streaming)",
              FAILED: "Live tuning unavailable"}
STATE_ROLE = {OFF: "muted", OPENING: "warn", LIVE: "ok", STREAMING: "warn", FAILED: "err"}


def _tool(icon: str, tip: str, text: str = "") -> QToolButton:
    b = QToolButton(toolTip=tip)
    b.setIcon(theme.icon(icon))
    if text:
        b.setText(text)
        b.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
    return b


class ResultsPanel(QWidget):
    """History + plots of ``document``'s runs and sweeps (its ``results``) and of its live node."""

    latencyChanged = Signal(float)
    statusMessage = Signal(str)

    def __init__(self, document: Document, parent: QWidget | None = None):
        super().__init__(parent)
        self.document = document
        self.controller = document.live
        self._timings, self._timed_session = PointTimings(), None  # what a sweep point costs, from live frames
        self.last_latency_ms: float | None = None
        self._sweeping = False
        self._pending_sweep: str | None = None
        self.model = HistoryModel(self)
        self.table = HistoryView(self.model)
        self.trail = LiveTrail()
        self.bars = TaskBarsPlot()
        self.radar = RadarPlot()
        self.sweep_plot = SweepPlot()
        self.pareto = ParetoPlot()
        self._build()
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._on_selection())
        self.table.doubleClicked.connect(self._restore_row)
        self.trail.selectionChanged.connect(self.refresh_plots)
        self.trail.keepRequested.connect(self.keep)
        self.trail.restoreRequested.connect(self.restore)
        self.model.modelReset.connect(self._refill_choices)
        self.model.modelReset.connect(self._update_pin_button)
        controller = self.controller
        controller.stateChanged.connect(self.set_live_state)
        controller.progressed.connect(self.show_progress)
        controller.resultReady.connect(self.on_live_event)
        controller.sweepFinished.connect(self.add_sweep)
        controller.sweepFailed.connect(self._on_sweep_failed)
        document.opened.connect(self._on_opened)
        self.set_live_state(controller.state, controller.message)
        self.set_records(document.results)

    # ---- layout ----------------------------------------------------------------------------------
    def _build(self) -> None:
        self.status_dot = QLabel("●")
        self.status_text = QLabel(objectName="Title")
        self.status_detail = QLabel(objectName="Muted")
        self.latency_label = QLabel(objectName="Muted")
        self.latency_label.setToolTip("Time from the last slider value to the redrawn plot")
        self.keep_button = _tool("add", "Keep the live result in the history now", "Keep")
        self.keep_button.clicked.connect(self.keep_live)
        self.sweep_button = _tool("curve", "Sweep one or two parameters of the live merge node", "Sweep…")
        self.sweep_button.clicked.connect(self._on_sweep_button)
        self.restore_button = _tool("reset", "Restore the selected run's parameters into the graph (or double-click "
                                    "the run)", "Restore")
        self.restore_button.clicked.connect(self._restore_selected)
        self.pin_button = _tool("link", "Pin the selected run: the bars compare against it", "Pin")
        self.pin_button.clicked.connect(self._on_pin_button)
        self.delete_button = _tool("delete", "Remove the selected runs from the history")
        self.delete_button.clicked.connect(self.delete_selected)
        self.export_button = _tool("save", "Export the history or the current plot", "Export")
        self.export_button.setPopupMode(QToolButton.InstantPopup)
        menu = QMenu(self.export_button)
        menu.addAction("History as CSV…", self.export_history_csv)
        menu.addAction("Current plot as PNG…", lambda: self.export_plot("png"))
        menu.addAction("Current plot as SVG…", lambda: self.export_plot("svg"))
        menu.addAction("Sweep as CSV…", self.export_sweep_csv)
        self.export_button.setMenu(menu)

        head = QHBoxLayout()
        head.setContentsMargins(10, 6, 8, 4)
        head.setSpacing(8)
        head.addWidget(self.status_dot)
        head.addWidget(self.status_text)
        head.addWidget(self.status_detail, 1)
        head.addWidget(self.latency_label)
        for b in (self.keep_button, self.sweep_button, self.restore_button, self.pin_button, self.delete_button,
                  self.export_button):
            head.addWidget(b)

        self.metric_box = QComboBox(toolTip="What the bars show per task")
        self.metric_box.addItem("Each task's metric", rec.PRIMARY)
        self.metric_box.addItem("Normalized score (vs expert)", rec.NORMALIZED)
        self.metric_box.addItem("Accuracy", "accuracy")
        self.metric_box.currentIndexChanged.connect(lambda _i: self.refresh_plots())
        self.sweep_box = QComboBox(minimumContentsLength=30, sizeAdjustPolicy=QComboBox.AdjustToContents)
        self.sweep_box.currentIndexChanged.connect(lambda _i: self._on_sweep_chosen())
        self.sweep_task_box = QComboBox(toolTip="The series the sweep shows and “Apply best” goes by")
        self.sweep_task_box.currentIndexChanged.connect(lambda _i: self._show_sweep())
        self.apply_best_button = _tool("check", "Set the merge node's parameters to this sweep's best point by the "
                                       "metric shown and its direction (one undoable edit)", "Apply best")
        self.apply_best_button.clicked.connect(self.apply_best)
        self.pareto_x, self.pareto_y = QComboBox(), QComboBox()
        for box in (self.pareto_x, self.pareto_y):
            box.currentIndexChanged.connect(lambda _i: self._show_pareto())

        self.tabs = QTabWidget(documentMode=True)
        self.tabs.addTab(self._page(self.bars, QLabel("Metric"), self.metric_box), "Per task")
        self.tabs.addTab(self._page(self.radar, QLabel("Normalized score: each task's metric against its expert's "
                                                       "(100% = as good as the expert)", objectName="Muted")),
                         "Radar")
        self.tabs.addTab(self._page(self.sweep_plot, QLabel("Sweep"), self.sweep_box, QLabel("Show"),
                                    self.sweep_task_box, self.apply_best_button), "Sweep")
        self.tabs.addTab(self._page(self.pareto, QLabel("x"), self.pareto_x, QLabel("y"), self.pareto_y), "Pareto")

        left = QWidget()
        column = QVBoxLayout(left)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(0)
        column.addWidget(self.table, 3)
        column.addWidget(self.trail, 2)
        self.trail.toggle.toggled.connect(lambda on: column.setStretchFactor(self.trail, 2 if on else 0))
        column.setStretchFactor(self.trail, 0)
        split = QSplitter(Qt.Horizontal, childrenCollapsible=False)
        split.addWidget(left)
        split.addWidget(self.tabs)
        split.setStretchFactor(0, 5)
        split.setStretchFactor(1, 6)
        split.setSizes([560, 640])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addLayout(head)
        layout.addWidget(split, 1)

    @staticmethod
    def _page(canvas: QWidget, *controls: QWidget) -> QWidget:
        page = QWidget()
        bar = QHBoxLayout()
        bar.setContentsMargins(8, 4, 8, 0)
        for c in controls:
            bar.addWidget(c)
        bar.addStretch(1)
        layout = QVBoxLayout(page)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addLayout(bar)
        layout.addWidget(canvas, 1)
        return page

    # ---- history ---------------------------------------------------------------------------------
    def set_records(self, records: list[dict[str, Any]]) -> None:
        """Show a history (replaces what is shown and the document's ``results``)."""
        self.model.set_records(list(records))
        self.document.results = self.records()
        self.refresh_plots()

    def records(self) -> list[dict[str, Any]]:
        """The history shown (runs and sweeps, oldest first)."""
        return list(self.model.records)

    def _on_opened(self) -> None:
        self.trail.clear()
        self.set_records(self.document.results)

    def _recipe_with(self, node_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """The document's recipe as JSON with ``node_id``'s parameters as a record has them (the values
        it scored)."""
        data = self.document.recipe.to_json()
        for node in data["nodes"]:
            if node["id"] == node_id:
                node["params"] = copy.deepcopy(dict(params))
        return data

    def add_run(self, record: dict[str, Any]) -> bool:
        """Add a run record unless the same run is already the newest of its node; True when added. A
        record without its recipe (a live one) gets the document's, with the record's parameters."""
        latest = [r for r in rec.runs(self.model.records) if r.get("node") == record.get("node")]
        if latest and rec.same_run(latest[-1], record):
            return False
        record = {**record, "id": rec.next_id(self.model.records)}
        if not record.get("recipe"):
            record["recipe"] = self._recipe_with(record.get("node", ""), record.get("params", {}))
        self.model.add(record)
        self.document.results = self.records()
        self.refresh_plots()
        return True

    def add_sweep(self, result: SweepResult) -> None:
        """File a finished sweep of the live node and show it."""
        self._set_sweeping(False)
        node = self.controller.node_id
        record = rec.sweep_record(result, recipe=self._recipe_with(node, result.params), node_id=node,
                                  record_id=rec.next_id(self.model.records))
        self.model.add(record)
        self.document.results = self.records()
        self.sweep_box.setCurrentIndex(self.sweep_box.count() - 1)
        self.tabs.setCurrentIndex(2)

    def delete_selected(self) -> None:
        """Remove the selected runs from the history."""
        ids = {r["id"] for r in self.table.selected_records() if r is not self.model.live and "id" in r}
        if ids:
            self.model.remove(ids)
            self.document.results = self.records()
            self.refresh_plots()

    def keep_live(self) -> bool:
        """File the live result in the history (Keep); True when it was added."""
        return self.model.live is not None and self.keep([self.model.live]) > 0

    def keep(self, records: list[dict[str, Any]]) -> int:
        """File live results (the live row, trail points) in the history; returns how many were added."""
        added = sum(self.add_run({**r, "source": "live"}) for r in records)
        if added:
            self.statusMessage.emit(f"Kept {added} live result(s) in the history")
        return added

    # ---- the pinned reference ----------------------------------------------------------------------
    def pinned(self) -> Mapping[str, Any] | None:
        """The run the bars compare against (None when none is pinned)."""
        return rec.pinned(self.model.records)

    def pin(self, record: Mapping[str, Any] | None) -> None:
        """Pin a history run as the reference (None: unpin); saved with the project."""
        wanted = record.get("id") if record is not None else None
        for r in rec.runs(self.model.records):
            if r.get("id") == wanted:
                r["pinned"] = True
            else:
                r.pop("pinned", None)
        self.model.repaint()
        self.document.results = self.records()
        self._on_selection()
        if record is not None:
            self.statusMessage.emit(f"Pinned run #{wanted}: the bars compare against it")

    def _pin_target(self) -> tuple[str, Mapping[str, Any] | None] | None:
        """What the Pin button does now: ("pin", run) for one selected unpinned run, ("unpin", None) when
        the selected run is the pinned one or nothing is selected while a run is pinned, else None."""
        chosen = [r for r in self.table.selected_records() if r is not self.model.live]
        if len(chosen) == 1 and not chosen[0].get("pinned"):
            return "pin", chosen[0]
        if self.pinned() is not None and (not chosen or any(r.get("pinned") for r in chosen)):
            return "unpin", None
        return None

    def _on_pin_button(self) -> None:
        target = self._pin_target()
        if target is not None:
            self.pin(target[1])

    def _update_pin_button(self) -> None:
        target = self._pin_target()
        self.pin_button.setEnabled(target is not None)
        self.pin_button.setText("Unpin" if target and target[0] == "unpin" else "Pin")

    def _on_selection(self) -> None:
        self._update_pin_button()
        self.refresh_plots()

    def _restore_row(self, index) -> None:
        record = self.model.record_at(index.row())
        if record is not None and record.get("params") and record is not self.model.live:
            self.restore(record)

    def _restore_selected(self) -> None:
        chosen = [r for r in self.table.selected_records() if r.get("params")]
        if chosen:
            self.restore(chosen[0])

    def restore(self, record: Mapping[str, Any]) -> None:
        """Put a run's parameters back on its node (or its whole recipe, if the graph changed since), as
        one undoable edit. A trail point (no recipe kept) restores its parameters on its node."""
        recipe, node_id = self.document.recipe, record.get("node", "")
        saved = record.get("recipe") or {}
        now = sorted(json.dumps(e.to_json()) for e in recipe.input_edges(node_id)) if node_id in recipe.nodes else None
        same_inputs = now == sorted(json.dumps(e) for e in saved.get("edges", []) if e.get("to") == node_id)
        label = f"Restore run #{record.get('id', '?')}" if record.get("id") else "Restore a live trail point"
        if (same_inputs or not saved) and node_id in recipe.nodes and record.get("params"):
            self.document.push(SetParamsCommand(self.document, node_id, record["params"]))
        elif saved:
            self.document.push(ReplaceRecipeCommand(self.document, saved, text=label))
        else:
            return
        self.statusMessage.emit(f"{label}: its {record.get('method', '')} parameters are back in the graph")

    # ---- live ------------------------------------------------------------------------------------
    def set_live_state(self, state: str, message: str) -> None:
        """Show the live controller's state; a sweep asked for while the session was opening starts now."""
        self.status_text.setText(STATE_TEXT.get(state, state))
        self.status_dot.setStyleSheet(f"color: {theme.color(STATE_ROLE.get(state, 'muted')).name()};")
        node = self.controller.node_id if state != OFF else ""
        detail = " · ".join(p for p in (node, message) if p)
        self.status_detail.setText(detail or "Select a merge node connected to an Evaluate node to tune it live.")
        self.status_detail.setToolTip(detail)
        live = state in (LIVE, STREAMING)
        self.keep_button.setEnabled(live)
        self.sweep_button.setEnabled(live)
        if state in (OFF, FAILED) and self.model.live is not None:
            self.model.set_live(None)
            self.refresh_plots()
        if live and self._pending_sweep is not None:
            path, self._pending_sweep = self._pending_sweep, None
            self.open_sweep_dialog(path)
        elif state in (OFF, FAILED):
            self._pending_sweep = None

    def show_progress(self, p: Progress) -> None:
        """Opening or sweeping progress from the controller."""
        self.status_detail.setText(f"{p.phase} {p.fraction:.0%}" + (f" · {p.message}" if p.message else ""))
        if p.phase == "sweeping":
            self._set_sweeping(p.done < p.total)

    def _set_sweeping(self, on: bool) -> None:
        self._sweeping = on
        self.sweep_button.setText("Stop sweep" if on else "Sweep…")
        self.sweep_button.setIcon(theme.icon("stop" if on else "curve", "err" if on else "icon"))
        if not on:
            self.set_live_state(self.controller.state, self.controller.message)

    def _on_sweep_button(self) -> None:
        if self._sweeping:
            self.controller.cancel_sweep()
            self._set_sweeping(False)
        else:
            self.open_sweep_dialog()

    def sweep_parameter(self, node_id: str, path: str) -> None:
        """"Sweep this parameter" on a merge node: make it the live node if needed, then ask for the
        range (once its session is open)."""
        if node_id == self.controller.node_id and self.controller.session is not None:
            self.open_sweep_dialog(path)
            return
        self._pending_sweep = path
        if node_id != self.controller.node_id:
            self.controller.follow(node_id)

    def open_sweep_dialog(self, first: str | None = None) -> bool:
        """Ask what to sweep around the live node's current parameters and start the sweep."""
        session, node_id = self.controller.session, self.controller.node_id
        if session is None or node_id not in self.document.recipe.nodes:
            self.statusMessage.emit("Sweeps run on the live merge node; select one first")
            return False
        params = dict(self.document.recipe.nodes[node_id].params)
        spec = get_method(params.get("method", session.spec.name))
        timings = self._timings.seconds_per_point() if self._timed_session is session else {}
        dialog = SweepDialog(spec, session.keys, params, first=first, seconds_per_point=timings, parent=self)
        if not dialog.exec():
            return False
        return self.controller.sweep(params, dialog.axes(), full=dialog.full())

    def _on_sweep_failed(self, message: str) -> None:
        self._set_sweeping(False)
        self.status_detail.setText(f"⚠ Sweep failed: {message}")

    def on_live_event(self, event: LiveEvent) -> None:
        """A quick or full result (or an error) from the live loop."""
        if event.kind not in (QUICK, FULL) or event.report is None:
            if event.error:
                self.status_detail.setText(f"⚠ {event.error}")
            return
        if self._timed_session is not self.controller.session:
            self._timed_session, self._timings = self.controller.session, PointTimings()
        self._timings.add(event.update.seconds if event.update else None, event.report.eval_seconds, event.kind == FULL)
        record = rec.run_record(event.report, recipe={}, node_id=self.controller.node_id, split=self.controller.split,
                                source="live", record_id=0)
        self.model.set_live(record)
        if event.kind == FULL:
            self.trail.add(record)
        # a frame moves the live artists in place; the full split (once the value rests) also moves the
        # reference marks to the full split's values (the quick frames carry the quick subset's)
        if not self._update_live_plots(record, references=event.kind == FULL):
            self.refresh_plots()
        if event.kind == QUICK:
            self._show_latency(event)

    def _show_latency(self, event: LiveEvent) -> None:
        canvas = self.current_canvas()
        drawn = time.perf_counter()
        if canvas in (self.bars, self.radar):
            canvas.flush()  # render a pending draw now, so the measured time includes drawing the new bars
        now = time.perf_counter()
        self.last_latency_ms = (now - event.submitted) * 1000
        self.latency_label.setText(f"slider → plot {self.last_latency_ms:.0f} ms")
        parts = [f"weights {event.update.seconds * 1000:.1f} ms ({event.update.kind})" if event.update else "",
                 f"scoring {event.report.eval_seconds * 1000:.0f} ms on {sum(event.report.examples.values())} examples",
                 f"drawing {(now - drawn) * 1000:.0f} ms"]
        if event.dropped:
            parts.append(f"{event.dropped} intermediate value(s) skipped")
        self.latency_label.setToolTip("Slider value → redrawn plot: " + " · ".join(p for p in parts if p))
        self.latencyChanged.emit(self.last_latency_ms)

    # ---- plots -----------------------------------------------------------------------------------
    def compared(self) -> list[dict[str, Any]]:
        """The runs the bars compare: the live result (while tuning) and the selected runs and trail
        points — or, with nothing selected, the newest run unless a run is pinned (the pinned run is a
        reference mark, not a bar, unless nothing else is there to show)."""
        live = [self.model.live] if self.model.live is not None else []
        chosen = [r for r in self.table.selected_records() + self.trail.selected()
                  if r.get("tasks") and r is not self.model.live and not r.get("pinned")]
        if chosen:
            return live + chosen
        others = [r for r in rec.runs(self.model.records) if not r.get("pinned")]
        if live:
            return live + ([] if self.pinned() is not None else others[-1:])
        pinned = self.pinned()
        return others[-2:] or ([pinned] if pinned is not None else [])

    def _label(self, r: Mapping[str, Any]) -> str:
        if r is self.model.live:
            return LIVE_LABEL
        if not r.get("id"):
            return f"trail {r.get('time', '')[-8:]}"
        return f"#{r.get('id')} {rec.method_label(r.get('method', ''))}"

    def _series(self, metric: str, runs: list[Mapping[str, Any]]) -> list[Series]:
        return [Series(self._label(r), {t: rec.metric(r, t, metric) for t in r.get("tasks", {})}, series_color(i),
                       {t: rec.stderr(r, t, metric) for t in r.get("tasks", {})}, live=r is self.model.live)
                for i, r in enumerate(runs)]

    def references(self) -> dict[str, dict[str, float]]:
        """Each task's primary metric for the base and the experts (the newest full-split ones known)."""
        return rec.references(rec.runs(self.model.records) + self.trail.records()
                              + ([self.model.live] if self.model.live else []))

    def _bar_references(self, metric: str, runs: list[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
        """The experts, the base and the pinned run in the metric the bars show."""
        refs = self.references()
        primaries = rec.task_metrics(runs)
        if metric == rec.NORMALIZED:
            out = rec.normalized_references(refs, primaries)
        else:  # the references are primary metrics: shown for the tasks whose metric the bars show
            out = {role: {t: v for t, v in per.items() if t in primaries and metric in (rec.PRIMARY, primaries[t][0])}
                   for role, per in refs.items()}
        pinned = self.pinned()
        if pinned is not None:
            out["pinned"] = {t: v for t in pinned.get("tasks", {}) if (v := rec.metric(pinned, t, metric)) is not None}
        return out

    def refresh_plots(self) -> None:
        """Redraw the bars, the radar and the Pareto view from the history, the live result and the
        selection."""
        metric = self.metric_box.currentData()
        tasks = self.model.tasks
        runs = self.compared()
        pinned = self.pinned()
        everything = runs + ([pinned] if pinned is not None else [])
        metrics = {t: Metric(*m) for t, m in rec.task_metrics(everything, metric).items()}
        label = self._label(pinned) + " (pinned)" if pinned is not None else "pinned"
        self.bars.set_data(tasks, self._series(metric, runs), self._bar_references(metric, everything), metrics,
                           pinned_label=label)
        self._refresh_radar(runs, pinned, label)
        self._show_pareto()

    def _refresh_radar(self, runs: list[dict[str, Any]], pinned: dict[str, Any] | None, label: str) -> None:
        """The radar of the compared runs' normalized scores, with the pinned run and the base as outlines."""
        radar = self._series(rec.NORMALIZED, runs)
        everything = runs + ([pinned] if pinned is not None else [])
        refs = rec.normalized_references(self.references(), rec.task_metrics(everything))
        if pinned is not None:
            radar.append(Series(label, {t: rec.metric(pinned, t, rec.NORMALIZED) for t in pinned.get("tasks", {})},
                                theme.color("warn").name(), reference=True))
        if refs.get("base"):
            radar.append(Series("base", refs["base"], theme.color("muted").name(), reference=True))
        scored = [t for t in self.model.tasks if any(s.values.get(t) is not None for s in radar)]  # with an expert
        self.radar.set_data(scored, radar)

    def _update_live_plots(self, record: dict[str, Any], references: bool = False) -> bool:
        """Move the live series (and with ``references`` the reference marks) in place; False when the
        plots need a rebuild."""
        if not any(s.live for s in self.bars.series):
            return False
        metric = self.metric_box.currentData()
        values = {t: rec.metric(record, t, metric) for t in record["tasks"]}
        errors = {t: rec.stderr(record, t, metric) for t in record["tasks"]}
        metrics = {t: Metric(*m) for t, m in rec.task_metrics([record], metric).items()}
        if set(values) != set(self.bars.tasks) or any(self.bars.metrics.get(t) != m for t, m in metrics.items()):
            return False
        marks, pinned, runs = None, self.pinned(), self.compared()
        if references:
            marks = self._bar_references(metric, runs + ([pinned] if pinned is not None else []))
        if not self.bars.update_live(LIVE_LABEL, values, errors, marks):
            return False
        if references:  # the base's outline moves too (a hidden radar only notes it)
            self._refresh_radar(runs, pinned, self._label(pinned) + " (pinned)" if pinned is not None else "pinned")
        else:
            self.radar.update_live(LIVE_LABEL, {t: rec.metric(record, t, rec.NORMALIZED) for t in record["tasks"]})
        if record.get("full"):
            self._show_pareto()
        return True

    def _refill_choices(self) -> None:
        tasks = self.model.tasks
        for box, default in ((self.pareto_x, 0), (self.pareto_y, 1)):
            current = box.currentText()
            box.blockSignals(True)
            box.clear()
            box.addItems(tasks)
            box.setCurrentIndex(tasks.index(current) if current in tasks else min(default, len(tasks) - 1))
            box.blockSignals(False)
        sweeps = rec.sweeps(self.model.records)
        current = self.sweep_box.currentData()
        self.sweep_box.blockSignals(True)
        self.sweep_box.clear()
        for s in sweeps:
            axes = " × ".join(a["path"] for a in s["sweep"]["axes"])
            self.sweep_box.addItem(f"#{s['id']} {axes} · {rec.method_label(s.get('method', ''))}", s["id"])
        index = self.sweep_box.findData(current)
        self.sweep_box.setCurrentIndex(index if index >= 0 else self.sweep_box.count() - 1)
        self.sweep_box.blockSignals(False)
        self._on_sweep_chosen()

    def current_sweep_record(self) -> Mapping[str, Any] | None:
        """The sweep record chosen in the Sweep tab."""
        sid = self.sweep_box.currentData()
        return next((s for s in rec.sweeps(self.model.records) if s["id"] == sid), None)

    def current_sweep(self) -> SweepResult | None:
        """The sweep chosen in the Sweep tab."""
        record = self.current_sweep_record()
        return SweepResult.from_json(record["sweep"]) if record is not None else None

    def _on_sweep_chosen(self) -> None:
        """A different sweep: list the series it can show (the average normalized score, each task's
        metric), then draw it."""
        result = self.current_sweep()
        current = self.sweep_task_box.currentData()
        self.sweep_task_box.blockSignals(True)
        self.sweep_task_box.clear()
        self.sweep_task_box.addItem(f"average {rec.metric_label(rec.NORMALIZED, True)}", rec.AVERAGE)
        for t in result.tasks if result is not None else []:
            self.sweep_task_box.addItem(f"{t} · {rec.metric_label(*rec.sweep_metric(result, t))}", t)
        self.sweep_task_box.setCurrentIndex(max(0, self.sweep_task_box.findData(current)))
        self.sweep_task_box.setEnabled(result is not None)
        self.sweep_task_box.blockSignals(False)
        self._show_sweep()

    def _show_sweep(self) -> None:
        result = self.current_sweep()
        self.sweep_plot.set_data(result, self.sweep_task_box.currentData() or rec.AVERAGE)
        self.apply_best_button.setEnabled(self.sweep_plot.best_point is not None)
        self._show_pareto()

    def apply_best(self) -> bool:
        """Set the swept node's parameters to the sweep's best point by the series shown and its
        direction (the parameters the sweep ran with, the swept ones at that point), as one undoable
        edit; False when there is nothing to apply."""
        record, result = self.current_sweep_record(), self.current_sweep()
        series = self.sweep_task_box.currentData() or rec.AVERAGE
        point = rec.best_point(result, series) if result is not None else None
        node_id = record.get("node", "") if record is not None else ""
        if point is None or node_id not in self.document.recipe.nodes:
            self.statusMessage.emit("No best point to apply: the sweep's node is gone or it has no scores")
            return False
        index, value = point
        try:
            params = rec.params_at(result, index, self.document.recipe.inputs(node_id, "models"))
        except EngineInputError as exc:
            self.statusMessage.emit(f"Cannot apply the best point: {exc}")
            return False
        where = ", ".join(f"{a.path} = {a.values[i]:g}" for a, i in zip(result.axes, index))
        name, _higher = rec.sweep_metric(result, series)
        command = SetParamsCommand(self.document, node_id, params)
        command.setText(f"Apply best {where}")
        self.document.push(command)
        self.statusMessage.emit(f"Applied the best point of sweep #{record['id']}: {where} "
                                f"({series} {name.replace('_', ' ')} {rec.format_value(name, value)})")
        return True

    def _show_pareto(self) -> None:
        x, y = self.pareto_x.currentText(), self.pareto_y.currentText()
        runs = [r for r in rec.runs(self.model.records) if r.get("full")]
        points = [Series(f"#{r['id']}", {t: rec.metric(r, t) for t in r.get("tasks", {})}, series_color(i))
                  for i, r in enumerate(runs)]
        metrics = rec.task_metrics(runs)
        sweep = self.current_sweep()
        trail = []
        if sweep is not None and x in sweep.tasks and y in sweep.tasks:
            gx, gy = rec.sweep_grid(sweep, x).reshape(-1), rec.sweep_grid(sweep, y).reshape(-1)
            trail = [(float(a), float(b)) for a, b in zip(gx, gy) if np.isfinite(a) and np.isfinite(b)]
            metrics = {**{t: rec.sweep_metric(sweep, t) for t in (x, y)}, **metrics}
        axes = (Metric(*metrics.get(x, ("accuracy", True))), Metric(*metrics.get(y, ("accuracy", True))))
        self.pareto.set_data(x, y, points, self.references(), trail,
                             trail_is_path=sweep is None or len(sweep.axes) == 1, metrics=axes)

    # ---- export ----------------------------------------------------------------------------------
    def current_canvas(self):
        return (self.bars, self.radar, self.sweep_plot, self.pareto)[self.tabs.currentIndex()]

    def _ask(self, title: str, name: str, filt: str) -> Path | None:
        chosen, _ = QFileDialog.getSaveFileName(self, title, str(Path.home() / name), filt)
        return Path(chosen) if chosen else None

    def export_history_csv(self, path: str | Path | None = None) -> Path | None:
        path = Path(path) if path else self._ask("Export history", "weightsmith-history.csv", "CSV (*.csv)")
        if path is not None:
            path.write_text(rec.to_csv(self.model.records), encoding="utf-8")
        return path

    def export_sweep_csv(self, path: str | Path | None = None) -> Path | None:
        result = self.current_sweep()
        if result is None:
            return None
        path = Path(path) if path else self._ask("Export sweep", "weightsmith-sweep.csv", "CSV (*.csv)")
        if path is not None:
            path.write_text(rec.sweep_csv(result), encoding="utf-8")
        return path

    def export_plot(self, fmt: str, path: str | Path | None = None) -> Path | None:
        path = Path(path) if path else self._ask("Export plot", f"weightsmith-plot.{fmt}", f"{fmt.upper()} (*.{fmt})")
        return self.current_canvas().export(path) if path is not None else None

    def restyle(self) -> None:
        """Redraw every plot and table in the current theme."""
        for canvas in (self.bars, self.radar, self.sweep_plot, self.pareto):
            canvas.restyle()
        self.model.repaint()
        self.trail.model.repaint()

