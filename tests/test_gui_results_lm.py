"""The results views on the LM demo, driven like a user: every task in its own metric (perplexity ↓ per
domain, accuracy ↑), best marks and sorting by each metric's direction, averages as normalized scores;
history by decision (the live trail, Keep, a pinned reference run) and "Apply best" on a sweep."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox
from zoo_helpers import reduced_lm_zoo, single_thread

from app.document import Document
from app.main_window import MainWindow
from app.results import records as rec
from app.results.plots import Metric, pareto_front
from app.results.panel import ResultsPanel
from app.settings import AppPaths, Settings
from engine.graph import Recipe
from engine.live import LiveSession

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def demo_path() -> Path:
    """The reduced LM demo: perplexity, multiple-choice and generation tasks per domain."""
    return reduced_lm_zoo() / "demo.json"


@pytest.fixture(scope="module")
def lm_runs(demo_path) -> list[dict]:
    """Two full-split runs of the LM demo's merge (λ 0.3 and 1.0), as the history stores them."""
    with single_thread():
        recipe = Recipe.load(demo_path)
        session = LiveSession(recipe, "merge", device="cpu")
        out = []
        for i, lam in enumerate((0.3, 1.0)):
            session.update({**recipe.nodes["merge"].params, "lambda": lam})
            report = session.evaluate(full=True)
            report.references = session.references(full=True)
            out.append(rec.run_record(report, recipe=recipe.to_json(), node_id="merge", split="test", source="run",
                                      record_id=i + 1))
        return out


@pytest.fixture
def window(qtbot, tmp_path: Path, monkeypatch, demo_path):
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: QMessageBox.Discard))
    win = MainWindow(AppPaths(tmp_path / "config", tmp_path / "data"), Settings(output_dir=str(tmp_path / "out"),
                                                                                device="cpu"))
    qtbot.addWidget(win)
    controller = win.document.live
    controller.settle_s = 0.1
    win.open_project(demo_path)
    win.show()
    qtbot.waitExposed(win)
    qtbot.waitUntil(lambda: controller.state == "live", timeout=60_000)
    yield win
    controller.stop()


def _perplexity_tasks(record: dict) -> list[str]:
    return [t for t, row in record["tasks"].items() if row["primary"] == "perplexity"]


def test_the_bars_show_perplexity_per_domain_with_lower_is_better_best_marks(qtbot, lm_runs):
    panel = ResultsPanel(Document())
    qtbot.addWidget(panel)
    panel.resize(1400, 480)
    panel.show()
    panel.set_records(lm_runs)
    low, high = lm_runs
    domains = _perplexity_tasks(low)
    assert len(domains) == 5
    panel.table.selectAll()
    qtbot.waitUntil(lambda: len(panel.bars.bars) == 2)
    bars = panel.bars
    groups = {g.metric: g for g in bars.groups}
    perplexity = groups[Metric("perplexity", False)]
    assert perplexity.tasks == domains  # per-domain bars on their own axes
    assert perplexity.ax.get_ylabel() == "perplexity ↓" and perplexity.ax.get_yscale() == "log"
    assert groups[Metric("accuracy", True)].ax.get_ylabel() == "accuracy ↑"
    labels = {"#1 TIES-Merging": low, "#2 TIES-Merging": high}
    for label, run in labels.items():
        assert bars.heights(label) == pytest.approx([run["tasks"][t][run["tasks"][t]["primary"]] for t in bars.tasks])
    for t in domains:  # the best mark goes to the lower perplexity
        winner = min(labels, key=lambda label: labels[label]["tasks"][t]["perplexity"])
        assert bars.best[t] == winner
    stars = perplexity.best.get_offsets()
    assert [y for _x, y in stars] == pytest.approx([min(r["tasks"][t]["perplexity"] for r in lm_runs) for t in domains])
    for t in set(bars.tasks) - set(domains):  # accuracy: the higher one; no mark where the runs tie
        values = [labels[label]["tasks"][t]["accuracy"] for label in labels]
        if max(values) == min(values):
            assert t not in bars.best
        else:
            assert labels[bars.best[t]]["tasks"][t]["accuracy"] == max(values)
    experts = bars.reference_values("experts")  # references in each task's own metric, level with its bars
    scored = [t for t in domains if high["references"]["experts"][t] is not None]  # the LoRA domain has no expert
    assert len(scored) == 4 and {t: experts.get(t) for t in domains} == pytest.approx(
        {t: high["references"]["experts"][t] for t in domains})
    assert min(experts[t] for t in scored) > 1.0  # perplexities, not accuracies

    # the history: each task in its metric, sorted best first by its direction, the mean normalized score
    model = panel.model
    column = model.headers().index(f"{domains[0]}\nppl ↓")
    model.sort(column, Qt.DescendingOrder)
    best_first = min(lm_runs, key=lambda r: r["tasks"][domains[0]]["perplexity"])
    assert model.record_at(0)["id"] == best_first["id"]
    average, normalized = len(model.headers()) - 2, len(model.headers()) - 1
    row = next(r for r in range(model.rowCount()) if model.record_at(r)["id"] == 1)
    assert model.data(model.index(row, average)) == "–"  # mixed metrics are not averaged raw
    scores = [v["normalized_score"] for v in low["tasks"].values() if v.get("normalized_score") is not None]
    assert model.data(model.index(row, normalized)) == f"{100 * sum(scores) / len(scores):.1f}"

    # normalized scores: one axes, the experts at 1, higher is better everywhere
    panel.metric_box.setCurrentIndex(panel.metric_box.findData(rec.NORMALIZED))
    assert [g.metric for g in panel.bars.groups] == [Metric("normalized_score", True)]
    assert set(panel.bars.reference_values("experts").values()) == {1.0}

    # the Pareto front follows each axis's direction: lower perplexity and higher accuracy win
    assert pareto_front([(10.0, 0.5), (20.0, 0.6), (30.0, 0.4)], (False, True)) == [(10.0, 0.5), (20.0, 0.6)]
    panel.tabs.setCurrentIndex(3)
    panel.pareto_x.setCurrentText(domains[0])
    panel.pareto_y.setCurrentText(domains[1])
    assert panel.pareto.metric_x == Metric("perplexity", False)
    points = [(r["tasks"][domains[0]]["perplexity"], r["tasks"][domains[1]]["perplexity"]) for r in lm_runs]
    assert panel.pareto.front() == pareto_front(points, (False, False))


