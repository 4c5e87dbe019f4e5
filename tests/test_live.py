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

from engine.errors import EngineInputError
from engine.evaluation import Evaluator
from engine.graph import Recipe, materialize
from engine.live import RESIDENT, STREAMING, LiveSession
from engine.live.updaters import (REFRESH_EVERY, LinearUpdater, ScaledUpdater, StagedUpdater, scale_parameter,
                                  updater_class)
from engine.live.evaluation import tasks_for
from engine.methods import MergeInputs, MethodSpec, Param, Requirement, TensorContext, all_methods, get_method
from engine.methods import registry
from engine.methods.base import StagedForm
from engine.methods.params import LAMBDA, WEIGHT

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
    assert isinstance(session.updater, StagedUpdater)
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
    """Each method, its defaults then a move of its scale (λ, or TSV-M's and Iso's α), density and seed, equals a
    fresh merge (checks the updater contract)."""
    models = ("e1", "e2", "e3")[:spec.max_models or 3]
    if len(models) < spec.min_models:
        pytest.skip(f"{spec.name} needs {spec.min_models} models")
    names = {p.name for p in spec.params}
    scale = scale_parameter(spec) or ("lambda" if "lambda" in names else None)
    steps = [{"method": spec.name}]
    if scale:
        steps.append({**steps[-1], scale: 0.7})
    if "density" in names:
        steps.append({**steps[-1], "density": 0.5})
    if "seed" in names:
        steps.append({**steps[-1], "seed": 7})
    stats = check_sequence(tiny_models, steps, models=models)
    if scale and issubclass(updater_class(spec, True), (LinearUpdater, ScaledUpdater)):
        assert stats[1].kind == "incremental"  # a move of the scale never recomputes
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


# ---- live tuning follows what a method declares, never its name ---------------------------------------


def _ramp_coefficients(params: dict, n: int, ctx: TensorContext, inputs: MergeInputs) -> tuple[list[float], float]:
    """θ0 + Σ_t f·w_t·τ_t, f growing with depth and with the inputs' size (a test method's linear form)."""
    depth = (ctx.layer + 1) / ctx.num_layers if ctx.layer is not None else 1.0
    f = float(params["scale"]) * depth / (1.0 + 0.01 * inputs.base.numel() ** 0.5)
    a = [f * float(w) for w in params["weight"]]
    return a, 1.0 - sum(a)


def _ramp(inputs: MergeInputs, params: dict, ctx: TensorContext) -> torch.Tensor:
    a, _ = _ramp_coefficients(params, len(inputs), ctx, inputs)
    out = inputs.base.clone()
    for c, d in zip(a, inputs.deltas):
        out.add_(d, alpha=c)
    return out


def _cut_masks(inputs: MergeInputs, params: dict, ctx: TensorContext, outs, stale) -> None:
    for d, cut, out, redo in zip(inputs.deltas, params["cut"], outs, stale):
        if redo:
            torch.ge(d.abs(), float(cut), out=out)


def _cut_sum(deltas, masks, params: dict) -> torch.Tensor:
    out = torch.zeros_like(deltas[0])
    for d, m, w in zip(deltas, masks, params["weight"]):
        out.add_(d * m, alpha=float(w))
    return out


def _cut(inputs: MergeInputs, params: dict, ctx: TensorContext) -> torch.Tensor:
    masks = [d.abs() >= float(c) for d, c in zip(inputs.deltas, params["cut"])]
    return inputs.base + float(params["lambda"]) * _cut_sum(inputs.deltas, masks, params)


def _declare(monkeypatch, spec: MethodSpec) -> MethodSpec:
    """Register ``spec`` for this test only (engine/live is not touched)."""
    monkeypatch.setitem(registry._METHODS, spec.name, spec)
    return spec


def test_a_new_method_declaring_a_linear_form_moves_by_multiply_adds(tiny_models, monkeypatch):
    name = _declare(monkeypatch, MethodSpec(
        name="test_depth_ramp", label="Depth ramp (test)", family="test", summary="a test method",
        params=(WEIGHT, Param("scale", "float", 1.0, "overall factor", min=-5.0, max=5.0)),
        merge=_ramp, contextual_linear=_ramp_coefficients)).name
    stats = check_sequence(tiny_models, [{"method": name}, {"method": name, "scale": 0.4},
                                         {"method": name, "scale": 0.4, "weight": [1.0, 2.0, 0.5]}])
    assert updater_class(get_method(name), True) is LinearUpdater
    assert [s.kind for s in stats] == ["full", "incremental", "incremental"]


