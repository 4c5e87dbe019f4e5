"""The results views driven like a user: a slider drag updates the plots and the live trail (not the
history); every plot and analysis view draws the demo zoo's data (checked through the artists' data, not
pixels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtWidgets import QMessageBox
from zoo_helpers import reduced_zoo, single_thread

from app.analysis import AnalysisPanel
from app.commands import SetParamCommand
from app.document import Document
from app.main_window import MainWindow
from app.project import Project
from app.results import records as rec
from app.results.panel import ResultsPanel
from app.settings import AppPaths, Settings
from engine.analysis import analyze
from engine.graph import Recipe
from engine.live import Axis, LiveSession, sweep

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def demo_path() -> Path:
    """The reduced zoo's demo recipe (relative paths: opening it must resolve the suite too)."""
    return reduced_zoo() / "demo.json"


@pytest.fixture(scope="module")
def demo_records(demo_path) -> list[dict]:
    """Two evaluated runs and two sweeps of the demo merge, as the history stores them."""
    with single_thread():
        recipe = Recipe.load(demo_path)
        session = LiveSession(recipe, "merge", device="cpu")
        out = []
        for i, params in enumerate(({"method": "task_arithmetic", "lambda": 0.3}, {"method": "ties", "density": 0.3})):
            session.update(params)
            report = session.evaluate(full=True)
            report.references = session.references(full=True)
            out.append(rec.run_record(report, recipe=recipe.to_json(), node_id="merge", split="test", source="live",
                                      record_id=i + 1))
        base = {"method": "task_arithmetic", "lambda": 0.3}
        one = sweep(session, base, [Axis("lambda", (0.0, 0.5, 1.0))], full=False)
        two = sweep(session, base, [Axis("weight:digits", (0.0, 1.0)), Axis("lambda", (0.2, 0.6))], full=False)
        out += [rec.sweep_record(one, recipe=recipe.to_json(), node_id="merge", record_id=3),
                rec.sweep_record(two, recipe=recipe.to_json(), node_id="merge", record_id=4)]
        return out


@pytest.fixture
def window(qtbot, tmp_path: Path, monkeypatch, demo_path):
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: QMessageBox.Discard))
    win = MainWindow(AppPaths(tmp_path / "config", tmp_path / "data"), Settings(output_dir=str(tmp_path / "out"),
                                                                                device="cpu"))
    qtbot.addWidget(win)
    controller = win.document.live  # the document tunes its merge node live by itself
    controller.settle_s = 0.1
    win.open_project(demo_path)
    win.show()
    qtbot.waitExposed(win)
    qtbot.waitUntil(lambda: controller.state == "live", timeout=20_000)
    yield win
    controller.stop()


def test_a_slider_drag_updates_the_plot_and_the_live_trail(window, qtbot):
    win = window
    panel, controller = win.results_panel, win.document.live
    win.scene.select_node("merge")
    slider = win.inspector.fields["lambda"].scalar.slider
    loop = controller.loop
    qtbot.waitUntil(lambda: loop.idle(0.01), timeout=20_000)
    applied, submitted = loop.applied, loop.submitted
    history = list(win.document.results)
    frames = []
    controller.resultReady.connect(lambda e: frames.append(e))
    slider.sliderPressed.emit()
    for pos in range(slider.value(), slider.value() + 120, 4):  # 30 slider events as fast as Qt delivers them
        slider.setValue(pos)
        if pos % 40 == 0:
            qtbot.wait(1)
    slider.sliderReleased.emit()
    final = win.recipe.nodes["merge"].params["lambda"]
    assert win.undo_stack.count() == 1  # the drag is one undo step

    def settled() -> bool:
        trail = panel.trail.records()
        return bool(trail) and trail[-1]["params"]["lambda"] == final and trail[-1]["full"]

    qtbot.waitUntil(settled, timeout=30_000)
    run = panel.trail.records()[-1]
    assert win.document.results == history  # the settled value joins the live trail, not the history
    quick = [e for e in frames if e.kind == "quick" and e.seq > submitted]  # not a frame from before the drag
    drag_values = loop.submitted - submitted
    assert len(quick) == loop.applied - applied < drag_values  # coalesced: stale values dropped, not queued
    assert loop.dropped == loop.submitted - loop.applied
    assert quick[-1].params["lambda"] == final
    # the live bars show the settled value's accuracy, the live row the same numbers
    assert panel.bars.heights("live") == pytest.approx([run["tasks"][t]["accuracy"] for t in panel.bars.tasks])
    assert panel.model.live["params"]["lambda"] == final
    assert panel.model.rowCount() == 1 + len(rec.runs(win.document.results))
    assert panel.last_latency_ms is not None and "slider → plot" in win.latency.text()


