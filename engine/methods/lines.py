"""LiNeS (Layer-increasing Network Scaling): scale a merged update by depth so shallow layers stay near θ0.

Wang et al. 2025, "LiNeS: Post-training Layer Scaling Prevents Forgetting and Enhances Model Merging"
(arXiv:2410.17146); reference code wang-kee/LiNeS (``LiNeS_scaling`` in ``src/eval/eval.py``).
"""

from __future__ import annotations

from typing import Any

import torch

from engine.methods.base import MergeInputs, MethodSpec, Param, TensorContext
from engine.methods.registry import register


def lines_factor(alpha: float, beta: float, layer: int | None, num_layers: int) -> float:
    """``α + β·ℓ/(L−1)`` for 0-based layer ℓ of L; α outside the numbered layers and in a one-layer model."""
    if layer is None or num_layers <= 1:
        return alpha
    return alpha + beta * layer / (num_layers - 1)


def lines_coefficients(params: dict[str, Any], n: int, ctx: TensorContext,
                       inputs: MergeInputs) -> tuple[list[float], float]:
    """The linear form ``θ = f·θ_merged + (1 − f)·θ0`` with f the layer's factor (``contextual_linear``)."""
    f = lines_factor(float(params["alpha"]), float(params["beta"]), ctx.layer, ctx.num_layers)
    return [f], 1.0 - f


def lines(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """θ = θ0 + (α + β·ℓ/(L−1)) · (θ_merged − θ0) for the one connected (already merged) model.

    A modifier: connect the output of any merge (or a single fine-tuned model) as the one input and the
    base. Layers come from the executor's layer detection (``ctx.layer``, 0-based, of ``ctx.num_layers``).
    As in the authors' code, tensors outside the numbered blocks (embeddings, final norm, head) get α.
    For single-task editing the authors use α = λ, β = 1 − λ; for multi-task merges they set α from the
    norms of the summed and merged task vectors and tune β — here both are plain parameters.
    """
    factor = lines_factor(float(params["alpha"]), float(params["beta"]), ctx.layer, ctx.num_layers)
    return torch.lerp(inputs.base, inputs.models[0], factor)


register(MethodSpec(
    name="lines",
    label="LiNeS",
    family="lines",
    summary="Scale a merged model's update by depth: α at the first layer, α + β at the last.",
    params=(
        Param("alpha", "float", 0.5, "scaling of the update at the first layer (and outside the layers)",
              min=-2.0, max=5.0),
        Param("beta", "float", 0.5, "extra scaling added linearly up to the last layer", min=-5.0, max=5.0),
    ),
    merge=lines,
    needs_base=True,
    min_models=1,
    max_models=1,
    reference="Wang et al. 2025, LiNeS (arXiv:2410.17146); code wang-kee/LiNeS",
    contextual_linear=lines_coefficients,
))
