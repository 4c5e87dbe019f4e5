"""MetaGPT: task arithmetic with closed-form, data-free task weights λ_t = ‖τ_t‖² / Σ_k ‖τ_k‖².

Zhou et al. 2024, "MetaGPT: Merging Large Language Models Using Model Exclusive Task Arithmetic"
(arXiv:2406.11385).
"""

from __future__ import annotations

from typing import Any

import torch

from engine.errors import EngineInputError
from engine.methods.base import MergeInputs, MethodSpec, ModelStatistic, Param, TensorContext
from engine.methods.registry import register
from engine.methods.statistics import GroupSums


def group_key(ctx: TensorContext, scope: str) -> Any:
    """Which norms a tensor's weights come from: the whole model, its numbered layer, or itself."""
    if scope == "model":
        return "model"
    if scope == "layer" and ctx.layer is not None:
        return ("layer", ctx.layer)
    return ("tensor", ctx.name)


def squared_norms(inputs: MergeInputs) -> torch.Tensor:
    """‖τ_t‖² of this tensor for every model (float64; the norm itself is reduced in float32 without a copy)."""
    return torch.stack([torch.linalg.vector_norm(d).double().square() for d in inputs.deltas])


def metagpt_coefficients(params: dict[str, Any], n: int, ctx: TensorContext,
                         inputs: MergeInputs) -> tuple[list[float], float]:
    """The linear form of the merge (``contextual_linear``): ``([λ_t], 1 − Σ λ_t)`` with λ_t from the
    squared norms over ``scope``; all-zero task vectors give ``([0, …], 1)`` (θ0)."""
    scope = params["scope"]
    if scope == "tensor" or (scope == "layer" and ctx.layer is None):
        norms = squared_norms(inputs)
    else:
        if ctx.stats is None:
            raise EngineInputError(f"scope '{scope}' needs the statistics pass, which did not run", tensor=ctx.name)
        norms = ctx.stats[group_key(ctx, scope)]
    total = float(norms.sum())
    if total <= 0:
        return [0.0] * n, 1.0
    lams = (norms / total).tolist()
    return lams, 1.0 - sum(lams)


def metagpt(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """θ = θ0 + Σ_t λ_t τ_t, λ_t = ‖τ_t‖² / Σ_k ‖τ_k‖² (the λ_t sum to 1; all-zero task vectors give θ0).

    The paper derives one coefficient per task from the task vectors' norms. Choices left open, and what
    this implementation does: ``scope='model'`` (default) uses the norms over the whole model (a cheap
    first statistics pass), as the METHODS catalogue states the formula; ``scope='layer'`` computes them
    per numbered layer (tensors outside the layers use their own norms) and ``scope='tensor'`` per tensor,
    for the layer-wise reading of the method. The coefficients depend on the weights themselves, so the
    method declares a ``contextual_linear`` form (``metagpt_coefficients``) rather than a ``linear`` one.
    """
    lams, _ = metagpt_coefficients(params, len(inputs), ctx, inputs)
    out = inputs.base.clone()
    for lam, d in zip(lams, inputs.deltas):
        if lam != 0.0:
            out.add_(d, alpha=lam)
    return out


def norm_statistic(params: dict[str, Any]) -> ModelStatistic | None:
    """One pass summing ‖τ_t‖² per model over the whole model (or per layer)."""
    scope = params.get("scope", "model")
    if scope == "tensor":
        return None
    return GroupSums(lambda inputs, p, ctx: {group_key(ctx, scope): squared_norms(inputs)})


register(MethodSpec(
    name="metagpt",
    label="MetaGPT",
    family="metagpt",
    summary="Task arithmetic with data-free weights proportional to each task vector's squared norm.",
    params=(
        Param("scope", "choice", "model", "over what the norms are taken: the whole model, each layer, each tensor",
              choices=("model", "layer", "tensor")),
    ),
    merge=metagpt,
    needs_base=True,
    min_models=1,
    reference="Zhou et al. 2024, MetaGPT: Model Exclusive Task Arithmetic (arXiv:2406.11385)",
    statistic=norm_statistic,
    contextual_linear=metagpt_coefficients,
))
