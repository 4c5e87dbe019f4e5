"""Helpers for the merge-method tests: run a registered method over small in-memory models."""

from __future__ import annotations

from typing import Any

import torch

from engine.checkpoints import layer_index, num_layers
from engine.methods import MergeInputs, TensorContext, get_method
from engine.methods.schedule import resolve_params
from engine.methods.statistics import run_statistic


def merge_one(method: str, base: torch.Tensor | None, models: list[torch.Tensor], values: dict[str, Any] | None = None,
              *, name: str = "w", layer: int | None = None, num_layers_: int = 1,
              deltas: bool = False, stats: Any = None) -> torch.Tensor:
    """One tensor through ``method`` with parameters ``values`` (defaults for the rest).

    A method that declares whole-model statistics gets them from this one tensor unless ``stats`` is given.
    """
    spec = get_method(method)
    keys = [f"m{i}" for i in range(len(models))]
    params = resolve_params(spec.params, values or {}, keys, name, layer, num_layers_)
    inputs = (MergeInputs(base, keys, deltas=[m - base for m in models]) if deltas
              else MergeInputs(base, keys, models=list(models)))
    ctx = TensorContext(name, layer, num_layers_, torch.device("cpu"), int(params.get("seed", 0) or 0), stats)
    stat = spec.statistic({**spec.defaults(), **(values or {})}) if spec.statistic and stats is None else None
    if stat is not None:
        ctx.stats = run_statistic(stat, [(inputs, params, ctx)])
    return spec.merge(inputs, params, ctx)


def merge_model(method: str, base: dict[str, torch.Tensor] | None, models: list[dict[str, torch.Tensor]],
                values: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """A whole (in-memory) model through ``method``, with its statistics passes when it declares any.

    Layers are detected from the names as the executor does (``model.layers.N.``).
    """
    spec = get_method(method)
    values = values or {}
    keys = [f"m{i}" for i in range(len(models))]
    names = list(models[0])
    count = num_layers(names)

    def items():
        for n in names:
            layer = layer_index(n)
            params = resolve_params(spec.params, values, keys, n, layer, count)
            inputs = MergeInputs(None if base is None else base[n], keys, models=[m[n] for m in models])
            yield inputs, params, TensorContext(n, layer, count, torch.device("cpu"), int(params.get("seed", 0) or 0))

    stat = spec.statistic({**spec.defaults(), **values}) if spec.statistic else None
    stats = run_statistic(stat, list(items())) if stat is not None else None
    out = {}
    for inputs, params, ctx in items():
        ctx.stats = stats
        out[ctx.name] = spec.merge(inputs, params, ctx)
    return out


def llama_like(seed: int, layers: int = 3, width: int = 8) -> dict[str, torch.Tensor]:
    """A small float state dict with numbered layers, embeddings and a final norm."""
    g = torch.Generator().manual_seed(seed)
    sd = {"model.embed_tokens.weight": torch.randn(12, width, generator=g)}
    for i in range(layers):
        sd[f"model.layers.{i}.self_attn.q_proj.weight"] = torch.randn(width, width, generator=g)
        sd[f"model.layers.{i}.mlp.up_proj.weight"] = torch.randn(2 * width, width, generator=g)
        sd[f"model.layers.{i}.input_layernorm.weight"] = 1 + 0.1 * torch.randn(width, generator=g)
    sd["model.norm.weight"] = 1 + 0.1 * torch.randn(width, generator=g)
    return sd


def variant(base: dict[str, torch.Tensor], seed: int, scale: float = 0.1) -> dict[str, torch.Tensor]:
    """``base`` plus seeded noise on every tensor (a 'fine-tuned' expert)."""
    g = torch.Generator().manual_seed(seed)
    return {n: t + scale * torch.randn(t.shape, generator=g) for n, t in base.items()}
