"""The LLM community's methods (SCE, Karcher, Multi-SLERP, NearSwap, Arcee Fusion) on hand-worked cases."""

from __future__ import annotations

import math

import pytest
import torch

from engine.errors import EngineInputError
from engine.graph.mergekit import export_mergekit, import_mergekit
from tests.methods_helpers import merge_one

ZERO4 = torch.zeros(4)


def test_sce_weights_by_energy_and_elects_signs():
    t1, t2 = torch.tensor([1.0, -2.0, 3.0, 0.0]), torch.tensor([3.0, 2.0, -2.0, 0.0])
    out = merge_one("sce", ZERO4, [t1, t2])
    w1, w2 = 3.5 / 7.75, 4.25 / 7.75  # mean squares 14/4 and 17/4, normalised
    # entry 0: both positive → weighted mean; 1: elected + (sum 0), only τ2 agrees; 2: + wins, τ1 only; 3: nobody
    expected = torch.tensor([(1 * w1 + 3 * w2) / (w1 + w2), 2.0, 3.0, 0.0])
    assert torch.allclose(out, expected, atol=1e-6)


def test_sce_select_keeps_the_highest_variance_entries():
    t1, t2 = torch.tensor([1.0, -2.0, 3.0, 0.0]), torch.tensor([3.0, 2.0, -2.0, 0.0])
    # variances 1, 4, 6.25, 0: three non-zero, floor(3 · 0.5) = 1 entry kept (the third)
    out = merge_one("sce", ZERO4, [t1, t2], {"select_topk": 0.5})
    assert torch.allclose(out, torch.tensor([0.0, 0.0, 3.0, 0.0]), atol=1e-6)
    assert torch.equal(merge_one("sce", ZERO4 + 1, [t1 + 1, t2 + 1], {"select_topk": 0.0}), ZERO4 + 1)


def test_sce_of_identical_models_is_the_model():
    base = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    model = base + 0.5
    assert torch.allclose(merge_one("sce", base, [model, model.clone()]), model, atol=1e-6)


def test_karcher_of_orthogonal_vectors_bisects_them_at_the_mean_norm():
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 3.0])
    out = merge_one("karcher", None, [e1, e2])
    assert torch.allclose(out, torch.tensor([math.sqrt(2), math.sqrt(2)]), atol=1e-5)  # scale (1 + 3) / 2
    three = merge_one("karcher", None, [torch.eye(3)[i] for i in range(3)], {"max_iter": 50})
    assert torch.allclose(three, torch.full((3,), 1 / math.sqrt(3)), atol=1e-5)


def test_karcher_counts_a_connected_base_as_a_model_and_keeps_identical_models():
    e1, e2 = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 2.0])
    assert torch.allclose(merge_one("karcher", e1, [e2]), torch.tensor([math.sqrt(2), math.sqrt(2)]), atol=1e-5)
    m = torch.randn(4, 4, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(merge_one("karcher", None, [m, m.clone(), m.clone()]), m, atol=1e-5)


def test_multislerp_is_the_normalised_weighted_direction_at_the_weighted_norm():
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    out = merge_one("multislerp", None, [e1, e2], {"weight": [0.75, 0.25]})
    assert torch.allclose(out, torch.tensor([0.75, 0.25]) / math.hypot(0.75, 0.25), atol=1e-6)
    scaled = merge_one("multislerp", None, [2 * e1, 4 * e2])
    assert torch.allclose(scaled, torch.full((2,), 3 / math.sqrt(2)), atol=1e-6)


def test_multislerp_with_a_base_interpolates_task_vectors():
    base = torch.tensor([5.0, 5.0])
    out = merge_one("multislerp", base, [base + torch.tensor([2.0, 0.0]), base + torch.tensor([0.0, 2.0])])
    assert torch.allclose(out, base + math.sqrt(2), atol=1e-6)


def test_multislerp_refuses_balanced_antipodal_models_naming_the_tensor():
    v = torch.tensor([1.0, 0.0])
    with pytest.raises(EngineInputError, match="'layer.w'"):
        merge_one("multislerp", None, [v, -v, torch.zeros(2)], name="layer.w")
    assert torch.allclose(merge_one("multislerp", None, [v, -v]), torch.zeros(2), atol=1e-7)  # linear fallback


def test_nearswap_takes_close_entries_and_fades_with_distance():
    base, model = torch.zeros(3), torch.tensor([0.05, 0.2, -1.0])
    out = merge_one("nearswap", base, [model], {"t": 0.1})
    assert torch.allclose(out, torch.tensor([0.05, 0.1, -0.1]), atol=1e-7)


def test_arcee_fusion_takes_only_outlying_changes():
    base = torch.zeros(11)
    model = torch.cat([torch.arange(10.0), torch.tensor([100.0])])
    # quartiles by index floor(q·10) of the sorted |Δ|·KL: 2, 5, 7 → fence 5 + 1.5·5 = 12.5 (times KL)
    out = merge_one("arcee_fusion", base, [model])
    assert torch.equal(out, torch.cat([torch.zeros(10), torch.tensor([100.0])]))


@pytest.mark.parametrize("method", ["sce", "karcher", "multislerp", "nearswap", "arcee_fusion"])
@pytest.mark.parametrize("shape", [(0,), (0, 8), (8, 0)])
def test_empty_tensors_merge_to_empty_tensors(method, shape):
    base = torch.zeros(shape)
    models = [torch.zeros(shape)] if method in ("nearswap", "arcee_fusion") else [torch.zeros(shape)] * 2
    assert merge_one(method, base, models).shape == shape


@pytest.mark.parametrize("yaml_text, method", [
    ("models: [{model: a}, {model: b}]\nbase_model: base\nmerge_method: sce\nparameters: {select_topk: 0.3}\n", "sce"),
    ("models: [{model: a}, {model: b}]\nbase_model: base\nmerge_method: karcher\nparameters: {max_iter: 20}\n",
     "karcher"),
    ("models: [{model: a, parameters: {weight: 0.6}}, {model: b, parameters: {weight: 0.4}}]\n"
     "merge_method: multislerp\n", "multislerp"),
    ("models: [{model: base}, {model: a}]\nbase_model: base\nmerge_method: nearswap\nparameters: {t: 0.0001}\n",
     "nearswap"),
    ("models: [{model: base}, {model: a}]\nbase_model: base\nmerge_method: arcee_fusion\n", "arcee_fusion"),
])
def test_mergekit_configs_of_the_community_methods_import_and_export(yaml_text, method, tmp_path):
    for name in ("base", "a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"")
    recipe = import_mergekit(yaml_text, tmp_path)
    merge = next(n for n in recipe["nodes"] if n["type"] == "merge")
    assert merge["params"]["method"] == method
    ports = [e["port"] for e in recipe["edges"] if e["to"] == "merge"]
    assert ports.count("base") == (1 if method in ("sce", "nearswap", "arcee_fusion") else 0)
    if method == "karcher":
        assert ports.count("models") == 3  # mergekit averages the base with the models
    again = import_mergekit(export_mergekit(recipe), tmp_path)
    assert next(n for n in again["nodes"] if n["type"] == "merge")["params"] == merge["params"]
