"""Plugin tasks: the example plugin end to end (its own tiny models, evaluate, learn through the CLI),
a custom metric, and clear errors naming the file and the function for broken plugins."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import textwrap
from pathlib import Path

import pytest
import torch

from engine.cli import main
from engine.errors import EngineInputError
from engine.evaluation import Evaluator, load_suite, trust
from engine.evaluation.plugin import load_plugin
from engine.evaluation import evaluate_recipe
from engine.graph import Recipe
from zoo_helpers import single_thread

EXAMPLE = Path(__file__).resolve().parents[1] / "resources" / "plugins" / "example_task.py"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(autouse=True)
def _run_named_plugins():
    """These tests call the engine as the command line does: the plugin file named is run (and announced)."""
    previous = trust.set_policy(trust.announce_and_trust)
    yield
    trust.set_policy(previous)


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    """A copy of the example plugin with its base and experts trained beside it."""
    folder = tmp_path_factory.mktemp("plugin")
    plugin = Path(shutil.copy(EXAMPLE, folder / "example_task.py"))
    spec = importlib.util.spec_from_file_location("example_task_copy", plugin)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.train_checkpoints()
    return plugin


def test_example_plugin_evaluates_its_models_end_to_end(example):
    tasks = load_suite(example)
    assert [t.name for t in tasks] == ["quadrant", "ring"] and tasks[0].classes == ("++", "-+", "--", "+-")
    recipe = Recipe.load(example.parent / "example_task" / "recipe.json")
    runs = {r["name"]: r for r in evaluate_recipe(recipe, device="cpu")["runs"]}
    assert set(runs) == {"merge", "base", "quadrant", "ring"}
    for task in ("quadrant", "ring"):
        own = runs[task]["tasks"][task]
        assert own["accuracy"] > 0.9 and own["normalized_accuracy"] == pytest.approx(1.0)
        assert runs["base"]["tasks"][task]["accuracy"] < 0.5
    merged = runs["merge"]["average"]["accuracy"]
    assert runs["base"]["average"]["accuracy"] < merged


def test_example_plugin_learns_through_the_cli(example, tmp_path, capsys):
    recipe = example.parent / "example_task" / "recipe.json"
    out = tmp_path / "learned.json"
    assert main(["learn", "adamerging", str(recipe), "--mode", "task", "--steps", "5", "-o", str(out)]) == 0
    assert "final entropy" in capsys.readouterr().out
    learned = json.loads(out.read_text())
    evaluate = next(n for n in learned["nodes"] if n["id"] == "evaluate")
    assert (out.parent / evaluate["params"]["suite"]).resolve() == example.resolve()  # paths follow the file
    assert main(["evaluate", str(out)]) == 0
    assert "quadrant" in capsys.readouterr().out


def write_plugin(folder: Path, body: str, name: str = "plugin.py") -> Path:
    path = folder / name
    path.write_text(body, encoding="utf-8")
    return path


GOOD = textwrap.dedent("""
    import torch
    from torch import nn

    def build_model(state_dict):
        net = nn.Linear(2, 2)
        net.load_state_dict(state_dict)
        return net

    def data(split):
        x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
        return x, torch.tensor([0, 1, 1, 0])
""")


def test_a_custom_metric_is_reported_as_accuracy(tmp_path):
    plugin = write_plugin(tmp_path, GOOD + "\ndef metric(outputs, labels):\n    return 0.25\n")
    (task,) = load_plugin(plugin)
    state = {"weight": torch.eye(2), "bias": torch.zeros(2)}
    scores = Evaluator([task], device="cpu").scores(state)[task.name]
    assert scores.accuracy == pytest.approx(0.25) and scores.n == 4
    assert math.isfinite(scores.loss)  # logits and class labels: the cross-entropy is filled in too


@pytest.mark.parametrize("body, message", [
    ("def data(split):\n    return None\n", "defines no build_model()"),
    (GOOD.replace("def data(split):", "def other(split):"), "defines no data()"),
    (GOOD + "\nraise ValueError('boom')\n", "failed to load: ValueError: boom"),
    ("def build_model(sd)\n", "failed to load: SyntaxError"),
    (GOOD.replace("return x, torch.tensor([0, 1, 1, 0])", "return x, torch.tensor([0, 1])"),
     "returned 4 inputs but 2 labels"),
    (GOOD.replace("return x, torch.tensor([0, 1, 1, 0])", "return [1, 2, 3]"), "must return (inputs, labels)"),
    (GOOD.replace("net.load_state_dict(state_dict)", "raise KeyError('weight')"),
     "build_model() of task 'plugin' raised KeyError"),
    (GOOD.replace("return net", "return 3"), "must return a torch.nn.Module"),
    ("TASKS = [1, 2]\n", "TASKS must be a non-empty list of dicts"),
])
def test_broken_plugins_name_the_file_and_the_function(tmp_path, body, message):
    plugin = write_plugin(tmp_path, body)
    with pytest.raises(EngineInputError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        (task,) = load_plugin(plugin)
        task.data("test")
        task.build_model({"weight": torch.eye(2), "bias": torch.zeros(2)})
    assert str(plugin) in str(info.value)


def test_missing_plugin_file_and_unknown_task(tmp_path):
    with pytest.raises(EngineInputError, match="plugin file not found"):
        load_plugin(tmp_path / "nope.py")
    plugin = write_plugin(tmp_path, GOOD)
    with pytest.raises(EngineInputError, match="unknown task"):
        load_suite(plugin, ["other"])
