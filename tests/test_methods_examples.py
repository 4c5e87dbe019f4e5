"""Small hand-worked examples: each expected value is written out or computed here from the paper's formula."""

from __future__ import annotations

import math

import pytest
import torch

from engine.methods.della import keep_probabilities
from methods_helpers import merge_model, merge_one

T = torch.tensor


def approx(a: torch.Tensor, b, atol: float = 1e-6) -> bool:
    return torch.allclose(a, torch.as_tensor(b, dtype=a.dtype), atol=atol, rtol=1e-5)


BASE5 = T([1.0, -2.0, 0.5, 3.0, 0.0])


def test_linear_and_task_arithmetic():
    a, b = T([1.0, 2.0]), T([3.0, -2.0])
    assert approx(merge_one("linear", None, [a, b], {"weight": [1.0, 3.0]}), [2.5, -1.0])  # (a + 3b) / 4
    assert approx(merge_one("linear", None, [a, b], {"weight": [1.0, 3.0], "normalize": False}), [10.0, -4.0])
    base = T([1.0, 1.0])
    # θ0 + λ(w1 τ1 + w2 τ2) with τ1 = [0, 1], τ2 = [2, -3]; negation by a negative weight
    assert approx(merge_one("task_arithmetic", base, [a, b], {"weight": [1.0, -0.5], "lambda": 2.0}), [-1.0, 6.0])


def test_ties_by_hand():
    tau = [T([0.5, -0.1, 0.2, -0.9, 0.05]), T([-0.3, 0.4, 0.1, -0.2, 0.6]), T([0.2, -0.5, 0.3, 0.1, -0.05])]
    # density 0.4 keeps 2 of 5 per task: [0.5,0,0,-0.9,0], [0,0.4,0,0,0.6], [0,-0.5,0.3,0,0]
    # summed signs + - + - +; agreeing entries: 0.5 | -0.5 | 0.3 | -0.9 | 0.6 (one contributor each)
    out = merge_one("ties", BASE5, [BASE5 + t for t in tau], {"density": 0.4, "lambda": 2.0})
    assert approx(out, BASE5 + 2.0 * T([0.5, -0.5, 0.3, -0.9, 0.6]))
    # weight 2 on task 2: entry 1 sums to 0.8 - 0.5 > 0, so task 2 alone agrees: 0.8 / 2 = 0.4;
    # entry 4: 1.2 / 2 = 0.6
    out = merge_one("ties", BASE5, [BASE5 + t for t in tau], {"density": 0.4, "weight": [1.0, 2.0, 1.0]})
    assert approx(out, BASE5 + T([0.5, 0.4, 0.3, -0.9, 0.6]))
    # a conflict: two tasks agree (+0.4, +0.2), one disagrees (-0.5): elected +, mean of the agreeing 0.3
    conflict = [T([0.4]), T([0.2]), T([-0.5])]
    assert approx(merge_one("ties", T([0.0]), conflict, {"density": 1.0}), [0.3])
    assert approx(merge_one("ties", T([0.0]), conflict, {"density": 1.0, "normalize": False}), [0.6])
    # a negative weight flips a task before the election; an entry nobody moves stays at the base
    tau = [T([0.4, 0.0]), T([0.2, 0.0]), T([0.5, 0.0])]
    out = merge_one("ties", T([1.0, 2.0]), [T([1.0, 2.0]) + t for t in tau], {"density": 1.0, "weight": [1, 1, -1]})
    assert approx(out, [1.0 + 0.3, 2.0])  # weighted 0.4, 0.2, -0.5 -> elected +, (0.4 + 0.2) / (1 + 1)


