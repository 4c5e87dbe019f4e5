"""Invariants every method promises: zero scaling gives the base, one expert comes back, special cases agree."""

from __future__ import annotations

import pytest
import torch

import engine.methods.streaming as streaming
from methods_helpers import llama_like, merge_model, merge_one, variant

torch.manual_seed(0)
BASE = torch.randn(6, 5)
MODELS = [BASE + 0.1 * torch.randn(6, 5) for _ in range(3)]
ATOL = 1e-6


def close(a: torch.Tensor, b: torch.Tensor, atol: float = ATOL) -> bool:
    return torch.allclose(a, b, atol=atol, rtol=1e-5)


ZERO_SCALE = [
    ("task_arithmetic", {"lambda": 0.0}), ("ties", {"lambda": 0.0}), ("dare_linear", {"lambda": 0.0}),
    ("dare_ties", {"lambda": 0.0}), ("breadcrumbs", {"lambda": 0.0}), ("breadcrumbs_ties", {"lambda": 0.0}),
    ("della", {"lambda": 0.0}), ("della_linear", {"lambda": 0.0}), ("consensus_ta", {"lambda": 0.0}),
    ("consensus_ties", {"lambda": 0.0}), ("pcb", {"lambda": 0.0}), ("iso_c", {"alpha": 0.0}),
    ("iso_cts", {"alpha": 0.0}), ("slerp", {"t": 0.0}), ("lines", {"alpha": 0.0, "beta": 0.0}),
    ("lwptv_ta", {"lambda": 0.0}), ("lwptv_ties", {"lambda": 0.0}),
]


@pytest.mark.parametrize("method,values", ZERO_SCALE, ids=[m for m, _ in ZERO_SCALE])
def test_zero_scaling_gives_the_base(method, values):
    base = llama_like(1)
    models = [variant(base, s) for s in (2, 3, 4)]
    n = 1 if method in ("slerp", "lines") else 3
    out = merge_model(method, base, models[:n], values)
    for name, t in out.items():
        assert close(t, base[name]), (method, name)


ONE_EXPERT = [
    ("linear", {}), ("task_arithmetic", {}), ("ties", {"density": 1.0}), ("dare_linear", {"density": 1.0}),
    ("dare_ties", {"density": 1.0}), ("breadcrumbs", {"density": 1.0}), ("della", {"density": 1.0}),
    ("della_linear", {"density": 1.0}), ("consensus_ta", {"k": 1}), ("metagpt", {}), ("slerp", {"t": 1.0}),
    ("lines", {"alpha": 1.0, "beta": 0.0}), ("tall_mask_reconstruct", {}), ("lwptv_ta", {"threshold": 0.0}),
]


@pytest.mark.parametrize("method,values", ONE_EXPERT, ids=[m for m, _ in ONE_EXPERT])
def test_one_expert_at_full_strength_gives_that_expert(method, values):
    assert close(merge_one(method, BASE, MODELS[:1], values), MODELS[0])


def test_ties_at_full_density_without_sign_conflicts_is_the_mean_task_vector():
    taus = [torch.rand(4, 4) + 0.1 for _ in range(3)]  # all entries positive: no conflict, no zero
    out = merge_one("ties", BASE[:4, :4], [BASE[:4, :4] + t for t in taus], {"density": 1.0})
    assert close(out, BASE[:4, :4] + sum(taus) / 3)
    # normalize=False gives the disjoint sum, lambda scales it
    out = merge_one("ties", BASE[:4, :4], [BASE[:4, :4] + t for t in taus], {"density": 1.0, "normalize": False,
                                                                            "lambda": 0.5})
    assert close(out, BASE[:4, :4] + 0.5 * sum(taus))


@pytest.mark.parametrize("method", ["dare_linear", "dare_ties"])
def test_dare_without_dropping_is_task_arithmetic_or_ties(method):
    values = {"weight": [0.5, 1.0, -0.3], "lambda": 0.8}
    dare = merge_one(method, BASE, MODELS, {**values, "density": 1.0})
    if method == "dare_linear":
        assert close(dare, merge_one("task_arithmetic", BASE, MODELS, values))
    else:
        assert close(dare, merge_one("ties", BASE, MODELS, {**values, "density": 1.0, "normalize": False}))


@pytest.mark.parametrize("method,values", [("consensus_ta", {"lambda": 0.7, "weight": [1, 2, 0.5]}),
                                           ("consensus_ties", {"density": 0.5, "lambda": 1.3})])
def test_consensus_with_k0_is_its_base_merge(method, values):
    inner = "task_arithmetic" if method == "consensus_ta" else "ties"
    assert close(merge_one(method, BASE, MODELS, {**values, "k": 0}), merge_one(inner, BASE, MODELS, values))


