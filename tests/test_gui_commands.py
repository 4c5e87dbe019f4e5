"""Undo commands over the document's recipe: each edit's undo restores ``recipe.to_json()`` exactly, redo
repeats it."""

from __future__ import annotations

import copy

import pytest
from PySide6.QtGui import QUndoStack

from app.commands import (AddNodeCommand, ConnectCommand, DisconnectCommand, MoveNodesCommand, PasteCommand,
                          RemoveNodesCommand, ReplaceRecipeCommand, SetParamCommand, SetParamsCommand)
from app.document import Document
from engine.graph.recipe import Edge, Node, Recipe

DEMO = {
    "format": "weightsmith-recipe", "version": 1, "name": "demo",
    "nodes": [
        {"id": "base", "type": "checkpoint", "params": {"path": "zoo/base"}, "ui": {"pos": [0.0, 0.0]}},
        {"id": "digits", "type": "checkpoint", "params": {"path": "zoo/digits"}},
        {"id": "shapes", "type": "checkpoint", "params": {"path": "zoo/shapes"}, "ui": {"pos": [0.0, 200.0]}},
        {"id": "merge", "type": "merge", "params": {"method": "task_arithmetic", "lambda": 1.0,
                                                    "weight": {"digits": 1.0, "shapes": 0.8}},
         "ui": {"pos": [300.0, 50.0], "color": "red"}},
        {"id": "save", "type": "save", "params": {"path": "out", "dtype": "fp16"}, "ui": {"pos": [600.0, 50.0]}},
    ],
    "edges": [
        {"from": "base", "to": "merge", "port": "base"},
        {"from": "digits", "to": "merge", "port": "models"},
        {"from": "shapes", "to": "merge", "port": "models"},
        {"from": "merge", "to": "save", "port": "model"},
    ],
}


@pytest.fixture
def recipe() -> Recipe:
    return Recipe.from_json(copy.deepcopy(DEMO))


@pytest.fixture
def doc(qapp, recipe: Recipe) -> Document:
    return Document(recipe)


@pytest.fixture
def stack(qapp) -> QUndoStack:
    return QUndoStack()


COMMANDS = ("add", "remove", "remove_middle", "connect", "disconnect", "set_param", "set_new_param", "set_params",
            "move", "paste", "replace")


def commands(doc: Document) -> dict[str, object]:
    """One of every command, built against the demo recipe."""
    return {
        "add": AddNodeCommand(doc, Node("scale", "scale", {"factor": -1.0}, {"pos": [1.0, 2.0]}),
                              [Edge("shapes", "scale", "input"), Edge("scale", "merge", "models")]),
        "remove": RemoveNodesCommand(doc, ["save", "digits"]),
        "remove_middle": RemoveNodesCommand(doc, ["merge"]),
        "connect": ConnectCommand(doc, Edge("base", "merge", "models")),
        "disconnect": DisconnectCommand(doc, Edge("digits", "merge", "models")),
        "set_param": SetParamCommand(doc, "merge", "lambda", 0.3),
        "set_new_param": SetParamCommand(doc, "merge", "normalize", True),
        "set_params": SetParamsCommand(doc, "merge", {"method": "linear", "weight": 1.0}),
        "move": MoveNodesCommand(doc, {"merge": ((300.0, 50.0), (320.0, 70.0)), "digits": (None, (5.0, 6.0))}),
        "paste": PasteCommand(doc, DEMO["nodes"][1:4], DEMO["edges"], (40, 40)),
        "replace": ReplaceRecipeCommand(doc, {"format": "weightsmith-recipe", "version": 1, "name": "other",
                                                 "nodes": [{"id": "x", "type": "checkpoint", "params": {}}],
                                                 "edges": []}),
    }


@pytest.mark.parametrize("name", COMMANDS)
def test_undo_restores_json_exactly_and_redo_repeats(recipe: Recipe, doc: Document, stack: QUndoStack,
                                                    name: str) -> None:
    assert set(commands(doc)) == set(COMMANDS)
    before = recipe.to_json()
    stack.push(commands(doc)[name])
    after = recipe.to_json()
    assert after != before
    stack.undo()
    assert recipe.to_json() == before
    stack.redo()
    assert recipe.to_json() == after
    stack.undo()
    assert recipe.to_json() == before


