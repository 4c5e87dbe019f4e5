"""Two-model merges that take the second model's weights only where a per-entry rule says so.

NearSwap (alchemonaut, "QuartetAnemoi-70B-t0.0001" model card, 2024; mergekit ``nearswap``) and
Arcee Fusion (Arcee AI 2025, mergekit ``arcee_fusion``). Both keep the base as one endpoint.
"""

from __future__ import annotations

from typing import Any

import torch

from engine.methods.base import MergeInputs, MethodSpec, Param, TensorContext
from engine.methods.registry import register


def nearswap(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """θ = w ⊙ θ1 + (1 − w) ⊙ θ0 with w = clamp(t / max(|θ1 − θ0|, 1e-6), 0, 1).

    Entries where the two models are within ``t`` of each other take the model's value; farther apart,
    the model's share falls off as ``t / |difference|``. ``t`` may vary per layer.
    """
    base, model = inputs.base, inputs.models[0]
    weight = (float(params["t"]) / (model - base).abs().clamp(min=1e-6)).clamp(0.0, 1.0)
    return torch.lerp(base, model, weight)


def lower_quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """The sorted value at index ``floor(q·(n − 1))`` (no interpolation), found without a full sort."""
    flat = values.reshape(-1)
    return flat.kthvalue(int(q * (flat.numel() - 1)) + 1).values


def fusion_importance(base: torch.Tensor, model: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """|θ1 − θ0| ⊙ KL(softmax(θ1) ‖ softmax(θ0)), the divergence taken along the last dimension."""
    p = torch.softmax(model, dim=-1) + eps
    q = torch.softmax(base, dim=-1) + eps
    kl = (p * (p / q).log()).sum(dim=-1, keepdim=True)
    return (model - base).abs() * kl


def arcee_fusion(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """θ = θ0 + 1[s ≥ median(s) + 1.5·IQR(s)] ⊙ (θ1 − θ0), s the importance of each entry.

    The importance multiplies each entry's change by the KL divergence between the softmax of the row
    it sits in (model against base); only outlying changes (above the upper Tukey fence) are taken.

    Choice: mergekit estimates the quartiles from a random sample of 10⁶ entries (unseeded) when a
    tensor is larger than that; this method always uses the exact quartiles (same index rule, no
    interpolation), so it is deterministic and equal to mergekit on tensors of up to 10⁶ entries.
    """
    base, model = inputs.base, inputs.models[0]
    if base.numel() == 0:
        return base.clone()
    scores = fusion_importance(base, model)
    threshold = lower_quantile(scores, 0.5) + 1.5 * (lower_quantile(scores, 0.75) - lower_quantile(scores, 0.25))
    return torch.where(scores >= threshold, model, base)


register(MethodSpec(
    name="nearswap",
    label="NearSwap",
    family="selective",
    summary="Take the model's weights where they are already close to the base's, less as they drift apart.",
    params=(
        Param("t", "float", 0.001, "closeness scale: entries within t take the model's value", min=0.0, max=10.0,
              layerwise=True),
    ),
    merge=nearswap,
    needs_base=True,
    min_models=1,
    max_models=1,
    reference="alchemonaut 2024, QuartetAnemoi-70B-t0.0001 (huggingface.co model card); mergekit nearswap",
))

register(MethodSpec(
    name="arcee_fusion",
    label="Arcee Fusion",
    family="selective",
    summary="Take the model's changes only where their importance (change × KL of the row) is an outlier.",
    params=(),
    merge=arcee_fusion,
    needs_base=True,
    min_models=1,
    max_models=1,
    reference="Arcee AI 2025, Arcee Fusion (mergekit arcee_fusion, github.com/arcee-ai/mergekit)",
))
