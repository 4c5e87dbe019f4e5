"""SCE: select the task-vector entries the models disagree on most, weight each model by its energy, elect signs.

Wan et al. 2024, "FuseChat: Knowledge Fusion of Chat Models" (arXiv:2408.07990), section "SCE";
mergekit ``sce`` (the reference implementation the LLM community uses).
"""

from __future__ import annotations

from typing import Any

import torch

from engine.methods.base import MergeInputs, MethodSpec, Param, TensorContext
from engine.methods.registry import register


def variance_mask(deltas: torch.Tensor, fraction: float) -> torch.Tensor:
    """1 where the variance across models is among the top ``fraction`` of the non-zero variances."""
    var = deltas.var(dim=0, unbiased=False)
    k = int(int(torch.count_nonzero(var)) * fraction)
    mask = torch.zeros_like(var)
    if k > 0:
        mask.view(-1)[torch.topk(var.reshape(-1), k).indices] = 1.0
    return mask


def sce(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """θ = θ0 + Σ_t w_t m_t τ'_t / Σ_t w_t m_t, with τ'_t = S ⊙ τ_t.

    - **Select**: S keeps the ``select_topk`` fraction of entries whose variance across the task vectors
      is largest (of those with non-zero variance; exactly ``floor(fraction·count)`` entries, as mergekit
      counts); 1 keeps every entry.
    - **Calculate**: w_t = mean(τ'_t²) / Σ_k mean(τ'_k²) (uniform when that sum is below 1e-6).
    - **Erase**: m_t = 1 where sign(τ'_t) equals the elected sign of Σ_t τ'_t (a zero sum elects +);
      zero entries never vote. The denominator is clamped at 1e-6, so an entry no model keeps stays θ0.

    Choices: the paper's weights are per tensor, as mergekit computes them; mergekit ignores per-model
    weights for SCE and so does this method.
    """
    if inputs.base.numel() == 0:
        return inputs.base.clone()
    deltas = torch.stack(inputs.fresh_deltas())
    fraction = float(params["select_topk"])
    if fraction < 1.0:
        deltas.mul_(variance_mask(deltas, fraction))
    energy = deltas.reshape(len(deltas), -1).square().mean(dim=1)
    total = float(energy.sum())
    weights = torch.full_like(energy, 1.0 / len(energy)) if abs(total) < 1e-6 else energy / total
    elected = torch.where(deltas.sum(dim=0) >= 0, 1.0, -1.0)
    agree = deltas.sign() == elected
    shaped = weights.to(deltas.device).reshape(-1, *([1] * (deltas.dim() - 1)))
    kept = agree * shaped
    merged = (deltas * kept).sum(dim=0) / kept.sum(dim=0).clamp(min=1e-6)
    return merged.add_(inputs.base)


register(MethodSpec(
    name="sce",
    label="SCE",
    family="ties",
    summary="Keep the entries the models disagree on most, weight models by their task-vector energy, elect signs.",
    params=(
        Param("select_topk", "float", 1.0,
              "fraction of entries kept, by variance across the task vectors (1 keeps all)", min=0.0, max=1.0,
              layerwise=True),
    ),
    merge=sce,
    needs_base=True,
    min_models=1,
    reference="Wan et al. 2024, FuseChat (arXiv:2408.07990); mergekit sce",
))