def test_dare_keeps_survivors_scaled_by_inverse_density():
    torch.manual_seed(1)
    base = torch.zeros(200, 50)
    tau = torch.randn(200, 50)
    out = merge_one("dare_linear", base, [base + tau], {"density": 0.3, "seed": 5})
    kept = out != 0
    assert approx(out[kept], tau[kept] / 0.3, atol=1e-5)
    assert abs(kept.float().mean().item() - 0.3) < 0.02  # Bernoulli(0.3) over 10,000 entries
    # 'l1' restores the L1 norm, 'none' leaves survivors as they are
    l1 = merge_one("dare_linear", base, [base + tau], {"density": 0.3, "seed": 5, "rescale": "l1"})
    assert torch.equal(l1 != 0, kept) and math.isclose(l1.abs().sum().item(), tau.abs().sum().item(), rel_tol=1e-4)
    raw = merge_one("dare_linear", base, [base + tau], {"density": 0.3, "seed": 5, "rescale": "none"})
    assert approx(raw[kept], tau[kept])


def test_breadcrumbs_by_hand():
    tau = T([0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 0.7, -0.8, 0.9, -1.0])
    # gamma 0.2 removes the 2 largest (1.0, 0.9); density 0.5 keeps 5 -> |τ| in {0.4..0.8}; the bottom 3 go
    out = merge_one("breadcrumbs", torch.zeros(10), [tau], {"density": 0.5, "gamma": 0.2})
    assert approx(out, [0, 0, 0, -0.4, 0.5, -0.6, 0.7, -0.8, 0, 0])
    # density + gamma > 1: fewer outliers removed so that 'density' is kept (only 1.0 goes)
    out = merge_one("breadcrumbs", torch.zeros(10), [tau], {"density": 0.9, "gamma": 0.2})
    assert approx(out, torch.where(tau.abs() < 1.0, tau, torch.zeros(10)))


def test_della_keep_probabilities_and_rescaling():
    # ranks of |.| within the row: 1 -> 0, 2 -> 1/2, 3 -> 1; p = density - eps + 2 eps rank
    assert approx(keep_probabilities(T([[3.0, 1.0, -2.0]]), 0.5, 0.1), [[0.6, 0.4, 0.5]])
    torch.manual_seed(2)
    tau = torch.randn(64, 64)
    out = merge_one("della_linear", torch.zeros(64, 64), [tau], {"density": 0.5, "epsilon": 0.2, "seed": 1})
    probs = keep_probabilities(tau, 0.5, 0.2)
    kept = out != 0
    assert approx(out[kept], tau[kept] / probs[kept], atol=1e-5)
    assert abs(kept.float().mean().item() - 0.5) < 0.03


def test_slerp_and_nuslerp_by_hand():
    v0, v1 = T([2.0, 0.0]), T([0.0, 1.0])
    # θ = π/2: coefficients sin((1-t)θ)/sinθ and sin(tθ)/sinθ applied to the raw vectors
    t = 0.3
    c0, c1 = math.sin(0.7 * math.pi / 2), math.sin(0.3 * math.pi / 2)
    assert approx(merge_one("slerp", v0, [v1], {"t": t}), [2.0 * c0, c1])
    # nuslerp: t = w2 / (w1 + w2) = 0.75
    c0, c1 = math.sin(0.25 * math.pi / 2), math.sin(0.75 * math.pi / 2)
    assert approx(merge_one("nuslerp", None, [v0, v1], {"weight": [1.0, 3.0]}), [2.0 * c0, c1])
    # with a base, the task vectors are interpolated: τ1 = [2, 0], τ2 = [0, 1] around base [1, 1]
    base = T([1.0, 1.0])
    assert approx(merge_one("nuslerp", base, [base + v0, base + v1], {"weight": [1.0, 3.0]}), [1 + 2 * c0, 1 + c1])
    # row-wise (not flattened): each row on its own
    a, b = T([[1.0, 0.0], [0.0, 2.0]]), T([[0.0, 1.0], [0.0, 4.0]])
    out = merge_one("nuslerp", None, [a, b], {"nuslerp_flatten": False})
    s = math.sin(math.pi / 4)
    assert approx(out, [[s, s], [0.0, 3.0]])


