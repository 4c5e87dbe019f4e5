"""Model Stock: interpolate between the base and the average of the fine-tuned models by their angle.

Jang et al. 2024, "Model Stock: All we need is just a few fine-tuned models" (arXiv:2403.19522);
mergekit ``model_stock``.
"""

from __future__ import annotations

from typing import Any

import torch

from engine.methods.base import MergeInputs, MethodSpec, Param, TensorContext
from engine.methods.registry import register


def model_stock(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """θ = t·mean(θ_t) + (1 − t)·θ0 with ``t = N·cosθ / (1 + (N − 1)·cosθ)``.

    ``cosθ`` is the mean pairwise cosine similarity of the task vectors τ_t = θ_t − θ0 (N ≥ 2 models),
    over the whole flattened tensor, or with ``filter_wise`` per vector along the last dimension (the
    rows of a matrix), as mergekit does.

    Choices the paper left open, and what this implementation does (mergekit 0.1.5's):
    - each cosine divides by ``max(‖τ_a‖·‖τ_b‖, 1e-6)`` and is clamped to [−1, 1];
    - where ``1 + (N − 1)·cosθ`` is within 1e-6 of 0 (no finite estimate) the base is kept (t = 0);
    - a 1-D tensor with ``filter_wise`` is one row.
    """
    base = inputs.base
    if params["filter_wise"]:
        vecs = [d if d.dim() >= 2 else d.reshape(1, -1) for d in inputs.deltas]
    else:
        vecs = [d.reshape(-1) for d in inputs.deltas]
    norms = [torch.linalg.vector_norm(v, dim=-1) for v in vecs]
    cosines = [((vecs[i] * vecs[j]).sum(dim=-1) / (norms[i] * norms[j]).clamp(min=1e-6)).clamp(-1, 1)
               for i in range(len(vecs)) for j in range(i + 1, len(vecs))]
    cos = torch.stack(cosines).mean(dim=0).unsqueeze(-1)
    n = len(vecs)
    denom = 1 + (n - 1) * cos
    singular = denom.abs() < 1e-6
    t = torch.where(singular, torch.zeros_like(cos), n * cos / torch.where(singular, torch.ones_like(denom), denom))
    mean = torch.stack(inputs.models).mean(dim=0)
    return (t * mean + (1 - t) * base).reshape(base.shape)


register(MethodSpec(
    name="model_stock",
    label="Model Stock",
    family="model_stock",
    summary="Move from the base towards the models' average by an amount set by their pairwise angle.",
    params=(
        Param("filter_wise", "bool", False, "one interpolation ratio per row (output filter) instead of per tensor"),
    ),
    merge=model_stock,
    needs_base=True,
    min_models=2,
    reference="Jang et al. 2024, Model Stock (arXiv:2403.19522); mergekit model_stock",
))
