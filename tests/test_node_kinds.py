"""Node kinds as classes: one registry, every kind answering for itself, a new kind added in one place,
and ``GraphRun.run(sinks)`` running Save and Evaluate nodes alike."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import engine.graph.node_kinds as nk
from engine.errors import EngineInputError
from engine.evaluation import EvaluationService, evaluate_recipe
from engine.graph import GraphRun, Recipe, RunOptions, all_node_kinds, node_kind, run_recipe, validate
from engine.graph.node_kinds import DELTA, MODEL, NodeKind, Port
from engine.graph.recipe import Edge, Node
from zoo_helpers import copy_zoo, single_thread


def test_every_kind_is_listed_once_and_declares_itself():
    names = [k.name for k in all_node_kinds()]
    assert len(names) == len(set(names)) == 8
    for kind in all_node_kinds():
        assert kind.label and kind.help and kind.icon and kind.color.startswith("#")
        assert node_kind(kind.name) is kind
        if kind.source:
            assert kind.file_param in {p.name for p in kind.params}
        if kind.sink:
            assert type(kind).run_sinks is not NodeKind.run_sinks, f"{kind.name} does not say what running it means"
    with pytest.raises(EngineInputError, match="unknown node type 'nope'"):
        node_kind("nope")


class NegateKind(NodeKind):
    """A kind that exists only in this test: −x of a model or task vector, as a task vector."""

    name, label, help = "negate", "Negate", "The opposite task vector."
    inputs = (Port("input", (MODEL, DELTA)),)
    output = DELTA
    icon, color = "scale", "#123456"

    def problems(self, check):
        return ["negating twice is the identity"] if any(
            check.recipe.nodes[s].type == self.name for s in check.inputs("input")) else []

    def compute(self, run, node_id, name):
        x = run.value(run.input(node_id, "input"), name)
        return None if x is None else -x


@pytest.fixture
def negate_kind(monkeypatch):
    kind = NegateKind()
    monkeypatch.setattr(nk, "NODE_KINDS", (*nk.NODE_KINDS, kind))
    monkeypatch.setitem(nk._BY_NAME, kind.name, kind)
    return kind


def _negation_recipe(tiny_models, out) -> Recipe:
    """base + (−(e1 − base)) → save: the merge moves the base away from e1."""
    r = Recipe("negate")
    r.add_node(Node("base", "checkpoint", {"path": str(tiny_models["base"])}))
    r.add_node(Node("e1", "checkpoint", {"path": str(tiny_models["e1"])}))
    r.add_node(Node("tv", "task_vector"))
    r.add_node(Node("neg", "negate"))
    r.add_node(Node("sum", "add"))
    r.add_node(Node("save", "save", {"path": str(out)}))
    for e in (Edge("e1", "tv", "model"), Edge("base", "tv", "base"), Edge("tv", "neg", "input"),
              Edge("base", "sum", "inputs"), Edge("neg", "sum", "inputs"), Edge("sum", "save", "model")):
        r.add_edge(e)
    return r


def test_a_new_kind_needs_nothing_but_its_class(negate_kind, tiny_models, tmp_path):
    recipe = _negation_recipe(tiny_models, tmp_path / "out")
    assert validate(recipe) == []
    result = run_recipe(recipe, device="cpu")
    merged = load_file(tmp_path / "out" / "model.safetensors")
    base, e1 = load_file(tiny_models["base"]), load_file(tiny_models["e1"])
    for name, t in merged.items():
        torch.testing.assert_close(t, 2 * base[name] - e1[name])
    assert result.outputs == {"save": tmp_path / "out"}
    # its own validation takes part like any built-in kind's
    recipe.add_node(Node("neg2", "negate"))
    recipe.add_edge(Edge("neg", "neg2", "input"))
    assert any(p.node_id == "neg2" and "identity" in p.message for p in validate(recipe))


def test_a_new_kind_appears_in_the_editor(negate_kind, qtbot):
    from app.graph.palette import palette_entries
    from app.graph.style import category_color

    assert any(e.node_type == "negate" for e in palette_entries())
    assert category_color("negate").name() == "#123456"


def test_run_runs_save_and_evaluate_sinks_in_one_call(tmp_path):
    zoo = copy_zoo(tmp_path / "zoo")
    recipe = Recipe.load(zoo / "demo.json")
    merge = next(n for n in recipe.nodes.values() if n.kind.method_param)
    recipe.add_node(Node("save", "save", {"path": str(tmp_path / "merged")}))
    recipe.add_edge(Edge(merge.id, "save", "model"))
    with single_thread():
        with GraphRun(recipe, device="cpu", scorer=EvaluationService(device="cpu")) as run:
            result = run.run()
        expected = evaluate_recipe(Recipe.load(zoo / "demo.json"), device="cpu")["runs"]
    assert result.outputs == {"save": tmp_path / "merged"} and any((tmp_path / "merged").glob("*.safetensors"))
    assert [r["recipe_node"] for r in result.evaluations] == [r["recipe_node"] for r in expected]
    for got, want in zip(result.evaluations, expected):
        for task, row in want["tasks"].items():
            assert got["tasks"][task]["accuracy"] == pytest.approx(row["accuracy"], abs=1e-6)
    json.dumps(result.evaluations, allow_nan=False)


def test_running_a_non_output_or_an_evaluate_without_a_service_is_refused(tiny_models, tmp_path):
    r = Recipe("r")
    r.add_node(Node("base", "checkpoint", {"path": str(tiny_models["base"])}))
    r.add_node(Node("ev", "evaluate", {"suite": str(tmp_path / "none.json")}))
    r.add_edge(Edge("base", "ev", "models"))
    with GraphRun(r, device="cpu") as run:
        with pytest.raises(EngineInputError, match="not an output"):
            run.run(["base"])
        with pytest.raises(EngineInputError, match="no evaluation service"):
            run.run(["ev"], RunOptions())
