"""Exact selection: per-tensor (CPU bracketing, chunked) and whole-model (radix passes) thresholds."""

from __future__ import annotations

import pytest
import torch

import engine.methods.streaming as streaming
from engine.errors import EngineInputError
from engine.methods.statistics import ExactRanks, GroupSums, RadixSelect, key_to_float, ordered_keys, run_statistic
from engine.methods.streaming import kth_smallest, select_ranks
from methods_helpers import llama_like, merge_model, variant


def test_ordered_keys_sort_like_the_floats():
    x = torch.tensor([-3.5, -1e-30, -0.0, 0.0, 1e-38, 2.0, float("inf"), -float("inf")])
    keys = ordered_keys(x)
    assert torch.equal(torch.argsort(keys, stable=True), torch.argsort(x, stable=True))
    assert all(key_to_float(int(k)) == float(v) for k, v in zip(keys, x))


@pytest.mark.parametrize("data", ["normal", "ties", "signed"])
def test_radix_select_is_exact(data):
    g = torch.Generator().manual_seed(0)
    if data == "normal":
        streams = [torch.randn(5000, generator=g).abs() for _ in range(3)]
    elif data == "ties":
        streams = [torch.randint(0, 4, (5000,), generator=g).float() for _ in range(3)]
    else:
        streams = [torch.randn(5000, generator=g) * 1e-3 for _ in range(3)]
    sel = RadixSelect(1)
    for s in streams:
        sel.add_coarse(0, s)
    assert sel.totals() == [15000]
    ranks = [1, 2, 7500, 14999, 15000, 1234]
    sel.plan([ranks])
    for s in streams:
        sel.add_fine(0, s)
    everything = torch.cat(streams)
    assert sel.values()[0] == [everything.kthvalue(r).values.item() for r in ranks]


@pytest.fixture
def small_cutoffs(monkeypatch):
    """Exercise the bracketing CPU path (sample, bands, fallbacks) on small tensors."""
    monkeypatch.setattr(streaming, "_SMALL", 4096)
    monkeypatch.setattr(streaming, "_SAMPLE", 1024)


@pytest.mark.parametrize("p", [1e-7, 1e-3, 0.2, 0.5, 0.8, 0.999, 1 - 1e-7])
def test_cpu_selection_is_exact(p, small_cutoffs):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(60_000, generator=g).abs()
    k = max(1, int(p * x.numel()))
    assert kth_smallest(x, k).item() == x.kthvalue(k).values.item()


def test_cpu_selection_with_structured_and_tied_data(small_cutoffs):
    rows = torch.linspace(0, 1, 256).unsqueeze(1) * torch.arange(256).remainder(7).float()
    for k in (10, 30_000, 65_000):
        assert kth_smallest(rows, k).item() == rows.reshape(-1).kthvalue(k).values.item()
    zeros = torch.zeros(50_000)
    zeros[:100] = torch.rand(100)
    assert kth_smallest(zeros, 49_950).item() == zeros.kthvalue(49_950).values.item()


@pytest.mark.slow
def test_cpu_selection_at_full_size():
    x = torch.randn(1_200_000, generator=torch.Generator().manual_seed(1)).abs()
    for k in (1, 240_000, 960_001, 1_200_000):
        assert kth_smallest(x, k).item() == x.kthvalue(k).values.item()


def test_chunked_selection_matches_materialised(monkeypatch):
    monkeypatch.setattr(streaming, "CHUNK", 1000)
    monkeypatch.setattr(streaming, "_SAMPLE", 512)
    monkeypatch.setattr(streaming, "_SMALL", 1024)
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(20_011, generator=g), torch.randn(20_011, generator=g)
    ranks = [[1, 5000, None, 20_011], [19_000]]
    got = select_ranks(lambda i: [(a[i] - b[i]).abs(), a[i] * 3], a.numel(), ranks, torch.device("cpu"))
    full = [(a - b).abs(), a * 3]
    for g_, rs in enumerate(ranks):
        for r, v in zip(rs, got[g_]):
            assert v is None if r is None else v.item() == full[g_].kthvalue(r).values.item()


def _concat(sd: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in sd.values()])


def _split(flat: torch.Tensor, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out, i = {}, 0
    for n, t in like.items():
        out[n] = flat[i:i + t.numel()].reshape(t.shape)
        i += t.numel()
    return out


@pytest.mark.parametrize("method,values", [
    ("ties", {"density": 0.3, "weight": [1.0, 0.5, 2.0]}),
    ("breadcrumbs", {"density": 0.6, "gamma": 0.05}),
    ("breadcrumbs_ties", {"density": 0.5, "gamma": 0.1}),
    ("pcb", {"ratio": 0.3, "clip": 0.01}),
    ("consensus_ties", {"density": 0.4}),
])
def test_model_scope_equals_tensor_scope_on_the_concatenated_model(method, values):
    base = llama_like(5)
    models = [variant(base, s) for s in (6, 7, 8)]
    by_model = merge_model(method, base, models, {**values, "scope": "model"})
    flat = merge_model(method, {"all": _concat(base)}, [{"all": _concat(m)} for m in models],
                       {**values, "scope": "tensor"})["all"]
    expected = _split(flat, base)
    for name in base:
        assert torch.allclose(by_model[name], expected[name], atol=1e-6), name


def test_ties_global_threshold_is_the_kth_largest_over_the_model():
    base = llama_like(9)
    models = [variant(base, s, scale=0.05 * s) for s in (1, 2)]
    stat = ExactRanks(lambda inputs, p, ctx: [d.abs() for d in inputs.deltas],
                      lambda totals, p: [[n - int(0.25 * n) + 1] for n in totals])
    from engine.methods import MergeInputs, TensorContext
    items = [(MergeInputs(base[n], ["a", "b"], models=[m[n] for m in models]), {"density": [0.25, 0.25]},
              TensorContext(n, None, 1, torch.device("cpu"))) for n in base]
    result = run_statistic(stat, items)
    for t, m in enumerate(models):
        mags = (_concat(m) - _concat(base)).abs()
        k = int(0.25 * mags.numel())
        assert result[t][0] == mags.topk(k).values.min().item()


def test_model_scope_rejects_per_layer_density():
    base = llama_like(3)
    models = [variant(base, 4)]
    with pytest.raises(EngineInputError, match="varies by tensor"):
        merge_model("ties", base, models, {"scope": "model", "density": {"m0": [0.1, 0.9]}})


def test_group_sums():
    stat = GroupSums(lambda inputs, p, ctx: {ctx.layer: torch.tensor([1.0, 2.0])})
    from engine.methods import MergeInputs, TensorContext
    items = [(MergeInputs(None, ["a"], models=[torch.zeros(1)]), {}, TensorContext(str(i), i % 2, 2, torch.device("cpu")))
             for i in range(5)]
    result = run_statistic(stat, items)
    assert result[0].tolist() == [3.0, 6.0] and result[1].tolist() == [2.0, 4.0]
