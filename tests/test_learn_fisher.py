"""Fisher merging: equal Fishers give the average, the per-example Fisher matches autograd, the
learner writes statistics that reproduce the merge on the zoo, and cancel stops it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.errors import Cancelled, EngineInputError
from engine.evaluation import load_suite
from engine.evaluation.runner import load_weights
from engine.graph import Recipe, materialize
from engine.graph.build import simple_merge_recipe
from engine.learn import learn_fisher
from engine.learn.fisher import diagonal_fisher
from engine.learn.statistics import write_statistics
from engine.graph.statistics_files import statistics_key
from engine.runtime import CancelToken
from zoo_helpers import reduced_zoo, single_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


def test_fisher_with_equal_fishers_equals_averaging(tmp_path, tiny_models):
    paths = [tiny_models[k] for k in ("e1", "e2", "e3")]
    average = materialize(simple_merge_recipe("linear", paths), "merge", device="cpu")
    g = torch.Generator().manual_seed(3)
    fisher = {n: torch.rand(t.shape, generator=g) for n, t in average.items() if t.is_floating_point()}
    tensors = {statistics_key(k, n): f for k in ("e1", "e2", "e3") for n, f in fisher.items()}
    stats = write_statistics(tmp_path / "f.safetensors", "fisher", ["e1", "e2", "e3"], tensors,
                             {"fisher_norms": '{"e1": 2.0, "e2": 2.0, "e3": 2.0}'})
    merged = materialize(simple_merge_recipe("fisher", paths, params={"statistics": str(stats)}), "merge",
                         device="cpu")
    assert set(merged) == set(average)
    for name, value in average.items():
        assert torch.allclose(merged[name], value, atol=1e-6), name


def test_unequal_fishers_pull_each_weight_towards_the_confident_model(tmp_path, tiny_models):
    paths = [tiny_models["e1"], tiny_models["e2"]]
    models = [load_weights(p, ["model.norm.weight", "model.embed_tokens.weight"]) for p in paths]
    tensors = {statistics_key("e1", "model.norm.weight"): torch.full((8,), 3.0),
               statistics_key("e2", "model.norm.weight"): torch.full((8,), 1.0)}
    stats = write_statistics(tmp_path / "f.safetensors", "fisher", ["e1", "e2"], tensors)
    recipe = simple_merge_recipe("fisher", paths, params={"statistics": str(stats), "normalize": False,
                                                          "epsilon": 0.0})
    merged = materialize(recipe, "merge", device="cpu")
    expected = 0.75 * models[0]["model.norm.weight"] + 0.25 * models[1]["model.norm.weight"]
    assert torch.allclose(merged["model.norm.weight"], expected, atol=1e-6)
    no_fisher = (models[0]["model.embed_tokens.weight"] + models[1]["model.embed_tokens.weight"]) / 2
    assert torch.allclose(merged["model.embed_tokens.weight"], no_fisher, atol=1e-6)  # no Fisher: the average


def test_statistics_file_problems_name_the_file(tmp_path, tiny_models):
    paths = [tiny_models["e1"], tiny_models["e2"]]
    tensors = {statistics_key(k, "model.norm.weight"): torch.ones(8) for k in ("e1", "e2")}
    bad = write_statistics(tmp_path / "bad.safetensors", "fisher", ["e1", "e2"], tensors, {"fisher_norms": "{oops"})
    with pytest.raises(EngineInputError, match="malformed metadata") as info:
        materialize(simple_merge_recipe("fisher", paths, params={"statistics": str(bad)}), "merge", device="cpu")
    assert str(bad) in str(info.value)
    no_norms = write_statistics(tmp_path / "plain.safetensors", "fisher", ["e1", "e2"], tensors)
    with pytest.raises(EngineInputError, match="no Fisher norm for e1, e2") as info:
        materialize(simple_merge_recipe("fisher", paths, params={"statistics": str(no_norms)}), "merge", device="cpu")
    assert str(no_norms) in str(info.value) and "tensor '" in str(info.value)


def test_per_example_fisher_matches_autograd():
    task = load_suite(reduced_zoo() / "zoo.json", ["shapes"])[0]
    state = load_weights(task.expert, task.expected_names())
    data = task.data("train")
    x, y = data.inputs[:6], data.labels[:6]
    names = list(state)
    fisher = diagonal_fisher(task, state, names, x, y, generator=torch.Generator(), chunk=4)
    expected = {n: torch.zeros_like(t) for n, t in state.items()}
    for i in range(len(x)):
        params = {n: t.clone().requires_grad_(True) for n, t in state.items()}
        loss = F.cross_entropy(task.forward(params, x[i:i + 1]), y[i:i + 1])
        for n, g in zip(names, torch.autograd.grad(loss, [params[n] for n in names])):
            expected[n] += g.pow(2) / len(x)
    for n in names:
        assert torch.allclose(fisher[n], expected[n], rtol=1e-4, atol=1e-9), n


def test_learned_fisher_reproduces_on_the_zoo_and_can_be_cancelled(tmp_path):
    zoo = reduced_zoo()
    recipe = Recipe.load(zoo / "demo.json")
    tasks = load_suite(zoo / "zoo.json")
    reports = []
    result = learn_fisher(recipe, "merge", tasks, tmp_path / "fisher.safetensors", examples=16, labels="model",
                          device="cpu", progress=reports.append)
    assert result.statistics.is_file() and set(result.info["fisher_norms"]) == set(recipe.inputs("merge", "models"))
    assert all(v > 0 for v in result.info["fisher_norms"].values())
    assert any(r.phase == "fisher" and r.done == r.total for r in reports)
    params = result.recipe.node("merge").params
    assert params == {"method": "fisher", "statistics": str(result.statistics)}
    merged = materialize(result.recipe, "merge", device="cpu")
    again = learn_fisher(recipe, "merge", tasks, tmp_path / "again.safetensors", examples=16, labels="model",
                         device="cpu")
    assert again.info["fisher_norms"] == result.info["fisher_norms"]  # the seed fixes the sampled labels
    assert torch.isfinite(merged["backbone.embed.weight"]).all()
    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(Cancelled):
        learn_fisher(recipe, "merge", tasks, tmp_path / "cancelled.safetensors", device="cpu", cancel=cancel)
    assert not (tmp_path / "cancelled.safetensors").exists()
