"""Task-vector statistics: each analysis against a direct computation on small state dicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from engine.analysis import (CosineMatrix, LayerNorms, MagnitudeHistograms, MaskOverlap, SignConflicts, Spectra,
                             analyze, coefficient_matrix, from_state_dicts, run, task_vectors)
from engine.analysis.coefficients import EFFECTIVE
from engine.checkpoints import layer_index
from engine.graph import Recipe, materialize
from engine.methods import get_method


@pytest.fixture
def tiny(tiny_models: dict[str, Path]):
    """(paths, base state dict, [expert state dicts], recipe with a TIES merge of the three experts)."""
    base = load_file(tiny_models["base"])
    models = [load_file(tiny_models[f"e{k}"]) for k in (1, 2, 3)]
    nodes = [{"id": k, "type": "checkpoint", "params": {"path": str(p)}} for k, p in tiny_models.items()]
    nodes.append({"id": "merge", "type": "merge", "params": {"method": "ties", "density": 0.3}})
    edges = [{"from": "base", "to": "merge", "port": "base"}] + [
        {"from": f"e{k}", "to": "merge", "port": "models"} for k in (1, 2, 3)]
    recipe = Recipe.from_json({"format": "weightsmith-recipe", "version": 1, "nodes": nodes, "edges": edges})
    return tiny_models, base, models, recipe


def flat_deltas(base, models) -> torch.Tensor:
    names = [n for n, t in base.items() if t.is_floating_point()]
    return torch.stack([torch.cat([(m[n] - base[n]).reshape(-1) for n in names]) for m in models]).double()


def test_cosine_matrix_matches_the_flattened_vectors(tiny):
    _, base, models, _ = tiny
    (cos,) = run(from_state_dicts(base, models), [CosineMatrix()])
    d = flat_deltas(base, models)
    expected = (d @ d.T / torch.outer(d.norm(dim=1), d.norm(dim=1))).numpy()
    assert np.allclose(cos.matrix, expected, atol=1e-6)
    assert np.allclose(cos.norms, d.norm(dim=1).numpy(), rtol=1e-6)


def test_streaming_source_equals_the_state_dicts(tiny):
    _, base, models, recipe = tiny
    streamed = list(task_vectors(recipe, "merge"))
    direct = list(from_state_dicts(base, models))
    assert [t.name for t in streamed] == [t.name for t in direct]
    for a, b in zip(streamed, direct):
        assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a.deltas, b.deltas))


def test_sign_conflicts_before_and_after_trimming(tiny):
    _, base, models, _ = tiny
    (table,) = run(from_state_dicts(base, models), [SignConflicts(density=0.3)])
    counts: dict[str, list[int]] = {}
    for name, t in base.items():
        if not t.is_floating_point():
            continue
        d = torch.stack([m[name] - t for m in models])
        conflict = int(((d > 0).any(0) & (d < 0).any(0)).sum())
        layer = layer_index(name)
        key = "other" if layer is None else str(layer)
        c = counts.setdefault(key, [0, 0])
        c[0] += t.numel()
        c[1] += conflict
    assert table.layers == ["0", "1", "2", "other"]
    assert np.allclose(table.raw, [counts[k][1] / counts[k][0] for k in table.layers])
    assert (table.trimmed < table.raw).all()  # trimming to 30 % removes most conflicts


def test_magnitude_histograms_count_every_entry_and_place_the_cuts(tiny):
    _, base, models, _ = tiny
    (h,) = run(from_state_dicts(base, models), [MagnitudeHistograms(density=0.2, band_density=0.5, gamma=0.1)])
    d = flat_deltas(base, models).abs()
    assert np.allclose(h.counts.sum(1) + h.zeros, d.shape[1])
    for t in range(len(models)):
        mags = np.sort(d[t].numpy())[::-1]
        width = 10 ** (1 / 20)  # one bin
        for cut, fraction in ((h.ties_cut[t], 0.2), (h.band_high[t], 0.1), (h.band_low[t], 0.6)):
            exact = mags[int(fraction * len(mags)) - 1]
            assert exact / width <= cut <= exact * width


def test_tall_mask_overlap_counts(tiny):
    _, base, models, _ = tiny
    (table,) = run(from_state_dicts(base, models), [MaskOverlap(lam=0.5)])
    d = flat_deltas(base, models).float()
    masks = d.abs() >= 0.5 * (d.sum(0, keepdim=True) - d).abs()
    expected = torch.bincount(masks.sum(0), minlength=4).numpy()
    assert np.array_equal(table.counts, expected)
    assert table.catastrophic == expected[0] and table.selfish == expected[1]
    assert np.allclose(table.per_task, masks.float().mean(1).numpy())


def test_layer_norms_with_the_merged_update(tiny):
    _, base, models, recipe = tiny
    (norms,) = run(task_vectors(recipe, "merge", with_merged=True), [LayerNorms()])
    merged = materialize(recipe, "merge", device="cpu")
    for j, layer in enumerate(norms.layers):
        names = [n for n, t in base.items() if t.is_floating_point()
                 and (str(layer_index(n)) if layer_index(n) is not None else "other") == layer]
        for t, m in enumerate(models):
            expected = torch.cat([(m[n] - base[n]).reshape(-1) for n in names]).norm()
            assert norms.tasks[t, j] == pytest.approx(float(expected), rel=1e-5)
        upd = torch.cat([(merged[n] - base[n]).reshape(-1) for n in names]).norm()
        assert norms.merged[j] == pytest.approx(float(upd), rel=1e-5)


def test_spectra_of_the_summed_task_matrices(tiny):
    _, base, models, _ = tiny
    (spec,) = run(from_state_dicts(base, models), [Spectra(max_dim=8)])
    name = "model.layers.0.mlp.up_proj.weight"  # 16×8: analysed; nothing is larger than 8 on its short side
    total = sum(m[name] - base[name] for m in models)
    sv = torch.linalg.svdvals(total).double().numpy()
    assert np.allclose(spec.values[name], sv / sv[0], atol=1e-6)
    assert spec.layers[name] == 0 and not spec.skipped
    (small,) = run(from_state_dicts(base, models), [Spectra(max_dim=4)])
    assert name in small.skipped and not small.values


def test_coefficient_matrix_resolves_schedules_per_layer():
    spec = get_method("task_arithmetic")
    params = {"lambda": [0.2, 1.0], "weight": {"a": 1.0, "b": [0.0, 2.0]}}
    lam = coefficient_matrix(spec, params, ["a", "b"], 5, "lambda")
    assert lam.rows == ["lambda"] and np.allclose(lam.values, [[0.2, 0.4, 0.6, 0.8, 1.0]])
    w = coefficient_matrix(spec, params, ["a", "b"], 5, "weight")
    assert np.allclose(w.values, [[1, 1, 1, 1, 1], [0, 0.5, 1, 1.5, 2]])
    eff = coefficient_matrix(spec, params, ["a", "b"], 5, EFFECTIVE)
    assert np.allclose(eff.values, lam.values * w.values)


def test_analyze_runs_everything_in_one_pass(tiny):
    *_, recipe = tiny
    report = analyze(recipe, "merge", tall_lambda=0.3)
    assert report.keys == ["e1", "e2", "e3"]
    assert report.conflicts.density == 0.3  # the node's own density
    assert report.overlap.lam == 0.3 and report.cosines.matrix.shape == (3, 3)
    assert report.norms.merged is not None and len(report.spectra.values) == 7
