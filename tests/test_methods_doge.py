"""DOGE (task arithmetic): invariants of the projected optimisation, and one step against autograd."""

from __future__ import annotations

import pytest
import torch

from engine.methods.doge import doge_delta, gap_gradient, shared_basis
from methods_helpers import merge_model, merge_one


def _taus(shape=(12, 9), n=3, seed=0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) for _ in range(n)]


def test_steps_zero_is_task_arithmetic_with_the_adaptive_lambdas():
    base, taus = torch.randn(12, 9), _taus()
    out = merge_one("doge_ta", base, [base + t for t in taus], {"steps": 0, "density": 1.0, "lambda": 0.5})
    lams = [0.5 / float(t.norm()) for t in taus]
    expected = merge_one("task_arithmetic", base, [base + t for t in taus], {"weight": lams, "lambda": 1.0})
    assert torch.allclose(out, expected, atol=1e-6)


def test_density_keeps_each_task_s_largest_entries_over_all_matrices():
    g = torch.Generator().manual_seed(3)
    base = {"w1": torch.zeros(4, 5), "w2": torch.zeros(6, 5), "bias": torch.zeros(5)}
    experts = [{k: torch.randn(v.shape, generator=g) for k, v in base.items()} for _ in range(2)]
    out = merge_model("doge_ta", base, experts, {"steps": 0, "density": 0.3, "lambda": 1.0})
    for k in ("w1", "w2"):
        expected = torch.zeros_like(base[k])
        for e in experts:
            flat = torch.cat([e["w1"].reshape(-1), e["w2"].reshape(-1)]).abs()
            threshold = flat.sort().values[50 - int(50 * 0.3) - 1]  # the kept entries: |τ| at or above it
            norm = float(e[k].norm())
            expected += e[k] * (e[k].abs() >= threshold) / norm
        assert torch.allclose(out[k], expected, atol=1e-6), k
    assert torch.equal(out["bias"], base["bias"])  # vectors keep the base, as the reference
    mean = merge_model("doge_ta", base, experts, {"steps": 0, "vectors": "mean"})["bias"]
    assert torch.allclose(mean, (experts[0]["bias"] + experts[1]["bias"]) / 2)


def test_one_task_at_its_own_norm_is_the_expert_whatever_the_steps():
    # a zero base keeps τ = θ − θ0 exact: with a random base the rounding of θ − θ0 leaves gaps of ~1e-7,
    # which Adam's normalised steps turn into moves of lr per step (the test then depended on test order)
    base, (tau,) = torch.zeros(12, 9), _taus(n=1)
    for steps in (0, 50):
        out = merge_one("doge_ta", base, [base + tau], {"lambda": float(tau.norm()), "density": 1.0, "steps": steps})
        assert torch.allclose(out, base + tau, atol=1e-5)


def test_one_task_converges_to_the_expert_s_projections():
    """With one task the loss is Σ_r ⟨τ[r], τ[r] − λ(τ[r] + δ[r])⟩²: at its minimum the merged update has
    the expert's own projection on each of the expert's rows, whatever λ."""
    base, (tau,) = torch.randn(12, 9), _taus(n=1)
    values = {"lambda": 0.5 * float(tau.norm()), "density": 1.0, "lr": 1e-2}  # λ = 0.5
    before = merge_one("doge_ta", base, [base + tau], {**values, "steps": 0})
    assert torch.allclose(((before - base) * tau).sum(1), 0.5 * (tau * tau).sum(1), atol=1e-5)
    out = merge_one("doge_ta", base, [base + tau], {**values, "steps": 1500})
    assert torch.allclose(((out - base) * tau).sum(1), (tau * tau).sum(1), atol=1e-3)


