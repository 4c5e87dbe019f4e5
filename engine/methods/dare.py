"""DARE ("Drop And REscale"): randomly drop task-vector entries, rescale the survivors, then combine.

Yu et al. 2024, "Language Models are Super Mario: Absorbing Abilities from Homologous Models as a Free
Lunch" (arXiv:2311.03099); mergekit ``dare_linear`` / ``dare_ties``.
"""

from __future__ import annotations

from typing import Any

import torch

from engine.methods.base import MergeInputs, MethodSpec, TensorContext
from engine.methods.gta import gta_merge
from engine.methods.params import LAMBDA, SEED, WEIGHT, density, normalize, rescale
from engine.methods.registry import register
from engine.methods.sparsify import random_keep_mask


def model_seeds(ctx: TensorContext, count: int) -> list[int]:
    """One seed per input model, all derived from ``ctx.generator()`` (the merge's seed + tensor name)."""
    return [int(s) for s in torch.randint(0, 2**62, (count,), generator=ctx.generator())]


def drop_and_rescale(seeds: list[int], densities: list[float], mode: str):
    """The ``sparsify`` step of ``gta_merge``: keep each entry with probability ``density``, and divide the
    survivors by ``density`` when ``mode == 'inverse'``."""
    def apply(t: int, sl: slice, d: torch.Tensor) -> None:
        p = densities[t]
        if p >= 1:
            return
        if p <= 0:
            d.zero_()
            return
        keep = random_keep_mask(seeds[t], sl, p, d.device)
        d.mul_(keep.mul_(1.0 / p) if mode == "inverse" else keep)
    return apply


def _dare(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext, elect_sign: bool) -> torch.Tensor:
    sparsify = drop_and_rescale(model_seeds(ctx, len(inputs)), [float(d) for d in params["density"]],
                                params["rescale"])
    return gta_merge(inputs, params, sparsify, elect_sign=elect_sign, rescale_l1=params["rescale"] == "l1")


def dare_linear(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """θ = θ0 + λ Σ w_t · rescale(m_t ⊙ τ_t), m_t ~ Bernoulli(density_t) i.i.d. per entry.

    Choices the paper left open, and what this implementation does:
    - ``density`` is the keep probability 1 − p (mergekit's parameter; the paper's drop rate is p);
    - ``rescale='inverse'`` (default) divides survivors by ``density`` as in the paper; ``'l1'`` instead
      restores each task vector's L1 norm per tensor, which is what mergekit's ``rescale: true`` does;
    - the draws come from CPU generators derived from ``seed``, the tensor name, the model's position and
      the block of entries (``engine.methods.sparsify.random_keep_mask``), so a merge is reproducible and
      identical on every device; changing the model order changes the draws;
    - ``normalize`` divides by Σ w_t (mergekit's option; off by default, as there).
    """
    return _dare(inputs, params, ctx, elect_sign=False)


def dare_ties(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """DARE's drop-and-rescale, then TIES's sign election and disjoint combination (no magnitude trim).

    As ``dare_linear``, plus: ``normalize`` (off by default, as in mergekit) divides by the summed weights
    of the models agreeing with the elected sign (TIES's disjoint mean); off, the agreeing entries are
    summed.
    """
    return _dare(inputs, params, ctx, elect_sign=True)


def _params(normalize_help: str) -> tuple:
    return (
        WEIGHT,
        density(0.5, "probability of keeping each task-vector entry (1 − drop rate p)"),
        LAMBDA,
        normalize(False, normalize_help),
        rescale("inverse", ("inverse", "l1", "none")),
        SEED,
    )


register(MethodSpec(
    name="dare_linear",
    label="DARE (linear)",
    family="dare",
    summary="Drop task-vector entries at random, rescale the survivors, add them up (task arithmetic).",
    params=_params("divide by the sum of the weights"),
    merge=dare_linear,
    needs_base=True,
    reference="Yu et al. 2024, Language Models are Super Mario (arXiv:2311.03099); mergekit dare_linear",
    random=True,
))

register(MethodSpec(
    name="dare_ties",
    label="DARE-TIES",
    family="dare",
    summary="Drop task-vector entries at random, rescale the survivors, combine with TIES's sign election.",
    params=_params("divide by the summed weights of the agreeing models (disjoint mean); off = disjoint sum"),
    merge=dare_ties,
    needs_base=True,
    reference="Yu et al. 2024, Language Models are Super Mario (arXiv:2311.03099); mergekit dare_ties",
    random=True,
))
