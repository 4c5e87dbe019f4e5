"""TIES-Merging split into its cacheable intermediates, for live tuning.

``engine.methods.ties`` computes ``θ0 + λ · disjoint_mean(trim(τt))`` in one call. Here the same
result is produced in stages whose outputs are kept between slider moves:

1. ``trim_masks``: which entries of each τt survive the trim (``|τt| ≥ threshold_t``, the thresholds
   from ``ties.trim_thresholds`` itself). A mask depends on τt and its density only (plus the
   whole-model threshold with ``scope='model'``), so it is reused when the weights, ``normalize`` or λ
   move, and only the models whose density changed are re-trimmed;
2. ``elect_and_mean``: the elected signs and the (weighted) disjoint mean of the masked vectors through
   ``gta.combine`` — the merged task vector τm, reused when only λ moves.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from engine.methods import MergeInputs, TensorContext
from engine.methods.gta import combine
from engine.methods.ties import trim_thresholds


def mask_key(density: float, scope: str, threshold: float | None) -> tuple:
    """What a trim mask depends on besides the task vector itself."""
    if density >= 1 or density <= 0:
        return ("all" if density >= 1 else "none",)
    return (float(density), scope, threshold if scope == "model" else None)


def trim_masks(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext, outs: Sequence[torch.Tensor],
               stale: Sequence[bool]) -> None:
    """Write the trim mask of every model marked ``stale`` into its bool tensor of ``outs``."""
    thresholds = trim_thresholds(inputs, params, ctx)
    for delta, threshold, out, redo in zip(inputs.deltas, thresholds, outs, stale):
        if not redo:
            continue
        if threshold is None:
            out.fill_(True)
        elif isinstance(threshold, float) and math.isinf(threshold):
            out.fill_(False)
        else:
            torch.ge(delta.abs(), threshold, out=out)


def elect_and_mean(deltas: Sequence[torch.Tensor], masks: Sequence[torch.Tensor],
                   params: dict[str, Any]) -> torch.Tensor:
    """The merged task vector τm of TIES from the task vectors and their trim masks (fresh tensor)."""
    trimmed = [d * m for d, m in zip(deltas, masks)]
    return combine(trimmed, params["weight"], elect_sign=True, normalize=params["normalize"])
