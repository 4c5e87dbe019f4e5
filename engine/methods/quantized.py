"""Task-vector quantisation: merge from task vectors stored at 4, 3 or 2 bits per entry.

Kim et al. 2025, "Task Vector Quantization for Memory-Efficient Model Merging" (arXiv:2503.06921).
TVQ quantises each task vector on its own; residual TVQ (RTVQ) stores a shared base vector at a higher
precision plus each task's offset from it at a very low one. The merge itself is task arithmetic on the
dequantised vectors, so the result shows what a given storage budget costs in accuracy.
"""

from __future__ import annotations

from typing import Any

import torch

from engine.methods.base import MergeInputs, MethodSpec, Param, TensorContext
from engine.methods.params import LAMBDA, WEIGHT
from engine.methods.registry import register


def quantize(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Round ``values`` to ``2**bits`` evenly spaced levels spanning their [min, max] (asymmetric, per tensor).

    Returns the dequantised values; a constant tensor is returned unchanged.
    """
    if values.numel() == 0:
        return values.clone()
    low, high = values.min(), values.max()
    step = (high - low) / (2 ** bits - 1)
    if float(step) == 0.0:
        return values.clone()
    return ((values - low) / step).round_().mul_(step).add_(low)


def _task_arithmetic(base: torch.Tensor, vectors: list[torch.Tensor], params: dict[str, Any]) -> torch.Tensor:
    out = base.clone()
    for w, v in zip(params["weight"], vectors):
        out.add_(v, alpha=float(params["lambda"]) * float(w))
    return out


def tvq(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """θ = θ0 + λ Σ_t w_t Q_b(τ_t), Q_b the per-tensor min–max quantiser at ``bits`` bits.

    Choices: asymmetric uniform levels over each tensor's [min, max] with round-to-nearest (the
    paper's per-tensor scheme); no group-wise scales.
    """
    bits = int(params["bits"])
    return _task_arithmetic(inputs.base, [quantize(d, bits) for d in inputs.deltas], params)


def rtvq(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """θ = θ0 + λ Σ_t w_t (Q_B(τ̄) + Q_b(τ_t − Q_B(τ̄))), τ̄ the mean task vector.

    The shared base vector τ̄ is stored once at ``base_bits``; each task keeps only its offset from the
    *quantised* base at ``bits``, so the offsets also absorb the base's rounding error (the paper's
    error correction). Choice: the base vector is the mean of the task vectors.
    """
    shared = quantize(torch.stack(inputs.deltas).mean(dim=0), int(params["base_bits"]))
    bits = int(params["bits"])
    return _task_arithmetic(inputs.base, [quantize(d - shared, bits).add_(shared) for d in inputs.deltas], params)


BITS = Param("bits", "int", 4, "bits per stored task-vector entry", min=1, max=8)

register(MethodSpec(
    name="tvq",
    label="TVQ (quantised TA)",
    family="quantized",
    summary="Task arithmetic from task vectors stored at a few bits per entry.",
    params=(WEIGHT, LAMBDA, BITS),
    merge=tvq,
    needs_base=True,
    min_models=1,
    reference="Kim et al. 2025, Task Vector Quantization (arXiv:2503.06921)",
))

register(MethodSpec(
    name="rtvq",
    label="Residual TVQ",
    family="quantized",
    summary="Task arithmetic from a shared base vector plus very low-bit per-task offsets.",
    params=(
        WEIGHT, LAMBDA,
        Param("bits", "int", 2, "bits per stored offset entry", min=1, max=8),
        Param("base_bits", "int", 4, "bits per entry of the shared base vector", min=1, max=8),
    ),
    merge=rtvq,
    needs_base=True,
    min_models=1,
    reference="Kim et al. 2025, Task Vector Quantization, residual variant (arXiv:2503.06921)",
))
