"""The document: typed signals for every undoable edit, panels built on a document alone, and a slider tick
that reaches live tuning as (node, key, value) without the recipe being serialised."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtWidgets import QMessageBox
from zoo_helpers import reduced_zoo, single_thread

from app.analysis import AnalysisPanel
from app.commands import (AddNodeCommand, ConnectCommand, MoveNodesCommand, RemoveNodesCommand, ReplaceRecipeCommand,
                          SetParamCommand, SetParamsCommand)
from app.document import Document
from app.graph import GraphScene
from app.inspector.panel import InspectorPanel
from app.live import LiveController
from app.main_window import MainWindow
from app.results import ResultsPanel
from app.settings import AppPaths, Settings
from app.tasks_panel import TasksPanel
from engine.graph.recipe import Edge, Node, Recipe

SIGNALS = ("nodeAdded", "nodeRemoved", "edgeAdded", "edgeRemoved", "paramsChanged", "nodeMoved", "recipeReplaced",
           "opened", "selectionChanged", "currentNodeChanged")


def recorder(document: Document) -> list[tuple]:
    """Every typed signal ``document`` emits from now on, as ``(name, *args)``."""
    seen: list[tuple] = []
    for name in SIGNALS:
        getattr(document, name).connect(lambda *args, name=name: seen.append((name, *args)))
    return seen


def take(seen: list[tuple]) -> list[tuple]:
    """What was recorded since the last call (and forget it)."""
    out = list(seen)
    seen.clear()
    return out


@pytest.fixture
def document(qtbot) -> Document:
    """base, e1 → a task arithmetic merge ``m``."""
    doc = Document(Recipe("t"))
    for nid in ("base", "e1"):
        doc.add_node(Node(nid, "checkpoint", {"path": f"{nid}.safetensors"}))
    doc.add_node(Node("m", "merge", {"method": "task_arithmetic", "lambda": 1.0}))
    doc.add_edge(Edge("base", "m", "base"))
    doc.add_edge(Edge("e1", "m", "models"))
    return doc


def test_every_undoable_edit_emits_its_typed_signal(qtbot, document) -> None:
    doc, seen = document, recorder(document)
    stack = doc.undo_stack
    revision = doc.revision
    with qtbot.waitSignal(doc.nodeAdded) as added:
        doc.push(AddNodeCommand(doc, Node("e2", "checkpoint", {"path": "e2.safetensors"})))
    assert added.args == ["e2"] and take(seen) == [("nodeAdded", "e2")]
    edge = Edge("e2", "m", "models")
    doc.push(ConnectCommand(doc, edge))
    assert take(seen) == [("edgeAdded", edge)]
    doc.push(SetParamCommand(doc, "m", "lambda", 0.3))
    assert take(seen) == [("paramsChanged", "m", "lambda")]
    stack.undo()
    assert take(seen) == [("paramsChanged", "m", "lambda")] and doc.recipe.nodes["m"].params["lambda"] == 1.0
    stack.redo()
    assert take(seen) == [("paramsChanged", "m", "lambda")] and doc.recipe.nodes["m"].params["lambda"] == 0.3
    doc.push(SetParamCommand(doc, "m", "normalize", True))  # a key the node did not have
    stack.undo()  # removing it replaces the node's parameters
    assert take(seen) == [("paramsChanged", "m", "normalize"), ("paramsChanged", "m", "")]
    doc.push(SetParamsCommand(doc, "m", {"method": "ties", "density": 0.3}))
    assert take(seen) == [("paramsChanged", "m", "")]
    doc.push(MoveNodesCommand(doc, {"m": (None, (10.0, 20.0))}))
    assert take(seen) == [("nodeMoved", "m")] and doc.recipe.nodes["m"].ui == {"pos": [10.0, 20.0]}
    stack.undo()
    assert take(seen) == [("nodeMoved", "m")] and doc.recipe.nodes["m"].ui == {}

    doc.set_selection(["e2", "m"])
    assert take(seen) == [("selectionChanged", ["m", "e2"])]  # in recipe order; no single current node
    doc.set_selection(["e2"])
    assert take(seen) == [("selectionChanged", ["e2"]), ("currentNodeChanged", "e2")]
    doc.push(RemoveNodesCommand(doc, ["e2"]))  # its edge goes first, then the node, then the selection
    assert take(seen) == [("edgeRemoved", edge), ("nodeRemoved", "e2"), ("selectionChanged", []),
                          ("currentNodeChanged", "")]
    stack.undo()
    assert take(seen) == [("nodeAdded", "e2"), ("edgeAdded", edge)]
    assert doc.recipe.inputs("m", "models") == ["e1", "e2"]
    stack.undo()  # the move was undone already; next: the method switch
    assert take(seen) == [("paramsChanged", "m", "")]

    other = {"format": "weightsmith-recipe", "version": 1, "name": "other",
             "nodes": [{"id": "x", "type": "checkpoint", "params": {}}], "edges": []}
    doc.push(ReplaceRecipeCommand(doc, other))
    assert take(seen) == [("recipeReplaced",)] and list(doc.recipe.nodes) == ["x"]
    stack.undo()
    assert take(seen) == [("recipeReplaced",)] and "m" in doc.recipe.nodes
    doc.open(Recipe.from_json(other), [{"kind": "run", "id": 1}])
    assert take(seen) == [("recipeReplaced",), ("opened",)]
    assert stack.count() == 0 and doc.results == [{"kind": "run", "id": 1}]
    assert doc.revision > revision


def test_panels_need_only_the_document(qtbot, document) -> None:
    doc = document
    scene = GraphScene(doc)
    inspector = InspectorPanel(doc)
    results, analysis, tasks = ResultsPanel(doc), AnalysisPanel(doc), TasksPanel(doc)
    for widget in (inspector, results, analysis, tasks):
        qtbot.addWidget(widget)
    inspector.show()

    scene.select_node("m")  # the scene's selection is the document's: the inspector shows the node
    assert doc.current_node == "m" and inspector.node_id == "m"
    slider = inspector.fields["lambda"].scalar.slider
    slider.sliderPressed.emit()
    slider.setValue(slider.value() // 2)
    slider.sliderReleased.emit()
    moved = doc.recipe.nodes["m"].params["lambda"]
    assert moved < 1.0 and doc.undo_stack.count() == 1
    doc.undo_stack.undo()
    assert inspector.fields["lambda"].scalar.value() == 1.0

    doc.push(AddNodeCommand(doc, Node("e2", "checkpoint", {"path": "e2.safetensors"})))
    assert scene.node_item("e2") is not None
    doc.set_selection(["e2"])  # a selection made elsewhere reaches the scene and the inspector
    assert scene.selected_node_ids() == ["e2"] and inspector.node_id == "e2"

    job = doc.jobs.submit("quick", lambda _progress, _cancel: 42)
    qtbot.waitUntil(lambda: job.state.finished)
    assert tasks.row_for(job) is not None
    run = {"kind": "run", "id": 1, "node": "m", "method": "ties", "params": {"method": "ties"},
           "tasks": {"digits": {"accuracy": 0.5}}, "average": {"accuracy": 0.5}}
    doc.open(doc.recipe.copy(), [run])  # another project: its history shows, the old finished tasks go
    assert results.records() == [run] and tasks.row_for(job) is None
    analysis.set_target("m")
    assert "m" in analysis.title.text()


@pytest.fixture
def demo_window(qtbot, tmp_path: Path, monkeypatch):
    """The main window on the reduced zoo's demo, tuning its merge node live (quick frames only)."""
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: QMessageBox.Discard))
    with single_thread():
        win = MainWindow(AppPaths(tmp_path / "config", tmp_path / "data"),
                         Settings(output_dir=str(tmp_path / "out"), device="cpu"))
        qtbot.addWidget(win)
        live = win.document.live
        live.settle_s = 60.0  # no full evaluation (it files a run) while the tick is measured
        win._autosave_timer.stop()  # the periodic autosave serialises the recipe on its own clock, not the tick's
        win.open_project(reduced_zoo() / "demo.json")
        win.show()
        qtbot.waitExposed(win)
        qtbot.waitUntil(lambda: live.state == "live", timeout=30_000)
        yield win
        live.stop()