def test_history_by_decision_live_trail_keep_and_a_pinned_reference(window, qtbot):
    win = window
    panel, controller = win.results_panel, win.document.live
    loop = controller.loop
    qtbot.waitUntil(lambda: panel.model.live is not None and panel.model.live["full"], timeout=60_000)
    history = list(win.document.results)
    win.scene.select_node("merge")
    slider = win.inspector.fields["lambda"].scalar.slider
    slider.sliderPressed.emit()
    slider.setValue(slider.value() - 30)
    slider.sliderReleased.emit()
    final = win.recipe.nodes["merge"].params["lambda"]

    def settled() -> bool:
        trail = panel.trail.records()
        return bool(trail) and trail[-1]["params"]["lambda"] == final and trail[-1]["full"]

    qtbot.waitUntil(settled, timeout=60_000)
    qtbot.waitUntil(lambda: loop.idle(0.01), timeout=60_000)
    # the release is a trail point, not a history row
    assert win.document.results == history
    assert panel.model.rowCount() == 1 + len(rec.runs(history))
    assert panel.trail.toggle.text() == f"Live trail ({len(panel.trail.records())})"
    panel.trail.set_expanded(True)
    assert panel.trail.model.rowCount() == len(panel.trail.records())

    # the live bars: perplexity per domain, level with the live references, error bars where there are errors
    live = panel.model.live
    domains = _perplexity_tasks(live)
    heights = dict(zip(panel.bars.tasks, panel.bars.heights("live")))
    assert [heights[t] for t in domains] == pytest.approx([live["tasks"][t]["perplexity"] for t in domains])
    experts = panel.bars.reference_values("experts")
    assert {t: experts.get(t) for t in domains} == pytest.approx({t: live["references"]["experts"][t] for t in domains})
    assert panel.bars.error_lines["live"]  # the accuracy tasks' standard errors

    # Keep files the live result: one row
    qtbot.mouseClick(panel.keep_button, Qt.LeftButton)
    runs = rec.runs(win.document.results)
    assert len(runs) == len(rec.runs(history)) + 1
    kept = runs[-1]
    assert kept["params"]["lambda"] == final and kept["source"] == "live" and kept["recipe"]
    qtbot.mouseClick(panel.keep_button, Qt.LeftButton)  # the same result twice is kept once
    assert len(rec.runs(win.document.results)) == len(runs)

    # pin it: the bars compare the live result against it, drawn as reference marks
    row = next(r for r in range(panel.model.rowCount()) if panel.model.record_at(r) is kept)
    panel.table.selectRow(row)
    assert panel.pin_button.isEnabled() and panel.pin_button.text() == "Pin"
    qtbot.mouseClick(panel.pin_button, Qt.LeftButton)
    assert panel.pinned() is kept and kept["pinned"]
    panel.table.clearSelection()
    marks = panel.bars.reference_values("pinned")
    assert marks == pytest.approx({t: kept["tasks"][t][kept["tasks"][t]["primary"]] for t in kept["tasks"]})
    assert [s.label for s in panel.bars.series] == ["live"]
    assert panel.model.data(panel.model.index(row, 0)).startswith("◆")
    assert panel.pin_button.text() == "Unpin"
    qtbot.mouseClick(panel.pin_button, Qt.LeftButton)
    assert panel.pinned() is None and not panel.bars.reference_values("pinned")


