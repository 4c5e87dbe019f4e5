"""RegMean: the joint least-squares solution on a linear toy problem, the CG solver, the statistics
file on the zoo (the learned recipe runs without data), and its error messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from engine.errors import EngineInputError
from engine.evaluation import load_suite
from engine.evaluation.tasks import ClassifierTask, Split
from engine.graph import Edge, Node, Recipe, materialize, run_recipe
from engine.graph.build import simple_merge_recipe
from engine.learn import learn_regmean, save_recipe
from engine.learn.statistics import write_statistics
from engine.methods.data_merge import conjugate_gradient, shrink_gram
from zoo_helpers import reduced_zoo, single_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(x)


def toy_problem(tmp_path: Path, rows: int = 40):
    """Three linear models, each the least-squares fit of its own task's data, and their tasks."""
    g = torch.Generator().manual_seed(0)
    tasks, paths, data = [], [], []
    for t in range(3):
        x = torch.randn(rows, 6, generator=g) @ torch.randn(6, 6, generator=g)  # correlated inputs
        y = x @ torch.randn(6, 3, generator=g) + 0.1 * torch.randn(rows, 3, generator=g)
        w = torch.linalg.lstsq(x, y).solution.T.contiguous()
        paths.append(tmp_path / f"t{t}.safetensors")
        save_file({"fc.weight": w, "fc.bias": torch.full((3,), float(t))}, str(paths[-1]))
        tasks.append(ClassifierTask(f"t{t}", ("a", "b", "c"), Toy, {}, lambda x=x: {"train": Split(x, None)},
                                    identity=f"toy{t}"))
        data.append((x, w))
    return tasks, paths, data


def test_regmean_on_a_linear_toy_problem_equals_the_joint_least_squares_solution(tmp_path):
    tasks, paths, data = toy_problem(tmp_path)
    recipe = simple_merge_recipe("linear", paths)
    result = learn_regmean(recipe, "merge", tasks, tmp_path / "grams.safetensors", alpha=1.0, examples=40,
                           device="cpu")
    assert result.recipe.node("merge").params["method"] == "regmean"
    merged = materialize(result.recipe, "merge", device="cpu")
    x = torch.cat([x for x, _ in data])
    targets = torch.cat([x @ w.T for x, w in data])  # what each model predicts on its own task's inputs
    joint = torch.linalg.lstsq(x, targets).solution.T
    assert torch.allclose(merged["fc.weight"], joint, atol=1e-4)
    assert torch.allclose(merged["fc.bias"], torch.full((3,), 1.0))  # other tensors: the plain average
    result.recipe.node("merge").params.update(method="mats", init="average", iterations=50)
    by_cg = materialize(result.recipe, "merge", device="cpu")  # the same statistics, solved by MaTS's CG
    assert torch.allclose(by_cg["fc.weight"], joint, atol=1e-3)


def test_alpha_shrinks_the_off_diagonal_and_cg_solves_the_system():
    gram = torch.tensor([[4.0, 2.0], [2.0, 3.0]])
    assert torch.equal(shrink_gram(gram, 0.5), torch.tensor([[4.0, 1.0], [1.0, 3.0]]))
    a = torch.randn(20, 20, generator=torch.Generator().manual_seed(1))
    a = a @ a.T + torch.eye(20)
    b = torch.randn(20, 4)
    x = conjugate_gradient(a, b, torch.zeros(20, 4), iterations=200, tolerance=1e-8)
    assert torch.allclose(a @ x, b, atol=1e-3)


def test_regmean_on_the_zoo_reproduces_without_data(tmp_path):
    zoo = reduced_zoo()
    recipe = Recipe.load(zoo / "demo.json")
    result = learn_regmean(recipe, None, load_suite(zoo / "zoo.json"), tmp_path / "stats.safetensors",
                           examples=32, device="cpu")
    layers = result.info["layers"]
    assert "backbone.embed.weight" in layers and "backbone.layers.0.fc1.weight" in layers
    out = save_recipe(result.recipe, tmp_path / "learned.json")
    again = Recipe.load(out)
    again.add_node(Node("save", "save", {"path": "merged"}))
    again.add_edge(Edge("merge", "save", "model"))
    written = run_recipe(again, device="cpu", outputs=["save"]).outputs["save"]
    on_disk = load_file(str(written / "model.safetensors"))
    in_memory = materialize(result.recipe, "merge", device="cpu")
    assert set(on_disk) == set(in_memory)
    assert all(torch.allclose(on_disk[n], in_memory[n]) for n in in_memory)
    plain = recipe.copy()
    plain.set_params("merge", {"method": "linear"})
    average = materialize(plain, "merge", device="cpu")
    assert not torch.allclose(in_memory["backbone.embed.weight"], average["backbone.embed.weight"])
    assert torch.equal(in_memory["backbone.norm.weight"], average["backbone.norm.weight"])


def test_statistics_problems_are_named(tmp_path, tiny_models):
    recipe = simple_merge_recipe("regmean", [tiny_models["e1"], tiny_models["e2"]])
    with pytest.raises(EngineInputError, match="no statistics file given"):
        materialize(recipe, "merge", device="cpu")
    recipe.node("merge").params["statistics"] = str(tmp_path / "missing.safetensors")
    with pytest.raises(EngineInputError, match="statistics file not found"):
        materialize(recipe, "merge", device="cpu")
    fisher_file = write_statistics(tmp_path / "f.safetensors", "fisher", ["e1", "e2"], {}, {"fisher_norms": "{}"})
    recipe.node("merge").params["statistics"] = str(fisher_file)
    with pytest.raises(EngineInputError, match="not a regmean statistics file"):
        materialize(recipe, "merge", device="cpu")
    other = write_statistics(tmp_path / "r.safetensors", "regmean", ["e1", "renamed"], {})
    recipe.node("merge").params["statistics"] = str(other)
    with pytest.raises(EngineInputError, match="not e2") as info:
        materialize(recipe, "merge", device="cpu")
    assert str(other) in str(info.value)
    name = "model.layers.0.self_attn.q_proj.weight"
    wrong = write_statistics(tmp_path / "w.safetensors", "regmean", ["e1", "e2"],
                             {f"{k}::{name}": torch.eye(3) for k in ("e1", "e2")})
    recipe.node("merge").params["statistics"] = str(wrong)
    with pytest.raises(EngineInputError, match=r"have shape \[3, 3\], expected \[8, 8\]"):
        materialize(recipe, "merge", device="cpu")


def test_learn_command_writes_a_recipe_that_evaluates(tmp_path, capsys):
    from engine.cli import main

    demo = reduced_zoo() / "demo.json"
    out = tmp_path / "sub" / "regmean.json"
    out.parent.mkdir()
    assert main(["learn", "regmean", str(demo), "--examples", "16", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "wrote statistics" in printed and (tmp_path / "sub" / "regmean.stats.safetensors").is_file()
    merge = Recipe.load(out).node("merge").params
    assert merge["method"] == "regmean" and "solver" not in merge
    assert main(["evaluate", str(out), "--quick", "1"]) == 0
    assert "merge" in capsys.readouterr().out
    assert main(["learn", "regmean", str(demo), "--steps", "3", "-o", str(out)]) == 2
    assert "--steps does not apply to regmean" in capsys.readouterr().err
    assert main(["learn", "fisher", str(demo), "--task", "digits", "-o", str(out)]) == 2
    assert "MODEL_NODE=TASK_NAME" in capsys.readouterr().err