def test_a_slider_tick_reaches_live_tuning_as_node_key_value_without_serialising(qtbot, demo_window,
                                                                                 monkeypatch) -> None:
    win = demo_window
    live = win.document.live
    win.scene.select_node("merge")
    loop = live.loop
    panel = win.results_panel
    qtbot.waitUntil(lambda: loop.applied == loop.submitted and panel.model.live is not None, timeout=30_000)

    serialised, sent, drawn = [], [], []
    to_json, set_param = Recipe.to_json, LiveController.set_param
    monkeypatch.setattr(Recipe, "to_json", lambda self: serialised.append(self) or to_json(self))
    monkeypatch.setattr(LiveController, "set_param",
                        lambda self, node, key, value: sent.append((node, key, value)) or set_param(self, node, key,
                                                                                                   value))
    panel.latencyChanged.connect(drawn.append)
    submitted = loop.submitted
    slider = win.inspector.fields["lambda"].scalar.slider
    slider.sliderPressed.emit()
    slider.setValue(slider.value() + 25)
    value = win.recipe.nodes["merge"].params["lambda"]
    assert sent == [("merge", "lambda", value)] and loop.submitted == submitted + 1
    qtbot.waitUntil(lambda: bool(drawn), timeout=30_000)  # the quick frame is plotted
    slider.sliderReleased.emit()
    assert serialised == []  # from the slider to the redrawn plot, the recipe was never serialised
    assert live.params["lambda"] == value and panel.model.live["params"]["lambda"] == value