def test_restoring_a_run_puts_its_parameters_back(window, qtbot):
    win = window
    before = dict(win.recipe.nodes["merge"].params)
    record = {"kind": "run", "id": 9, "node": "merge", "params": {"method": "ties", "density": 0.4, "lambda": 0.8},
              "recipe": win.recipe.to_json()}
    win.results_panel.restore(record)
    assert win.recipe.nodes["merge"].params == record["params"]
    win.undo_stack.undo()
    assert win.recipe.nodes["merge"].params == before


def test_the_history_is_saved_with_the_project(window, qtbot, tmp_path, demo_records):
    win = window
    win.results_panel.set_records([])
    for r in demo_records[:2]:
        win.results_panel.add_run(r)
    assert [r["params"] for r in rec.runs(win.document.results)] == [r["params"] for r in demo_records[:2]]
    assert not win.results_panel.add_run(demo_records[1])  # the same run twice is kept once
    path = tmp_path / "p.wsproj"
    assert win.save_project_as.__self__._write_project(path)
    assert len(Project.load(path).results) == 2
    win.open_project(path)
    qtbot.waitUntil(lambda: win.results_panel.model.rowCount() >= 2, timeout=5000)
    assert [r["id"] for r in rec.runs(win.results_panel.records())] == [1, 2]


def test_every_results_plot_draws_the_demo_data(qtbot, tmp_path, demo_records):
    panel = ResultsPanel(Document())
    qtbot.addWidget(panel)
    panel.resize(1300, 420)
    panel.show()
    panel.set_records(demo_records)
    ta, ties = demo_records[:2]
    tasks = list(ta["tasks"])

    panel.tabs.setCurrentIndex(0)  # no selection: the newest run; select both to compare
    panel.table.selectAll()
    qtbot.waitUntil(lambda: len(panel.bars.bars) == 2)
    label = "#1 Task Arithmetic"
    assert panel.bars.tasks == tasks
    assert panel.bars.heights(label) == pytest.approx([ta["tasks"][t]["accuracy"] for t in tasks])
    experts = panel.bars.reference_values("experts")
    assert [experts[t] for t in tasks] == pytest.approx([ta["references"]["experts"][t] for t in tasks])

    panel.tabs.setCurrentIndex(1)
    line = panel.radar.lines["#2 TIES-Merging"]  # classifiers: the normalized score is the normalized accuracy
    assert line.get_ydata()[:-1] == pytest.approx([ties["tasks"][t]["normalized_accuracy"] for t in tasks])

    panel.tabs.setCurrentIndex(2)
    panel.sweep_box.setCurrentIndex(0)
    one = rec.sweeps(demo_records)[0]["sweep"]  # the average is the mean normalized score
    assert list(panel.sweep_plot.lines["average"].get_ydata()) == pytest.approx(one["average"]["normalized_accuracy"])
    assert list(panel.sweep_plot.lines[tasks[0]].get_xdata()) == [0.0, 0.5, 1.0]
    panel.sweep_box.setCurrentIndex(1)
    two = rec.sweeps(demo_records)[1]["sweep"]
    assert np.allclose(panel.sweep_plot.image.get_array(), two["average"]["normalized_accuracy"])
    panel.sweep_task_box.setCurrentIndex(panel.sweep_task_box.findData(tasks[0]))
    assert np.allclose(panel.sweep_plot.image.get_array(), two["grids"]["accuracy"][tasks[0]])

    panel.tabs.setCurrentIndex(3)
    x, y = panel.pareto_x.currentText(), panel.pareto_y.currentText()
    offsets = panel.pareto.scatter.get_offsets()
    assert np.allclose(offsets, [[r["tasks"][x]["accuracy"], r["tasks"][y]["accuracy"]] for r in (ta, ties)])
    assert len(panel.pareto.trail) == 4 and panel.pareto.front()

    for fmt in ("png", "svg"):
        out = panel.export_plot(fmt, tmp_path / f"plot.{fmt}")
        assert out.stat().st_size > 1000
    csv = panel.export_history_csv(tmp_path / "history.csv").read_text().splitlines()
    assert len(csv) == 3 and csv[0].startswith("id,time,source")
    assert len(panel.export_sweep_csv(tmp_path / "sweep.csv").read_text().splitlines()) == 1 + 4


