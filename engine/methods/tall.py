"""TALL masks and Consensus merging: keep only the weights that enough tasks rely on.

Wang et al. 2024, "Localizing Task Information for Improved Model Merging and Compression"
(arXiv:2405.07813); reference code nik-dim/tall_masks.

For task t the TALL mask is ``m_t = |τ_t| > λ_t·|τ_MTL − τ_t|`` (the task's own update is larger than
the error the merged multi-task vector makes on it). Consensus keeps the entries active in at least
``k`` masks (k = 2 drops "selfish" weights used by one task and "catastrophic" ones used by none) and
applies that mask to the merged vector of a base method — here a plug-in wrapper over any registered
method whose output is ``θ0 + λ·v``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from engine.errors import EngineInputError
from engine.methods.base import MergeInputs, MethodSpec, Param, TensorContext
from engine.methods.params import WEIGHT
from engine.methods.registry import get_method, register

MASK_LAMBDA = Param("mask_lambda", "float", 0.4,
                    "TALL mask strictness λ_t: entry kept for task t where |τ_t| > λ_t·|τ_MTL − τ_t|",
                    min=0.0, max=10.0, per_model=True)


def tall_masks(deltas: list[torch.Tensor], merged: torch.Tensor, lambdas: list[float]) -> list[torch.Tensor]:
    """``m_t = |τ_t| > λ_t·|τ_MTL − τ_t|`` for every task (strict, as the authors' code)."""
    return [tau.abs() > (merged - tau).abs_().mul_(float(lam)) for tau, lam in zip(deltas, lambdas)]


def consensus_mask(deltas: list[torch.Tensor], merged: torch.Tensor, lambdas: list[float], k: int) -> torch.Tensor:
    """Entries active in at least ``k`` TALL masks."""
    count = torch.zeros(merged.shape, dtype=torch.int32, device=merged.device)
    for m in tall_masks(deltas, merged, lambdas):
        count.add_(m)
    return count >= k


def with_consensus(inner: MethodSpec, name: str, label: str) -> MethodSpec:
    """A Consensus variant of ``inner`` (which must produce ``θ0 + λ·v`` with a ``lambda`` parameter).

    τ_MTL is the inner merge's task vector at ``lambda = 1`` (the authors build the masks from the
    unscaled merged vector and apply the scaling coefficient afterwards); the output is
    ``θ0 + λ · (τ_MTL ⊙ consensus)``. ``k = 0`` gives the inner merge back.
    """
    def merge(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
        merged = inner.merge(inputs, {**params, "lambda": 1.0}, ctx).sub_(inputs.base)
        keep = consensus_mask(inputs.deltas, merged, params["mask_lambda"], int(params["k"]))
        return merged.mul_(keep).mul_(float(params["lambda"])).add_(inputs.base)

    merge.__doc__ = (f"Consensus merging over {inner.label}: θ0 + λ·(τ_MTL ⊙ 1[#TALL masks ≥ k]).\n\n"
                     "Choices the paper left open, and what this implementation does:\n"
                     "- the TALL masks use the strict comparison of the authors' code and the raw task vectors;\n"
                     "- λ_t (``mask_lambda``) is a parameter (the authors pick it per task in 0.2–0.6 on\n"
                     "  validation data; 0.4 by default), k defaults to 2 as in the paper;\n"
                     f"- the merged vector is {inner.label}'s with its own parameters, at lambda = 1, then scaled.")
    return replace(
        inner, name=name, label=label, family="tall", aliases=(),
        summary=f"{inner.label}, keeping only the weights at least k tasks rely on (TALL-mask consensus).",
        params=inner.params + (
            Param("k", "int", 2, "minimum number of tasks whose TALL mask keeps an entry (0 = keep all)",
                  min=0, max=64),
            MASK_LAMBDA,
        ),
        merge=merge, linear=None, contextual_linear=None, staged=None,  # its own merge: no inherited incremental form
        reference="Wang et al. 2024, Localizing Task Information (arXiv:2405.07813); code nik-dim/tall_masks",
    )


def tall_mask_reconstruct(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """TALL-masks' per-task model: θ0 + m_t ⊙ τ_MTL for task ``task`` (0-based position among the inputs).

    τ_MTL = Σ_s w_s τ_s (the task-arithmetic sum the authors use, unscaled) and
    ``m_t = |τ_t| > λ·|τ_MTL − τ_t|``. Storing τ_MTL once and one bit mask per task compresses T experts.
    """
    t = int(params["task"])
    if not 0 <= t < len(inputs):
        raise EngineInputError(f"task index {t} is outside the {len(inputs)} connected models", tensor=ctx.name)
    deltas = inputs.deltas
    merged = torch.zeros_like(inputs.base)
    for d, w in zip(deltas, params["weight"]):
        merged.add_(d, alpha=float(w))
    mask = tall_masks([deltas[t]], merged, [params["mask_lambda"]])[0]
    return merged.mul_(mask).add_(inputs.base)


register(with_consensus(get_method("task_arithmetic"), "consensus_ta", "Consensus (Task Arithmetic)"))
register(with_consensus(get_method("ties"), "consensus_ties", "Consensus (TIES)"))

register(MethodSpec(
    name="tall_mask_reconstruct",
    label="TALL-mask task model",
    family="tall",
    summary="Rebuild one task's model from the summed task vectors and that task's TALL mask.",
    params=(
        WEIGHT,
        Param("task", "int", 0, "which connected model's task to rebuild (0 = the first)", min=0, max=1023),
        Param("mask_lambda", "float", 0.4, "TALL mask strictness λ: entry kept where |τ_t| > λ·|τ_MTL − τ_t|",
              min=0.0, max=10.0),
    ),
    merge=tall_mask_reconstruct,
    needs_base=True,
    min_models=1,
    reference="Wang et al. 2024, Localizing Task Information (arXiv:2405.07813); code nik-dim/tall_masks",
))
