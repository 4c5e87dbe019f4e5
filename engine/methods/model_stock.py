"""Model Stock: interpolate between the base and the average of the fine-tuned models by their angle.

Jang et al. 2024, "Model Stock: All we need is just a few fine-tuned models" (arXiv:2403.19522);
mergekit ``model_stock``.
"""

from __future__ import annotations

from typing import Any

import torch

from engine.methods.base import MergeInputs, MethodSpec, Param, TensorContext
from engine.methods.registry import register
from engine.methods.streaming import CHUNK, chunk_slices


def _row_aligned_chunks(rows: int, cols: int, device: torch.device) -> list[slice]:
    """Flat slices of a (rows, cols) tensor that hold whole rows (or parts of the one row when rows == 1)."""
    if rows == 1:
        return chunk_slices(cols, device)
    step = max(1, CHUNK // max(cols, 1)) if device.type == "cpu" else rows
    return [slice(r * cols, min(r + step, rows) * cols) for r in range(0, rows, step)]


def model_stock(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """θ = t·mean(θ_t) + (1 − t)·θ0 with ``t = N·cosθ / (1 + (N − 1)·cosθ)``.

    ``cosθ`` is the mean pairwise cosine similarity of the task vectors τ_t = θ_t − θ0 (N ≥ 2 models),
    over the whole flattened tensor, or with ``filter_wise`` per vector along the last dimension (the
    rows of a matrix), as mergekit does.

    Choices the paper left open, and what this implementation does (mergekit 0.1.5's):
    - each cosine divides by ``max(‖τ_a‖·‖τ_b‖, 1e-6)`` and is clamped to [−1, 1];
    - where ``1 + (N − 1)·cosθ`` is within 1e-6 of 0 (no finite estimate) the base is kept (t = 0);
    - a 1-D tensor with ``filter_wise`` is one row.

    Memory: the task vectors are formed chunk by chunk (the dot products accumulated in float64), so
    beyond the inputs the method holds one output tensor, not N task vectors and their stack; and it
    declares ``chunked_inputs``, so the inputs stay in their stored dtype (fp16 inputs are not copied
    to fp32 first).
    """
    base = inputs.base
    cols = base.shape[-1] if params["filter_wise"] and base.dim() >= 2 else max(base.numel(), 1)
    rows = base.numel() // cols if base.numel() else 0
    n = len(inputs)
    dots = torch.zeros(n, n, max(rows, 1), dtype=torch.float64, device=base.device)
    out_dtype = torch.promote_types(base.dtype, torch.float32)
    total = torch.zeros(base.numel(), dtype=out_dtype, device=base.device)
    chunks = _row_aligned_chunks(rows, cols, base.device) if rows else []
    for sl in chunks:
        deltas = [d.reshape(-1, cols) if rows > 1 else d.reshape(1, -1) for d in inputs.fresh_deltas(sl)]
        first = sl.start // cols if rows > 1 else 0
        last = first + deltas[0].shape[0]
        for i in range(n):
            total[sl].add_(deltas[i].reshape(-1))
            for j in range(i, n):
                dots[i, j, first:last] += (deltas[i] * deltas[j]).sum(dim=-1, dtype=torch.float64)
    norms = dots.diagonal().T.sqrt()  # [n, rows]
    cosines = [(dots[i, j] / (norms[i] * norms[j]).clamp(min=1e-6)).clamp(-1, 1)
               for i in range(n) for j in range(i + 1, n)]
    cos = torch.stack(cosines).mean(dim=0)
    denom = 1 + (n - 1) * cos
    singular = denom.abs() < 1e-6
    t = torch.where(singular, torch.zeros_like(cos), n * cos / torch.where(singular, torch.ones_like(denom), denom))
    scale = (t / n).to(out_dtype).unsqueeze(-1)
    if not rows:
        return base.to(out_dtype, copy=True)
    flat_base = base.reshape(-1)
    for sl in chunks:  # θ0 + t·mean(τ), the base converted a chunk at a time
        part = total[sl].view(-1, cols) if rows > 1 else total[sl].view(1, -1)
        first = sl.start // cols if rows > 1 else 0
        part.mul_(scale[first:first + part.shape[0]]).add_(flat_base[sl].to(out_dtype).view_as(part))
    return total.view(base.shape)


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
    chunked_inputs=True,
    min_models=2,
    reference="Jang et al. 2024, Model Stock (arXiv:2403.19522); mergekit model_stock",
))
