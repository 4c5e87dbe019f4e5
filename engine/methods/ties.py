"""TIES-Merging: trim, elect sign, disjoint mean.

Yadav et al. 2023, "TIES-Merging: Resolving Interference When Merging Models" (arXiv:2306.01708);
reference code prateeky2806/ties-merging; mergekit ``ties``.

Besides the one-call merge, TIES declares its staged form (``StagedForm``) for live tuning:

1. ``trim_masks``: which entries of each τt survive the trim (what ``trim`` keeps). A mask depends on
   τt, its density, the scope and the tie rule only (plus the whole-model threshold with
   ``scope='model'``; see ``trim_mask_key``), so it is reused when the weights, ``normalize`` or λ move,
   and only the models whose density changed are trimmed again;
2. ``elect_and_mean``: the elected signs and the (weighted) disjoint mean of the masked vectors through
   ``gta.combine`` — the merged task vector τm, reused when only λ moves.
"""

from __future__ import annotations

import math
from typing import Any, Hashable, Sequence

import torch

from engine.methods.base import MergeInputs, MethodSpec, ModelStatistic, StagedForm, TensorContext
from engine.methods.gta import check_scope, combine, gta_merge, magnitudes_at
from engine.methods.params import LAMBDA, SCOPE, TIE_BREAK, WEIGHT, density, normalize
from engine.methods.registry import register
from engine.methods.sparsify import keep_count, sorted_window_mask
from engine.methods.statistics import ExactRanks
from engine.methods.streaming import select_ranks


def top_k_rank(density_value: float, n: int) -> int | None:
    """Ascending rank of the smallest kept magnitude (None when the density keeps everything or nothing)."""
    k = keep_count(density_value, n)
    return n - k + 1 if 0 < k < n else None


