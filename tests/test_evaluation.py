"""The evaluation engine: metrics by hand, the runner, the Evaluate node, sweeps, bad data files, the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from engine.cli import main
from engine.errors import Cancelled, EngineInputError
from engine.evaluation import Accumulator, Evaluator, average, load_suite, normalized_accuracy
from engine.evaluation.hooks import linear_input_grams, visit_linear_inputs
from engine.evaluation.service import EvaluationService, evaluate_recipe
from engine.evaluation.sweep import parse_sweep_param, sweep, sweep_csv
from engine.graph.param_path import ParamPath
from engine.methods import get_method
from engine.evaluation.runner import Scores, load_weights, result_table
from engine.evaluation.suite import suite_base
from engine.graph import GraphRun, Recipe
from engine.runtime import CancelToken
from zoo_helpers import copy_zoo, reduced_zoo, single_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


def _demo() -> Recipe:
    return Recipe.load(reduced_zoo() / "demo.json")


# ---------------------------------------------------------------- metrics


def test_accumulator_matches_hand_computed_metrics():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 1])
    acc = Accumulator()
    acc.add(logits[:2], labels[:2])
    acc.add(logits[2:], labels[2:])
    s = acc.result()
    # predictions 0, 1, 0 (ties go to the first class), 0 → 2 of 4 correct
    assert s.n == 4 and s.accuracy == 0.5
    assert s.accuracy_stderr == pytest.approx(math.sqrt(0.5 * 0.5 / 4))
    nll = [math.log(1 + math.exp(-2)), math.log(1 + math.exp(-1)), math.log(2), math.log(1 + math.exp(3))]
    assert s.loss == pytest.approx(sum(nll) / 4, rel=1e-6)

    def entropy(a, b):
        p = 1 / (1 + math.exp(b - a))
        return -(p * math.log(p) + (1 - p) * math.log(1 - p))

    assert s.entropy == pytest.approx(sum(entropy(*row.tolist()) for row in logits) / 4, rel=1e-6)


def test_normalized_accuracy_and_averages_by_hand():
    assert normalized_accuracy(0.6, 0.8) == pytest.approx(0.75)
    assert normalized_accuracy(0.6, None) is None and normalized_accuracy(0.6, 0.0) is None
    table = result_table({"a": Scores(10, 0.6, 0.1, 1.0, 0.5), "b": Scores(10, 0.9, 0.1, 0.2, 0.1)},
                         {"a": Scores(10, 0.8, 0.1, 0.5, 0.2), "b": Scores(10, 0.9, 0.1, 0.1, 0.1)})
    assert table["tasks"]["a"]["normalized_accuracy"] == pytest.approx(0.75)
    assert table["tasks"]["b"]["normalized_accuracy"] == pytest.approx(1.0)
    assert table["average"]["accuracy"] == pytest.approx(0.75)
    assert table["average"]["normalized_accuracy"] == pytest.approx(0.875)
    assert table["average"]["loss"] == pytest.approx(0.6)
    assert average({"a": {"x": 1.0}, "b": {"x": None}}, ["x"]) == {}


# ---------------------------------------------------------------- runner and tasks


def test_evaluation_is_reproducible_and_cached():
    tasks = load_suite(reduced_zoo())
    base = load_weights(suite_base(reduced_zoo()), tasks[0].expected_names())
    first = Evaluator(tasks, device="cpu").scores(base)
    second = Evaluator(load_suite(reduced_zoo()), device="cpu").scores(base)
    assert first == second
    ev = Evaluator(tasks, device="cpu")
    ev.scores(base, model_key="base")
    calls = []
    tasks[0].build_model = lambda *a, **k: calls.append(a)  # a cache hit builds no model
    assert ev.scores(base, model_key="base") == first and calls == []


def test_quick_scores_the_first_batches_with_a_standard_error():
    tasks = load_suite(reduced_zoo(), ["digits"])
    base = load_weights(suite_base(reduced_zoo()), tasks[0].expected_names())
    quick = Evaluator(tasks, device="cpu", batch_size=16).scores(base, quick=2)["digits"]
    assert quick.n == 32 and quick.accuracy_stderr == pytest.approx(math.sqrt(quick.accuracy * (1 - quick.accuracy) / 32))
    full = Evaluator(tasks, device="cpu", batch_size=16).scores(base)["digits"]
    assert full.n == len(tasks[0].data("test"))


def test_functional_forward_matches_the_module_and_is_differentiable():
    task = load_suite(reduced_zoo(), ["shapes"])[0]
    weights = load_weights(task.expert, task.expected_names())
    x = task.data("val").inputs[:8]
    with torch.no_grad():
        expected = task.build_model(weights)(x)
    params = {k: v.clone().requires_grad_(True) for k, v in weights.items()}
    logits = task.forward(params, x)
    assert torch.allclose(logits, expected, atol=1e-5)
    logits.logsumexp(-1).sum().backward()
    assert params["backbone.layers.0.fc1.weight"].grad is not None
    assert task.data("unlabeled").labels is None


def test_linear_inputs_are_reported_under_state_dict_names():
    task = load_suite(reduced_zoo(), ["digits"])[0]
    weights = load_weights(task.expert, task.expected_names())
    model = task.build_model(weights)
    seen: dict[str, tuple] = {}
    visit_linear_inputs(model, task.data("unlabeled").inputs, lambda n, x: seen.setdefault(n, tuple(x.shape)),
                        batch_size=1000)
    assert "backbone.layers.0.fc1.weight" in seen and set(seen) <= set(weights)
    grams = linear_input_grams(model, task.data("unlabeled").inputs, batch_size=7)
    gram, rows = grams["backbone.layers.1.fc2.weight"]
    width = weights["backbone.layers.1.fc2.weight"].shape[1]
    assert gram.shape == (width, width) and rows == len(task.data("unlabeled"))


def test_wrong_state_dict_names_the_tensor():
    task = load_suite(reduced_zoo(), ["digits"])[0]
    weights = load_weights(task.expert, task.expected_names())
    weights["backbone.embed.weight"] = weights["backbone.embed.weight"][:, :10]
    with pytest.raises(EngineInputError, match="backbone.embed.weight"):
        task.build_model(weights)
    del weights["backbone.norm.bias"]
    with pytest.raises(EngineInputError, match="backbone.norm.bias"):
        task.build_model(weights)


# ---------------------------------------------------------------- bad data files


def test_bad_data_files_give_clear_errors(tmp_path):
    from safetensors.torch import load_file, save_file

    zoo = copy_zoo(tmp_path / "zoo")
    data = zoo / "data" / "digits.safetensors"
    original = {k: v.clone() for k, v in load_file(str(data)).items()}

    data.write_bytes(b"this is not a safetensors file")
    with pytest.raises(EngineInputError, match="digits.safetensors"):
        load_suite(zoo, ["digits"])[0].data("test")

    save_file({**original, "test.inputs": original["test.inputs"].float()}, str(data))
    with pytest.raises(EngineInputError, match="expected uint8 images") as err:
        load_suite(zoo, ["digits"])[0].data("test")
    assert "'test.inputs'" in str(err.value) and "digits.safetensors" in str(err.value)

    save_file({**original, "val.labels": original["val.labels"] + 10}, str(data))
    with pytest.raises(EngineInputError, match="labels must lie in 0…9") as err:
        load_suite(zoo, ["digits"])[0].data("val")
    assert "'val.labels'" in str(err.value)

    data.unlink()
    with pytest.raises(EngineInputError, match="digits.safetensors.*missing|missing.*digits.safetensors"):
        load_suite(zoo, ["digits"])[0].data("val")

    (zoo / "heads" / "letters.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(EngineInputError, match="letters.safetensors"):
        load_suite(zoo, ["letters"])

    (zoo / "zoo.json").write_text("{not json")
    with pytest.raises(EngineInputError, match="zoo.json"):
        load_suite(zoo)
    with pytest.raises(EngineInputError, match="unknown task"):
        load_suite(reduced_zoo(), ["nope"])


# ---------------------------------------------------------------- the Evaluate node, sweeps


def test_evaluate_recipe_output_format():
    result = evaluate_recipe(_demo(), device="cpu")
    tasks = [t.name for t in load_suite(reduced_zoo())]
    runs = {r["name"]: r for r in result["runs"]}
    assert list(runs) == ["merge", "base", *tasks]
    for run in result["runs"]:
        assert run["recipe_node"] == run["name"] and run["evaluate_node"] == "evaluate"
        assert set(run["tasks"]) == set(tasks)
        for row in run["tasks"].values():
            assert {"accuracy", "normalized_accuracy", "loss", "entropy", "n"} <= set(row)
        assert {"accuracy", "normalized_accuracy", "loss"} <= set(run["average"])
    for t in tasks:  # each expert is its own yardstick
        assert runs[t]["tasks"][t]["normalized_accuracy"] == pytest.approx(1.0)
    assert runs["merge"]["method"] == "ties"
    assert evaluate_recipe(_demo(), device="cpu") == result


def test_unchanged_models_are_not_recomputed(monkeypatch):
    computed = []
    original = GraphRun.materialize
    monkeypatch.setattr(GraphRun, "materialize", lambda self, nid: computed.append(nid) or original(self, nid))
    runner = EvaluationService(device="cpu")
    recipe = _demo()
    runner.evaluate(recipe)
    assert len(computed) == len(recipe.inputs("evaluate", "models"))
    computed.clear()
    recipe.set_param("merge", "lambda", 0.5)
    runner.evaluate(recipe)
    assert computed == ["merge"]


def test_cancel_stops_an_evaluation():
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        evaluate_recipe(_demo(), device="cpu", cancel=token)


def test_evaluate_node_without_suite_is_an_input_error():
    recipe = _demo()
    recipe.set_param("evaluate", "suite", "")
    with pytest.raises(EngineInputError, match="names no task suite"):
        evaluate_recipe(recipe, device="cpu")


def test_one_and_two_dimensional_sweeps():
    result = sweep(_demo(), [("merge.lambda", 0.0, 1.0, 3)], device="cpu")
    assert result["axes"] == [{"param": "merge.lambda", "values": [0.0, 0.5, 1.0]}]
    assert [p["values"]["merge.lambda"] for p in result["points"]] == [0.0, 0.5, 1.0]
    assert all([r["name"] for r in p["runs"]] == ["merge"] for p in result["points"])
    assert {r["name"] for r in result["references"]} >= {"base", "digits"}
    base_avg = next(r for r in result["references"] if r["name"] == "base")["average"]["accuracy"]
    assert result["points"][0]["runs"][0]["average"]["accuracy"] == pytest.approx(base_avg)  # λ = 0 is the base

    grid = sweep(_demo(), [("merge.lambda", 0.1, 0.3, 2), ("merge.weight:digits", 0.0, 2.0, 2)], device="cpu", quick=1)
    assert [tuple(p["values"].values()) for p in grid["points"]] == [(0.1, 0.0), (0.1, 2.0), (0.3, 0.0), (0.3, 2.0)]
    rows = sweep_csv(grid).strip().splitlines()
    header = rows[0].split(",")
    assert header[:7] == ["merge.lambda", "merge.weight:digits", "run", "task", "accuracy", "normalized_accuracy",
                          "normalized_score"]
    assert {"loss", "entropy", "accuracy_stderr"} <= set(header) and "expert_accuracy" in header
    assert len(rows) == 1 + 4 * (len(load_suite(reduced_zoo())) + 1)


def test_sweep_parameter_parsing_and_per_model_paths():
    assert parse_sweep_param("merge.lambda=0:1:11") == (ParamPath("lambda", None, "merge"), 0.0, 1.0, 11)
    assert parse_sweep_param("llama-3.1.weight:e.2=0:1:2")[0] == ParamPath("weight", "e.2", "llama-3.1")
    for bad in ("merge.lambda", "lambda=0:1:3", "merge.lambda=0:1", "merge.lambda=a:b:c", ".lambda=0:1:2",
                "merge.weight:=0:1:2"):
        with pytest.raises(EngineInputError):
            parse_sweep_param(bad)
    recipe = _demo()
    ParamPath.parse("merge.weight:shapes").apply(recipe, 0.25)
    weights = recipe.nodes["merge"].params["weight"]
    assert weights["shapes"] == 0.25 and weights["digits"] == 1.0
    assert ParamPath.parse("weight:shapes", node="merge").get(
        get_method(recipe.nodes["merge"].params["method"]).params, recipe.nodes["merge"].params, recipe.inputs("merge", "models")) == 0.25
    for bad in ("merge.weight:nobody", "merge.lambda:digits", "merge.nothing"):
        with pytest.raises(EngineInputError):
            ParamPath.parse(bad).apply(recipe, 1.0)


# ---------------------------------------------------------------- the CLI


def test_cli_evaluate_and_sweep_write_results(tmp_path, capsys):
    demo = str(reduced_zoo() / "demo.json")
    out = tmp_path / "results.json"
    assert main(["evaluate", demo, "--device", "cpu", "--out", str(out)]) == 0
    runs = json.loads(out.read_text())["runs"]
    assert runs[0]["name"] == "merge" and "accuracy" in runs[0]["tasks"]["digits"]
    assert main(["sweep", demo, "--device", "cpu", "--quick", "1", "--param", "merge.lambda=0:0.4:2",
                 "--out", str(tmp_path / "s.json"), "--csv", str(tmp_path / "s.csv")]) == 0
    assert len(json.loads((tmp_path / "s.json").read_text())["points"]) == 2
    assert (tmp_path / "s.csv").read_text().startswith("merge.lambda,run,task,accuracy")
    assert main(["sweep", demo, "--param", "merge.lambda"]) == 2
    assert "NODE.PARAM=START:STOP:STEPS" in capsys.readouterr().err


def test_cli_zoo_build(tmp_path, capsys):
    assert main(["zoo", "build", "--dir", str(tmp_path / "z"), "--size", "reduced", "--seed", "2"]) == 0
    assert (tmp_path / "z" / "demo.json").is_file()
    assert "demo recipe" in capsys.readouterr().out


def test_the_evaluate_node_exists_without_importing_the_evaluation_engine():
    import subprocess
    import sys

    code = ("import sys\nfrom engine.graph import node_kind\nassert node_kind('evaluate').sink\n"
            "assert 'engine.evaluation' not in sys.modules, 'an import side effect'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
