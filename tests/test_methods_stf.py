"""STF (superposed task-specific features) on hand-worked cases and the invariants of its construction."""

from __future__ import annotations

import math

import torch

from engine.methods.stf import kept_features
from tests.methods_helpers import merge_one


def _diag(*values: float) -> torch.Tensor:
    return torch.diag(torch.tensor(values, dtype=torch.float32))


def test_two_overlapping_features_are_weighted_so_that_each_survives():
    # τ1 = 2·e1 e1ᵀ, τ2 = 3·e1 wᵀ with w = (e1 + e2)/√2: both share the output direction e1.
    # The system [[1, 1/√2], [1/√2, 1]] α = (2, 3) gives Δ = e1 ⊗ (2, 3√2 − 2): Δ w · e1 = 3 and Δ e1 · e1 = 2.
    w = torch.tensor([1.0, 1.0]) / math.sqrt(2)
    t1 = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    t2 = 3 * torch.outer(torch.tensor([1.0, 0.0]), w)
    out = merge_one("stf", torch.zeros(2, 2), [t1, t2], {"rank_fraction": 0.5})
    assert torch.allclose(out, torch.tensor([[2.0, 3 * math.sqrt(2) - 2], [0.0, 0.0]]), atol=1e-5)
    summed = t1 + t2  # task arithmetic over-counts the shared direction: 2 + 3/√2 along e1 e1ᵀ
    assert summed[0, 0] > out[0, 0] + 1


def test_one_task_gives_its_best_low_rank_approximation_and_lambda_scales_it():
    base = torch.randn(6, 5, generator=torch.Generator().manual_seed(1))
    tau = torch.randn(6, 5, generator=torch.Generator().manual_seed(2))
    u, s, vh = torch.linalg.svd(tau, full_matrices=False)
    rank2 = (u[:, :2] * s[:2]) @ vh[:2]
    out = merge_one("stf", base, [base + tau], {"rank_fraction": 0.4, "lambda": 0.5})  # round(0.4 · 5) = 2
    assert torch.allclose(out, base + 0.5 * rank2, atol=1e-5)


def test_orthogonal_tasks_add_and_copies_of_one_task_count_once():
    t1, t2 = _diag(3, 1, 0, 0), _diag(0, 0, 2, 0.5)  # disjoint singular subspaces
    out = merge_one("stf", torch.zeros(4, 4), [t1, t2], {"rank_fraction": 0.5})
    assert torch.allclose(out, t1 + t2, atol=1e-5)
    tau = torch.randn(5, 5, generator=torch.Generator().manual_seed(3))
    u, s, vh = torch.linalg.svd(tau, full_matrices=False)
    once = merge_one("stf", torch.zeros(5, 5), [tau, tau, tau], {"rank_fraction": 0.4})
    assert torch.allclose(once, (u[:, :2] * s[:2]) @ vh[:2], atol=1e-4)
    noise = [1e-6 * torch.randn(5, 5, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    nearly = merge_one("stf", torch.zeros(5, 5), [tau + n for n in noise], {"rank_fraction": 0.4})
    assert torch.allclose(nearly, (u[:, :2] * s[:2]) @ vh[:2], atol=1e-3)  # rounding is not amplified


def test_every_kept_feature_of_generic_tasks_is_preserved():
    gen = torch.Generator().manual_seed(4)
    tasks = [torch.randn(16, 12, generator=gen) for _ in range(3)]
    out = merge_one("stf", torch.zeros(16, 12), tasks, {"rank_fraction": 0.25})  # 3 features each, 9 ≤ 12
    for tau in tasks:
        u, s, v = kept_features(tau, 0.25)
        assert torch.allclose(torch.einsum("mk,mn,nk->k", u, out, v), s, atol=1e-4)


def test_weights_scale_task_vectors_and_vectors_take_the_mean():
    t1, t2 = _diag(3, 0, 0, 0), _diag(0, 2, 0, 0)
    out = merge_one("stf", torch.zeros(4, 4), [t1, t2], {"rank_fraction": 0.25, "weight": [1.0, 0.5]})
    assert torch.allclose(out, _diag(3, 1, 0, 0), atol=1e-5)
    bias = merge_one("stf", torch.ones(3), [torch.tensor([2.0, 3, 4]), torch.tensor([4.0, 3, 2])],
                     {"lambda": 0.5})
    assert torch.allclose(bias, torch.tensor([2.0, 2, 2]))


def test_more_features_than_the_rank_still_merge_finitely():
    gen = torch.Generator().manual_seed(5)
    tasks = [torch.randn(4, 4, generator=gen) for _ in range(4)]
    out = merge_one("stf", torch.zeros(4, 4), tasks, {"rank_fraction": 1.0})  # 16 features in a rank-4 space
    assert torch.isfinite(out).all()
    # the least-squares weights still reproduce the tasks' features on average better than their sum
    def residual(delta):
        return sum(float(((torch.einsum("mk,mn,nk->k", u, delta, v) - s) ** 2).sum())
                   for u, s, v in (kept_features(t, 1.0) for t in tasks))
    assert residual(out) < residual(sum(tasks))
