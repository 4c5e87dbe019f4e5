"""The linear family: weighted average (model soups) and task arithmetic (incl. negation).

Both outputs are fixed linear combinations of the inputs, so each declares ``linear`` for live tuning.
"""

from __future__ import annotations

from typing import Any

import torch

from engine.errors import EngineInputError
from engine.methods.base import MergeInputs, MethodSpec, Param, TensorContext
from engine.methods.registry import register


def _weights(params: dict[str, Any]) -> list[float]:
    """The per-model weights, divided by their sum when ``normalize`` is on."""
    weights = [float(w) for w in params["weight"]]
    if params["normalize"]:
        total = sum(weights)
        if abs(total) < 1e-12:
            raise EngineInputError("the model weights sum to zero; cannot normalize")
        weights = [w / total for w in weights]
    return weights


def _average_coefficients(params: dict[str, Any], n: int) -> tuple[list[float], float]:
    return _weights(params), 0.0


def weighted_average(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """θ = Σ w_t θ_t / Σ w_t (or the plain weighted sum when ``normalize`` is off)."""
    coefs, _ = _average_coefficients(params, len(inputs))
    out = torch.zeros_like(inputs.models[0])
    for c, m in zip(coefs, inputs.models):
        out.add_(m, alpha=c)
    return out


def task_arithmetic(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """θ = θ0 + λ Σ w_t τ_t; a negative ``weight`` negates (forgets) a task.

    Analogies (τC + (τB − τA)) are weights 1, 1, −1 on C, B, A. ``normalize`` divides by Σ w_t, as
    mergekit's option of the same name does.
    """
    coefs, _ = _ta_linear(params, len(inputs))
    out = inputs.base.clone()
    for c, d in zip(coefs, inputs.deltas):
        out.add_(d, alpha=c)
    return out


def _ta_linear(params: dict[str, Any], n: int) -> tuple[list[float], float]:
    coefs = [float(params["lambda"]) * w for w in _weights(params)]
    return coefs, 1.0 - sum(coefs)


WEIGHT = Param("weight", "float", 1.0, "relative weight of this model", min=-10.0, max=10.0,
               per_model=True, layerwise=True, typical=(0.0, 2.0))

register(MethodSpec(
    name="linear",
    label="Weighted average",
    family="linear",
    summary="Model soup: the weighted mean of the models' weights.",
    params=(
        WEIGHT,
        Param("normalize", "bool", True, "divide by the sum of the weights"),
    ),
    merge=weighted_average,
    needs_base=False,
    min_models=1,
    reference="Wortsman et al. 2022, Model soups (arXiv:2203.05482)",
    linear=_average_coefficients,
    aliases=("weighted_average", "model_soup"),
))

register(MethodSpec(
    name="task_arithmetic",
    label="Task Arithmetic",
    family="linear",
    summary="θ0 + λ Σ w_t (θt − θ0): add, negate or combine task vectors.",
    params=(
        WEIGHT,
        Param("lambda", "float", 1.0, "global scaling of the summed task vectors", min=-5.0, max=5.0,
              layerwise=True, typical=(0.0, 2.0)),
        Param("normalize", "bool", False, "divide the task weights by their sum"),
    ),
    merge=task_arithmetic,
    needs_base=True,
    min_models=1,
    reference="Ilharco et al. 2023, Editing Models with Task Arithmetic (arXiv:2212.04089)",
    linear=_ta_linear,
))
