"""Self Positioning: SGD over one coefficient per task vector on a balanced labelled probe set — the
loss goes down on a tiny problem, the L1 penalty pulls the coefficients in, and the written recipe
reproduces the learned model's outputs bytewise without data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from engine.errors import EngineInputError
from engine.evaluation.tasks import ClassifierTask, Split
from engine.graph import Edge, Node, Recipe, materialize, run_recipe
from engine.graph.build import simple_merge_recipe
from engine.learn import learn_self_positioning, save_recipe
from zoo_helpers import reduced_zoo, single_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


class Probe(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x)


def tiny_problem(tmp_path: Path) -> tuple[Recipe, list[ClassifierTask]]:
    """Base 0, two experts whose task vectors each solve one of two separable tasks; the best merge needs
    both coefficients well above the 0.3 start."""
    g = torch.Generator().manual_seed(0)
    save_file({"fc.weight": torch.zeros(2, 4), "fc.bias": torch.zeros(2)}, str(tmp_path / "base.safetensors"))
    tasks, paths = [], []
    for t in range(2):
        w = torch.zeros(2, 4)
        w[0, 2 * t], w[1, 2 * t] = 0.5, -0.5  # class 0 when feature 2t is positive
        paths.append(tmp_path / f"e{t}.safetensors")
        save_file({"fc.weight": w, "fc.bias": torch.zeros(2)}, str(paths[-1]))
        x = torch.zeros(64, 4)
        x[:, 2 * t] = torch.randn(64, generator=g).sign() * 2
        y = (x[:, 2 * t] < 0).long()
        tasks.append(ClassifierTask(f"e{t}", ("pos", "neg"), Probe, {}, lambda x=x, y=y: {"train": Split(x, y)},
                                    identity=f"sp-toy{t}"))
    return simple_merge_recipe("task_arithmetic", paths, base=tmp_path / "base.safetensors"), tasks


def test_the_loss_goes_down_and_the_penalty_pulls_the_coefficients_in(tmp_path):
    recipe, tasks = tiny_problem(tmp_path)
    result = learn_self_positioning(recipe, "merge", tasks, steps=40, lr=0.5, mu=0.0, examples=32, batch_size=16,
                                    device="cpu")
    assert result.info["final_loss"] < result.info["initial_loss"] - 0.1
    learned = [row["all"] for row in result.coefficients.values()]
    assert all(a > 0.3 for a in learned)  # the right direction: more of each task's own vector
    penalised = learn_self_positioning(recipe, "merge", tasks, steps=40, lr=0.5, mu=0.2, examples=32,
                                       batch_size=16, device="cpu")
    assert sum(r["all"] for r in penalised.coefficients.values()) < sum(learned)
    assert result.history[0]["loss"] > result.history[-1]["loss"]
    assert len(result.history) == 40 and all("cross_entropy" in h for h in result.history)


def test_the_written_recipe_reproduces_the_learned_model_bytewise(tmp_path):
    recipe, tasks = tiny_problem(tmp_path)
    result = learn_self_positioning(recipe, "merge", tasks, steps=10, lr=0.5, examples=16, device="cpu")
    params = result.recipe.node("merge").params
    assert params["method"] == "task_arithmetic" and params["lambda"] == 1.0
    assert params["weight"] == {k: row["all"] for k, row in result.coefficients.items()}
    in_memory = materialize(result.recipe, "merge", device="cpu")
    (tmp_path / "out").mkdir()
    again = Recipe.load(save_recipe(result.recipe, tmp_path / "out" / "learned.json"))
    again.add_node(Node("save", "save", {"path": "merged"}))
    again.add_edge(Edge("merge", "save", "model"))
    written = run_recipe(again, device="cpu", outputs=["save"]).outputs["save"]
    on_disk = load_file(str(written / "model.safetensors"))
    x = tasks[0].data("train").inputs
    model = Probe()
    outputs = []
    for state in (in_memory, on_disk):
        model.load_state_dict(state)
        with torch.no_grad():
            outputs.append(model(x))
    assert torch.equal(outputs[0], outputs[1])
    # the learner's own figure is that model's loss
    by_hand = sum(float(nn.functional.cross_entropy(t.forward(on_disk, t.data("train").inputs),
                                                    t.data("train").labels)) for t in tasks) / 2
    assert by_hand == pytest.approx(result.info["final_loss"], rel=1e-4)


def test_on_the_zoo_and_from_the_command_line(tmp_path, capsys):
    from engine.cli import main

    demo = reduced_zoo() / "demo.json"
    out = tmp_path / "sp.json"
    assert main(["learn", "self-positioning", str(demo), "--steps", "5", "--examples", "8", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "initial loss" in printed and "final loss" in printed
    merge = Recipe.load(out).node("merge").params
    assert merge["method"] == "task_arithmetic" and len(merge["weight"]) == 8
    assert main(["learn", "self-positioning", str(demo), "--temperature", "1", "-o", str(out)]) == 2
    assert "--temperature does not apply to self-positioning" in capsys.readouterr().err


def test_bad_input_is_named(tmp_path):
    recipe, tasks = tiny_problem(tmp_path)
    unlabeled = [ClassifierTask("u", ("a", "b"), Probe, {}, lambda: {"train": Split(torch.zeros(3, 4), None)},
                                identity="sp-unlabeled")]
    with pytest.raises(EngineInputError, match="has no labels"):
        learn_self_positioning(recipe, "merge", unlabeled, steps=1, device="cpu")
    with pytest.raises(EngineInputError, match="mu must not be negative"):
        learn_self_positioning(recipe, "merge", tasks, steps=1, mu=-1.0, device="cpu")
    with pytest.raises(EngineInputError, match="at least 1"):
        learn_self_positioning(recipe, "merge", tasks, steps=0, device="cpu")
