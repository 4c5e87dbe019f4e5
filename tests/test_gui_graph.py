"""The graph editor driven through its real widgets: palette, ports, mouse, drops, clipboard, undo."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent, QPalette
from PySide6.QtWidgets import QApplication

from app.commands import SetParamCommand
from app.document import Document
from app.graph import CHECKPOINT_MIME, GraphScene, GraphView
from app.graph.palette import palette_entries
from engine.graph.recipe import Edge, Node, Recipe
from engine.methods import all_methods


@pytest.fixture
def graph(qtbot) -> SimpleNamespace:
    document = Document(Recipe("test"))
    scene = GraphScene(document)
    view = GraphView(scene)
    qtbot.addWidget(view)
    view.resize(900, 600)
    view.show()
    qtbot.waitExposed(view)
    return SimpleNamespace(document=document, recipe=document.recipe, stack=document.undo_stack, scene=scene,
                           view=view)


def build_demo(g: SimpleNamespace) -> dict[str, str]:
    """base, two experts → merge → save, wired through the scene API."""
    s = g.scene
    ids = {
        "base": s.add_node_at("checkpoint", (0, 0), {"path": "base.safetensors"}),
        "e1": s.add_node_at("checkpoint", (0, 120), {"path": "e1.safetensors"}),
        "e2": s.add_node_at("checkpoint", (0, 240), {"path": "e2.safetensors"}),
        "merge": s.add_node_at("merge", (300, 60), {"method": "task_arithmetic"}),
        "save": s.add_node_at("save", (600, 60), {"path": "out"}),
    }
    for src, dst, port in (("base", "merge", "base"), ("e1", "merge", "models"), ("e2", "merge", "models"),
                           ("merge", "save", "model")):
        assert s.connect_nodes(ids[src], ids[dst], port)
    return ids


def refusal(qtbot, g: SimpleNamespace, src: str, dst: str, port: str) -> str:
    """Try a connection that must be refused; returns the reason emitted."""
    before = g.recipe.to_json()
    with qtbot.waitSignal(g.scene.connectionRefused, timeout=1000) as blocker:
        assert not g.scene.connect_nodes(src, dst, port)
    assert g.recipe.to_json() == before
    return blocker.args[0]


def view_pos(g: SimpleNamespace, scene_pos: QPointF) -> QPoint:
    return g.view.mapFromScene(scene_pos)


def test_palette_lists_every_method_and_adds_the_chosen_one(qtbot, graph) -> None:
    labels = [e.label for e in palette_entries()]
    assert {"Checkpoint", "Task vector", "Scale", "Add", "Save"} <= set(labels)
    for spec in all_methods():
        assert f"Merge ▸ {spec.label}" in labels

    graph.view.open_palette(QPoint(200, 200))
    palette = graph.view.palette_popup.palette_widget
    qtbot.keyClicks(palette.search, "task arith")
    shown = [e.label for e in palette.entries()]
    assert "Merge ▸ Task Arithmetic" in shown and "Checkpoint" not in shown
    assert palette.list.currentItem().text() == "Merge ▸ Task Arithmetic"
    qtbot.keyClick(palette.search, Qt.Key.Key_Return)

    node = graph.recipe.node("task_arithmetic")
    assert node.type == "merge"
    assert node.params == {"method": "task_arithmetic", "weight": 1.0, "lambda": 1.0, "normalize": False}
    assert graph.scene.selected_node_ids() == ["task_arithmetic"]
    assert not graph.view.palette_popup.isVisible()

    graph.view.open_palette(QPoint(300, 300))
    qtbot.keyClicks(palette.search, "check")
    qtbot.keyClick(palette.search, Qt.Key.Key_Return)
    assert graph.recipe.node("checkpoint").params == {"path": "", "strip_prefix": ""}
    assert graph.stack.count() == 2


def test_connect_through_api_mirrors_edges_and_validation(graph) -> None:
    ids = build_demo(graph)
    graph.scene.revalidate()
    assert len(graph.recipe.edges) == 4
    for edge in graph.recipe.edges:
        assert graph.scene.edge_item(edge) is not None
    assert graph.scene.problems == []
    merge = graph.scene.node_item(ids["merge"])
    assert merge.subtitle == "Task Arithmetic" and merge.badges[0][0] == "data-free"
    assert merge.inputs["models"].connected

    graph.stack.push(SetParamCommand(graph.document, ids["save"], "path", ""))
    graph.scene.revalidate()
    save = graph.scene.node_item(ids["save"])
    assert save.problems == ["no output folder set"] and "no output folder set" in save.toolTip()
    graph.stack.undo()
    graph.scene.revalidate()
    assert save.problems == []


def test_mouse_drag_from_output_port_to_input_port_connects(qtbot, graph) -> None:
    src = graph.scene.add_node_at("checkpoint", (0, 0), {"path": "a.safetensors"})
    dst = graph.scene.add_node_at("save", (320, 40))
    graph.view.zoom_to_fit()
    start = view_pos(graph, graph.scene.node_item(src).output.scenePos())
    end = view_pos(graph, graph.scene.node_item(dst).inputs["model"].scenePos())
    viewport = graph.view.viewport()
    qtbot.mousePress(viewport, Qt.MouseButton.LeftButton, pos=start)
    qtbot.mouseMove(viewport, (start + end) / 2)
    qtbot.mouseMove(viewport, end)
    qtbot.mouseRelease(viewport, Qt.MouseButton.LeftButton, pos=end)
    assert graph.recipe.edges == [Edge(src, dst, "model")]
    assert graph.scene.node_item(src).pos() == QPointF(0, 0)  # dragging a port does not move the node


def test_refused_connections_say_why(qtbot, graph, tmp_path: Path) -> None:
    ids = build_demo(graph)
    tv = graph.scene.add_node_at("task_vector", (300, 300))
    assert graph.scene.connect_nodes(ids["e1"], tv, "model")
    assert "one connection" in refusal(qtbot, graph, ids["e2"], ids["merge"], "base")
    scale = graph.scene.add_node_at("scale", (600, 300))
    assert graph.scene.connect_nodes(ids["merge"], scale, "input")
    assert "cycle" in refusal(qtbot, graph, scale, ids["merge"], "models")
    tv2 = graph.scene.add_node_at("task_vector", (600, 400))
    assert "takes model, but" in refusal(qtbot, graph, tv, tv2, "model")
    assert "already connected" in refusal(qtbot, graph, ids["e1"], ids["merge"], "models")
    assert "own input" in refusal(qtbot, graph, scale, scale, "input")

    lora = tmp_path / "lora"
    lora.mkdir()
    (lora / "adapter_config.json").write_text("{}")
    adapter = graph.scene.add_node_at("checkpoint", (0, 400), {"path": str(lora)})
    assert graph.scene.node_item(adapter).badges[0][0] == "LoRA"
    assert "gives task vector" in refusal(qtbot, graph, adapter, tv2, "base")


def test_mouse_drag_onto_a_refusing_port_emits_the_reason(qtbot, graph) -> None:
    ids = build_demo(graph)
    graph.view.zoom_to_fit()
    start = view_pos(graph, graph.scene.node_item(ids["e2"]).output.scenePos())
    end = view_pos(graph, graph.scene.node_item(ids["merge"]).inputs["base"].scenePos())
    viewport = graph.view.viewport()
    with qtbot.waitSignal(graph.scene.connectionRefused, timeout=1000) as blocker:
        qtbot.mousePress(viewport, Qt.MouseButton.LeftButton, pos=start)
        qtbot.mouseMove(viewport, end)
        qtbot.mouseRelease(viewport, Qt.MouseButton.LeftButton, pos=end)
    assert "one connection" in blocker.args[0]
    assert len(graph.recipe.edges) == 4


def test_undo_during_a_connection_drag_cancels_it(graph) -> None:
    src = graph.scene.add_node_at("checkpoint", (0, 0))
    port = graph.scene.node_item(src).output
    graph.scene.begin_connection(port, port.scenePos())
    graph.stack.undo()
    graph.scene.end_connection(QPointF(300, 300))
    assert graph.recipe.nodes == {} and graph.recipe.edges == []


def test_delete_and_undo_restore_the_recipe_exactly(qtbot, graph) -> None:
    ids = build_demo(graph)
    before = graph.recipe.to_json()
    count = graph.stack.count()
    graph.scene.clearSelection()
    graph.scene.node_item(ids["e1"]).setSelected(True)
    graph.scene.edge_item(Edge(ids["merge"], ids["save"], "model")).setSelected(True)
    graph.view.setFocus()
    qtbot.keyClick(graph.view, Qt.Key.Key_Delete)
    assert ids["e1"] not in graph.recipe.nodes
    assert graph.recipe.edges == [Edge(ids["base"], ids["merge"], "base"), Edge(ids["e2"], ids["merge"], "models")]
    assert graph.scene.node_item(ids["e1"]) is None and graph.stack.count() == count + 1
    graph.stack.undo()
    assert graph.recipe.to_json() == before
    assert all(graph.scene.edge_item(e) is not None for e in graph.recipe.edges)


def test_moving_a_node_with_the_mouse_is_one_undoable_step(qtbot, graph) -> None:
    nid = graph.scene.add_node_at("scale", (0, 0))
    before = graph.recipe.to_json()
    grab = view_pos(graph, QPointF(100, 10))
    viewport = graph.view.viewport()
    qtbot.mousePress(viewport, Qt.MouseButton.LeftButton, pos=grab)
    qtbot.mouseMove(viewport, grab + QPoint(30, 10))
    qtbot.mouseMove(viewport, grab + QPoint(60, 40))
    qtbot.mouseRelease(viewport, Qt.MouseButton.LeftButton, pos=grab + QPoint(60, 40))
    x, y = graph.recipe.node(nid).ui["pos"]
    assert (x, y) != (0.0, 0.0)
    graph.stack.undo()
    assert graph.recipe.to_json() == before
    assert graph.scene.node_item(nid).pos() == QPointF(0, 0)


def test_copy_paste_gives_fresh_ids_with_internal_edges(graph) -> None:
    ids = build_demo(graph)
    graph.scene.clearSelection()
    for key in ("e1", "e2", "merge"):
        graph.scene.node_item(ids[key]).setSelected(True)
    data = graph.scene.copy_selected()
    assert [n["id"] for n in data["nodes"]] == [ids["e1"], ids["e2"], ids["merge"]]
    assert len(data["edges"]) == 2
    json.dumps(data)  # clipboard-ready

    before = graph.recipe.to_json()
    new_ids = graph.scene.paste(data)
    assert len(new_ids) == 3 and not set(new_ids) & set(ids.values())
    assert sorted(graph.scene.selected_node_ids()) == sorted(new_ids)
    new_edges = [e for e in graph.recipe.edges if e.dst == new_ids[2]]
    assert [(e.src, e.port) for e in new_edges] == [(new_ids[0], "models"), (new_ids[1], "models")]
    assert graph.recipe.node(new_ids[2]).ui["pos"] == [330.0, 90.0]
    graph.stack.undo()
    assert graph.recipe.to_json() == before


def test_clipboard_round_trip_through_the_view(qtbot, graph) -> None:
    ids = build_demo(graph)
    graph.scene.select_node(ids["merge"])
    graph.view.setFocus()
    qtbot.keyClick(graph.view, Qt.Key.Key_C, Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClick(graph.view, Qt.Key.Key_V, Qt.KeyboardModifier.ControlModifier)
    assert "task_arithmetic_2" in graph.recipe.nodes


def drop(view: GraphView, mime: QMimeData, pos: QPoint) -> None:
    """Deliver a full drag-and-drop sequence to the view's viewport."""
    actions = Qt.DropAction.CopyAction
    buttons, mods = Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    for event in (QDragEnterEvent(pos, actions, mime, buttons, mods), QDragMoveEvent(pos, actions, mime, buttons, mods),
                  QDropEvent(QPointF(pos), actions, mime, buttons, mods)):
        QApplication.sendEvent(view.viewport(), event)