def test_slerp_endpoints():
    assert close(merge_one("slerp", BASE, MODELS[:1], {"t": 0.0}), BASE)
    assert close(merge_one("slerp", BASE, MODELS[:1], {"t": 1.0}), MODELS[0])
    # near-parallel inputs fall back to linear interpolation
    assert close(merge_one("slerp", BASE, [BASE * 2], {"t": 0.25}), BASE * 1.25)


def test_nuslerp_weights_pick_the_endpoint():
    assert close(merge_one("nuslerp", None, MODELS[:2], {"weight": [1.0, 0.0]}), MODELS[0])
    assert close(merge_one("nuslerp", BASE, MODELS[:2], {"weight": [0.0, 1.0]}), MODELS[1])


PERMUTATION_INVARIANT = [
    ("linear", {}), ("task_arithmetic", {}), ("ties", {"density": 0.5}), ("breadcrumbs", {"density": 0.6}),
    ("breadcrumbs_ties", {"density": 0.6}), ("model_stock", {}), ("consensus_ta", {}), ("consensus_ties", {}),
    ("pcb", {}), ("metagpt", {"scope": "tensor"}), ("iso_c", {}), ("iso_cts", {"common_space_fraction": 0.5}),
]


@pytest.mark.parametrize("method,values", PERMUTATION_INVARIANT, ids=[m for m, _ in PERMUTATION_INVARIANT])
def test_model_order_does_not_matter(method, values):
    a = merge_one(method, BASE, MODELS, values)
    b = merge_one(method, BASE, MODELS[::-1], values)
    assert close(a, b, atol=1e-5)


@pytest.mark.parametrize("method", ["dare_linear", "dare_ties", "della", "della_linear"])
def test_seeded_methods_are_reproducible(method):
    big_base = torch.randn(64, 48)
    models = [big_base + torch.randn(64, 48) for _ in range(2)]
    a = merge_one(method, big_base, models, {"seed": 7})
    assert torch.equal(a, merge_one(method, big_base, models, {"seed": 7}))
    assert not torch.equal(a, merge_one(method, big_base, models, {"seed": 8}))
    # the same draws whether the inputs arrive as models or as task vectors
    assert torch.equal(a, merge_one(method, big_base, models, {"seed": 7}, deltas=True))


def test_dare_draws_do_not_depend_on_the_chunking(monkeypatch):
    base = torch.randn(1000, 33)
    models = [base + torch.randn(1000, 33) for _ in range(2)]
    whole = merge_one("dare_ties", base, models, {"seed": 3, "rescale": "l1"})
    monkeypatch.setattr(streaming, "CHUNK", 1 << 10)
    assert torch.equal(whole, merge_one("dare_ties", base, models, {"seed": 3, "rescale": "l1"}))


def test_ties_chunked_and_whole_agree(monkeypatch):
    base = torch.randn(300, 41)
    models = [base + torch.randn(300, 41) for _ in range(3)]
    whole = merge_one("ties", base, models, {"density": 0.3, "weight": [1, 0.5, 2]})
    monkeypatch.setattr(streaming, "CHUNK", 1 << 9)
    monkeypatch.setattr(streaming, "_SAMPLE", 1 << 8)
    monkeypatch.setattr(streaming, "_SMALL", 1024)
    assert torch.equal(whole, merge_one("ties", base, models, {"density": 0.3, "weight": [1, 0.5, 2]}))


def test_methods_do_not_modify_their_inputs():
    models = [m.clone() for m in MODELS]
    base = BASE.clone()
    for method in ("ties", "dare_ties", "breadcrumbs", "della", "pcb", "consensus_ties", "iso_cts", "model_stock"):
        merge_one(method, base, models)
        assert torch.equal(base, BASE) and all(torch.equal(a, b) for a, b in zip(models, MODELS)), method


@pytest.mark.parametrize("method,values", [("ties", {"density": 0.3}), ("dare_ties", {"rescale": "l1", "seed": 4}),
                                           ("breadcrumbs_ties", {"density": 0.5, "gamma": 0.1})])
def test_worker_threads_do_not_change_results(method, values, monkeypatch):
    base = torch.randn(400, 37)
    models = [base + torch.randn(400, 37) for _ in range(3)]
    monkeypatch.setattr(streaming, "CHUNK", 1 << 10)
    monkeypatch.setattr(streaming, "_SMALL", 1 << 11)
    monkeypatch.setattr(streaming, "_SAMPLE", 1 << 9)
    threaded = merge_one(method, base, models, values)
    monkeypatch.setattr(streaming, "_workers", lambda: None)
    assert torch.equal(threaded, merge_one(method, base, models, values))