def test_every_analysis_view_draws_the_demo_data(qtbot, demo_path):
    recipe = Recipe.load(demo_path)
    recipe.set_params("merge", {"method": "task_arithmetic", "lambda": 0.3})
    report = analyze(recipe, "merge")
    panel = AnalysisPanel(Document(recipe))
    qtbot.addWidget(panel)
    panel.resize(1100, 380)
    panel.show()
    panel.set_target("merge")
    panel.show_report(report)
    n = len(report.keys)
    views = panel.canvases()
    for i in range(len(views)):
        panel.tabs.setCurrentIndex(i)
        views[i].ensure_drawn()
    off = ~np.eye(n, dtype=bool)
    assert np.allclose(np.asarray(panel.cosine.image.get_array())[off], report.cosines.matrix[off])
    assert [b.get_height() for b in panel.conflicts.bars["raw"]] == pytest.approx(list(report.conflicts.raw))
    assert [b.get_height() for b in panel.conflicts.bars["trimmed"]] == pytest.approx(list(report.conflicts.trimmed))
    assert set(panel.magnitudes.lines) == set(report.keys)
    assert panel.magnitudes.cuts["ties"] == pytest.approx(float(np.mean(report.magnitudes.ties_cut)))
    counts = report.overlap.counts
    assert [b.get_height() for b in panel.overlap.bars] == pytest.approx(list(counts / counts.sum()))
    matrix, rows = panel.norms.matrix()
    assert rows[-1] == "merged update" and np.allclose(panel.norms.image.get_array(), matrix)
    assert set(panel.spectra.lines) == set(report.spectra.values)
    panel.coefficient_param.setCurrentText("effective")
    coefficients = np.asarray(panel.coefficients.image.get_array())
    assert coefficients.shape == (n, len(report.norms.layers) - 1)  # models × numbered layers
    assert np.allclose(coefficients, 0.3)  # task arithmetic, λ 0.3, weights 1


def test_sweep_this_parameter_from_the_inspector(window, qtbot, monkeypatch):
    win = window
    win.scene.select_node("merge")
    chosen = {}

    def run_dialog(dialog):
        chosen["first"] = dialog.first.path.currentText()
        dialog.first.lo.setValue(0.2)
        dialog.first.hi.setValue(0.6)
        dialog.first.steps.setValue(3)
        dialog.full_box.setChecked(False)
        return True

    monkeypatch.setattr("app.results.sweep_dialog.SweepDialog.exec", run_dialog)
    label = win.inspector.fields["lambda"]
    menu = win.inspector._sweep_menu(label, label.rect().center(), "lambda")
    menu.actions()[0].trigger()
    menu.close()
    qtbot.waitUntil(lambda: bool(rec.sweeps(win.document.results)), timeout=20_000)
    assert chosen["first"] == "lambda"
    result = rec.sweeps(win.document.results)[-1]["sweep"]
    assert result["axes"] == [{"path": "lambda", "values": [0.2, 0.4, 0.6]}]
    panel = win.results_panel
    assert panel.tabs.currentIndex() == 2  # the sweep shows at once
    assert list(panel.sweep_plot.lines["average"].get_xdata()) == [0.2, 0.4, 0.6]