def test_dropping_checkpoint_paths_adds_checkpoint_nodes_in_one_step(graph, tiny_models) -> None:
    mime = QMimeData()
    paths = [str(tiny_models["e1"]), str(tiny_models["e2"])]
    mime.setData(CHECKPOINT_MIME, json.dumps(paths).encode("utf-8"))
    drop(graph.view, mime, QPoint(200, 150))
    assert list(graph.recipe.nodes) == ["e1", "e2"]
    assert [n.params["path"] for n in graph.recipe.nodes.values()] == paths
    assert graph.stack.count() == 1
    first = graph.scene.node_item("e1").sceneBoundingRect()
    assert first.contains(graph.view.mapToScene(QPoint(200, 150)))
    graph.stack.undo()
    assert graph.recipe.nodes == {}


def test_dropping_a_palette_entry_adds_that_node(graph) -> None:
    entry = next(e for e in palette_entries() if e.params.get("method") == "linear")
    drop(graph.view, entry.to_mime(), QPoint(300, 200))
    assert graph.recipe.node("linear").params["method"] == "linear"


def test_scene_mirrors_document_edits_made_elsewhere(graph) -> None:
    r, scene = graph.document, graph.scene
    r.add_node(Node("a", "checkpoint", {"path": "/m/a.safetensors"}))
    r.add_node(Node("s", "scale", {"factor": 2.0}, {"pos": [400.0, 10.0]}))
    r.add_edge(Edge("a", "s", "input"))
    assert scene.node_item("a") is not None and scene.edge_item(Edge("a", "s", "input")) is not None
    assert scene.node_item("a").subtitle == "a.safetensors"
    r.set_param("s", "factor", -0.5)
    assert scene.node_item("s").subtitle == "× -0.5"
    r.set_ui("s", {"pos": [50.0, 60.0]})
    assert scene.node_item("s").pos() == QPointF(50, 60)
    r.remove_node("a")
    assert scene.node_item("a") is None and scene.edge_item(Edge("a", "s", "input")) is None
    r.replace_recipe(Recipe.from_json({"format": "weightsmith-recipe", "version": 1,
                                       "nodes": [{"id": "x", "type": "merge", "params": {"method": "linear"}}]}))
    assert scene.node_item("s") is None and scene.node_item("x").subtitle == "Weighted average"
    scene.revalidate()
    assert any("at least" in p for p in scene.node_item("x").problems)