def trim_thresholds(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> list[Any]:
    """Per model: the smallest magnitude kept (a 0-d tensor or float; inf drops all), None to keep all."""
    n = inputs.base.numel()
    ranks = [top_k_rank(d, n) for d in params["density"]]
    if params["scope"] == "model":
        found = [row[0] for row in ctx.stats]
    elif ctx is not None and ctx.memo is not None:  # a resident session: each model's magnitudes sorted once, ranks looked up
        if "ties.sorted_magnitudes" not in ctx.memo:
            ctx.memo["ties.sorted_magnitudes"] = [d.abs().reshape(-1).sort().values for d in inputs.deltas]
        found = [None if r is None else s[r - 1] for s, r in zip(ctx.memo["ties.sorted_magnitudes"], ranks)]
    else:
        found = [row[0] for row in select_ranks(magnitudes_at(inputs), n, [[r] for r in ranks], inputs.base.device)]
    return [math.inf if d <= 0 else thr for d, thr in zip(params["density"], found)]


def trim_keepers(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> list[Any]:
    """``trim_thresholds``; with ``tie_break='mergekit'``, per tensor, a model whose magnitudes tie at its
    threshold (more than k entries ≥ it) gets the exact mask of its k largest, split as mergekit's argsort
    splits the tie."""
    thresholds = trim_thresholds(inputs, params, ctx)
    if params["scope"] == "model" or params["tie_break"] != "mergekit":
        return thresholds
    n = inputs.base.numel()
    magnitudes: list[torch.Tensor] = []
    out: list[Any] = []
    for t, (threshold, d) in enumerate(zip(thresholds, params["density"])):
        k = keep_count(d, n)
        if threshold is None or (isinstance(threshold, float) and math.isinf(threshold)):
            out.append(threshold)
            continue
        magnitudes = magnitudes or magnitudes_at(inputs)(slice(0, n))
        tied = int((magnitudes[t] >= threshold).sum()) != k
        out.append(sorted_window_mask(magnitudes[t], 0, k, descending=True) if tied else threshold)
    return out


def trim(keepers: list[Any]):
    """The ``sparsify`` step of ``gta_merge`` keeping ``|τ| ≥ threshold`` per model (None: keep all), or the
    entries of a model's exact boolean mask."""
    def apply(t: int, sl: slice, d: torch.Tensor) -> None:
        keep = keepers[t]
        if isinstance(keep, torch.Tensor) and keep.dtype == torch.bool:
            d.mul_(keep[sl])
        elif keep is not None:
            d.mul_(d.abs().ge_(keep))
    return apply


def ties(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """θ = θ0 + λ · disjoint_mean_t(w_t · trim(τ_t)).

    Choices the paper left open, and what this implementation does:
    - trimming keeps the ``k = max(1, floor(density·n))`` largest magnitudes of each task vector (mergekit's
      count) as a threshold ``|τ| ≥ k-th largest``, per tensor by default, or against one threshold per
      model over the whole model with ``scope='model'`` — what the authors' code does (it trims the
      flattened model vector); magnitudes tied with the threshold are all kept, or, with
      ``tie_break='mergekit'`` (per tensor; what mergekit import sets), split as mergekit's argsort splits
      them so that exactly k are kept (``trim_keepers``: costs a sort where ties straddle the cut);
    - per-model ``weight``s multiply the trimmed vectors before the sign election and weight the mean
      (mergekit's generalisation; with all weights 1 it is the paper's disjoint mean);
    - the sign election's tie at exactly 0 goes to + (mergekit), see ``engine.methods.gta.combine``;
    - ``normalize=False`` gives the disjoint sum instead of the mean (mergekit's switch);
    - ``lambda`` scales the merged task vector (the paper's λ), default 1.
    """
    check_scope(params, ctx)
    return gta_merge(inputs, params, trim(trim_keepers(inputs, params, ctx)), elect_sign=True)


def trim_mask_key(params: dict[str, Any], t: int, ctx: TensorContext) -> Hashable:
    """What model t's trim mask depends on besides τt: its density, and the scope's threshold or tie rule."""
    d = params["density"][t]
    if d >= 1 or d <= 0:
        return ("all" if d >= 1 else "none",)
    if params["scope"] == "model":
        threshold = ctx.stats[t][0]
        return (float(d), "model", None if threshold is None else float(threshold))
    return (float(d), "tensor", params["tie_break"])


def trim_masks(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext, outs: Sequence[torch.Tensor],
               stale: Sequence[bool]) -> None:
    """Write the trim mask (the entries ``trim`` keeps) of every model marked ``stale`` into its bool
    tensor of ``outs``."""
    check_scope(params, ctx)
    keepers = trim_keepers(inputs, params, ctx)
    for delta, keep, out, redo in zip(inputs.deltas, keepers, outs, stale):
        if not redo:
            continue
        if keep is None:
            out.fill_(True)
        elif isinstance(keep, torch.Tensor) and keep.dtype == torch.bool:
            out.copy_(keep.view(out.shape))
        elif isinstance(keep, float) and math.isinf(keep):
            out.fill_(False)
        else:
            torch.ge(delta.abs(), keep, out=out)


def elect_and_mean(deltas: Sequence[torch.Tensor], masks: Sequence[torch.Tensor],
                   params: dict[str, Any]) -> torch.Tensor:
    """The merged task vector τm of TIES from the task vectors and their trim masks (a fresh tensor)."""
    trimmed = [d * m for d, m in zip(deltas, masks)]
    return combine(trimmed, params["weight"], elect_sign=True, normalize=params["normalize"])


def global_top_k(params: dict[str, Any]) -> ModelStatistic | None:
    """For ``scope='model'``: per model, the exact k-th largest |τ_t| over the whole model."""
    if params.get("scope", "tensor") != "model":
        return None

    def ranks(totals: list[int], first: dict[str, Any]) -> list[list[int | None]]:
        return [[top_k_rank(d, n)] for n, d in zip(totals, first["density"])]

    return ExactRanks(lambda inputs, p, ctx: [d.abs() for d in inputs.deltas], ranks, fixed=("density",))


register(MethodSpec(
    name="ties",
    label="TIES-Merging",
    family="ties",
    summary="Trim each task vector to its largest entries, elect a sign per entry, average the agreeing ones.",
    params=(
        WEIGHT,
        density(0.2, "fraction of each task vector's largest-magnitude entries kept (paper default 0.2)"),
        LAMBDA,
        normalize(True, "divide by the summed weights of the agreeing models (disjoint mean); off = disjoint sum"),
        SCOPE,
        TIE_BREAK,
    ),
    merge=ties,
    needs_base=True,
    min_models=1,
    reference="Yadav et al. 2023, TIES-Merging (arXiv:2306.01708); code prateeky2806/ties-merging",
    statistic=global_top_k,
    staged=StagedForm(mask_key=trim_mask_key, masks=trim_masks, combine=elect_and_mean),
))