def test_model_stock_by_hand():
    base = T([0.0, 0.0])
    # τ1 = [1, 1], τ2 = [1, 0]: cos = 1/√2, t = 2c/(1+c), θ = t·mean + (1-t)·θ0
    c = 1 / math.sqrt(2)
    t = 2 * c / (1 + c)
    assert approx(merge_one("model_stock", base, [T([1.0, 1.0]), T([1.0, 0.0])]), [t * 1.0, t * 0.5])
    # orthogonal task vectors: cos = 0, t = 0, the base is kept
    assert approx(merge_one("model_stock", base, [T([1.0, 0.0]), T([0.0, 1.0])]), [0.0, 0.0])


def test_consensus_and_tall_masks_by_hand():
    base = torch.zeros(4)
    tau = [T([1.0, 0.1, 0.0, -0.5]), T([0.8, 0.0, 0.3, 0.5]), T([0.9, -0.2, 0.0, 0.4])]
    mtl = tau[0] + tau[1] + tau[2]  # [2.7, -0.1, 0.3, 0.4]
    lam = 0.3
    masks = [t.abs() > lam * (mtl - t).abs() for t in tau]
    # task 1: |τ| [1, .1, 0, .5] > [.51, .06, .09, .27]; task 2: [.8, 0, .3, .5] > [.57, .03, 0, .03];
    # task 3: [.9, .2, 0, .4] > [.54, .03, .09, 0] -> counts per entry 3, 2, 1, 3
    assert [m.tolist() for m in masks] == [[True, True, False, True], [True, False, True, True],
                                           [True, True, False, True]]
    out = merge_one("consensus_ta", base, tau, {"k": 2, "mask_lambda": lam, "lambda": 0.5})
    assert approx(out, 0.5 * T([2.7, -0.1, 0.0, 0.4]))
    rebuilt = merge_one("tall_mask_reconstruct", base, tau, {"task": 1, "mask_lambda": lam})
    assert approx(rebuilt, T([2.7, 0.0, 0.3, 0.4]))


def test_pcb_by_hand():
    tau = [T([0.5, -0.2, 0.1, 0.4, -0.3, 0.05, 0.2, -0.1]), T([0.3, 0.2, -0.4, 0.1, -0.1, 0.2, -0.3, 0.05])]
    n, ratio, clip = 8, 0.5, 0.0
    total = tau[0] + tau[1]
    clipped, scales = [], []
    for t in tau:
        mag = t.abs()
        srt = torch.sort(mag).values
        lo, hi = srt[int(n * clip)], srt[int(n * (1 - clip)) - 1]
        m = mag.clamp(lo, hi)
        clipped.append(torch.sign(t) * m)
        score = torch.exp(2 * ((m - lo) / (hi - lo)) ** 2) * torch.tanh(t * total)
        floor = torch.sort(score).values[int(n * (1 - ratio))]
        s = score.clamp(min=floor)
        scales.append((s - floor) / (s.max() - floor))
    expected = (clipped[0] * scales[0] * 1.0 + clipped[1] * scales[1] * 2.0) / (scales[0] + scales[1]).clamp(min=1e-12)
    out = merge_one("pcb", torch.zeros(8), tau, {"ratio": ratio, "clip": clip, "weight": [1.0, 2.0], "lambda": 1.5})
    assert approx(out, 1.5 * expected)


def test_metagpt_by_hand():
    base = T([1.0, 1.0])
    tau = [T([3.0, 4.0]), T([1.0, 0.0])]  # ‖τ‖² = 25 and 1 -> λ = 25/26, 1/26
    out = merge_one("metagpt", base, [base + t for t in tau], {"scope": "tensor"})
    assert approx(out, base + 25 / 26 * tau[0] + 1 / 26 * tau[1])