def test_a_new_method_declaring_a_staged_form_caches_its_masks(tiny_models, monkeypatch):
    name = _declare(monkeypatch, MethodSpec(
        name="test_cut", label="Cut (test)", family="test", summary="a test method",
        params=(WEIGHT, Param("cut", "float", 0.1, "smallest kept |τ|", min=0.0, max=1.0, per_model=True), LAMBDA),
        merge=_cut, staged=StagedForm(mask_key=lambda params, t, ctx: float(params["cut"][t]), masks=_cut_masks,
                                      combine=_cut_sum))).name
    session = LiveSession(merge_recipe(tiny_models, {"method": name}), "merge", tasks=(), device="cpu")
    assert isinstance(session.updater, StagedUpdater)
    n = len(session.resident.spans)
    steps = [({"method": name}, "full", 3 * n),
             ({"method": name, "lambda": 0.4}, "incremental", 3 * n),  # λ only: one multiply-add, masks kept
             ({"method": name, "lambda": 0.4, "weight": [1.0, 2.0, 0.5]}, "full", 3 * n),  # masks kept
             ({"method": name, "lambda": 0.4, "weight": [1.0, 2.0, 0.5], "cut": {"e1": 0.2}}, "full", 4 * n)]
    for params, kind, masks in steps:
        assert session.update(params).kind == kind
        assert session.updater.masks_computed == masks, params  # only e1's masks follow its new cut
        assert max_error(session, merge_recipe(tiny_models, params)) < ATOL


def test_the_ties_staged_form_splits_tied_magnitudes_like_the_merge():
    spec = get_method("ties")
    base = torch.zeros(4, 5)
    tied = torch.tensor([1.0, 1.0, 1.0, 1.0, -1.0] * 4).view(4, 5)  # 20 equal magnitudes at the cut
    deltas = [tied, torch.randn(4, 5, generator=torch.Generator().manual_seed(0)), torch.full((4, 5), 0.5)]
    inputs = MergeInputs(base, ["a", "b", "c"], deltas=deltas)
    ctx = TensorContext("x", None, 1, torch.device("cpu"))
    for tie_break, kept in (("keep_all", [20, 6, 20]), ("mergekit", [6, 6, 6])):
        params = {"weight": [1.0] * 3, "density": [0.3] * 3, "lambda": 1.0, "normalize": True, "scope": "tensor",
                  "tie_break": tie_break}
        masks = [torch.zeros(4, 5, dtype=torch.bool) for _ in deltas]
        spec.staged.masks(inputs, params, ctx, masks, [True] * 3)
        assert [int(m.sum()) for m in masks] == kept
        assert torch.allclose(spec.merge(inputs, params, ctx), base + spec.staged.combine(deltas, masks, params))


def test_a_time_budget_sizes_a_fixed_quick_subset(zoo_recipe):
    """With a budget the quick subset is sized once from measured scoring times (at least one example),
    stays the same for every later value, and the experts are scored on those examples too."""
    with single_thread():
        tiny = LiveSession(zoo_recipe, "merge", device="cpu", quick_budget_s=1e-6)
        tiny.update({"method": "task_arithmetic", "lambda": 0.4})
        first = tiny.evaluate(full=False)
        assert set(first.examples.values()) == {1}
        roomy = LiveSession(zoo_recipe, "merge", device="cpu", quick_budget_s=30.0)
        roomy.update({"method": "task_arithmetic", "lambda": 0.4})
        sized = roomy.evaluate(full=False).examples
        roomy.update({"method": "task_arithmetic", "lambda": 0.9})
        again = roomy.evaluate(full=False)
        refs = roomy.references(full=False)
    full = {t.name: len(t.data(roomy.evaluator.split)) for t in roomy.evaluator.tasks}
    assert sized == again.examples == full  # a generous budget covers whole splits
    for task, row in again.tasks.items():
        assert row["n"] == sized[task]
    assert set(refs["experts"]) == set(full)


def test_full_split_batches_are_sized_so_a_new_value_cancels_the_scoring_in_flight_soon(zoo_recipe):
    """Sizing the quick subset also bounds the full split's batches (about FULL_BATCH_S each, from the
    measured cost per example): scoring is cancelled between batches, so a slider move waits for at most
    one small batch. The full report is the same as with the evaluator's own batches."""
    from engine.evaluation.runner import EvalCache

    with single_thread():
        session = LiveSession(zoo_recipe, "merge", device="cpu", quick_budget_s=0.05)
        session.update({"method": "task_arithmetic", "lambda": 0.4})
        evaluator = session.evaluator.evaluator
        assert evaluator.batch_limits == {}
        session.evaluate(full=False)
        sized = dict(evaluator.batch_limits)
        assert set(sized) <= {t.name for t in evaluator.tasks} and min(sized.values(), default=8) >= 8
        split = session.evaluator.split
        evaluator.batch_limits = {t.name: 7 for t in evaluator.tasks}  # as a slow machine would size them
        assert {evaluator.plan(t, split, None)[1] for t in evaluator.tasks} == {7}
        small = session.evaluate(full=True)
        evaluator.batch_limits = {}
        evaluator.cache = EvalCache()
        whole = session.evaluate(full=True)
    assert all(evaluator.plan(t, split, None)[1] > 7 for t in evaluator.tasks)
    for task, row in whole.tasks.items():
        assert small.tasks[task]["accuracy"] == pytest.approx(row["accuracy"], abs=1e-9)
        assert small.tasks[task]["n"] == row["n"]
