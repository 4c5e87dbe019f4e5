"""LoRA in, LoRA out: merging PEFT adapters of one base into one adapter (``weightsmith merge-lora``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from engine.checkpoints import open_checkpoint
from engine.checkpoints.lora_writer import AdapterFactors, write_peft_adapter
from engine.cli import build_parser, main
from engine.lora_merge import KNOTS_COMBINES, LORA_METHODS, merge_lora
from engine.methods.knots import align
from tests.methods_helpers import merge_one

Q = "model.layers.0.self_attn.q_proj.weight"  # 8 × 8
UP = "model.layers.1.mlp.up_proj.weight"  # 16 × 8 (out × in)
EMB = "model.embed_tokens.weight"  # 20 × 8 in the base; the factors' B @ A is 8 × 20


def write_adapter(folder: Path, factors: dict[str, tuple[torch.Tensor, torch.Tensor]], r: int, alpha: float,
                  **config) -> Path:
    """A PEFT adapter folder by our own writer: ``factors`` maps a weight name to (A, B)."""
    modules = {name[: -len(".weight")]: AdapterFactors(a, b, embedding=name == EMB) for name, (a, b) in factors.items()}
    cfg = {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "base_model_name_or_path": "tiny/base",
           "target_modules": sorted({m.rsplit(".", 1)[-1] for m in modules}), "task_type": "CAUSAL_LM", **config}
    return write_peft_adapter(folder, modules, cfg)


def random_factors(seed: int, rank: int, names=(Q, UP)) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    shapes = {Q: (8, 8), UP: (16, 8), EMB: (8, 20)}
    return {n: (torch.randn(rank, shapes[n][1], generator=g), torch.randn(shapes[n][0], rank, generator=g))
            for n in names}


@pytest.fixture
def three(tmp_path: Path) -> list[Path]:
    """Three adapters of one base with different ranks and scales (alpha/r = 2, 1, and rsLoRA 4/√4 = 2)."""
    return [write_adapter(tmp_path / "a0", random_factors(0, 2), r=2, alpha=4),
            write_adapter(tmp_path / "a1", random_factors(1, 3), r=3, alpha=3),
            write_adapter(tmp_path / "a2", random_factors(2, 4), r=4, alpha=4, use_rslora=True)]


def deltas_of(paths: list[Path], name: str) -> list[torch.Tensor]:
    """Each adapter's delta of ``name`` as our reader gives it (scale · B @ A, in the base's layout)."""
    out = []
    for p in paths:
        with open_checkpoint(p) as ckpt:
            out.append(ckpt.get(name))
    return out


def reloaded(folder: Path, name: str) -> torch.Tensor:
    with open_checkpoint(folder) as ckpt:
        assert ckpt.kind == "delta" and ckpt.scale(name[: -len(".weight")]) == 1.0
        return ckpt.get(name)


def best_rank(matrix: torch.Tensor, rank: int) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
    return ((u[:, :rank] * s[:rank]) @ vh[:rank]).float()


def config_of(folder: Path) -> dict:
    return json.loads((folder / "adapter_config.json").read_text())


# ---- cat -----------------------------------------------------------------------------------------------
def test_cat_reproduces_the_weighted_sum_exactly_with_rank_the_sum_of_ranks(tmp_path, three, capsys):
    weights = [0.5, -1.0, 2.0]
    args = ["merge-lora", *map(str, three), "-o", str(tmp_path / "out"), "--method", "cat"]
    assert main(args + [a for w in weights for a in ("--weight", str(w))]) == 0
    assert "cat of 3 adapters, rank 9" in capsys.readouterr().out
    cfg = config_of(tmp_path / "out")
    assert cfg["r"] == cfg["lora_alpha"] == 9 and cfg["use_rslora"] is False and cfg["rank_pattern"] == {}
    assert cfg["base_model_name_or_path"] == "tiny/base" and cfg["target_modules"] == ["q_proj", "up_proj"]
    for name in (Q, UP):
        expected = sum(w * d for w, d in zip(weights, deltas_of(three, name)))
        assert torch.allclose(reloaded(tmp_path / "out", name), expected, atol=1e-5)


def test_cat_of_adapters_with_different_targets_uses_a_rank_pattern(tmp_path):
    a = write_adapter(tmp_path / "a", random_factors(0, 2, (Q, UP)), r=2, alpha=2)
    b = write_adapter(tmp_path / "b", random_factors(1, 2, (Q, EMB)), r=2, alpha=4)
    result = merge_lora([a, b], tmp_path / "out", method="cat")
    assert result.ranks == {Q[:-7]: 4, UP[:-7]: 2, EMB[:-7]: 2}
    cfg = config_of(tmp_path / "out")
    assert cfg["r"] == 2 and cfg["rank_pattern"] == {r"model\.layers\.0\.self_attn\.q_proj": 4}
    assert cfg["alpha_pattern"] == cfg["rank_pattern"]
    assert cfg["target_modules"] == ["embed_tokens", "q_proj", "up_proj"]
    assert torch.allclose(reloaded(tmp_path / "out", Q), sum(deltas_of([a, b], Q)), atol=1e-5)
    assert torch.allclose(reloaded(tmp_path / "out", UP), deltas_of([a], UP)[0], atol=1e-5)
    emb = reloaded(tmp_path / "out", EMB)  # an embedding adapter reloads in the base's layout
    assert emb.shape == (20, 8) and torch.allclose(emb, deltas_of([b], EMB)[0], atol=1e-5)


# ---- the SVD family --------------------------------------------------------------------------------------
def test_svd_at_full_rank_is_the_weighted_sum_and_lower_ranks_the_best_approximation(tmp_path, three):
    weights = [1.0, 0.5, -0.25]
    merge_lora(three, tmp_path / "full", method="svd", weights=weights, rank=8)
    merge_lora(three, tmp_path / "r3", method="svd", weights=weights, rank=3)
    for name in (Q, UP):
        dense = sum(w * d for w, d in zip(weights, deltas_of(three, name)))
        assert torch.allclose(reloaded(tmp_path / "full", name), dense, atol=1e-4)
        assert torch.allclose(reloaded(tmp_path / "r3", name), best_rank(dense, 3), atol=1e-4)
    assert config_of(tmp_path / "r3")["r"] == config_of(tmp_path / "r3")["lora_alpha"] == 3


def test_svd_rank_defaults_to_the_largest_input_rank(tmp_path, three):
    result = merge_lora(three, tmp_path / "out")
    assert set(result.ranks.values()) == {4} and config_of(tmp_path / "out")["r"] == 4
    dense = sum(deltas_of(three, UP))
    assert torch.allclose(reloaded(tmp_path / "out", UP), best_rank(dense, 4), atol=1e-4)
    s = torch.linalg.svdvals(dense.double())
    assert result.relative_error[UP[:-7]] == pytest.approx(float(s[4:].norm() / s.norm()), rel=1e-4)


def test_ties_svd_is_ties_on_the_dense_deltas_then_truncation(tmp_path, three):
    weights, values = [1.0, 0.7, 1.3], {"density": 0.4}
    merge_lora(three, tmp_path / "full", method="ties_svd", weights=weights, rank=8, params=values)
    merge_lora(three, tmp_path / "r2", method="ties_svd", weights=weights, rank=2, params=values)
    for name in (Q, UP):
        deltas = deltas_of(three, name)
        ties = merge_one("ties", torch.zeros_like(deltas[0]), deltas, {"weight": weights, **values}, deltas=True)
        assert (ties == 0).sum() > 0  # the trim and the sign election did something
        assert torch.allclose(reloaded(tmp_path / "full", name), ties, atol=1e-4)
        assert torch.allclose(reloaded(tmp_path / "r2", name), best_rank(ties, 2), atol=1e-4)


def test_dare_ties_svd_is_the_engines_dare_ties_with_peft_disjoint_mean(tmp_path, three):
    merge_lora(three, tmp_path / "out", method="dare_ties_svd", rank=8, params={"density": 0.5}, seed=7)
    deltas = deltas_of(three, UP)
    expected = merge_one("dare_ties", torch.zeros_like(deltas[0]), deltas,
                         {"density": 0.5, "normalize": True, "seed": 7}, name=UP, layer=1, num_layers_=2, deltas=True)
    assert torch.allclose(reloaded(tmp_path / "out", UP), expected, atol=1e-4)
    merge_lora(three, tmp_path / "other", method="dare_ties_svd", rank=8, params={"density": 0.5}, seed=8)
    assert not torch.allclose(reloaded(tmp_path / "other", UP), expected, atol=1e-3)


def test_magnitude_prune_svd_keeps_each_deltas_largest_entries_and_sums(tmp_path, three):
    weights = [1.0, 2.0, 0.5]
    merge_lora(three, tmp_path / "out", method="magnitude_prune_svd", weights=weights, rank=8,
               params={"density": 0.25})
    deltas = deltas_of(three, Q)
    expected = torch.zeros(8, 8)
    for w, d in zip(weights, deltas):
        keep = d.abs().flatten().argsort(descending=True)[:16]  # int(0.25 · 64)
        pruned = torch.zeros(64)
        pruned[keep] = d.flatten()[keep]
        expected += w * pruned.view(8, 8)
    assert torch.allclose(reloaded(tmp_path / "out", Q), expected, atol=1e-4)


# ---- KnOTS -------------------------------------------------------------------------------------------------
def test_knots_alignment_is_lossless_and_is_the_svd_of_the_concatenated_updates():
    g = torch.Generator().manual_seed(3)
    bs = [torch.randn(16, r, generator=g) for r in (2, 3, 4)]
    as_ = [torch.randn(r, 8, generator=g) for r in (2, 3, 4)]
    u, coefficients = align(bs, as_)
    assert u.shape == (16, 9) and all(c.shape == (9, 8) for c in coefficients)  # rank 2 + 3 + 4 of 16 × 24
    assert torch.allclose(u.T @ u, torch.eye(9), atol=1e-5)
    for b, a, c in zip(bs, as_, coefficients):
        assert torch.allclose(u @ c, b @ a, atol=1e-4)
    reference = torch.linalg.svdvals(torch.cat([b @ a for b, a in zip(bs, as_)], dim=1).double())
    shared = torch.linalg.svdvals(torch.cat(coefficients, dim=1).double())  # ‖rows‖ of S·Vᵀ are S
    assert torch.allclose(shared, reference[:9], rtol=1e-5)


def test_knots_with_task_arithmetic_at_full_rank_is_the_weighted_sum(tmp_path, three):
    weights = [0.5, 1.0, -0.5]
    merge_lora(three, tmp_path / "out", method="knots", combine="task_arithmetic", weights=weights, rank=8)
    for name in (Q, UP):
        expected = sum(w * d for w, d in zip(weights, deltas_of(three, name)))
        assert torch.allclose(reloaded(tmp_path / "out", name), expected, atol=1e-4)


def test_knots_ties_on_adapters_sharing_a_basis_merges_their_coefficients(tmp_path):
    """Two rank-1 adapters with the same left vector u: ΔW_t = u x_tᵀ. The aligned basis is u, the
    coefficients are x_t, and TIES (density 1) keeps per entry the mean of the values agreeing with the
    sign of their sum: the merge is u mᵀ, computed here by hand."""
    u = torch.tensor([1.0, -2.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0]) / 3  # unit
    x1 = torch.tensor([1.0, -2.0, 3.0, 0.5, 0.0, 1.0, -1.0, 2.0])
    x2 = torch.tensor([2.0, 1.0, -1.0, 0.5, 4.0, -3.0, -1.0, 0.0])
    m = torch.tensor([1.5, -2.0, 3.0, 0.5, 4.0, -3.0, -1.0, 2.0])
    a = write_adapter(tmp_path / "a", {Q: (x1[None, :], u[:, None])}, r=1, alpha=1)
    b = write_adapter(tmp_path / "b", {Q: (x2[None, :], 2 * u[:, None])}, r=1, alpha=0.5)  # scale ½ · 2 = 1
    merge_lora([a, b], tmp_path / "out", method="knots", rank=1)
    expected = torch.outer(u, m)
    assert torch.allclose(reloaded(tmp_path / "out", Q), expected, atol=1e-5)
    dense = merge_one("ties", torch.zeros(8, 8), deltas_of([a, b], Q), {"density": 1.0}, deltas=True)
    assert torch.allclose(dense, expected, atol=1e-5)  # in a shared basis KnOTS-TIES is TIES on the deltas
    merge_lora([a, b], tmp_path / "half", method="knots", rank=1, params={"lambda": 0.5})
    assert torch.allclose(reloaded(tmp_path / "half", Q), 0.5 * expected, atol=1e-5)


def test_knots_ties_differs_from_dense_ties_where_the_updates_do_not_share_a_basis(tmp_path, three):
    merge_lora(three, tmp_path / "out", method="knots", rank=8)
    deltas = deltas_of(three, UP)
    dense_ties = merge_one("ties", torch.zeros_like(deltas[0]), deltas, {"density": 1.0}, deltas=True)
    merged = reloaded(tmp_path / "out", UP)
    assert not torch.allclose(merged, dense_ties, atol=1e-2)
    assert torch.linalg.matrix_rank(merged) <= 8


# ---- the output reloads ------------------------------------------------------------------------------------
def test_the_merged_adapter_loads_in_peft(tmp_path, three):
    """PEFT (when installed; never a dependency) applies the merged adapter as our reader reads it, rank
    patterns and an embedding adapter included."""
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=20, hidden_size=8, intermediate_size=16, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=2)
    emb = write_adapter(tmp_path / "emb", random_factors(3, 2, (Q, EMB)), r=2, alpha=4)
    merge_lora(three, tmp_path / "svd", method="svd", rank=3)
    merge_lora([*three, emb], tmp_path / "cat", method="cat", weights=[1.0, 0.5, 1.0, -1.0])
    for out, names in ((tmp_path / "svd", (Q, UP)), (tmp_path / "cat", (Q, UP, EMB))):
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(cfg)
        base = {n: p.detach().clone() for n, p in model.state_dict().items()}
        merged = peft.PeftModel.from_pretrained(model, str(out)).merge_and_unload().state_dict()
        for name in names:
            assert torch.allclose(merged[name] - base[name], reloaded(out, name), atol=1e-5)


def test_cli_choices_are_the_engines():
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["merge-lora"]
    actions = {a.dest: a for a in sub._actions}
    assert tuple(actions["method"].choices) == LORA_METHODS
    assert tuple(actions["combine"].choices) == tuple(KNOTS_COMBINES)


# ---- bad input: refused by name, nothing written ------------------------------------------------------------
def assert_refused(tmp_path: Path, args: list[str], capsys, *needles: str) -> None:
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["merge-lora", *args, "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no temporary left


def test_an_adapter_of_another_base_is_refused_by_name(tmp_path, three, capsys):
    other = write_adapter(tmp_path / "other", random_factors(5, 2), r=2, alpha=2, base_model_name_or_path="big/base")
    assert_refused(tmp_path, [str(three[0]), str(other)], capsys, str(other), "big/base", "different bases")
    conv = write_adapter(tmp_path / "conv", random_factors(6, 2), r=2, alpha=2, fan_in_fan_out=True)
    assert_refused(tmp_path, [str(three[0]), str(conv)], capsys, str(conv), "fan_in_fan_out")


def test_an_adapter_with_other_shapes_is_refused_naming_adapter_and_tensor(tmp_path, three, capsys):
    g = torch.Generator().manual_seed(9)
    wide = write_adapter(tmp_path / "wide", {UP: (torch.randn(2, 12, generator=g), torch.randn(16, 2, generator=g))},
                         r=2, alpha=2)
    assert_refused(tmp_path, [str(three[0]), str(wide)], capsys, str(wide), UP, "[16, 12]", "[16, 8]")


def test_a_base_whose_shapes_differ_is_refused(tmp_path, three, capsys):
    save_file({Q: torch.zeros(8, 8), UP: torch.zeros(16, 6)}, str(tmp_path / "base.safetensors"))
    assert_refused(tmp_path, [*map(str, three), "--base", str(tmp_path / "base.safetensors")], capsys,
                   UP, "[16, 6]", str(three[0]))
    save_file({Q: torch.zeros(8, 8)}, str(tmp_path / "small.safetensors"))
    assert_refused(tmp_path, [*map(str, three), "--base", str(tmp_path / "small.safetensors")], capsys,
                   UP, "does not have")


def test_a_rank_larger_than_a_matrix_is_refused_naming_the_tensor(tmp_path, three, capsys):
    assert_refused(tmp_path, [*map(str, three), "--rank", "9"], capsys, "rank 9 is larger than the matrix [8, 8]", Q)


@pytest.mark.parametrize("args, needle", [
    (["--method", "cat", "--rank", "2"], "cat keeps every rank"),
    (["--method", "ties_svd", "--param", "gamma=0.1"], "'gamma' is not a parameter of ties_svd"),
    (["--method", "magnitude_prune_svd", "--param", "gamma=0.1"], "'gamma' is fixed"),
    (["--method", "ties_svd", "--density", "1.5"], "above its maximum"),
    (["--method", "cat", "--density", "0.5"], "cat takes no parameters"),
    (["--weight", "1"], "1 weights for 3 adapters"),
])
def test_bad_options_are_refused(tmp_path, three, capsys, args, needle):
    assert_refused(tmp_path, [*map(str, three), *args], capsys, needle)


def test_dora_adapters_and_non_adapters_are_refused(tmp_path, three, capsys):
    dora = write_adapter(tmp_path / "dora", random_factors(4, 2), r=2, alpha=2, use_dora=True)
    assert_refused(tmp_path, [str(three[0]), str(dora)], capsys, str(dora), "DoRA")
    save_file({Q: torch.zeros(8, 8)}, str(tmp_path / "model.safetensors"))
    assert_refused(tmp_path, [str(three[0]), str(tmp_path / "model.safetensors")], capsys,
                   "model.safetensors", "not a PEFT LoRA adapter")


def test_an_existing_output_is_kept_without_force(tmp_path, three, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    assert main(["merge-lora", *map(str, three), "-o", str(tmp_path / "out")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["mine.txt"]
