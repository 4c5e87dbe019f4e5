"""Llama-shaped synthetic checkpoints for benchmarks: a base and fine-tuned variants, fp16 safetensors.

Each variant is the base plus a dense small perturbation and a sparse larger one (1% of entries), so
sparsifying methods have real work to do. Files are written once into a cache folder and reused.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file


def llama_shapes(params_m: float) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of a Llama-like model of roughly ``params_m`` million parameters."""
    hidden = 1024 if params_m < 600 else 2048
    inter = int(hidden * 2.75)
    vocab = 32000
    per_layer = 4 * hidden * hidden + 3 * hidden * inter + 2 * hidden
    layers = max(1, round((params_m * 1e6 - 2 * vocab * hidden) / per_layer))
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[p + f"self_attn.{proj}.weight"] = (hidden, hidden)
        shapes[p + "mlp.gate_proj.weight"] = (inter, hidden)
        shapes[p + "mlp.up_proj.weight"] = (inter, hidden)
        shapes[p + "mlp.down_proj.weight"] = (hidden, inter)
        shapes[p + "input_layernorm.weight"] = (hidden,)
        shapes[p + "post_attention_layernorm.weight"] = (hidden,)
    shapes["model.norm.weight"] = (hidden,)
    shapes["lm_head.weight"] = (vocab, hidden)
    return shapes


def llama_config(shapes: dict[str, tuple[int, ...]]) -> dict:
    """A Hugging Face ``config.json`` matching ``shapes`` (mergekit reads the layer count from it)."""
    vocab, hidden = shapes["model.embed_tokens.weight"]
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
            "intermediate_size": shapes["model.layers.0.mlp.up_proj.weight"][0],
            "num_hidden_layers": sum(1 for n in shapes if n.endswith("input_layernorm.weight")),
            "num_attention_heads": hidden // 64, "num_key_value_heads": hidden // 64, "vocab_size": vocab,
            "tie_word_embeddings": False, "torch_dtype": "float16"}


def make_models(folder: Path, params_m: float, n_models: int, seed: int = 0) -> tuple[Path, list[Path]]:
    """Write (or reuse) ``base/`` and ``ft{k}/`` HF-style folders; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    shapes = llama_shapes(params_m)
    config = llama_config(shapes)
    for p in [folder / "base"] + [folder / f"ft{k}" for k in range(n_models)]:
        if p.is_dir():
            (p / "config.json").write_text(json.dumps(config))
    stamp = folder / "shapes.json"
    paths = [folder / "base"] + [folder / f"ft{k}" for k in range(n_models)]
    if stamp.is_file() and json.loads(stamp.read_text()) == {k: list(v) for k, v in shapes.items()} and all(
            (p / "model.safetensors").is_file() for p in paths):
        return paths[0], paths[1:]
    g = torch.Generator().manual_seed(seed)
    base = {n: (torch.randn(s, generator=g) * 0.02).half() for n, s in shapes.items()}
    _save(paths[0], base, config)
    for k in range(n_models):
        gk = torch.Generator().manual_seed(seed + 1 + k)
        ft = {}
        for n, t in base.items():
            dense = torch.randn(t.shape, generator=gk) * 1e-3
            sparse = (torch.rand(t.shape, generator=gk) < 0.01) * torch.randn(t.shape, generator=gk) * 2e-2
            ft[n] = (t.float() + dense + sparse).half()
        _save(paths[1 + k], ft, config)
        del ft
    stamp.write_text(json.dumps({k: list(v) for k, v in shapes.items()}))
    return paths[0], paths[1:]


def _save(folder: Path, sd: dict[str, torch.Tensor], config: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(sd, folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config))