def test_remove_nodes_takes_their_edges(recipe: Recipe, doc: Document, stack: QUndoStack) -> None:
    stack.push(RemoveNodesCommand(doc, ["merge"]))
    assert "merge" not in recipe.nodes and recipe.edges == []
    stack.undo()
    assert [e.to_json() for e in recipe.edges] == DEMO["edges"]


def test_set_param_with_one_merge_key_is_one_undo_step(recipe: Recipe, doc: Document, stack: QUndoStack) -> None:
    before = recipe.to_json()
    for value in (0.1, 0.2, 0.3, 0.4):
        stack.push(SetParamCommand(doc, "merge", "lambda", value, merge_key="drag-1"))
    assert stack.count() == 1 and recipe.node("merge").params["lambda"] == 0.4
    for value in (0.5, 0.6):  # the next press of the slider
        stack.push(SetParamCommand(doc, "merge", "lambda", value, merge_key="drag-2"))
    assert stack.count() == 2
    stack.undo()
    assert recipe.node("merge").params["lambda"] == 0.4
    stack.undo()
    assert recipe.to_json() == before
    stack.redo()
    assert recipe.node("merge").params["lambda"] == 0.4


def test_a_drag_back_to_the_start_leaves_no_undo_step(recipe: Recipe, doc: Document, stack: QUndoStack) -> None:
    before = recipe.to_json()
    for value in (0.5, 0.7, 1.0):
        stack.push(SetParamCommand(doc, "merge", "lambda", value, merge_key="drag"))
    assert stack.count() == 0 and recipe.to_json() == before


def test_set_param_without_merge_key_or_on_another_key_stays_separate(doc: Document, stack: QUndoStack) -> None:
    stack.push(SetParamCommand(doc, "merge", "lambda", 0.1))
    stack.push(SetParamCommand(doc, "merge", "lambda", 0.2))
    stack.push(SetParamCommand(doc, "merge", "lambda", 0.3, merge_key="k"))
    stack.push(SetParamCommand(doc, "merge", "normalize", True, merge_key="k"))
    assert stack.count() == 4


def test_paste_gives_fresh_ids_and_keeps_internal_edges_only(recipe: Recipe, doc: Document, stack: QUndoStack) -> None:
    fragment = [n for n in DEMO["nodes"] if n["id"] in ("digits", "shapes", "merge")]
    cmd = PasteCommand(doc, fragment, DEMO["edges"], (40, 40))
    stack.push(cmd)
    assert cmd.new_ids == {"digits": "digits_2", "shapes": "shapes_2", "merge": "merge_2"}
    new_edges = [e for e in recipe.edges if e.dst == "merge_2"]
    assert new_edges == [Edge("digits_2", "merge_2", "models"), Edge("shapes_2", "merge_2", "models")]
    pasted = recipe.node("merge_2")
    assert pasted.ui["pos"] == [340.0, 90.0] and pasted.ui["color"] == "red"
    assert pasted.params["weight"] == {"digits_2": 1.0, "shapes_2": 0.8}
    assert "pos" not in recipe.node("digits_2").ui
    stack.undo()
    stack.redo()
    assert set(recipe.nodes) >= {"digits_2", "shapes_2", "merge_2"}


def test_paste_numbers_copies_of_numbered_ids_afresh(doc: Document, stack: QUndoStack) -> None:
    doc.add_node(Node("merge_2", "merge", {"method": "linear"}))
    cmd = PasteCommand(doc, [{"id": "merge_2", "type": "merge", "params": {}}, {"id": "merge", "type": "merge"}], [])
    stack.push(cmd)
    assert cmd.new_ids == {"merge_2": "merge_3", "merge": "merge_4"}


def test_malformed_paste_is_refused_before_pushing(doc: Document) -> None:
    with pytest.raises(ValueError):
        PasteCommand(doc, [{"type": "merge"}], [])
    with pytest.raises(ValueError):
        PasteCommand(doc, [{"id": "a", "type": "merge"}], [{"from": "a"}])
