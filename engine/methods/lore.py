"""LoRE-Merging: estimate a shared base and low-rank task vectors from the fine-tuned models alone.

Liu et al. 2025, "LoRE-Merging: Exploring Low-Rank Estimation For Large Language Model Merging"
(arXiv:2502.10749). No pre-trained model is needed: the base is what the models share once each one's
low-rank deviation is taken out.
"""

from __future__ import annotations

from typing import Any

import torch

from engine.methods.base import MergeInputs, MethodSpec, Param, TensorContext
from engine.methods.params import LAMBDA
from engine.methods.registry import register


def shrink_singular_values(matrix: torch.Tensor, fraction: float) -> torch.Tensor:
    """Singular-value soft thresholding at ``fraction`` of the largest singular value (the proximal step
    of the nuclear norm): small directions vanish, large ones shrink by the same amount."""
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    if s.numel() == 0:
        return torch.zeros_like(matrix)
    kept = (s - fraction * s[0]).clamp_(min=0.0)
    return (u * kept) @ vh


def estimate(models: list[torch.Tensor], fraction: float, iterations: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Alternating minimisation of ``Σ_t ‖θ_t − θ̂0 − δ_t‖²_F + μ Σ_t ‖δ_t‖_*``: each δ_t by singular-value
    thresholding of θ_t − θ̂0, then θ̂0 = mean_t(θ_t − δ_t); θ̂0 starts at the models' average."""
    base = torch.stack(models).mean(dim=0)
    deltas = [torch.zeros_like(base) for _ in models]
    for _ in range(iterations):
        deltas = [shrink_singular_values(m - base, fraction) for m in models]
        base = torch.stack([m - d for m, d in zip(models, deltas)]).mean(dim=0)
    return base, deltas


def lore(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """θ = θ̂0 + λ Σ_t δ_t for matrices, with (θ̂0, δ_t) from ``estimate``; the average for other tensors.

    Choices the paper leaves to the implementer, and what this one does: the nuclear-norm weight μ is
    relative (``shrink`` × each residual's largest singular value), so one value suits every layer;
    a fixed number of alternating steps (``iterations``); the estimated low-rank task vectors are
    combined by task arithmetic with ``lambda``.
    A connected base is ignored: the point of the method is not to need one.
    """
    models = inputs.models
    if models[0].dim() != 2 or models[0].numel() == 0:
        return torch.stack(models).mean(dim=0)
    base, deltas = estimate(models, float(params["shrink"]), int(params["iterations"]))
    return base.add_(torch.stack(deltas).sum(dim=0), alpha=float(params["lambda"]))


register(MethodSpec(
    name="lore",
    label="LoRE-Merging",
    family="iso",
    summary="Estimate the models' shared base and low-rank task vectors without the pre-trained model, then add.",
    params=(
        LAMBDA,
        Param("shrink", "float", 0.1, "nuclear-norm weight, as a fraction of each residual's largest singular value",
              min=0.0, max=1.0),
        Param("iterations", "int", 10, "alternating estimation steps", min=1, max=1000),
    ),
    merge=lore,
    needs_base=False,
    min_models=2,
    reference="Liu et al. 2025, LoRE-Merging (arXiv:2502.10749)",
))
