"""The Results panel: live status, the run history, and the comparison plots side by side.

The panel takes the ``app.document.Document``. Live results arrive from its ``LiveController``: every
quick frame updates the pinned *live* row and moves the live bars/radar in place; once a value settles
and the full split is scored, the run joins the history (unless the same run is already there). The
history is the document's ``results`` (saved with the project); a filed run keeps the recipe it was
scored with, taken when it is filed (never on every frame). The plots show the selected runs (or, with
nothing selected, the live result and the latest run) against the experts and the base. Sweeps show
as curves (one parameter) or heatmaps (two) and feed the Pareto view. Restoring a run is an undoable
edit of the document. The panel measures the time from a slider value to the redrawn plot and reports
it through ``latencyChanged``; short notes for the status bar go out through ``statusMessage``.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any, Mapping

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
from app.results.plots import ParetoPlot, RadarPlot, Series, SweepPlot, TaskBarsPlot
from app.results.sweep_dialog import SweepDialog
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
        self.last_latency_ms: float | None = None
        self._sweeping = False
        self._pending_sweep: str | None = None
        self.model = HistoryModel(self)
        self.table = HistoryView(self.model)
        self.bars = TaskBarsPlot()
        self.radar = RadarPlot()
        self.sweep_plot = SweepPlot()
        self.pareto = ParetoPlot()
        self._build()
        self.table.selectionModel().selectionChanged.connect(lambda *_: self.refresh_plots())
        self.table.doubleClicked.connect(self._restore_row)
        self.model.modelReset.connect(self._refill_choices)
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
        for b in (self.keep_button, self.sweep_button, self.restore_button, self.delete_button, self.export_button):
            head.addWidget(b)

        self.metric_box = QComboBox()
        self.metric_box.addItem("Accuracy", "accuracy")
        self.metric_box.addItem("Normalized accuracy", "normalized_accuracy")
        self.metric_box.currentIndexChanged.connect(lambda _i: self.refresh_plots())
        self.sweep_box = QComboBox(minimumContentsLength=30, sizeAdjustPolicy=QComboBox.AdjustToContents)
        self.sweep_box.currentIndexChanged.connect(lambda _i: self._on_sweep_chosen())
        self.sweep_task_box = QComboBox()
        self.sweep_task_box.currentIndexChanged.connect(lambda _i: self._show_sweep())
        self.pareto_x, self.pareto_y = QComboBox(), QComboBox()
        for box in (self.pareto_x, self.pareto_y):
            box.currentIndexChanged.connect(lambda _i: self._show_pareto())

        self.tabs = QTabWidget(documentMode=True)
        self.tabs.addTab(self._page(self.bars, QLabel("Metric"), self.metric_box), "Per task")
        self.tabs.addTab(self._page(self.radar, QLabel("Normalized accuracy: merged ÷ expert", objectName="Muted")),
                         "Radar")
        self.tabs.addTab(self._page(self.sweep_plot, QLabel("Sweep"), self.sweep_box, QLabel("Heatmap of"),
                                    self.sweep_task_box), "Sweep")
        self.tabs.addTab(self._page(self.pareto, QLabel("x"), self.pareto_x, QLabel("y"), self.pareto_y), "Pareto")

        split = QSplitter(Qt.Horizontal, childrenCollapsible=False)
        split.addWidget(self.table)
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
        ids = {r["id"] for r in self.table.selected_records() if r is not self.model.live and "id" in r}
        if ids:
            self.model.remove(ids)
            self.document.results = self.records()
            self.refresh_plots()

    def keep_live(self) -> None:
        if self.model.live is not None:
            self.add_run({**self.model.live, "source": "live"})

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
        one undoable edit."""
        recipe, node_id = self.document.recipe, record.get("node", "")
        saved = record.get("recipe") or {}
        now = sorted(json.dumps(e.to_json()) for e in recipe.input_edges(node_id)) if node_id in recipe.nodes else None
        same_inputs = now == sorted(json.dumps(e) for e in saved.get("edges", []) if e.get("to") == node_id)
        label = f"Restore run #{record.get('id', '?')}"
        if same_inputs:
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
        dialog = SweepDialog(spec, session.keys, params, first=first, parent=self)
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
        record = rec.run_record(event.report, recipe={}, node_id=self.controller.node_id, split=self.controller.split,
                                source="live", record_id=0)
        self.model.set_live(record)
        if event.kind == FULL:
            self.add_run(record)
        if not self._update_live_plots(record):
            self.refresh_plots()
        if event.kind == QUICK:
            self._show_latency(event)

    def _show_latency(self, event: LiveEvent) -> None:
        canvas = self.current_canvas()
        drawn = time.perf_counter()
        if canvas in (self.bars, self.radar):
            canvas.draw()  # render now, so the measured time includes drawing the new bars
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
        """The runs the plots compare: the live result (while tuning) and the selected runs — or, with
        nothing selected, the newest run."""
        live = [self.model.live] if self.model.live is not None else []
        chosen = [r for r in self.table.selected_records() if r.get("tasks") and r is not self.model.live]
        if chosen:
            return live + chosen
        return live + rec.runs(self.model.records)[-(2 if not live else 1):]

    def _label(self, r: dict[str, Any]) -> str:
        return LIVE_LABEL if r is self.model.live else f"#{r.get('id')} {rec.method_label(r.get('method', ''))}"

    def _series(self, metric: str) -> list[Series]:
        out = []
        for i, r in enumerate(self.compared()):
            values = {t: rec.metric(r, t, metric) for t in r.get("tasks", {})}
            errors = {t: rec.metric(r, t, "accuracy_stderr") for t in r.get("tasks", {})} \
                if metric == "accuracy" and not r.get("full") else {}
            out.append(Series(self._label(r), values, series_color(i), errors, live=r is self.model.live))
        return out

    def references(self) -> dict[str, dict[str, float]]:
        return rec.references(rec.runs(self.model.records) + ([self.model.live] if self.model.live else []))

    def refresh_plots(self) -> None:
        metric = self.metric_box.currentData()
        tasks = self.model.tasks
        refs = self.references()
        bar_refs = refs if metric == "accuracy" else {"experts": {t: 1.0 for t in tasks},
                                                       "base": _normalized(refs.get("base", {}), refs)}
        self.bars.set_data(tasks, self._series(metric), bar_refs, metric.replace("_", " "))
        radar = self._series("normalized_accuracy")
        base = _normalized(refs.get("base", {}), refs)
        if base:
            radar.append(Series("base", base, theme.color("muted").name()))
        self.radar.set_data(tasks, radar)
        self._show_pareto()

    def _update_live_plots(self, record: dict[str, Any]) -> bool:
        """Move the live series in place; False when the plots need a rebuild."""
        if not any(s.live for s in self.bars.series):
            return False
        metric = self.metric_box.currentData()
        values = {t: rec.metric(record, t, metric) for t in record["tasks"]}
        errors = {t: rec.metric(record, t, "accuracy_stderr") for t in record["tasks"]} \
            if metric == "accuracy" and not record.get("full") else {}
        if set(values) != set(self.bars.tasks) or not self.bars.update_live(LIVE_LABEL, values, errors):
            return False
        self.radar.update_live(LIVE_LABEL, {t: rec.metric(record, t, "normalized_accuracy") for t in record["tasks"]})
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

    def current_sweep(self) -> SweepResult | None:
        sid = self.sweep_box.currentData()
        for s in rec.sweeps(self.model.records):
            if s["id"] == sid:
                return SweepResult.from_json(s["sweep"])
        return None

    def _on_sweep_chosen(self) -> None:
        """A different sweep: list what its heatmap can show, then draw it."""
        result = self.current_sweep()
        current = self.sweep_task_box.currentData()
        self.sweep_task_box.blockSignals(True)
        self.sweep_task_box.clear()
        self.sweep_task_box.addItem("average normalized", "average|normalized_accuracy")
        self.sweep_task_box.addItem("average accuracy", "average|accuracy")
        for t in result.tasks if result is not None else []:
            self.sweep_task_box.addItem(t, f"{t}|accuracy")
        self.sweep_task_box.setCurrentIndex(max(0, self.sweep_task_box.findData(current)))
        self.sweep_task_box.setEnabled(result is not None and len(result.axes) == 2)
        self.sweep_task_box.blockSignals(False)
        self._show_sweep()

    def _show_sweep(self) -> None:
        result = self.current_sweep()
        task, metric = (self.sweep_task_box.currentData() or "average|accuracy").split("|")
        if result is not None and len(result.axes) == 1:
            task, metric = "average", "accuracy"
        self.sweep_plot.set_data(result, metric=metric, task=task)
        self._show_pareto()

    def _show_pareto(self) -> None:
        x, y = self.pareto_x.currentText(), self.pareto_y.currentText()
        runs = [r for r in rec.runs(self.model.records) if r.get("full")]
        points = [Series(f"#{r['id']}", {t: rec.metric(r, t) for t in r.get("tasks", {})}, series_color(i))
                  for i, r in enumerate(runs)]
        sweep = self.current_sweep()
        trail = []
        if sweep is not None and x in sweep.tasks and y in sweep.tasks:
            gx, gy = sweep.grids["accuracy"][x].reshape(-1), sweep.grids["accuracy"][y].reshape(-1)
            trail = [(float(a), float(b)) for a, b in zip(gx, gy)]
        self.pareto.set_data(x, y, points, self.references(), trail,
                             trail_is_path=sweep is None or len(sweep.axes) == 1)

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
        """Redraw every plot in the current theme."""
        for canvas in (self.bars, self.radar, self.sweep_plot, self.pareto):
            canvas.restyle()


def _normalized(values: dict[str, float], refs: dict[str, dict[str, float]]) -> dict[str, float]:
    experts = refs.get("experts", {})
    return {t: v / experts[t] for t, v in values.items() if experts.get(t)}
