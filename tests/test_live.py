"""Live sessions: incremental updates equal fresh streaming merges; caches are reused; the fallback works.

Tolerance for weights: the resident session computes ``c0·θ0 + Σ a_t·τ_t`` by multiply-adds where the
streaming executor sums the models directly, so results differ by float32 rounding only; every
comparison allows ``1e-5`` absolute (the tensors are O(1)).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from zoo_helpers import reduced_zoo, single_thread

import engine.evaluation.recipe  # noqa: F401 (registers the Evaluate node)
from engine.errors import EngineInputError
from engine.evaluation import Evaluator
from engine.graph import Recipe, materialize
from engine.live import RESIDENT, STREAMING, LiveSession
from engine.live.updaters import REFRESH_EVERY, LinearUpdater, ScaledUpdater, TiesUpdater, updater_class
from engine.live.evaluation import tasks_for
from engine.methods import Requirement, all_methods, get_method

ATOL = 1e-5


def merge_recipe(paths: dict[str, Path], params: dict, models: tuple[str, ...] = ("e1", "e2", "e3"),
                 base: bool = True) -> Recipe:
    nodes = [{"id": k, "type": "checkpoint", "params": {"path": str(paths[k])}} for k in ("base", *models)]
    edges = [{"from": "base", "to": "merge", "port": "base"}] if base else []
    edges += [{"from": k, "to": "merge", "port": "models"} for k in models]
    return Recipe.from_json({"format": "weightsmith-recipe", "version": 1, "name": "t",
                             "nodes": nodes + [{"id": "merge", "type": "merge", "params": params}], "edges": edges})


def max_error(session: LiveSession, recipe: Recipe) -> float:
    fresh = materialize(recipe, "merge", device="cpu")
    got = session.state_dict()
    assert list(got) == list(fresh)
    return max(float((got[n] - fresh[n]).abs().max()) for n in fresh if fresh[n].is_floating_point())


def check_sequence(paths: dict[str, Path], steps: list[dict], **recipe_kw) -> list:
    session = LiveSession(merge_recipe(paths, steps[0], **recipe_kw), "merge", tasks=(), device="cpu")
    assert session.mode == RESIDENT
    stats = []
    for params in steps:
        stats.append(session.update(params))
        assert max_error(session, merge_recipe(paths, params, **recipe_kw)) < ATOL, params
    return stats


def test_linear_family_moves_by_multiply_adds(tiny_models):
    steps = [{"method": "task_arithmetic", "lambda": 0.3},
             {"method": "task_arithmetic", "lambda": 0.55},
             {"method": "task_arithmetic", "lambda": 0.6},
             {"method": "task_arithmetic", "lambda": 0.6, "weight": {"e1": 1.0, "e2": 1.0, "e3": 1.5}},
             {"method": "task_arithmetic", "lambda": 0.55, "weight": {"e1": 1.0, "e2": 0.4, "e3": 1.5}},
             {"method": "task_arithmetic", "lambda": [0.2, 0.9], "weight": {"e1": 1.0, "e2": 0.4, "e3": 1.5}},
             {"method": "task_arithmetic", "lambda": 0.5, "normalize": True},
             {"method": "linear", "weight": [1, 2, 3]},
             {"method": "linear", "weight": [1, 2, 3], "normalize": False}]
    stats = check_sequence(tiny_models, steps)
    assert stats[0].kind == "full"
    # a global λ move scales every task's coefficient: the first builds the direction Σ w_t τ_t (3 ops)
    # and applies it (1), every further λ move is one multiply-add whatever the number of models
    assert stats[1].kind == "incremental" and stats[1].ops == 3 + 1
    assert stats[2].kind == "incremental" and stats[2].ops == 1
    assert stats[3].kind == "incremental" and stats[3].ops == 1  # one model's weight: one term
    assert all(s.kind == "incremental" for s in stats[4:6])  # several terms, a per-layer λ schedule


def test_lines_and_metagpt_are_linear_too(tiny_models):
    stats = check_sequence(tiny_models, [{"method": "lines"}, {"method": "lines", "alpha": 0.2, "beta": 1.0}],
                           models=("e1",))
    assert stats[1].kind == "incremental"  # per-layer factors moved: multiply-adds only
    stats = check_sequence(tiny_models, [{"method": "metagpt"}, {"method": "metagpt", "scope": "layer"},
                                         {"method": "metagpt", "scope": "tensor"}])
    assert [s.kind for s in stats] == ["full", "incremental", "incremental"]


def test_linear_without_base(tiny_models):
    check_sequence(tiny_models, [{"method": "linear"}, {"method": "linear", "weight": [3, 1, 1]}], base=False)


def test_ties_reuses_masks_and_recomputes_only_changed_tensors(tiny_models):
    recipe = merge_recipe(tiny_models, {"method": "ties", "density": 0.3})
    session = LiveSession(recipe, "merge", tasks=(), device="cpu")
    assert isinstance(session.updater, TiesUpdater)
    n = len(session.resident.spans)
    session.update({"method": "ties", "density": 0.3, "lambda": 1.0})
    masks = session.updater.masks_computed
    assert masks == 3 * n

    st = session.update({"method": "ties", "density": 0.3, "lambda": 0.6})  # λ only: one multiply-add
    assert (st.kind, st.ops, session.updater.masks_computed) == ("incremental", 1, masks)
    assert max_error(session, merge_recipe(tiny_models, {"method": "ties", "density": 0.3, "lambda": 0.6})) < ATOL

    params = {"method": "ties", "density": 0.3, "lambda": 0.6, "weight": [1.0, 2.0, 0.5]}
    st = session.update(params)  # weights: signs re-elected from the cached masks
    assert st.recomputed == n and session.updater.masks_computed == masks
    assert max_error(session, merge_recipe(tiny_models, params)) < ATOL

    layer1 = [{"filter": r"layers\.1\.", "value": 0.6}, {"value": 0.3}]
    params = {**params, "density": {k: layer1 for k in ("e1", "e2", "e3")}}  # density moved in one layer only
    st = session.update(params)
    in_layer1 = sum(1 for s in session.resident.spans if s.layer == 1)
    assert st.recomputed == in_layer1 and session.updater.masks_computed == masks + 3 * in_layer1
    assert max_error(session, merge_recipe(tiny_models, params)) < ATOL


def test_ties_model_scope_statistics_follow_density(tiny_models):
    steps = [{"method": "ties", "density": 0.3, "scope": "model"},
             {"method": "ties", "density": 0.3, "scope": "model", "lambda": 1.4},
             {"method": "ties", "density": 0.5, "scope": "model", "lambda": 1.4}]
    stats = check_sequence(tiny_models, steps)
    assert stats[1].kind == "incremental"
    assert stats[2].kind == "full"


def _data_free_methods():
    return [m for m in all_methods() if Requirement.DATA_FREE in m.requirements]


@pytest.mark.parametrize("spec", _data_free_methods(), ids=lambda m: m.name)
def test_every_data_free_method_matches_the_streaming_merge(tiny_models, spec):
    """Each method, its defaults then a λ/density/seed move, equals a fresh merge (checks the updater contract)."""
    models = ("e1", "e2", "e3")[:spec.max_models or 3]
    if len(models) < spec.min_models:
        pytest.skip(f"{spec.name} needs {spec.min_models} models")
    names = {p.name for p in spec.params}
    steps = [{"method": spec.name}]
    if "lambda" in names:
        steps.append({**steps[-1], "lambda": 0.7})
    if "density" in names:
        steps.append({**steps[-1], "density": 0.5})
    if "seed" in names:
        steps.append({**steps[-1], "seed": 7})
    stats = check_sequence(tiny_models, steps, models=models)
    if "lambda" in names and issubclass(updater_class(spec, True), (LinearUpdater, ScaledUpdater)):
        assert stats[1].kind == "incremental"  # a λ move never recomputes
    if "seed" in names and spec.random:
        assert stats[-1].recomputed > 0  # new random draws


def test_incremental_drift_is_refreshed(tiny_models):
    session = LiveSession(merge_recipe(tiny_models, {"method": "task_arithmetic"}), "merge", tasks=(), device="cpu")
    g = torch.Generator().manual_seed(0)
    for _ in range(3 * REFRESH_EVERY + 5):
        lam = float(torch.rand((), generator=g)) * 4 - 2
        session.update({"method": "task_arithmetic", "lambda": lam})
    assert max_error(session, merge_recipe(tiny_models, {"method": "task_arithmetic", "lambda": lam})) < ATOL


def test_switching_method_keeps_the_resident_inputs(tiny_models):
    session = LiveSession(merge_recipe(tiny_models, {"method": "task_arithmetic"}), "merge", tasks=(), device="cpu")
    buffers = session.resident.vectors[0].data_ptr()
    for params in ({"method": "task_arithmetic", "lambda": 0.4}, {"method": "ties", "density": 0.4},
                   {"method": "linear"}):
        session.update(params)
        assert max_error(session, merge_recipe(tiny_models, params)) < ATOL
    assert session.resident.vectors[0].data_ptr() == buffers


def test_inputs_that_do_not_fit_fall_back_to_streaming(tiny_models):
    recipe = merge_recipe(tiny_models, {"method": "ties"})
    session = LiveSession(recipe, "merge", tasks=(), device="cpu", memory_budget=1000)
    assert session.mode == STREAMING and session.resident is None
    assert "falls back to streaming" in session.message and "cpu" in session.message
    for params in ({"method": "ties", "lambda": 0.5}, {"method": "task_arithmetic", "lambda": 0.3}):
        stats = session.update(params)
        assert stats.kind == "full"
        assert max_error(session, merge_recipe(tiny_models, params)) < ATOL


def test_methods_that_need_data_are_refused(tiny_models, monkeypatch):
    spec = replace(get_method("task_arithmetic"), requirements=frozenset({Requirement.UNLABELED}))
    monkeypatch.setattr("engine.live.session.get_method", lambda name: spec)
    with pytest.raises(EngineInputError, match="data-free"):
        LiveSession(merge_recipe(tiny_models, {"method": "task_arithmetic"}), "merge", tasks=(), device="cpu")


def test_required_bytes_counts_every_resident_buffer(tiny_models):
    session = LiveSession(merge_recipe(tiny_models, {"method": "task_arithmetic"}), "merge", tasks=(), device="cpu")
    session.update({"method": "task_arithmetic"})
    numel = session.resident.numel
    assert session.resident.nbytes == numel * 4 * 5  # base, three task vectors, output
    assert session.required_bytes == session.resident.nbytes + numel * 4  # + the cached direction


@pytest.fixture(scope="module")
def zoo_recipe() -> Recipe:
    return Recipe.load(reduced_zoo() / "demo.json")


def test_live_scores_equal_a_fresh_merge_and_full_evaluation(zoo_recipe):
    """Tolerance: per task, the accuracy may differ by at most one example (float32 rounding in the
    weights can flip a borderline prediction); the loss by 1e-4."""
    with single_thread():
        session = LiveSession(zoo_recipe, "merge", device="cpu")
        evaluator = Evaluator(tasks_for(zoo_recipe, "merge"), device="cpu")
        for params in ({"method": "task_arithmetic", "lambda": 0.3}, {"method": "task_arithmetic", "lambda": 0.8},
                       {"method": "ties", "density": 0.3, "lambda": 0.9}):
            session.update(params)
            live = session.evaluate(full=True)
            fresh_recipe = zoo_recipe.copy()
            fresh_recipe.set_params("merge", params)
            fresh = evaluator.scores(materialize(fresh_recipe, "merge", device="cpu"), split="test")
            for task, scores in fresh.items():
                row = live.tasks[task]
                assert row["n"] == scores.n
                assert abs(row["accuracy"] - scores.accuracy) <= 1 / scores.n + 1e-12, (params, task)
                assert row["loss"] == pytest.approx(scores.loss, abs=1e-4)


def test_quick_reports_cover_a_fixed_subset_with_standard_errors(zoo_recipe):
    with single_thread():
        session = LiveSession(zoo_recipe, "merge", device="cpu", quick_batches=1, batch_size=32)
        session.update({"method": "task_arithmetic", "lambda": 0.4})
        quick = session.evaluate(full=False)
        again = session.evaluate(full=False)
        full = session.evaluate(full=True)
    for task, row in quick.tasks.items():
        assert quick.examples[task] == row["n"] == 32
        p = row["accuracy"]
        assert row["accuracy_stderr"] == pytest.approx(math.sqrt(p * (1 - p) / 32))
        assert full.tasks[task]["n"] > 32
    assert again.tasks == quick.tasks  # the same examples every time (and cached)
    refs = session.references(full=False)
    assert set(refs) == {"base", "experts"} and set(refs["experts"]) == set(quick.tasks)
