"""MaTS: conjugate gradient on RegMean's system from a chosen start — hand-worked systems, identity
statistics give the average, convergence to the exact RegMean solution, and the learned recipe that
reproduces the merge without data (Python and `weightsmith learn mats`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from engine.errors import EngineInputError
from engine.evaluation.tasks import ClassifierTask, Split
from engine.graph import Edge, Node, Recipe, materialize, run_recipe, validate
from engine.graph.build import simple_merge_recipe
from engine.learn import learn_mats, save_recipe
from engine.learn.statistics import write_statistics
from zoo_helpers import reduced_zoo, single_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


def two_models(tmp_path: Path, w1: list[list[float]], w2: list[list[float]], base: list[list[float]] | None = None,
               bias: bool = True) -> tuple[Recipe, list[str]]:
    """A merge of two one-layer checkpoints (``fc.weight`` given, ``fc.bias`` 1 and 3), optionally on a base."""
    paths = []
    for k, w in enumerate((w1, w2)):
        paths.append(tmp_path / f"m{k}.safetensors")
        tensors = {"fc.weight": torch.tensor(w)}
        if bias:
            tensors["fc.bias"] = torch.tensor([1.0 + 2 * k])
        save_file(tensors, str(paths[-1]))
    base_path = None
    if base is not None:
        base_path = tmp_path / "base.safetensors"
        save_file({"fc.weight": torch.tensor(base), "fc.bias": torch.tensor([0.0])}, str(base_path))
    recipe = simple_merge_recipe("mats", paths, base=base_path)
    return recipe, recipe.inputs("merge", "models")


def with_grams(recipe: Recipe, keys: list[str], grams: list[torch.Tensor], path: Path, **params) -> Recipe:
    """``recipe`` whose mats node reads a statistics file holding ``grams`` (one per model) for ``fc.weight``."""
    file = write_statistics(path, "regmean", keys, {f"{k}::fc.weight": g for k, g in zip(keys, grams)})
    recipe.node("merge").params.update(statistics=str(file), **params)
    return recipe


def test_identity_statistics_give_the_average_in_one_step(tmp_path):
    recipe, keys = two_models(tmp_path, [[1.0, 2.0]], [[3.0, -4.0]], base=[[0.5, 0.5]])
    recipe = with_grams(recipe, keys, [torch.eye(2), torch.eye(2)], tmp_path / "eye.safetensors", iterations=1)
    for init in ("task_arithmetic", "average", "base"):  # A = 2·I: one CG step from anywhere lands on b / 2
        recipe.node("merge").params["init"] = init
        merged = materialize(recipe, "merge", device="cpu")
        assert torch.allclose(merged["fc.weight"], torch.tensor([[2.0, -1.0]]), atol=1e-6)
        assert torch.equal(merged["fc.bias"], torch.tensor([2.0]))  # no Gram: the plain average


def test_a_hand_worked_system_and_the_start_matters_when_stopped_early(tmp_path):
    # Σ G = [[3, 1], [1, 3]] (eigenvalues 4 and 2), b = G1 [1, 0]ᵀ + G2 [0, 1]ᵀ = [2, 2]: W* = [0.5, 0.5];
    # CG solves a 2×2 system exactly in 2 steps from any start.
    recipe, keys = two_models(tmp_path, [[1.0, 0.0]], [[0.0, 1.0]], base=[[1.0, -1.0]])
    grams = [torch.tensor([[2.0, 1.0], [1.0, 2.0]]), torch.eye(2)]
    recipe = with_grams(recipe, keys, grams, tmp_path / "g.safetensors", iterations=2, **{"lambda": 1.0})
    assert torch.allclose(materialize(recipe, "merge", device="cpu")["fc.weight"], torch.tensor([[0.5, 0.5]]),
                          atol=1e-6)
    # One step from task arithmetic at λ 1: x0 = θ0 + τ1 + τ2 = [1, −1] + [0, 1] + [−1, 2] = [0, 2];
    # r = b − A x0 = [2, 2] − [2, 6] = [0, −4]; A r = [−4, −12]; step = r·r / r·Ar = 16 / 48 → x1 = [0, 2/3].
    recipe.node("merge").params["iterations"] = 1
    assert torch.allclose(materialize(recipe, "merge", device="cpu")["fc.weight"], torch.tensor([[0.0, 2.0 / 3.0]]),
                          atol=1e-6)
    # One step from the average [0.5, 0.5]: already the solution (r = 0).
    recipe.node("merge").params["init"] = "average"
    assert torch.allclose(materialize(recipe, "merge", device="cpu")["fc.weight"], torch.tensor([[0.5, 0.5]]),
                          atol=1e-6)


def test_cg_converges_to_the_exact_regmean_solution(tmp_path):
    g = torch.Generator().manual_seed(0)
    paths, grams = [], []
    for k in range(3):
        paths.append(tmp_path / f"w{k}.safetensors")
        save_file({"fc.weight": torch.randn(4, 8, generator=g)}, str(paths[-1]))
        x = torch.randn(30, 8, generator=g) @ torch.randn(8, 8, generator=g)
        grams.append(x.T @ x / 30)
    recipe = simple_merge_recipe("mats", paths)
    keys = recipe.inputs("merge", "models")
    recipe = with_grams(recipe, keys, grams, tmp_path / "s.safetensors", init="average", alpha=0.6, iterations=200)
    by_cg = materialize(recipe, "merge", device="cpu")["fc.weight"]
    exact = recipe.copy()
    exact.set_params("merge", {"method": "regmean", "statistics": recipe.node("merge").params["statistics"],
                               "alpha": 0.6})
    solved = materialize(exact, "merge", device="cpu")["fc.weight"]
    assert torch.allclose(by_cg, solved, atol=1e-4)
    lhs = sum(g * 0.6 + torch.diag(torch.diagonal(g) * 0.4) for g in grams)  # the system by hand
    rhs = sum((g * 0.6 + torch.diag(torch.diagonal(g) * 0.4)) @ load_file(str(p))["fc.weight"].T
              for g, p in zip(grams, paths))
    assert torch.allclose(by_cg, torch.linalg.solve(lhs, rhs).T, atol=1e-4)
    recipe.node("merge").params["iterations"] = 2  # stopped early it is not the solution yet
    assert not torch.allclose(materialize(recipe, "merge", device="cpu")["fc.weight"], solved, atol=1e-3)


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(x)


def test_learn_mats_on_a_linear_toy_matches_regmean_and_needs_no_data_afterwards(tmp_path):
    g = torch.Generator().manual_seed(0)
    base = {"fc.weight": torch.randn(3, 6, generator=g), "fc.bias": torch.zeros(3)}
    save_file(base, str(tmp_path / "base.safetensors"))
    tasks, paths = [], []
    for t in range(2):
        x = torch.randn(40, 6, generator=g) @ torch.randn(6, 6, generator=g)
        paths.append(tmp_path / f"t{t}.safetensors")
        save_file({"fc.weight": base["fc.weight"] + torch.randn(3, 6, generator=g), "fc.bias": torch.full((3,), float(t))},
                  str(paths[-1]))
        tasks.append(ClassifierTask(f"t{t}", ("a", "b", "c"), Toy, {}, lambda x=x: {"train": Split(x, None)},
                                    identity=f"mats-toy{t}"))
    recipe = simple_merge_recipe("task_arithmetic", paths, base=tmp_path / "base.safetensors")
    result = learn_mats(recipe, "merge", tasks, tmp_path / "grams.safetensors", examples=40, device="cpu")
    params = result.recipe.node("merge").params
    assert params == {"method": "mats", "statistics": str(tmp_path / "grams.safetensors"),
                      "init": "task_arithmetic", "lambda": 0.3, "alpha": 1.0, "iterations": 100}
    (tmp_path / "sub").mkdir()
    out = save_recipe(result.recipe, tmp_path / "sub" / "learned.json")
    merged = materialize(Recipe.load(out), "merge", device="cpu")
    exact = result.recipe.copy()
    exact.set_params("merge", {"method": "regmean", "statistics": params["statistics"], "alpha": 1.0})
    assert torch.allclose(merged["fc.weight"], materialize(exact, "merge", device="cpu")["fc.weight"], atol=1e-4)
    assert torch.allclose(merged["fc.bias"], torch.full((3,), 0.5))
    with pytest.raises(EngineInputError, match="needs a base"):
        no_base = simple_merge_recipe("linear", paths)
        learn_mats(no_base, "merge", tasks, tmp_path / "x.safetensors", device="cpu")
    with pytest.raises(EngineInputError, match="unknown MaTS start"):
        learn_mats(recipe, "merge", tasks, tmp_path / "x.safetensors", init="zero", device="cpu")


def test_a_task_arithmetic_start_without_a_base_is_refused(tmp_path):
    recipe, keys = two_models(tmp_path, [[1.0, 0.0]], [[0.0, 1.0]])
    recipe = with_grams(recipe, keys, [torch.eye(2), torch.eye(2)], tmp_path / "g.safetensors")
    with pytest.raises(EngineInputError, match="needs a base model") as info:
        materialize(recipe, "merge", device="cpu")
    assert "fc.weight" in str(info.value)
    recipe.node("merge").params["init"] = "average"
    assert torch.allclose(materialize(recipe, "merge", device="cpu")["fc.weight"], torch.tensor([[0.5, 0.5]]))


def test_learn_mats_command_on_the_zoo_writes_a_recipe_that_runs_without_data(tmp_path, capsys):
    from engine.cli import main

    demo = reduced_zoo() / "demo.json"
    out = tmp_path / "sub" / "mats.json"
    out.parent.mkdir()
    assert main(["learn", "mats", str(demo), "--examples", "16", "--iterations", "20", "--lambda", "0.4",
                 "-o", str(out)]) == 0
    assert "wrote statistics" in capsys.readouterr().out
    learned = Recipe.load(out)
    merge = learned.node("merge").params
    assert merge["method"] == "mats" and merge["iterations"] == 20 and merge["lambda"] == 0.4
    learned.add_node(Node("save", "save", {"path": "merged"}))
    learned.add_edge(Edge("merge", "save", "model"))
    written = run_recipe(learned, device="cpu", outputs=["save"]).outputs["save"]
    on_disk = load_file(str(written / "model.safetensors"))
    plain = Recipe.load(demo)
    plain.set_params("merge", {"method": "linear"})
    average = materialize(plain, "merge", device="cpu")
    assert not torch.allclose(on_disk["backbone.embed.weight"], average["backbone.embed.weight"])
    assert torch.equal(on_disk["backbone.norm.weight"], average["backbone.norm.weight"])  # no Gram: averaged
    assert main(["learn", "mats", str(demo), "--mu", "0.1", "-o", str(out)]) == 2
    assert "--mu does not apply to mats" in capsys.readouterr().err
    assert main(["learn", "regmean", str(demo), "--lambda", "0.1", "-o", str(out)]) == 2
    assert "--lambda does not apply to regmean" in capsys.readouterr().err


def test_an_older_regmean_cg_recipe_reads_as_mats_from_the_average(tmp_path):
    """RegMean's ``solver`` moved to MaTS: a recipe written before reads as ``mats`` from the average with
    RegMean's default ``alpha`` and merges the same; ``solver exact`` reads as plain RegMean."""
    g = torch.Generator().manual_seed(3)
    paths, grams = [], []
    for k in range(2):
        paths.append(tmp_path / f"w{k}.safetensors")
        save_file({"fc.weight": torch.randn(3, 5, generator=g)}, str(paths[-1]))
        x = torch.randn(20, 5, generator=g)
        grams.append(x.T @ x / 20)
    recipe = simple_merge_recipe("mats", paths)
    recipe = with_grams(recipe, recipe.inputs("merge", "models"), grams, tmp_path / "s.safetensors",
                        init="average", alpha=0.6, iterations=2)
    statistics = recipe.node("merge").params["statistics"]
    older = recipe.to_json()
    merge = next(n for n in older["nodes"] if n["id"] == "merge")
    merge["params"] = {"method": "regmean", "statistics": statistics, "solver": "cg", "iterations": 2}
    read = Recipe.from_json(older, recipe.base_dir)
    assert read.node("merge").params == {"method": "mats", "statistics": statistics, "init": "average",
                                         "alpha": 0.6, "iterations": 2}
    assert validate(read) == []
    assert torch.equal(materialize(recipe, "merge", device="cpu")["fc.weight"],
                       materialize(read, "merge", device="cpu")["fc.weight"])
    merge["params"] = {"method": "regmean", "statistics": statistics, "alpha": 0.9, "solver": "exact",
                       "iterations": 100}
    assert Recipe.from_json(older).node("merge").params == {"method": "regmean", "statistics": statistics,
                                                            "alpha": 0.9}
