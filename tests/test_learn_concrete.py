"""Concrete subspace masks: the ``concrete`` merge by hand (a mask of ones is the base method, zeros
fall back to θ0), the mask learned on the reduced zoo lowers the entropy, and the mask file plus recipe
re-merge the same model without data."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from engine.errors import EngineInputError
from engine.evaluation import load_suite
from engine.graph import Recipe, materialize
from engine.graph.build import simple_merge_recipe
from engine.learn import learn_concrete, save_recipe
from engine.learn.adamerging import mean_entropy
from engine.learn.statistics import write_statistics
from zoo_helpers import reduced_zoo, single_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


def masked_recipe(tmp_path, tiny_models, mask_value, **params) -> tuple[Recipe, dict[str, torch.Tensor]]:
    """A ``concrete`` merge of the tiny experts whose mask file holds ``mask_value(shape)`` for every tensor
    (stored once, under the first model), and the base state."""
    base = load_file(str(tiny_models["base"]))
    recipe = simple_merge_recipe("concrete", [tiny_models["e1"], tiny_models["e2"]], base=tiny_models["base"],
                                 params=params)
    first = recipe.inputs("merge", "models")[0]
    masks = {f"{first}::{n}": mask_value(t.shape) for n, t in base.items() if t.is_floating_point()}
    path = write_statistics(tmp_path / "mask.safetensors", "concrete", recipe.inputs("merge", "models"), masks)
    recipe.node("merge").params["statistics"] = str(path)
    return recipe, base


@pytest.mark.parametrize("base_method, extra", [("task_arithmetic", {}), ("ties", {"density": 0.5})])
def test_a_mask_of_ones_is_the_base_method(tmp_path, tiny_models, base_method, extra):
    recipe, _ = masked_recipe(tmp_path, tiny_models, torch.ones, base_method=base_method, **{"lambda": 0.7}, **extra)
    merged = materialize(recipe, "merge", device="cpu")
    plain = recipe.copy()
    plain.set_params("merge", {"method": base_method, "lambda": 0.7, **extra})
    reference = materialize(plain, "merge", device="cpu")
    assert set(merged) == set(reference)
    assert all(torch.allclose(merged[n], reference[n], atol=1e-6) for n in merged)


def test_masked_entries_by_hand(tmp_path, tiny_models):
    def halves(shape):  # 0 on the first half of the flattened tensor, 2 on the rest
        m = torch.full(shape, 2.0).reshape(-1)
        m[: m.numel() // 2] = 0.0
        return m.reshape(shape)

    recipe, base = masked_recipe(tmp_path, tiny_models, halves, **{"lambda": 0.5})
    merged = materialize(recipe, "merge", device="cpu")
    experts = [load_file(str(tiny_models[k])) for k in ("e1", "e2")]
    name = next(n for n, t in base.items() if t.is_floating_point() and t.numel() > 1)
    summed = sum(e[name] - base[name] for e in experts)
    expected = base[name] + 0.5 * halves(base[name].shape) * summed  # θ0 + λ Σ_t m ⊙ τ_t
    assert torch.allclose(merged[name], expected, atol=1e-6)
    head = merged[name].reshape(-1)[: base[name].numel() // 2]
    assert torch.equal(head, base[name].reshape(-1)[: base[name].numel() // 2])  # mask 0: the base itself


def test_a_mask_file_lacking_a_tensor_is_named(tmp_path, tiny_models):
    recipe, base = masked_recipe(tmp_path, tiny_models, torch.ones)
    first = recipe.inputs("merge", "models")[0]
    missing = next(n for n, t in base.items() if t.is_floating_point())
    partial = {f"{first}::{n}": torch.ones(t.shape) for n, t in base.items() if t.is_floating_point() and n != missing}
    recipe.node("merge").params["statistics"] = str(
        write_statistics(tmp_path / "partial.safetensors", "concrete", recipe.inputs("merge", "models"), partial))
    with pytest.raises(EngineInputError, match="holds no mask") as info:
        materialize(recipe, "merge", device="cpu")
    assert missing in str(info.value)


@pytest.fixture(scope="module")
def zoo():
    path = reduced_zoo()
    recipe = Recipe.load(path / "demo.json")
    recipe.set_params("merge", {"method": "task_arithmetic", "lambda": 0.3})
    return recipe, load_suite(path / "zoo.json")


def test_learned_mask_lowers_the_entropy_and_reloads_data_free(zoo, tmp_path):
    recipe, tasks = zoo
    reports = []
    result = learn_concrete(recipe, "merge", tasks, tmp_path / "mask.safetensors", steps=20, lr=0.05, device="cpu",
                            progress=reports.append)
    assert result.info["final_entropy"] < result.info["initial_entropy"]
    assert reports[-1].phase == "concrete mask" and reports[-1].done == 20
    params = result.recipe.node("merge").params
    assert params == {"method": "concrete", "statistics": str(tmp_path / "mask.safetensors"),
                      "base_method": "task_arithmetic", "lambda": 0.3}
    stored = load_file(str(result.statistics))
    first = recipe.inputs("merge", "models")[0]
    assert stored and all(k.startswith(f"{first}::") for k in stored)  # one shared mask, stored once
    assert all(abs(float(m.mean()) - 1.0) < 1e-4 for m in stored.values())  # rescaled to mean 1 per tensor
    (tmp_path / "elsewhere").mkdir()
    again = Recipe.load(save_recipe(result.recipe, tmp_path / "elsewhere" / "learned.json"))
    merged = materialize(again, "merge", device="cpu")
    inputs = [t.data("unlabeled").inputs for t in tasks]
    assert mean_entropy(tasks, inputs, merged) == pytest.approx(result.info["final_entropy"], rel=1e-4)
    again.node("merge").params.update(base_method="ties", density=0.5)
    as_ties = materialize(again, "merge", device="cpu")
    assert not torch.allclose(as_ties["backbone.embed.weight"], merged["backbone.embed.weight"])


def test_reproducible_with_a_seed_and_bad_input(zoo, tmp_path):
    recipe, tasks = zoo
    a = learn_concrete(recipe, "merge", tasks, tmp_path / "a.safetensors", steps=3, seed=5, device="cpu")
    b = learn_concrete(recipe, "merge", tasks, tmp_path / "b.safetensors", steps=3, seed=5, device="cpu")
    ma, mb = load_file(str(a.statistics)), load_file(str(b.statistics))
    assert ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)
    with pytest.raises(EngineInputError, match="temperature must be positive"):
        learn_concrete(recipe, "merge", tasks, tmp_path / "c.safetensors", temperature=0.0, device="cpu")
    no_base = recipe.copy()
    no_base.remove_node("base")
    no_base.set_params("merge", {"method": "linear"})
    with pytest.raises(EngineInputError, match="needs a base|need a base"):
        learn_concrete(no_base, "merge", tasks, tmp_path / "c.safetensors", steps=1, device="cpu")
    assert not (tmp_path / "c.safetensors").exists()


def test_learn_concrete_command(tmp_path, capsys):
    from engine.cli import main

    demo = reduced_zoo() / "demo.json"
    out = tmp_path / "concrete.json"
    assert main(["learn", "concrete", str(demo), "--steps", "3", "--temperature", "0.3", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "final entropy" in printed and (tmp_path / "concrete.stats.safetensors").is_file()
    assert Recipe.load(out).node("merge").params["method"] == "concrete"
    assert main(["evaluate", str(out), "--quick", "1"]) == 0
