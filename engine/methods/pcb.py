"""PCB-Merging: parameter competition balancing (intra-task × inter-task scores), drop, rescale, sum.

Du et al. 2024, "Parameter Competition Balancing for Model Merging" (arXiv:2410.02396);
reference code duguodong7/pcb-merging (``pcb-merging.py``).
"""

from __future__ import annotations

from typing import Any

import torch

from engine.methods.base import MergeInputs, MethodSpec, ModelStatistic, Param, TensorContext
from engine.methods.gta import check_scope
from engine.methods.params import LAMBDA, SCOPE, WEIGHT
from engine.methods.registry import register
from engine.methods.statistics import ChainedStatistic, ExactRanks
from engine.methods.streaming import kth_smallest


def clip_ranks(n: int, clip: float) -> list[int]:
    """Ascending ranks of the reference code's outlier clip bounds: sorted[int(n·c)] and sorted[int(n·(1−c))−1]."""
    return [int(n * clip) + 1, max(1, int(n * (1 - clip)))]


def score_ranks(n: int, ratio: float) -> list[int]:
    """Ascending ranks of the score floor sorted[int(n·(1−r))] and of the largest score."""
    return [min(n, int(n * (1 - ratio)) + 1), n]


def _minmax(x: torch.Tensor, lo: Any, hi: Any) -> torch.Tensor:
    """``(x − lo)/(hi − lo)`` in place (0 where hi = lo)."""
    span = float(hi) - float(lo)
    return x.sub_(lo).div_(span) if span > 0 else x.zero_()


def clipped_and_scores(deltas: list[torch.Tensor], clips: list[list[Any]]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The clipped task vectors τ̃_t and the balancing scores ``exp(T·norm(|τ̃_t|)²) · tanh(τ_t ⊙ Σ_s τ_s)``."""
    total = torch.stack(deltas).sum(dim=0)
    n_tasks = len(deltas)
    clipped, scores = [], []
    for tau, (lo, hi) in zip(deltas, clips):
        mag = tau.abs().clamp_(min=float(lo), max=float(hi))
        clipped.append(torch.sign(tau).mul_(mag))
        intra = _minmax(mag, lo, hi).square_().mul_(n_tasks).exp_()
        scores.append(intra.mul_(torch.tanh(tau * total)))
    return clipped, scores


def pcb(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """θ = θ0 + λ · Σ_t w_t τ̃_t s_t / max(Σ_t s_t, 1e-12).

    Following the authors' ``pcb-merging.py`` (the paper leaves these to the code):
    - outliers: |τ_t| is clipped to its ``clip`` and ``1 − clip`` quantiles (``sorted[int(n·c)]`` and
      ``sorted[int(n·(1−c))−1]``, default c = 1e-4), signs kept: τ̃_t;
    - intra-balancing ``exp(T · minmax(|τ̃_t|)²)``, inter-balancing ``tanh(τ_t ⊙ Σ_s τ_s)`` on the raw task
      vectors (the code's simplification of the paper's softmax forms), score = their product;
    - ``ratio`` is the fraction of entries kept per task: scores are floored at their
      ``sorted[int(n·(1−ratio))]`` value and min-max normalised, so entries at or below the floor get 0;
    - quantiles and min/max are taken per tensor, or per task over the whole model with
      ``scope='model'`` (the code works on the flattened model);
    - ``weight`` is the code's per-task λ (1.2 in its vision script), ``lambda`` a global factor.
    """
    check_scope(params, ctx)
    deltas = inputs.deltas
    n = deltas[0].numel()
    if n == 0:  # no entries to score (an empty tensor)
        return inputs.base.clone()
    if params["scope"] == "model":
        clips, floors = ctx.stats
    else:
        mags = [d.abs() for d in deltas]
        clips = [[kth_smallest(m, r) for r in clip_ranks(n, params["clip"])] for m in mags]
        floors = None
    clipped, scores = clipped_and_scores(deltas, clips)
    if floors is None:
        floors = [[kth_smallest(s, r) for r in score_ranks(n, params["ratio"])] for s in scores]
    num = torch.zeros_like(inputs.base)
    den = torch.zeros_like(inputs.base)
    for tau, s, (floor, top), w in zip(clipped, scores, floors, params["weight"]):
        scale = _minmax(s.clamp_(min=float(floor)), floor, top)
        den.add_(scale)
        num.add_(tau.mul_(scale), alpha=float(w))
    return num.div_(den.clamp_(min=1e-12)).mul_(float(params["lambda"])).add_(inputs.base)


def global_quantiles(params: dict[str, Any]) -> ModelStatistic | None:
    """For ``scope='model'``: clip bounds of |τ_t| (passes 1–2), then score floor and max (passes 3–4)."""
    if params.get("scope", "tensor") != "model":
        return None
    clips = ExactRanks(lambda inputs, p, ctx: [d.abs() for d in inputs.deltas],
                       lambda totals, p: [clip_ranks(n, p["clip"]) for n in totals])
    floors = ExactRanks(lambda inputs, p, ctx: clipped_and_scores(inputs.deltas, clips.result())[1],
                        lambda totals, p: [score_ranks(n, p["ratio"]) for n in totals])
    return ChainedStatistic([clips, floors])


register(MethodSpec(
    name="pcb",
    label="PCB-Merging",
    family="pcb",
    summary="Score each entry by intra-task and inter-task balance, drop the low scorers, rescale, sum.",
    params=(
        WEIGHT,
        Param("ratio", "float", 0.1, "fraction of each task's entries kept (highest balancing scores)",
              min=0.0, max=1.0),
        Param("clip", "float", 1e-4, "fraction of smallest and of largest magnitudes clipped as outliers",
              min=0.0, max=0.5),
        LAMBDA,
        SCOPE,
    ),
    merge=pcb,
    needs_base=True,
    min_models=1,
    statistic=global_quantiles,
    reference="Du et al. 2024, Parameter Competition Balancing (arXiv:2410.02396); code duguodong7/pcb-merging",
))