def test_run_scores_the_evaluate_node_into_the_history(window, qtbot):
    """F5 on the demo graph (merge → Evaluate, no Save) evaluates it in a worker; the history then holds
    a full-split run of the merge (filed by Run, or the identical live one it would duplicate) whose
    scores are the engine's, with the experts as references."""
    from engine.evaluation import evaluate_recipe

    win = window
    qtbot.waitUntil(lambda: not win.jobs.busy, timeout=30_000)  # the demo opens on a zoo-build check
    job = win.run_graph()
    assert job is not None, win.statusBar().currentMessage()
    with qtbot.waitSignal(win.runFinished, timeout=60_000):
        pass
    assert "added to the results" in win.statusBar().currentMessage()
    full = [r for r in rec.runs(win.results_panel.records()) if r["node"] == "merge" and r["full"]
            and r["params"] == win.recipe.nodes["merge"].params]
    assert full
    record = full[-1]
    expected = next(r for r in evaluate_recipe(win.recipe.copy(), device="cpu")["runs"] if r["recipe_node"] == "merge")
    for task, row in expected["tasks"].items():
        one_example = 1.0 / row["n"]  # live scores may differ from a fresh merge by one example (fp32 order)
        assert record["tasks"][task]["accuracy"] == pytest.approx(row["accuracy"], abs=one_example)
        assert record["references"]["experts"][task] == pytest.approx(row["expert_accuracy"], abs=one_example)


def test_evaluation_records_file_merge_runs_with_base_and_expert_references(demo_path):
    from engine.evaluation import evaluate_recipe

    recipe = Recipe.load(demo_path)
    result = evaluate_recipe(recipe, device="cpu")
    records = rec.evaluation_records(result, recipe.to_json())
    merges = [r for r in result["runs"] if r["type"] == "merge"]
    base = next(r for r in result["runs"] if r["name"] == "base")
    assert [r["node"] for r in records] == [r["recipe_node"] for r in merges] == ["merge"]
    record = records[0]
    assert record["tasks"] == merges[0]["tasks"] and record["params"] == recipe.nodes["merge"].params
    assert record["references"]["base"] == {t: row["accuracy"] for t, row in base["tasks"].items()}
    assert record["references"]["experts"] == {t: row["expert_accuracy"] for t, row in merges[0]["tasks"].items()}


def test_cancelling_the_quit_dialog_keeps_live_tuning_on(window, qtbot, monkeypatch):
    win = window
    win.scene.select_node("merge")
    win.inspector.fields["lambda"].scalar.slider.setValue(win.inspector.fields["lambda"].scalar.slider.value() + 5)
    assert win.modified  # an unsaved edit: quitting asks
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: QMessageBox.Cancel))
    assert not win.close()
    assert win.isVisible() and win.document.live.state == "live" and win.document.live.loop is not None


def test_an_invalid_graph_is_never_scored_or_recorded(window, qtbot):
    win = window
    controller, panel = win.document.live, win.results_panel
    before = len(panel.records())
    # SLERP takes one model: the demo has eight
    win.document.push(SetParamCommand(win.document, "merge", "method", "slerp"))
    qtbot.waitUntil(lambda: controller.state == "failed")
    assert "invalid" in controller.message and controller.loop is None
    qtbot.wait(600)  # longer than the settle time: nothing was scored or filed meanwhile
    assert len(panel.records()) == before
    win.document.push(SetParamCommand(win.document, "merge", "method", "ties"))
    qtbot.waitUntil(lambda: controller.state == "live", timeout=20_000)


def test_task_columns_keep_the_historys_order_with_or_without_the_live_row(qtbot) -> None:
    """The live row (whose tasks may come in another order) only appends its new tasks: the columns of a
    project are the same while tuning live and after reopening it (no live row)."""
    from app.results.history import HistoryModel

    def run(i, tasks):
        return {"kind": "run", "id": i, "node": "m", "params": {}, "tasks": {t: {"accuracy": 0.5} for t in tasks},
                "average": {"accuracy": 0.5}}

    model = HistoryModel()
    model.set_records([run(1, ["python", "prose"]), run(2, ["python", "prose", "c"])])
    reopened = list(model.tasks)
    live = {**run(0, ["c", "logs", "prose", "python"]), "id": None}
    model.set_live(live)
    assert model.tasks == ["python", "prose", "c", "logs"]
    model.set_live({**live, "params": {"lambda": 0.5}})  # a new value of the same shape keeps them
    assert model.tasks == ["python", "prose", "c", "logs"]
    model.set_live(None)
    assert model.tasks == reopened == ["python", "prose", "c"]
