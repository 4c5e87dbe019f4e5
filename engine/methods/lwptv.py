"""LwPTV (layer-wise pruning of task vectors): revert a task's redundant layers to θ0, then merge.

Zhang et al. 2025, "Merging Smarter, Generalizing Better: Enhancing Model Merging on OOD Data"
(arXiv:2506.09093, "seed 004"). A plug-in over any method that merges task vectors.

The paper builds a per-layer saliency score of each task vector and, where it marks a layer redundant,
keeps the pre-trained weights for that task. Neither the paper's text nor its code was available to this
implementation, so the saliency is a documented reconstruction, chosen to need no data and one cheap
statistics pass:

    s_t(u) = ‖τ_t(u)‖₂ / ‖θ0(u)‖₂          (relative size of task t's update of unit u)
    ŝ_t(u) = s_t(u) / max_v s_t(v)          (in [0, 1] per task)
    unit u is reverted to θ0 for task t when ŝ_t(u) < threshold.

A unit is a numbered layer (all its tensors together); each tensor outside the numbered layers is a
unit of its own. A unit whose base weights are all zero is always kept (and left out of the maximum).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from engine.errors import EngineInputError
from engine.methods.base import MergeInputs, MethodSpec, Param, TensorContext
from engine.methods.registry import get_method, register
from engine.methods.statistics import ChainedStatistic, GroupSums

THRESHOLD = Param("threshold", "float", 0.1,
                  "a task's layer reverts to the base when its relative update is below this fraction of the "
                  "task's most-changed layer", min=0.0, max=1.0)


def unit_of(ctx: TensorContext) -> Any:
    """The pruning unit of a tensor: its numbered layer, or the tensor itself."""
    return ("layer", ctx.layer) if ctx.layer is not None else ("tensor", ctx.name)


def unit_norms(inputs: MergeInputs, params: dict, ctx: TensorContext) -> dict[Any, torch.Tensor]:
    """``[‖θ0‖², ‖τ_1‖², …, ‖τ_T‖²]`` of this tensor, keyed by its unit."""
    parts = [inputs.base] + list(inputs.deltas)
    return {unit_of(ctx): torch.stack([torch.linalg.vector_norm(p).double().square() for p in parts])}


def kept_tasks(sums: dict[Any, torch.Tensor], unit: Any, threshold: float) -> list[bool]:
    """For each task: whether ``unit`` is salient enough to keep the task's update there."""
    keys = list(sums)
    table = torch.stack([sums[k] for k in keys])
    base, tasks = table[:, 0].sqrt(), table[:, 1:].sqrt()
    finite = base > 0
    saliency = tasks / base.clamp(min=1e-300).unsqueeze(1)
    top = torch.where(finite.unsqueeze(1), saliency, torch.zeros_like(saliency)).max(dim=0).values
    i = keys.index(unit)
    if not finite[i]:
        return [True] * tasks.shape[1]
    return [bool(top[t] <= 0 or saliency[i, t] >= threshold * top[t]) for t in range(tasks.shape[1])]


def with_lwptv(inner: MethodSpec, name: str, label: str) -> MethodSpec:
    """An LwPTV variant of ``inner``: its task vectors, minus the redundant layers, merged by ``inner``."""
    def pruned(inputs: MergeInputs, params: dict, ctx: TensorContext, sums: dict) -> MergeInputs:
        keep = kept_tasks(sums, unit_of(ctx), float(params["threshold"]))
        deltas = [d if k else torch.zeros_like(d) for d, k in zip(inputs.deltas, keep)]
        return MergeInputs(inputs.base, inputs.keys, deltas=deltas)

    def merge(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
        if ctx.stats is None:
            raise EngineInputError("LwPTV needs its statistics pass, which did not run", tensor=ctx.name)
        sums, *inner_stats = ctx.stats
        inner_ctx = replace(ctx, stats=inner_stats[0] if inner_stats else None)
        return inner.merge(pruned(inputs, params, ctx, sums), params, inner_ctx)

    def statistic(params: dict[str, Any]) -> ChainedStatistic:
        norms = GroupSums(unit_norms)
        inner_stat = inner.statistic(params) if inner.statistic else None
        if inner_stat is None:
            return ChainedStatistic([norms])

        def prepare(stage: int, inputs: MergeInputs, p: dict, ctx: TensorContext):
            return (inputs, p, ctx) if stage == 0 else (pruned(inputs, p, ctx, norms.result()), p, ctx)
        return ChainedStatistic([norms, inner_stat], prepare)

    merge.__doc__ = (f"LwPTV over {inner.label}: each task's redundant layers revert to θ0 (its task vector is\n"
                     f"zeroed there), then {inner.label} merges what is left with its own parameters.\n"
                     "See the module docstring for the saliency score (a reconstruction; the paper's exact\n"
                     "score was not available).")
    return replace(
        inner, name=name, label=label, family="lwptv", aliases=(),
        linear=None, contextual_linear=None, staged=None,  # its own merge: no inherited incremental form
        summary=f"{inner.label} after reverting each task's redundant layers to the base (LwPTV).",
        params=inner.params + (THRESHOLD,), merge=merge, statistic=statistic,
        reference="Zhang et al. 2025, Merging Smarter, Generalizing Better (arXiv:2506.09093)",
    )


register(with_lwptv(get_method("task_arithmetic"), "lwptv_ta", "LwPTV (Task Arithmetic)"))
register(with_lwptv(get_method("ties"), "lwptv_ties", "LwPTV (TIES)"))
