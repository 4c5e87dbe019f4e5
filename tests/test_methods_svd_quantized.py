"""TSV-M, CART, WUDI and task-vector quantisation (TVQ, RTVQ) on hand-worked cases and invariants."""

from __future__ import annotations

import torch

from engine.methods.quantized import quantize
from tests.methods_helpers import merge_one


def _diag(*values: float) -> torch.Tensor:
    return torch.diag(torch.tensor(values, dtype=torch.float32))


def test_tsv_m_of_one_task_is_its_task_vector_and_orthogonal_tasks_add():
    base = torch.randn(5, 4, generator=torch.Generator().manual_seed(3))
    tau = torch.randn(5, 4, generator=torch.Generator().manual_seed(4))
    assert torch.allclose(merge_one("tsv_m", base, [base + tau]), base + tau, atol=1e-5)
    t1, t2 = _diag(3, 1, 0, 0), _diag(0, 0, 2, 0.5)  # disjoint singular subspaces, two directions each
    out = merge_one("tsv_m", torch.zeros(4, 4), [t1, t2], {"alpha": 0.5})
    assert torch.allclose(out, 0.5 * (t1 + t2), atol=1e-5)


def test_tsv_m_keeps_rank_over_tasks_per_task_and_averages_vectors():
    # each of 3 tasks keeps floor(6 / 3) = 2 directions: the first task's third (1 on e3) is dropped
    tasks = [_diag(3, 2, 1, 0, 0, 0), _diag(0, 0, 0, 5, 4, 0), _diag(0, 0, 0.5, 0, 0, 7)]
    out = merge_one("tsv_m", torch.zeros(6, 6), tasks)
    assert torch.allclose(out, _diag(3, 2, 0.5, 5, 4, 7), atol=1e-5)
    bias = merge_one("tsv_m", torch.zeros(3), [torch.tensor([1.0, 2, 3]), torch.tensor([3.0, 2, 1])])
    assert torch.allclose(bias, torch.tensor([2.0, 2, 2]))


def test_cart_adds_back_each_models_low_rank_deviation():
    mean = torch.full((3, 3), 0.5)
    devs = [_diag(4, 1, 0), _diag(-1, 0, 2), _diag(-3, -1, -2)]  # they sum to zero
    out = merge_one("cart", None, [mean + d for d in devs], {"rank_fraction": 1 / 3, "lambda": 1.0})
    assert torch.allclose(out, mean + _diag(4 - 3, 0, 2), atol=1e-5)  # rank-1 parts: 4·e1, 2·e3, −3·e1
    full = merge_one("cart", None, [mean + d for d in devs], {"rank_fraction": 1.0, "lambda": 0.7})
    assert torch.allclose(full, mean, atol=1e-5)  # full-rank deviations cancel: plain averaging


def _wudi_loss(x: torch.Tensor, taus: list[torch.Tensor]) -> float:
    return float(sum(((x - t) @ t.T).square().sum() / t.square().sum() for t in taus))


def test_wudi_matches_adam_on_the_papers_loss_and_lowers_it():
    g = torch.Generator().manual_seed(5)
    taus = [torch.randn(6, 5, generator=g) * 0.01 for _ in range(3)]
    out = merge_one("wudi", torch.zeros(6, 5), taus, {"steps": 40, "lr": 1e-3})
    x = torch.nn.Parameter(torch.stack(taus).sum(dim=0))  # the reference: autograd through the loss
    opt = torch.optim.Adam([x], lr=1e-3)
    for _ in range(40):
        loss = sum(((x - t) @ t.T).square().sum() / t.square().sum() for t in taus)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.allclose(out, x.detach(), atol=1e-6)
    assert _wudi_loss(out, taus) < _wudi_loss(torch.stack(taus).sum(dim=0), taus)


def test_wudi_leaves_a_single_or_non_interfering_task_alone_and_averages_vectors():
    t1, t2 = _diag(3, 1, 0, 0), _diag(0, 0, 2, 0.5)
    assert torch.allclose(merge_one("wudi", torch.zeros(4, 4), [t1, t2]), t1 + t2, atol=1e-6)
    assert torch.allclose(merge_one("wudi", torch.zeros(2), [torch.ones(2), 3 * torch.ones(2)]), 2 * torch.ones(2))


def test_quantize_rounds_to_evenly_spaced_levels_between_min_and_max():
    q = quantize(torch.tensor([0.0, 0.1, 0.35, 1.0]), 2)  # levels 0, 1/3, 2/3, 1
    assert torch.allclose(q, torch.tensor([0.0, 0.0, 1 / 3, 1.0]))
    assert torch.equal(quantize(torch.full((3,), 0.2), 2), torch.full((3,), 0.2))
    x = torch.randn(1000, generator=torch.Generator().manual_seed(6))
    step = float(x.max() - x.min()) / 255
    assert float((quantize(x, 8) - x).abs().max()) <= step / 2 + 1e-6


def test_tvq_is_task_arithmetic_on_quantised_vectors():
    base = torch.zeros(4)
    tau = torch.tensor([0.0, 0.1, 0.35, 1.0])
    out = merge_one("tvq", base, [tau], {"bits": 2, "lambda": 2.0})
    assert torch.allclose(out, 2 * torch.tensor([0.0, 0.0, 1 / 3, 1.0]))


def test_rtvq_stores_a_shared_base_and_low_bit_offsets():
    t1, t2 = torch.tensor([0.0, 1, 2, 3]), torch.tensor([3.0, 2, 1, 0])
    # mean 1.5 everywhere (constant: kept exactly); 1-bit offsets snap to ±1.5
    out = merge_one("rtvq", torch.zeros(4), [t1, t2], {"bits": 1, "base_bits": 4, "lambda": 1.0})
    assert torch.allclose(out, torch.tensor([0.0, 0, 3, 3]) + torch.tensor([3.0, 3, 0, 0]))


def test_lore_finds_the_fixed_point_of_its_alternating_estimate():
    models = [3 * torch.diag(torch.eye(3)[i]) for i in range(3)]
    # fixed point: base 0.6·I, each δ_t = 1.2 on its own axis (threshold half the residual's top value)
    out = merge_one("lore", None, models, {"shrink": 0.5, "iterations": 30, "lambda": 1.0})
    assert torch.allclose(out, 1.8 * torch.eye(3), atol=1e-5)


def test_lore_without_shrinkage_or_with_total_shrinkage_is_the_average():
    g = torch.Generator().manual_seed(7)
    models = [torch.randn(4, 3, generator=g) for _ in range(3)]
    mean = torch.stack(models).mean(dim=0)
    for shrink in (0.0, 1.0):
        assert torch.allclose(merge_one("lore", None, models, {"shrink": shrink, "lambda": 0.8}), mean, atol=1e-5)
