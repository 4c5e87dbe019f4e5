"""One evaluation service for language models: the Evaluate node, the CLI, the live session and a sweep
give the same per-domain numbers on the LM demo."""

from __future__ import annotations

import json

import pytest

from engine.cli import main
from engine.evaluation import evaluate_recipe, sweep
from engine.graph import Recipe, nodes_of
from engine.graph.node_kinds import MERGE
from engine.live import LiveSession
from zoo_helpers import reduced_lm_zoo, single_thread


def _numbers(row: dict) -> dict[str, float]:
    return {name: m["value"] for name, m in row["metrics"].items()}


def test_every_path_scores_the_lm_demo_alike(tmp_path, capsys):
    recipe = Recipe.load(reduced_lm_zoo() / "demo.json")
    merge = nodes_of(recipe, MERGE)[0]
    params = {**recipe.nodes[merge].params, "lambda": 0.7}
    recipe.set_params(merge, params)
    with single_thread():
        service = next(r for r in evaluate_recipe(recipe, device="cpu")["runs"] if r["recipe_node"] == merge)
        session = LiveSession(recipe, merge, device="cpu")
        session.update(params)
        live = session.evaluate(full=True)
        grid = sweep(recipe, [(f"{merge}.lambda", 0.7, 0.7, 1)], device="cpu")
        recipe.save(tmp_path / "demo.json")
        assert main(["evaluate", str(tmp_path / "demo.json"), "--device", "cpu", "--out", str(tmp_path / "r.json")]) == 0
    cli = next(r for r in json.loads((tmp_path / "r.json").read_text())["runs"] if r["recipe_node"] == merge)
    swept = next(r for r in grid["points"][0]["runs"] if r["recipe_node"] == merge)
    kinds = {row["primary"] for row in service["tasks"].values()}
    assert {"perplexity", "accuracy"} <= kinds, kinds
    for task, row in service["tasks"].items():
        want = _numbers(row)
        for other in (cli, swept):
            assert _numbers(other["tasks"][task]) == pytest.approx(want, rel=1e-6, abs=1e-9), task
        # the live weights come from the resident form of the method: float rounding only
        assert _numbers(live.tasks[task]) == pytest.approx(want, rel=1e-5, abs=1e-6), task