def test_metagpt_model_scope_uses_whole_model_norms():
    base = {"a": torch.zeros(2), "b": torch.zeros(1)}
    m1 = {"a": T([3.0, 0.0]), "b": T([4.0])}  # ‖τ1‖² = 25 over the model
    m2 = {"a": T([0.0, 5.0]), "b": T([0.0])}  # ‖τ2‖² = 25
    out = merge_model("metagpt", base, [m1, m2])
    assert approx(out["a"], [1.5, 2.5]) and approx(out["b"], [2.0])


def test_lines_scales_by_depth():
    base = {f"model.layers.{i}.w": torch.zeros(2) for i in range(5)} | {"model.embed_tokens.weight": torch.zeros(2)}
    merged = {n: torch.ones(2) for n in base}
    out = merge_model("lines", base, [merged], {"alpha": 0.2, "beta": 0.8})
    for i in range(5):
        assert approx(out[f"model.layers.{i}.w"], [0.2 + 0.8 * i / 4] * 2)
    assert approx(out["model.embed_tokens.weight"], [0.2, 0.2])  # outside the blocks: α


def test_iso_c_flattens_the_spectrum():
    torch.manual_seed(3)
    tau = [torch.randn(6, 4) for _ in range(3)]
    u, s, vh = torch.linalg.svd(tau[0] + tau[1] + tau[2], full_matrices=False)
    expected = u @ torch.diag(torch.full_like(s, s.mean().item())) @ vh
    out = merge_one("iso_c", torch.zeros(6, 4), tau, {"alpha": 0.7})
    assert approx(out, 0.7 * expected, atol=1e-5)
    assert torch.allclose(torch.linalg.svdvals(out), torch.full((4,), 0.7 * s.mean().item()), atol=1e-5)
    # vectors fall back to task arithmetic with the mean task vector
    vec = [torch.randn(5) for _ in range(3)]
    assert approx(merge_one("iso_c", torch.zeros(5), vec, {"alpha": 0.7}), 0.7 * sum(vec) / 3)


def test_iso_cts_by_hand():
    torch.manual_seed(4)
    tau = [torch.randn(6, 6) for _ in range(2)]
    # r = 6, common = int(6·0.5) = 3, task-specific total round(3/2)·2 = 4, so common = 2, 2 per task
    u, s, vh = torch.linalg.svd(tau[0] + tau[1], full_matrices=False)
    uc, sc, vc = u[:, :2], s[:2], vh[:2]
    cols, vals, rows = [], [], []
    for t in tau:
        tu, ts, tv = torch.linalg.svd(t - uc @ uc.T @ t, full_matrices=False)
        cols.append(tu[:, :2]), vals.append(ts[:2]), rows.append(tv[:2])
    big_u, big_v = torch.cat(cols + [uc], 1), torch.cat(rows + [vc], 0)
    pu, _, pv = torch.linalg.svd(big_u)
    qu, _, qv = torch.linalg.svd(big_v)
    expected = (pu @ pv) @ (qu @ qv) * torch.cat(vals + [sc]).mean()
    out = merge_one("iso_cts", torch.zeros(6, 6), tau, {"common_space_fraction": 0.5})
    assert approx(out, expected, atol=1e-5)
    # all directions common: Iso-CTS is Iso-C
    full = merge_one("iso_cts", torch.zeros(6, 6), tau, {"common_space_fraction": 1.0})
    assert approx(full, merge_one("iso_c", torch.zeros(6, 6), tau), atol=1e-5)