def test_orthogonal_tasks_at_their_own_norms_are_already_optimal():
    """Task vectors on disjoint rows, all of norm 6 (±1 entries: exact in floating point), merged with
    lambda = 6 (so every λ_t = 1): their sum reproduces every expert on its own rows, the loss is zero and
    δ stays exactly 0 (any rounding would be blown up to lr-sized steps by Adam's normalisation)."""
    g = torch.Generator().manual_seed(1)
    taus = []
    for t in range(3):
        tau = torch.zeros(12, 9)
        tau[4 * t:4 * t + 4] = torch.randint(0, 2, (4, 9), generator=g).float() * 2 - 1
        taus.append(tau)
    assert torch.equal(doge_delta(taus, [1.0] * 3, shared_basis(taus, 6), 100, 1e-2), torch.zeros(12, 9))
    base = torch.randint(-6, 6, (12, 9), generator=g) / 2
    values = {"lambda": 6.0, "density": 1.0, "steps": 100, "lr": 1e-2}
    out = merge_one("doge_ta", base, [base + t for t in taus], values)
    assert torch.equal(out, base + sum(taus))


def test_shared_basis_is_orthonormal_and_spans_the_tasks_leading_directions():
    taus = _taus((20, 12), n=2)
    basis = shared_basis(taus, 3)
    assert basis.shape == (20, 4)
    assert torch.allclose(basis.T @ basis, torch.eye(4), atol=1e-5)
    leading = torch.cat([torch.linalg.svd(t, full_matrices=False)[0][:, :6] for t in taus], dim=1)
    span = torch.linalg.qr(leading).Q
    assert torch.allclose(span @ (span.T @ basis), basis, atol=1e-4)  # inside the tasks' leading span
    assert shared_basis(_taus((3, 3), n=4), 6).shape == (3, 0)  # more tasks than rank: nothing shared


def _reference_loss(delta, taus, lams):
    """The reference code's loss, written out: Σ_j Σ_rows (Σ_cols −τ_j·M − τ_j·Λδ + τ_j·τ_j)²."""
    stacked = torch.stack(taus)
    lam = torch.tensor(lams).view(-1, 1, 1)
    total = 0.0
    for v in stacked:
        expr = -v * (stacked * lam).sum(0) - v * (delta.unsqueeze(0) * lam).sum(0) + v * v
        total = total + expr.sum(dim=1).pow(2).sum()
    return total


def test_closed_form_gradient_matches_autograd():
    taus, lams = _taus((10, 7), n=3), [0.3, 0.7, 1.1]
    delta = torch.randn(10, 7, generator=torch.Generator().manual_seed(5)).requires_grad_()
    _reference_loss(delta, taus, lams).backward()
    stacked, lam = torch.stack(taus), torch.tensor(lams)
    offsets = torch.einsum("tij,tij->ti", stacked, stacked - torch.einsum("t,tij->ij", lam, stacked))
    ours = gap_gradient(stacked, offsets, float(lam.sum()), delta.detach())
    assert torch.allclose(ours, delta.grad, rtol=1e-5, atol=1e-4)


def test_projected_adam_steps_match_autograd_on_the_reference_loss():
    taus, lams = _taus((10, 7), n=3), [0.3, 0.7, 1.1]
    basis = shared_basis(taus, 2)
    ref = torch.nn.Parameter(torch.zeros(10, 7))
    opt = torch.optim.Adam([ref], lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        _reference_loss(ref, taus, lams).backward()
        ref.grad -= basis @ (basis.T @ ref.grad)  # the reference: grad − P·grad
        opt.step()
    assert not torch.allclose(ref.detach(), torch.zeros(10, 7))
    assert torch.allclose(doge_delta(taus, lams, basis, 3, 1e-2), ref.detach(), atol=1e-6)


@pytest.mark.parametrize("scope", ["model", "tensor"])
def test_permuting_the_tasks_changes_nothing(scope):
    base = {"w": torch.randn(8, 6), "b": torch.randn(6)}
    g = torch.Generator().manual_seed(2)
    experts = [{k: v + torch.randn(v.shape, generator=g) for k, v in base.items()} for _ in range(3)]
    values = {"steps": 20, "lr": 1e-2, "scope": scope}
    a = merge_model("doge_ta", base, experts, values)
    b = merge_model("doge_ta", base, experts[::-1], values)
    assert torch.allclose(a["w"], b["w"], atol=1e-5)