def test_apply_best_on_a_sweep_sets_lambda_to_the_best_point_and_undoes(window, qtbot, monkeypatch):
    win = window
    panel = win.results_panel
    win.scene.select_node("merge")
    before = dict(win.recipe.nodes["merge"].params)

    qtbot.waitUntil(lambda: panel.model.live is not None and panel.model.live["full"], timeout=60_000)
    estimates = []

    def run_dialog(dialog):
        dialog.first.path.setCurrentText("lambda")
        dialog.first.lo.setValue(0.2)
        dialog.first.hi.setValue(0.8)
        dialog.first.steps.setValue(3)
        estimates.append(dialog.estimate.text())
        dialog.full_box.setChecked(False)
        estimates.append(dialog.estimate.text())
        return True

    monkeypatch.setattr("app.results.sweep_dialog.SweepDialog.exec", run_dialog)
    assert panel.open_sweep_dialog()
    # the estimate is measured on live tuning's own frames (full split and quick subset), never a guess
    assert all(text.startswith("3 points · about ") and "s per point" in text for text in estimates)
    qtbot.waitUntil(lambda: bool(rec.sweeps(win.document.results)), timeout=60_000)
    sweep = rec.sweeps(win.document.results)[-1]["sweep"]
    values = sweep["axes"][0]["values"]
    assert values == [0.2, 0.5, 0.8] and sweep["primary"]["python"] == "perplexity"

    # by a perplexity: the lowest wins
    panel.sweep_task_box.setCurrentIndex(panel.sweep_task_box.findData("python"))
    assert "perplexity ↓" in panel.sweep_task_box.currentText()
    grid = np.array(sweep["grids"]["perplexity"]["python"])
    qtbot.mouseClick(panel.apply_best_button, Qt.LeftButton)
    assert win.recipe.nodes["merge"].params == {**before, "lambda": values[int(np.argmin(grid))]}
    assert win.undo_stack.undoText().startswith("Apply best lambda = ")
    win.undo_stack.undo()
    assert win.recipe.nodes["merge"].params == before

    # by the average normalized score: the highest wins
    panel.sweep_task_box.setCurrentIndex(panel.sweep_task_box.findData(rec.AVERAGE))
    scores = np.array([[row[i] for row in sweep["grids"]["normalized_score"].values()] for i in range(len(values))],
                      dtype=float)
    average = np.nanmean(scores, axis=1)
    assert panel.sweep_plot.lines[rec.AVERAGE].get_ydata() == pytest.approx(average)
    assert panel.apply_best()
    assert win.recipe.nodes["merge"].params["lambda"] == values[int(np.nanargmax(average))]
    win.undo_stack.undo()
    assert win.recipe.nodes["merge"].params == before


def test_a_task_added_on_the_evaluate_node_gets_its_own_bar_in_the_live_results(window, qtbot, tmp_path):
    """Adding a text file as a task in the Evaluate node's inspector re-scores live tuning on the new task
    list: the bars and the history gain the new domain in its own metric (perplexity ↓)."""
    from app.inspector.evaluate_tasks import EvaluateTasksEditor

    win = window
    panel = win.results_panel
    qtbot.waitUntil(lambda: panel.model.live is not None and panel.model.live["full"], timeout=60_000)
    before = list(panel.bars.tasks)
    text = tmp_path / "letters.txt"
    text.write_text("Dear friend, thank you for your letter and the news from home.\n" * 40, encoding="utf-8")
    evaluate = next(n for n, v in win.recipe.nodes.items() if v.type == "evaluate")
    win.document.set_selection([evaluate])
    editor = win.inspector.task_editor
    assert isinstance(editor, EvaluateTasksEditor)
    assert editor.add_files([text]) == ["letters"]
    assert win.recipe.nodes[evaluate].params["task_entries"][-1]["kind"] == "text-perplexity"

    def scored() -> bool:
        live = panel.model.live
        return bool(live) and live["full"] and "letters" in live["tasks"] and "letters" in panel.bars.tasks

    qtbot.waitUntil(scored, timeout=120_000)
    assert set(before) < set(panel.bars.tasks)
    live = panel.model.live
    assert live["tasks"]["letters"]["primary"] == "perplexity"
    heights = dict(zip(panel.bars.tasks, panel.bars.heights("live")))
    assert heights["letters"] == pytest.approx(live["tasks"]["letters"]["perplexity"]) and heights["letters"] > 1.0
    groups = {g.metric: g for g in panel.bars.groups}
    assert "letters" in groups[Metric("perplexity", False)].tasks
    assert "letters\nppl ↓" in panel.model.headers()
