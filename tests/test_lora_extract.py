"""LoRA out: an adapter of chosen rank extracted from a model against its base, in PEFT's format."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file, save_file

from engine.checkpoints import open_checkpoint
from engine.cli import main


def _models(tmp_path, rank: int = 2):
    g = torch.Generator().manual_seed(0)
    base = {"model.embed_tokens.weight": torch.randn(20, 8, generator=g),
            "model.layers.0.self_attn.q_proj.weight": torch.randn(8, 8, generator=g),
            "model.layers.0.mlp.up_proj.weight": torch.randn(16, 8, generator=g),
            "model.layers.0.input_layernorm.weight": torch.ones(8)}
    tuned = dict(base)
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight"):
        out_dim, in_dim = base[name].shape
        tuned[name] = base[name] + torch.randn(out_dim, rank, generator=g) @ torch.randn(rank, in_dim, generator=g)
    tuned["model.layers.0.input_layernorm.weight"] = torch.full((8,), 1.1)
    save_file(base, str(tmp_path / "base.safetensors"))
    save_file(tuned, str(tmp_path / "tuned.safetensors"))
    return base, tuned


def test_an_exact_low_rank_difference_is_recovered_and_reloads_as_a_delta(tmp_path, capsys):
    base, tuned = _models(tmp_path, rank=2)
    assert main(["extract-lora", str(tmp_path / "tuned.safetensors"), "--base", str(tmp_path / "base.safetensors"),
                 "--rank", "2", "-o", str(tmp_path / "lora")]) == 0
    captured = capsys.readouterr()
    assert "rank 2 on 2 weights" in captured.out and "input_layernorm" in captured.err
    config = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert config["r"] == config["lora_alpha"] == 2 and config["target_modules"] == ["q_proj", "up_proj"]
    raw = load_file(str(tmp_path / "lora" / "adapter_model.safetensors"))
    assert raw["base_model.model.model.layers.0.mlp.up_proj.lora_A.weight"].shape == (2, 8)
    assert raw["base_model.model.model.layers.0.mlp.up_proj.lora_B.weight"].shape == (16, 2)
    adapter = open_checkpoint(tmp_path / "lora")
    assert adapter.kind == "delta"
    for name in adapter.names:
        assert torch.allclose(adapter.get(name), tuned[name] - base[name], atol=1e-4)
    assert "model.embed_tokens.weight" not in adapter.names


def test_a_rank_larger_than_the_matrix_is_refused_and_nothing_written(tmp_path, capsys):
    _models(tmp_path)
    assert main(["extract-lora", str(tmp_path / "tuned.safetensors"), "--base", str(tmp_path / "base.safetensors"),
                 "--rank", "9", "-o", str(tmp_path / "lora")]) == 2
    err = capsys.readouterr().err
    assert "rank 9 is larger than the matrix [16, 8]" in err and "up_proj" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.safetensors", "tuned.safetensors"]


def test_a_truncated_rank_is_the_best_approximation(tmp_path):
    base, tuned = _models(tmp_path, rank=4)
    assert main(["extract-lora", str(tmp_path / "tuned.safetensors"), "--base", str(tmp_path / "base.safetensors"),
                 "--rank", "1", "-o", str(tmp_path / "lora")]) == 0
    name = "model.layers.0.mlp.up_proj.weight"
    delta = tuned[name] - base[name]
    u, s, vh = torch.linalg.svd(delta)
    best = s[0] * torch.outer(u[:, 0], vh[0])
    assert torch.allclose(open_checkpoint(tmp_path / "lora").get(name), best, atol=1e-4)
