"""DELLA-Merging: magnitude-ranked random pruning (MagPrune), rescaling, then (optionally) TIES's election.

Deep et al. 2024, "DELLA-Merging: Reducing Interference in Model Merging through Magnitude-Based
Sampling" (arXiv:2406.11617); mergekit ``della`` / ``della_linear``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from engine.errors import EngineInputError
from engine.methods.base import MergeInputs, MethodSpec, Param, TensorContext
from engine.methods.dare import model_seeds
from engine.methods.gta import combine
from engine.methods.params import LAMBDA, SEED, WEIGHT, density, normalize, rescale
from engine.methods.registry import register
from engine.methods.sparsify import rescale_l1


def keep_probabilities(delta: torch.Tensor, density_value: float, epsilon: float) -> torch.Tensor:
    """Per-entry keep probability ``density − ε + 2ε·r``, r the entry's magnitude rank in its row in [0, 1].

    Rows are the first dimension (a 1-D tensor is one row; higher-dimensional tensors are flattened to
    ``(shape[0], -1)``). Ranks come from one sort per row: DELLA is defined by ranks, so this is the one
    method that sorts.
    """
    rows = delta.reshape(1, -1) if delta.dim() < 2 else delta.reshape(delta.shape[0], math.prod(delta.shape[1:]))
    order = rows.abs().argsort(dim=1)
    ranks = torch.empty_like(rows)
    ranks.scatter_(1, order, torch.arange(rows.shape[1], dtype=rows.dtype, device=rows.device).expand_as(rows))
    if rows.shape[1] > 1:
        ranks.div_(rows.shape[1] - 1)
    return ranks.mul_(2 * epsilon).add_(density_value - epsilon).reshape(delta.shape)


def magprune(delta: torch.Tensor, density_value: float, epsilon: float, mode: str,
             generator: torch.Generator) -> torch.Tensor:
    """DELLA's MagPrune of one task vector (overwrites and returns ``delta``)."""
    if density_value >= 1:
        return delta
    if density_value <= 0:
        return delta.zero_()
    if not (0 < density_value - epsilon and density_value + epsilon < 1):
        raise EngineInputError(f"DELLA needs density ± epsilon inside (0, 1); got density {density_value}, "
                               f"epsilon {epsilon}")
    probs = keep_probabilities(delta, density_value, epsilon)
    words = torch.empty((delta.numel() + 1) // 2, dtype=torch.int64).random_(-2**63, 2**63 - 1,
                                                                              generator=generator)
    uniform = words.view(torch.int32)[:delta.numel()].to(torch.float32).mul_(2.0**-32).add_(0.5)
    keep = uniform.reshape(delta.shape).to(delta.device) < probs
    original = delta.clone() if mode == "l1" else None
    delta.mul_(keep)
    if mode == "inverse":
        delta.div_(probs)
    elif mode == "l1":
        rescale_l1(original, delta)
    return delta


def _della(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext, elect_sign: bool) -> torch.Tensor:
    gens = [torch.Generator().manual_seed(s) for s in model_seeds(ctx, len(inputs))]
    deltas = [magprune(d, float(p), float(e), params["rescale"], g)
              for d, p, e, g in zip(inputs.fresh_deltas(), params["density"], params["epsilon"], gens)]
    mixed = combine(deltas, params["weight"], elect_sign=elect_sign, normalize=params["normalize"])
    return mixed.mul_(float(params["lambda"])).add_(inputs.base)


def della(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """θ = θ0 + λ · disjoint_mean_t(w_t · MagPrune(τ_t)), MagPrune keeping entries with rank-based probability.

    Choices the paper left open, and what this implementation does (mergekit's parameterisation):
    - keep probabilities grow linearly with the entry's magnitude rank within its row, from
      ``density − epsilon`` (smallest) to ``density + epsilon`` (largest); both must lie in (0, 1);
    - ``rescale='inverse'`` (default) divides each survivor by its own keep probability, as the paper;
      ``'l1'`` restores the task vector's L1 norm per tensor instead, which is mergekit's ``rescale: true``;
    - the draws come from one CPU generator per model (seed + tensor name): reproducible, device-independent;
    - the sign election and disjoint mean follow TIES (``engine.methods.gta.combine``); ``normalize``
      (on by default, as mergekit's ``della``) divides by the agreeing weights; ``lambda`` scales the result.
    """
    return _della(inputs, params, ctx, elect_sign=True)


def della_linear(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """θ = θ0 + λ Σ w_t · MagPrune(τ_t) (no sign election); ``normalize`` (off by default) divides by Σ w_t.

    MagPrune as in ``della``.
    """
    return _della(inputs, params, ctx, elect_sign=False)


def _params(normalize_default: bool, normalize_help: str) -> tuple:
    return (
        WEIGHT,
        density(0.5, "average probability of keeping a task-vector entry"),
        Param("epsilon", "float", 0.15, "spread of keep probabilities around density, by magnitude rank",
              min=0.0, max=0.5, per_model=True, layerwise=True),
        LAMBDA,
        normalize(normalize_default, normalize_help),
        rescale("inverse", ("inverse", "l1", "none")),
        SEED,
    )


register(MethodSpec(
    name="della",
    label="DELLA-Merging",
    family="della",
    summary="Magnitude-ranked random pruning, rescaling, then TIES's sign election and disjoint mean.",
    params=_params(True, "divide by the summed weights of the agreeing models (disjoint mean); off = disjoint sum"),
    merge=della,
    needs_base=True,
    reference="Deep et al. 2024, DELLA-Merging (arXiv:2406.11617); mergekit della",
    random=True,
))

register(MethodSpec(
    name="della_linear",
    label="DELLA (linear)",
    family="della",
    summary="Magnitude-ranked random pruning and rescaling, then a weighted sum of the task vectors.",
    params=_params(False, "divide by the sum of the weights"),
    merge=della_linear,
    needs_base=True,
    reference="Deep et al. 2024, DELLA-Merging (arXiv:2406.11617); mergekit della_linear",
    random=True,
))