def test_the_selection_lives_in_the_document(qtbot, graph) -> None:
    ids = build_demo(graph)
    with qtbot.waitSignal(graph.document.currentNodeChanged) as blocker:
        graph.scene.select_node(ids["merge"])
    assert blocker.args == [ids["merge"]]
    with qtbot.waitSignal(graph.document.currentNodeChanged) as blocker:
        graph.scene.node_item(ids["save"]).setSelected(True)
    assert blocker.args == [""] and graph.document.selection == [ids["merge"], ids["save"]]
    graph.document.set_selection([ids["base"]])  # a selection made elsewhere shows in the scene
    assert graph.scene.selected_node_ids() == [ids["base"]]


def test_rubber_band_selects_and_middle_drag_pans(qtbot, graph) -> None:
    ids = build_demo(graph)
    graph.scene.clearSelection()
    graph.view.zoom_to_fit()
    top_left = view_pos(graph, QPointF(-30, -30))
    bottom_right = view_pos(graph, QPointF(260, 200))  # around base and e1 only
    viewport = graph.view.viewport()
    qtbot.mousePress(viewport, Qt.MouseButton.LeftButton, pos=top_left)
    qtbot.mouseMove(viewport, (top_left + bottom_right) / 2)
    qtbot.mouseMove(viewport, bottom_right)
    qtbot.mouseRelease(viewport, Qt.MouseButton.LeftButton, pos=bottom_right)
    assert graph.scene.selected_node_ids() == [ids["base"], ids["e1"]]
    assert graph.stack.count() == 9  # selecting moved nothing

    centre = graph.view.mapToScene(viewport.rect().center())
    start = viewport.rect().center()
    qtbot.mousePress(viewport, Qt.MouseButton.MiddleButton, pos=start)
    qtbot.mouseMove(viewport, start + QPoint(80, 40))
    qtbot.mouseRelease(viewport, Qt.MouseButton.MiddleButton, pos=start + QPoint(80, 40))
    moved = graph.view.mapToScene(viewport.rect().center()) - centre
    assert moved.x() < -40 and moved.y() < -20


def test_zoom_and_fit(graph) -> None:
    ids = build_demo(graph)
    graph.view.set_zoom(1.0)
    graph.view.zoom_in()
    assert graph.view.zoom() > 1.0
    graph.view.zoom_out()
    graph.view.zoom_out()
    assert graph.view.zoom() < 1.0
    graph.view.zoom_to_fit()
    visible = graph.view.mapToScene(graph.view.viewport().rect()).boundingRect()
    for nid in ids.values():
        assert visible.contains(graph.scene.node_item(nid).sceneBoundingRect())
    assert graph.view.zoom() <= 1.0


@pytest.mark.parametrize("dark", [False, True])
def test_renders_in_light_and_dark_palettes(graph, dark: bool) -> None:
    build_demo(graph)
    if dark:
        pal = QPalette(graph.view.palette())
        for role, color in ((QPalette.ColorRole.Window, "#2b2b2b"), (QPalette.ColorRole.Base, "#1e1e1e"),
                            (QPalette.ColorRole.Text, "#e6e6e6")):
            pal.setColor(role, color)
        graph.view.setPalette(pal)
    graph.view.zoom_to_fit()
    image = graph.view.grab().toImage()
    assert not image.isNull() and image.width() > 0
