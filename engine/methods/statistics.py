"""Whole-model statistics for ``scope='model'`` methods: exact streaming order statistics and sums.

Every class here implements the ``ModelStatistic`` protocol of ``engine.methods.base``: the executor
streams each tensor's inputs through ``observe`` once per pass, calls ``finish_pass`` after each pass and
hands ``result()`` to the method as ``ctx.stats``. Memory never grows with the model: order statistics
keep 65,536-bin histograms, sums keep a few numbers per group.

Exact k-th values use a two-pass radix selection on an order-preserving 32-bit key of each float32
value: pass 1 histograms the high 16 key bits, which locates every requested rank in one coarse bin;
pass 2 histograms the low 16 bits of the values in those bins, which pins the rank to one exact value.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from engine.errors import EngineInputError
from engine.methods.base import MergeInputs, ModelStatistic, TensorContext

_BINS = 1 << 16
ValuesFn = Callable[[MergeInputs, dict, TensorContext], Sequence[torch.Tensor]]
RanksFn = Callable[[list[int], dict], Sequence[Sequence[int | None]]]


def ordered_keys(values: torch.Tensor) -> torch.Tensor:
    """int32 keys whose signed order equals the float32 order of ``values`` (−0 sorts just below +0)."""
    bits = values.detach().to(torch.float32).contiguous().view(torch.int32)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def key_to_float(key: int) -> float:
    """Inverse of ``ordered_keys`` for one key."""
    k = torch.tensor([key], dtype=torch.int32)
    return float((k ^ ((k >> 31) & 0x7FFFFFFF)).view(torch.float32).item())


class RadixSelect:
    """Exact k-th smallest values of several value streams ("groups"), from two streaming passes."""

    def __init__(self, groups: int):
        self.groups = groups
        self._coarse: list[torch.Tensor | None] = [None] * groups
        self._fine: dict[tuple[int, int], torch.Tensor] = {}
        self._wanted: list[list[tuple[int, int] | None]] = []

    def add_coarse(self, group: int, values: torch.Tensor) -> None:
        """Pass 1: count ``values`` by the high 16 bits of their keys."""
        hist = torch.bincount(((ordered_keys(values).reshape(-1) >> 16) + (_BINS // 2)), minlength=_BINS)
        self._coarse[group] = hist if self._coarse[group] is None else self._coarse[group] + hist

    def totals(self) -> list[int]:
        """How many values each group has seen in pass 1."""
        return [0 if h is None else int(h.sum()) for h in self._coarse]

    def plan(self, ranks: Sequence[Sequence[int | None]]) -> None:
        """Between the passes: locate each 1-based rank (None = not wanted) of each group in its bin."""
        self._wanted = []
        for group, group_ranks in enumerate(ranks):
            hist = self._coarse[group]
            cum = None if hist is None else torch.cumsum(hist.cpu(), 0)
            located: list[tuple[int, int] | None] = []
            for rank in group_ranks:
                if rank is None:
                    located.append(None)
                    continue
                if cum is None or not 1 <= rank <= int(cum[-1]):
                    raise ValueError(f"rank {rank} outside the {0 if cum is None else int(cum[-1])} values seen")
                b = int(torch.searchsorted(cum, torch.tensor(rank)))
                below = int(cum[b - 1]) if b > 0 else 0
                located.append((b, rank - below))
                self._fine.setdefault((group, b), torch.zeros(_BINS, dtype=torch.int64))
            self._wanted.append(located)

    def add_fine(self, group: int, values: torch.Tensor) -> None:
        """Pass 2: count, by their low 16 key bits, the values that fall in a wanted coarse bin."""
        bins = [b for (g, b) in self._fine if g == group]
        if not bins:
            return
        keys = ordered_keys(values).reshape(-1)
        high = (keys >> 16) + (_BINS // 2)
        for b in bins:
            low = keys[high == b] & 0xFFFF
            self._fine[(group, b)] += torch.bincount(low, minlength=_BINS).cpu()

    def values(self) -> list[list[float | None]]:
        """After pass 2: the exact value at every planned rank, per group."""
        out = []
        for group, located in enumerate(self._wanted):
            row = []
            for item in located:
                if item is None:
                    row.append(None)
                    continue
                b, rank = item
                cum = torch.cumsum(self._fine[(group, b)], 0)
                low = int(torch.searchsorted(cum, torch.tensor(rank)))
                row.append(key_to_float(((b - _BINS // 2) << 16) | low))
            out.append(row)
        return out


class ExactRanks:
    """ModelStatistic: exact order statistics of per-group value streams over the whole model (2 passes).

    ``values(inputs, params, ctx)`` gives one tensor per group for a tensor name (e.g. ``|τ_t|`` per
    model); ``ranks(totals, params)`` turns the groups' total counts into the 1-based ranks wanted (None
    for "no bound"), reading ``params`` of the first tensor. Parameters named in ``fixed`` must not vary
    between tensors (a global threshold needs one density per model). ``result()`` is a list per group
    of the values at those ranks.
    """

    passes = 2

    def __init__(self, values: ValuesFn, ranks: RanksFn, fixed: Sequence[str] = ()):
        self._select: RadixSelect | None = None
        self._values = values
        self._ranks = ranks
        self._fixed = tuple(fixed)
        self._params: dict | None = None
        self._result: list[list[float | None]] | None = None

    def observe(self, pass_index: int, inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> None:
        if pass_index == 0:
            self._check_fixed(params, ctx)
        streams = self._values(inputs, params, ctx)
        if self._select is None:
            self._select = RadixSelect(len(streams))
        for group, vals in enumerate(streams):
            if pass_index == 0:
                self._select.add_coarse(group, vals)
            else:
                self._select.add_fine(group, vals)

    def _check_fixed(self, params: dict[str, Any], ctx: TensorContext) -> None:
        if self._params is None:
            self._params = params
            return
        for name in self._fixed:
            if params[name] != self._params[name]:
                raise EngineInputError(
                    f"scope 'model' needs one '{name}' per model for the whole model, but it varies by tensor "
                    f"({self._params[name]} vs {params[name]}); use scope 'tensor' for per-layer values",
                    tensor=ctx.name)

    def finish_pass(self, pass_index: int) -> None:
        if pass_index == 0:
            if self._params is None:
                raise EngineInputError("the whole-model statistics pass saw no tensors")
            self._select.plan(self._ranks(self._select.totals(), self._params))
        else:
            self._result = self._select.values()

    def result(self) -> list[list[float | None]]:
        if self._result is None:
            raise RuntimeError("statistics requested before both passes ran")
        return self._result


class GroupSums:
    """ModelStatistic: one pass summing small per-tensor tensors under keys (norms per model or layer).

    ``contributions(inputs, params, ctx)`` returns ``{key: tensor}``; ``result()`` is ``{key: summed
    tensor on the CPU (float64)}``.
    """

    passes = 1

    def __init__(self, contributions: Callable[[MergeInputs, dict, TensorContext], dict[Any, torch.Tensor]]):
        self._contributions = contributions
        self._sums: dict[Any, torch.Tensor] = {}

    def observe(self, pass_index: int, inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> None:
        for key, value in self._contributions(inputs, params, ctx).items():
            value = value.detach().to("cpu", torch.float64)
            self._sums[key] = self._sums[key] + value if key in self._sums else value

    def finish_pass(self, pass_index: int) -> None:
        """Nothing to do: the sums are complete after the single pass."""

    def result(self) -> dict[Any, torch.Tensor]:
        return self._sums


class ChainedStatistic:
    """Runs statistics one after another; ``result()`` is the tuple of their results.

    A later stage may read an earlier stage's ``result()`` (stages are built together and hold
    references to each other), and ``prepare(stage, inputs, params, ctx)`` may rewrite what a stage sees.
    """

    def __init__(self, stages: Sequence[ModelStatistic],
                 prepare: Callable[[int, MergeInputs, dict, TensorContext], tuple] | None = None):
        self.stages = list(stages)
        self.passes = sum(s.passes for s in self.stages)
        self._prepare = prepare

    def _locate(self, pass_index: int) -> tuple[int, int]:
        for i, stage in enumerate(self.stages):
            if pass_index < stage.passes:
                return i, pass_index
            pass_index -= stage.passes
        raise IndexError(pass_index)

    def observe(self, pass_index: int, inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> None:
        i, local = self._locate(pass_index)
        if self._prepare is not None:
            inputs, params, ctx = self._prepare(i, inputs, params, ctx)
        self.stages[i].observe(local, inputs, params, ctx)

    def finish_pass(self, pass_index: int) -> None:
        i, local = self._locate(pass_index)
        self.stages[i].finish_pass(local)

    def result(self) -> tuple:
        return tuple(s.result() for s in self.stages)


def run_statistic(stat: ModelStatistic, tensors: Sequence[tuple[MergeInputs, dict, TensorContext]]) -> Any:
    """Drive a statistic over an in-memory model (tests, benchmarks, small live sessions)."""
    for p in range(stat.passes):
        for inputs, params, ctx in tensors:
            stat.observe(p, inputs, params, ctx)
        stat.finish_pass(p)
    return stat.result()
