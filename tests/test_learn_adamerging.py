"""AdaMerging and aTLAS on the reduced zoo: the entropy goes down, the learned coefficients become plain
recipe values that reproduce the learned model without data, progress and cancel work, and aTLAS's
few-shot coefficients beat task arithmetic."""

from __future__ import annotations

import pytest
import torch

from engine.errors import Cancelled, EngineInputError
from engine.evaluation import load_suite
from engine.evaluation import EvaluationService
from engine.graph import Recipe, materialize, validate
from engine.learn import learn_adamerging, learn_atlas
from engine.learn.adamerging import mean_entropy
from engine.learn.coefficients import make_groups
from engine.methods.schedule import resolve_layer_value
from engine.runtime import CancelToken
from zoo_helpers import reduced_zoo, single_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def zoo():
    path = reduced_zoo()
    recipe = Recipe.load(path / "demo.json")
    recipe.set_params("merge", {"method": "task_arithmetic", "lambda": 0.3})
    return recipe, load_suite(path / "zoo.json")


def _accuracy(recipe: Recipe) -> float:
    return EvaluationService(device="cpu").evaluate(recipe, models=["merge"], split="test")["runs"][0]["average"]["accuracy"]


def test_layer_groups_and_their_filters():
    names = ["backbone.embed.weight", "backbone.layers.0.fc1.weight", "backbone.layers.0.fc2.bias",
             "backbone.layers.1.norm.weight", "backbone.norm.weight", "backbone.norm.bias"]
    groups = make_groups(names, "layer")
    assert groups.labels == ["backbone.embed", "backbone.layers.0", "backbone.layers.1", "backbone.norm"]
    schedule = [{"filter": f, "value": i} for i, f in enumerate(groups.filters)] + [{"value": -1}]
    assert [resolve_layer_value(schedule, n, None, 2) for n in names] == [0, 1, 1, 2, 3, 3]
    assert resolve_layer_value(schedule, "backbone.layers.10.fc1.weight", None, 2) == -1
    assert make_groups(names, "task").labels == ["all"]
    assert make_groups(names, "tensor").labels == names


@pytest.mark.parametrize("mode", ["task", "layer"])
def test_adamerging_lowers_the_entropy_and_its_recipe_reproduces_the_merge(zoo, mode):
    recipe, tasks = zoo
    reports = []
    result = learn_adamerging(recipe, "merge", tasks, mode=mode, steps=40, lr=0.01, device="cpu",
                              progress=reports.append)
    assert result.info["final_entropy"] < result.info["initial_entropy"]
    assert len(result.history) == 40 and all("entropy" in h for h in result.history)
    assert reports[-1].phase == f"adamerging ({mode}-wise)" and reports[-1].done == 40
    params = result.recipe.node("merge").params
    assert params["method"] == "task_arithmetic" and params["lambda"] == 1.0
    keys = recipe.inputs("merge", "models")
    assert set(params["weight"]) == set(keys) == set(result.coefficients)
    if mode == "task":
        assert all(isinstance(params["weight"][k], float) and 0.0 <= params["weight"][k] <= 1.0 for k in keys)
    else:
        groups = len(result.info["groups"])
        assert groups == 6 and all(len(params["weight"][k]) == groups + 1 for k in keys)
        assert params["weight"][keys[0]][1]["filter"] == r"^backbone\.layers\.0(\.|$)"
    assert not validate(result.recipe)
    merged = materialize(result.recipe, "merge", device="cpu")
    inputs = [t.data("unlabeled").inputs for t in tasks]
    assert mean_entropy(tasks, inputs, merged) == pytest.approx(result.info["final_entropy"], rel=1e-4)


@pytest.mark.xfail(reason="on the demo zoo entropy minimisation trades the tasks the base does worst on for "
                          "confident ones and ends below task arithmetic (README, learned merges)")
def test_adamerging_beats_task_arithmetic_at_its_initial_coefficients(zoo):
    recipe, tasks = zoo
    result = learn_adamerging(recipe, "merge", tasks, mode="layer", steps=60, lr=0.003, device="cpu")
    assert _accuracy(result.recipe) > _accuracy(recipe)


def test_atlas_beats_task_arithmetic_with_a_few_labelled_samples(zoo):
    recipe, tasks = zoo
    result = learn_atlas(recipe, "merge", tasks, shots=8, steps=60, device="cpu")
    first, last = (sum(h["loss"] for h in part) / 10 for part in (result.history[:10], result.history[-10:]))
    assert last < first
    names = result.recipe.node("merge").params["weight"][recipe.inputs("merge", "models")[0]]
    assert len(names) == len(next(iter(result.coefficients.values()))) + 1  # one filter per tensor + default
    assert _accuracy(result.recipe) > _accuracy(recipe)
    unsupervised = learn_atlas(recipe, "merge", tasks, objective="entropy", steps=3, device="cpu")
    assert unsupervised.info["final_entropy"] > 0 and set(unsupervised.info["samples"]) == {t.name for t in tasks}


def test_progress_cancel_and_bad_arguments(zoo):
    recipe, tasks = zoo
    cancel = CancelToken()

    def stop_after_five(report):
        if report.phase.startswith("adamerging") and report.done >= 5:
            cancel.cancel()

    with pytest.raises(Cancelled):
        learn_adamerging(recipe, "merge", tasks, steps=50, device="cpu", progress=stop_after_five, cancel=cancel)
    with pytest.raises(EngineInputError, match="mode"):
        learn_adamerging(recipe, "merge", tasks, mode="block", device="cpu")
    with pytest.raises(EngineInputError, match="not a merge node"):
        learn_adamerging(recipe, "evaluate", tasks, device="cpu")
    no_base = recipe.copy()
    no_base.remove_node("base")
    no_base.set_params("merge", {"method": "linear"})
    with pytest.raises(EngineInputError, match="needs a base"):
        learn_atlas(no_base, "merge", tasks, steps=1, device="cpu")
    unlabeled_only = [t for t in tasks if t.name == "digits"]
    with pytest.raises(EngineInputError, match="no labels"):
        learn_atlas(recipe, "merge", unlabeled_only, split="unlabeled", steps=1, device="cpu")


def test_learning_is_reproducible_with_a_seed(zoo):
    recipe, tasks = zoo
    a = learn_adamerging(recipe, "merge", tasks, mode="task", steps=5, lr=0.01, seed=3, device="cpu")
    b = learn_adamerging(recipe, "merge", tasks, mode="task", steps=5, lr=0.01, seed=3, device="cpu")
    assert a.coefficients == b.coefficients and a.recipe.to_json() == b.recipe.to_json()
    assert torch.equal(torch.tensor([h["loss"] for h in a.history]), torch.tensor([h["loss"] for h in b.history]))
