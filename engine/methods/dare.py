"""DARE ("Drop And REscale"): randomly drop task-vector entries, rescale the survivors, then combine.

Yu et al. 2024, "Language Models are Super Mario: Absorbing Abilities from Homologous Models as a Free
Lunch" (arXiv:2311.03099); mergekit ``dare_linear`` / ``dare_ties``.
"""

from __future__ import annotations

from typing import Any

import torch

from engine.methods.base import MergeInputs, MethodSpec, TensorContext
from engine.methods.gta import SparsifyChunk, gta_merge
from engine.methods.params import LAMBDA, SEED, WEIGHT, density, normalize, rescale
from engine.methods.registry import register
from engine.methods.sparsify import random_keep_mask


def model_generators(ctx: TensorContext, count: int) -> list[torch.Generator]:
    """One CPU generator per input model, all derived from ``ctx.generator()`` (seed + tensor name)."""
    seeds = torch.randint(0, 2**62, (count,), generator=ctx.generator()).tolist()
    return [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]


def drop_and_rescale(ctx: TensorContext, densities: list[float], mode: str, count: int):
    """A ``make_sparsify`` for ``gta_merge``: keep each entry with probability ``density`` (fresh draws
    from the same per-model generators every time it is called), divide survivors by ``density`` when
    ``mode == 'inverse'``."""
    def make() -> SparsifyChunk:
        gens = model_generators(ctx, count)

        def apply(t: int, sl: slice, d: torch.Tensor) -> None:
            p = densities[t]
            if p >= 1:
                return
            if p <= 0:
                d.zero_()
                return
            d.mul_(random_keep_mask(d.shape, p, gens[t], d.device))
            if mode == "inverse":
                d.div_(p)
        return apply
    return make


def _dare(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext, elect_sign: bool) -> torch.Tensor:
    make = drop_and_rescale(ctx, [float(d) for d in params["density"]], params["rescale"], len(inputs))
    return gta_merge(inputs, params, make, elect_sign=elect_sign, rescale_l1=params["rescale"] == "l1")


def dare_linear(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """θ = θ0 + λ Σ w_t · rescale(m_t ⊙ τ_t), m_t ~ Bernoulli(density_t) i.i.d. per entry.

    Choices the paper left open, and what this implementation does:
    - ``density`` is the keep probability 1 − p (mergekit's parameter; the paper's drop rate is p);
    - ``rescale='inverse'`` (default) divides survivors by ``density`` as in the paper; ``'l1'`` instead
      restores each task vector's L1 norm per tensor, which is what mergekit's ``rescale: true`` does;
    - the draws come from one CPU generator per model, derived from ``seed`` and the tensor name, so a
      merge is reproducible and identical on every device; changing the model order changes the draws;
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
