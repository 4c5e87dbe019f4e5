"""Checkpoint readers and the writer: formats, laziness, inspection, compatibility, round trips."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from safetensors import safe_open
from safetensors.torch import save_file

from engine.checkpoints import CheckpointWriter, compare, layer_index, num_layers, open_checkpoint, parse_size
from engine.errors import CheckpointError, EngineInputError
from tests.conftest import make_state_dict


def test_single_safetensors_is_read_lazily_and_exactly(tmp_path: Path):
    sd = make_state_dict(1)
    save_file(sd, tmp_path / "m.safetensors", metadata={"note": "hi"})
    ckpt = open_checkpoint(tmp_path / "m.safetensors")
    assert ckpt.format == "safetensors" and ckpt.kind == "model"
    assert set(ckpt.names) == set(sd)
    assert ckpt.metadata == {"note": "hi"}
    info = ckpt.info("model.layers.2.mlp.up_proj.weight")
    assert info.shape == (16, 8) and info.dtype == torch.float32 and info.nbytes == 16 * 8 * 4 and info.layer == 2
    for name, t in sd.items():
        assert torch.equal(ckpt.get(name), t)
    assert ckpt.get("model.norm.weight", dtype=torch.float16).dtype == torch.float16


def test_summary_counts_params_bytes_layers_and_architecture(tmp_path: Path):
    sd = make_state_dict(1)
    folder = tmp_path / "hf"
    folder.mkdir()
    save_file(sd, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    s = open_checkpoint(folder).summary()
    assert s.num_params == sum(t.numel() for t in sd.values())
    assert s.num_bytes == sum(t.numel() * t.element_size() for t in sd.values())
    assert s.num_layers == 3 and s.architecture == "LlamaForCausalLM"
    assert s.dtypes == {"fp32": len(sd) - 1, "int64": 1}


def test_sharded_folder_round_trip_through_the_writer(tmp_path: Path):
    sd = {k: v for k, v in make_state_dict(2).items()}
    plan = [(n, tuple(t.shape), t.dtype) for n, t in sd.items()]
    with CheckpointWriter(tmp_path / "out", plan, shard_size=600) as w:
        for n, t in sd.items():
            w.write(n, t)
        w.commit()
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    shards = [f for f in files if f.endswith(".safetensors")]
    assert len(shards) > 1 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(sd)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in sd.values())
    ckpt = open_checkpoint(tmp_path / "out")
    assert ckpt.format == "safetensors (sharded)"
    for n, t in sd.items():
        assert torch.equal(ckpt.get(n), t)
    # every shard is independently valid for the reference library
    for f in shards:
        with safe_open(str(tmp_path / "out" / f), "pt") as h:
            assert len(list(h.keys())) >= 1


def test_writer_casts_and_keeps_metadata(tmp_path: Path):
    t = torch.randn(3, 5)
    with CheckpointWriter(tmp_path / "o", [("w", (3, 5), torch.bfloat16)], metadata={"a": "b"}) as w:
        w.write("w", t)
        w.commit()
    with safe_open(str(tmp_path / "o" / "model.safetensors"), "pt") as h:
        assert h.metadata() == {"a": "b"}
        assert torch.equal(h.get_tensor("w"), t.to(torch.bfloat16))


def test_writer_refuses_existing_output_unless_forced_and_ours(tmp_path: Path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "keep.txt").write_text("precious")
    with pytest.raises(EngineInputError, match="already exists"):
        CheckpointWriter(tmp_path / "o", [("w", (1,), torch.float32)])
    with pytest.raises(EngineInputError, match="did not write"):  # --force never replaces a folder we did not write
        CheckpointWriter(tmp_path / "o", [("w", (1,), torch.float32)], force=True)
    assert (tmp_path / "o" / "keep.txt").read_text() == "precious"
    for value in (1.0, 2.0):  # our own output: replaced by a forced write
        with CheckpointWriter(tmp_path / "p", [("w", (1,), torch.float32)], force=True) as w:
            w.write("w", torch.full((1,), value))
            w.commit()
    assert load_file(str(tmp_path / "p" / "model.safetensors"))["w"].item() == 2.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o", "p"]


def test_parse_size():
    assert parse_size("5GB") == 5_000_000_000
    assert parse_size("500MB") == 500_000_000
    assert parse_size("2GiB") == 2 * 1024**3
    assert parse_size(123) == 123
    with pytest.raises(EngineInputError):
        parse_size("lots")


def test_torch_bin_nested_state_dict(tmp_path: Path):
    sd = make_state_dict(3)
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "m.pt")
    ckpt = open_checkpoint(tmp_path / "m.pt")
    assert ckpt.format == "pytorch" and set(ckpt.names) == set(sd)
    for n, t in sd.items():
        assert torch.equal(ckpt.get(n), t)


def test_hf_folder_with_pytorch_bin(tmp_path: Path):
    sd = make_state_dict(3)
    folder = tmp_path / "hf"
    folder.mkdir()
    torch.save(sd, folder / "pytorch_model.bin")
    ckpt = open_checkpoint(folder)
    assert set(ckpt.names) == set(sd)


def _write_lora(folder: Path, config: dict, factors: dict[str, torch.Tensor]) -> None:
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps(config))
    save_file(factors, folder / "adapter_model.safetensors")


def test_lora_adapter_exposes_scaled_dense_delta(tmp_path: Path):
    a = torch.randn(2, 8)  # r × in
    b = torch.randn(8, 2)  # out × r
    a2, b2 = torch.randn(4, 8), torch.randn(16, 4)
    _write_lora(tmp_path / "lora", {"r": 2, "lora_alpha": 8, "rank_pattern": {"up_proj": 4}},
                {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": a,
                 "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": b,
                 "base_model.model.model.layers.1.mlp.up_proj.lora_A.weight": a2,
                 "base_model.model.model.layers.1.mlp.up_proj.lora_B.weight": b2})
    ckpt = open_checkpoint(tmp_path / "lora")
    assert ckpt.kind == "delta" and ckpt.format == "peft-lora"
    assert sorted(ckpt.names) == ["model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.up_proj.weight"]
    assert torch.allclose(ckpt.get("model.layers.0.self_attn.q_proj.weight"), (8 / 2) * (b @ a))
    assert torch.allclose(ckpt.get("model.layers.1.mlp.up_proj.weight"), (8 / 4) * (b2 @ a2))
    base = open_checkpoint(_save(tmp_path, make_state_dict(0)))
    assert compare(base, ckpt).compatible


def test_rslora_scale(tmp_path: Path):
    _write_lora(tmp_path / "l", {"r": 4, "lora_alpha": 8, "use_rslora": True},
                {"base_model.model.x.lora_A.weight": torch.ones(4, 3), "base_model.model.x.lora_B.weight": torch.ones(5, 4)})
    ckpt = open_checkpoint(tmp_path / "l")
    assert torch.allclose(ckpt.get("x.weight"), torch.full((5, 3), 4 * 8 / math.sqrt(4)))


def _save(tmp_path: Path, sd: dict, name: str = "base.safetensors") -> Path:
    save_file(sd, tmp_path / name)
    return tmp_path / name


def test_compatibility_report_names_tensors(tmp_path: Path):
    a = make_state_dict(0)
    b = dict(make_state_dict(1))
    b["model.layers.0.mlp.up_proj.weight"] = torch.zeros(3, 3)
    del b["model.norm.weight"]
    b["extra.weight"] = torch.zeros(1)
    report = compare(open_checkpoint(_save(tmp_path, a, "a.safetensors")), open_checkpoint(_save(tmp_path, b, "b.safetensors")))
    assert not report.compatible
    assert report.missing == ["model.norm.weight"] and report.extra == ["extra.weight"]
    assert report.shape_mismatch == [("model.layers.0.mlp.up_proj.weight", (16, 8), (3, 3))]
    assert "model.layers.0.mlp.up_proj.weight" in report.reason()


def test_layer_detection():
    assert layer_index("model.layers.12.mlp.up_proj.weight") == 12
    assert layer_index("model.embed_tokens.weight") is None
    assert layer_index("blocks.0.attn") == 0
    assert num_layers(["a.0.w", "a.7.w", "emb"]) == 8


def test_unknown_format_and_missing_path(tmp_path: Path):
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        open_checkpoint(tmp_path / "x.txt")
    with pytest.raises(CheckpointError, match="no such file"):
        open_checkpoint(tmp_path / "nope.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no model weights"):
        open_checkpoint(tmp_path / "empty")
