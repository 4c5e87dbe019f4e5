"""Model Breadcrumbs: drop each task vector's largest outliers and its negligible entries, then combine.

Davari & Belilovsky 2024, "Model Breadcrumbs: Scaling Multi-Task Model Merging with Sparse Masks"
(arXiv:2312.06795); mergekit ``breadcrumbs`` / ``breadcrumbs_ties``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from engine.methods.base import MergeInputs, MethodSpec, ModelStatistic, Param, TensorContext
from engine.methods.gta import check_scope, gta_merge, magnitudes_at
from engine.methods.params import LAMBDA, SCOPE, TIE_BREAK, WEIGHT, density, normalize, rescale
from engine.methods.registry import register
from engine.methods.sparsify import band_bounds, sorted_window_mask
from engine.methods.statistics import ExactRanks
from engine.methods.streaming import select_ranks


def band_ranks(n: int, density_value: float, gamma: float) -> list[int | None]:
    """Ascending ranks of the lower bound (kept: ≥) and upper bound (dropped: ≥) of the kept window."""
    start, stop = band_bounds(n, density_value, gamma)
    return [start + 1 if 0 < start < n else None, stop + 1 if stop < n else None]


def band_limits(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> list[Any]:
    """Per model ``(low, high)``: keep ``low ≤ |τ| < high`` (None = open side; (inf, inf) keeps nothing).

    With ``tie_break='mergekit'``, per tensor, a model whose magnitudes tie at a cut (common in fp16/bf16
    weights) gets instead a boolean mask of exactly the window's entries, as mergekit orders them
    (see ``exact_band``).
    """
    n = inputs.base.numel()
    if params["scope"] == "model":
        found = [tuple(row) for row in ctx.stats]
    else:
        ranks = [band_ranks(n, d, g) for d, g in zip(params["density"], params["gamma"])]
        found = [tuple(row) for row in select_ranks(magnitudes_at(inputs), n, ranks, inputs.base.device)]
    out: list[Any] = []
    magnitudes: list[torch.Tensor] = []
    for t, ((low, high), d, g) in enumerate(zip(found, params["density"], params["gamma"])):
        start, stop = band_bounds(n, d, g)
        if stop <= start:
            out.append((math.inf, math.inf))
        elif params["tie_break"] == "mergekit" and params["scope"] != "model" and (low is not None or high is not None):
            magnitudes = magnitudes or magnitudes_at(inputs)(slice(0, n))
            out.append(exact_band(magnitudes[t], low, high, start, stop))
        else:
            out.append((low, high))
    return out


def exact_band(mag: torch.Tensor, low: Any, high: Any, start: int, stop: int) -> Any:
    """``(low, high)`` when exactly ``start`` magnitudes lie below ``low`` and ``stop`` below ``high``.

    Otherwise (equal magnitudes of the flat |τ| ``mag`` straddle a cut) the ``sorted_window_mask`` of
    ascending ranks ``[start, stop)``, as mergekit's ``magnitude_outliers`` keeps them. The sort is paid
    only when ties straddle a cut.
    """
    low_clean = low is None or int((mag < low).sum()) == start
    high_clean = high is None or int((mag < high).sum()) == stop
    if low_clean and high_clean:
        return (low, high)
    return sorted_window_mask(mag, start, stop, descending=False)


def keep_band(limits: list[Any]):
    """The ``sparsify`` step of ``gta_merge`` keeping each model's magnitude window (or exact mask)."""
    def apply(t: int, sl: slice, d: torch.Tensor) -> None:
        if isinstance(limits[t], torch.Tensor):
            d.mul_(limits[t][sl])
            return
        low, high = limits[t]
        if low is None and high is None:
            return
        mag = d.abs()
        if low is not None:
            d.mul_(mag.clone().ge_(low) if high is not None else mag.ge_(low))
        if high is not None:
            d.mul_(mag.lt_(high))
    return apply


def _breadcrumbs(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext, elect_sign: bool) -> torch.Tensor:
    check_scope(params, ctx)
    return gta_merge(inputs, params, keep_band(band_limits(inputs, params, ctx)), elect_sign=elect_sign,
                     rescale_l1=params["rescale"] == "l1")


def breadcrumbs(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """θ = θ0 + λ Σ w_t (m_t ⊙ τ_t), m_t keeping the magnitudes between the bottom cut and the top outliers.

    Choices the paper left open, and what this implementation does (mergekit's parameterisation):
    - ``gamma`` is the fraction of largest magnitudes removed (the paper's top β) and ``density`` the
      fraction kept, so the bottom ``1 − density − gamma`` are removed (the paper's γ); when
      ``density + gamma > 1`` fewer outliers are removed so that ``density`` is kept (mergekit's rule);
    - the cut points are exact order statistics of |τ_t| per tensor (the paper masks per layer), or per
      model over the whole model with ``scope='model'``; equal magnitudes at a cut are all kept at the
      bottom cut and all removed at the top one, or, with ``tie_break='mergekit'`` (per tensor), split as
      mergekit's sort splits them so that exactly ``floor(density·n)`` entries are kept;
    - ``normalize`` divides by Σ w_t; ``rescale='l1'`` restores each task vector's L1 norm (both off by
      default, as in mergekit); ``lambda`` scales the sum (the paper's α).
    """
    return _breadcrumbs(inputs, params, ctx, elect_sign=False)


def breadcrumbs_ties(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """Breadcrumbs masks, then TIES's sign election and disjoint combination (mergekit's variant).

    As ``breadcrumbs``; ``normalize`` divides by the summed weights of the agreeing models.
    """
    return _breadcrumbs(inputs, params, ctx, elect_sign=True)


def global_band(params: dict[str, Any]) -> ModelStatistic | None:
    """For ``scope='model'``: per model, the two cut magnitudes over the whole model."""
    if params.get("scope", "tensor") != "model":
        return None

    def ranks(totals: list[int], first: dict[str, Any]) -> list[list[int | None]]:
        return [band_ranks(n, d, g) for n, d, g in zip(totals, first["density"], first["gamma"])]

    return ExactRanks(lambda inputs, p, ctx: [d.abs() for d in inputs.deltas], ranks, fixed=("density", "gamma"))


def _params(normalize_help: str) -> tuple:
    return (
        WEIGHT,
        density(0.9, "fraction of each task vector's entries kept (after removing the top outliers)"),
        Param("gamma", "float", 0.01, "fraction of largest-magnitude entries removed as outliers",
              min=0.0, max=1.0, per_model=True, layerwise=True),
        LAMBDA,
        normalize(False, normalize_help),
        rescale("none", ("none", "l1")),
        SCOPE,
        TIE_BREAK,
    )


register(MethodSpec(
    name="breadcrumbs",
    label="Model Breadcrumbs",
    family="breadcrumbs",
    summary="Mask each task vector's outliers and negligible entries, then add them up.",
    params=_params("divide by the sum of the weights"),
    merge=breadcrumbs,
    needs_base=True,
    reference="Davari & Belilovsky 2024, Model Breadcrumbs (arXiv:2312.06795); mergekit breadcrumbs",
    statistic=global_band,
))

register(MethodSpec(
    name="breadcrumbs_ties",
    label="Model Breadcrumbs + TIES",
    family="breadcrumbs",
    summary="Breadcrumbs masks combined with TIES's sign election and disjoint mean.",
    params=_params("divide by the summed weights of the agreeing models (disjoint mean); off = disjoint sum"),
    merge=breadcrumbs_ties,
    needs_base=True,
    reference="Davari & Belilovsky 2024 (arXiv:2312.06795); mergekit breadcrumbs_ties",
    statistic=global_band,
))