def test_lwptv_reverts_a_tasks_quiet_layer():
    base = {f"model.layers.{i}.w": torch.ones(4) for i in range(2)}
    m1 = {"model.layers.0.w": torch.ones(4) + 0.01, "model.layers.1.w": torch.ones(4) + 1.0}  # layer 0 quiet
    m2 = {"model.layers.0.w": torch.ones(4) + 0.5, "model.layers.1.w": torch.ones(4) + 0.5}
    out = merge_model("lwptv_ta", base, [m1, m2], {"threshold": 0.1})
    # task 1: saliency 0.01 vs 1.0 -> layer 0 reverts; task 2: 0.5 vs 0.5 -> kept
    assert approx(out["model.layers.0.w"], [1.5] * 4)
    assert approx(out["model.layers.1.w"], [2.5] * 4)
    assert approx(merge_model("lwptv_ta", base, [m1, m2], {"threshold": 0.0})["model.layers.0.w"], [1.51] * 4)


@pytest.mark.parametrize("method", ["ties", "breadcrumbs"])
def test_chunk_boundaries_do_not_change_thresholds(method, monkeypatch):
    import engine.methods.streaming as streaming
    base = torch.zeros(5000)
    tau = torch.linspace(-1, 1, 5000)[torch.randperm(5000, generator=torch.Generator().manual_seed(0))]
    whole = merge_one(method, base, [tau], {"density": 0.3})
    monkeypatch.setattr(streaming, "CHUNK", 256)
    monkeypatch.setattr(streaming, "_SAMPLE", 128)
    monkeypatch.setattr(streaming, "_SMALL", 1024)
    assert torch.equal(whole, merge_one(method, base, [tau], {"density": 0.3}))


def test_breadcrumbs_tie_break_keeps_exactly_the_density_the_mergekit_way():
    tau = torch.tensor([1.0, -1, 1, -1, 2, -2, 2, -2, 3, -3])
    # n = 10, density 0.5 → 5 kept, gamma 0.1 → the 1 largest dropped: ranks 4..8 = the four 2s and one 3
    out = merge_one("breadcrumbs", torch.zeros(10), [tau], {"density": 0.5, "gamma": 0.1, "tie_break": "mergekit"})
    kept = out[out != 0].abs()
    assert len(kept) == 5 and int((kept == 2).sum()) == 4 and int((kept == 3).sum()) == 1
    fast = merge_one("breadcrumbs", torch.zeros(10), [tau], {"density": 0.5, "gamma": 0.1})
    assert sorted(fast[fast != 0].abs().tolist()) == [2.0] * 4  # ties kept at the bottom cut, dropped at the top


def test_ties_keeps_all_tied_magnitudes_or_exactly_k_the_mergekit_way():
    tau = torch.tensor([3.0, 1, -1, 1, 0.5])  # density 0.4 → k = 2: the 3 and one of three tied 1s
    exact = merge_one("ties", torch.zeros(5), [tau], {"density": 0.4, "tie_break": "mergekit"})
    assert int((exact != 0).sum()) == 2 and exact[0] == 3
    assert torch.equal(merge_one("ties", torch.zeros(5), [tau], {"density": 0.4}), torch.tensor([3.0, 1, -1, 1, 0]))


@pytest.mark.parametrize("filter_wise", [False, True])
def test_model_stock_in_chunks_equals_the_direct_formula(filter_wise):
    g = torch.Generator().manual_seed(8)
    base = torch.randn(600, 1024, generator=g)  # several chunks of whole rows
    models = [base + 0.1 * torch.randn(base.shape, generator=g) + 0.05 * k for k in range(3)]
    deltas = [m - base for m in models]
    vecs = deltas if filter_wise else [d.reshape(1, -1) for d in deltas]
    cos = torch.stack([torch.nn.functional.cosine_similarity(vecs[i], vecs[j], dim=-1)
                       for i in range(3) for j in range(i + 1, 3)]).mean(dim=0).unsqueeze(-1)
    t = 3 * cos / (1 + 2 * cos)
    expected = (base.reshape(len(cos), -1) + t * torch.stack(deltas).mean(dim=0).reshape(len(cos), -1)).reshape(base.shape)
    out = merge_one("model_stock", base, models, {"filter_wise": filter_wise})
    assert torch.allclose(out, expected, atol=1e-5)
