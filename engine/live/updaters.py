"""Incremental recomputation of a resident merge after a parameter change.

Each updater keeps, per tensor span, what the output currently holds, compares it with what the new
parameters ask for (resolved per tensor, so per-layer schedules invalidate only the layers they
change) and does the least work that brings the output there:

- ``LinearUpdater`` (methods declaring a linear form, ``MethodSpec.linear_form()``: a linear
  combination of the inputs whose coefficients may depend on the tensor's layer, whole-model
  statistics or the inputs): the output is ``c0·θ0 + Σ a_t τ_t``; a change of coefficients is one
  multiply-add ``out += Δa·τ`` per changed term over each run of neighbouring tensors that changed alike.
- ``ScaledUpdater`` (methods declaring the shared ``lambda`` parameter of ``engine.methods.params``,
  or another ``MethodSpec.scale``, whose contract is ``θ = θ0 + λ·τm``): τm is cached per tensor; a λ
  move is one multiply-add ``out += Δλ·τm``; any other change recomputes τm of just the tensors whose
  resolved values changed.
- ``StagedUpdater`` (methods declaring a ``StagedForm``): a ScaledUpdater that also caches the
  per-model masks of the form's first stage, keyed by what each mask depends on, so a parameter the
  masks ignore (TIES: a weight, ``normalize``) only re-runs the second stage, and a change the masks
  see (a density) recomputes only the masks whose key changed.
- ``RecomputeUpdater``: any other method; recomputes the tensors whose resolved parameters changed.

The choice follows the method's declarations only (``updater_class``); no method is known by name.
Incremental steps accumulate rounding; every ``REFRESH_EVERY`` steps a tensor is recomputed exactly.
All writes go span by span, and the per-span record is updated after each write, so a cancelled
update leaves a consistent state that the next update continues from.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from typing import Any, Sequence

import torch

from engine.live.resident import Resident
from engine.methods import MethodSpec, TensorContext
from engine.methods.params import LAMBDA
from engine.methods.statistics import run_statistic
from engine.runtime import CancelToken

REFRESH_EVERY = 32

Resolved = Sequence[dict[str, Any]]


@dataclass
class UpdateStats:
    """What one update did: tensors moved by a multiply-add, tensors recomputed, flat operations issued."""

    tensors: int
    scaled: int = 0
    recomputed: int = 0
    ops: int = 0
    seconds: float = 0.0

    @property
    def kind(self) -> str:
        """``unchanged``, ``incremental`` (multiply-adds only), ``partial`` or ``full`` recompute."""
        if not self.scaled and not self.recomputed:
            return "unchanged"
        if not self.recomputed:
            return "incremental"
        return "full" if self.recomputed == self.tensors else "partial"


def _runs(keys: Sequence[Any]) -> list[tuple[int, int]]:
    """Maximal ranges ``[i, j)`` of consecutive equal entries of ``keys``."""
    out, start = [], 0
    for i in range(1, len(keys) + 1):
        if i == len(keys) or keys[i] != keys[start]:
            out.append((start, i))
            start = i
    return out


class Updater:
    """Shared bookkeeping: the resident buffers, the method, contexts and whole-model statistics."""

    @staticmethod
    def cache_bytes_per_entry(models: int) -> float:
        """Memory this updater adds per model entry (caches beyond the resident buffers)."""
        return 0.0

    def __init__(self, res: Resident, spec: MethodSpec):
        self.res = res
        self.spec = spec
        self.device = res.out.device
        self._stats: Any = None
        self._stats_key: str | None = None

    def flat(self, buf: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """The joint span of tensors ``i..j-1`` of a flat buffer."""
        return buf[self.res.spans[i].start:self.res.spans[j - 1].stop]

    def context(self, i: int, params: dict[str, Any], stats: Any) -> TensorContext:
        s = self.res.spans[i]
        return TensorContext(s.name, s.layer, self.res.num_layers, self.device, int(params.get("seed", 0) or 0), stats)

    def statistics(self, node_params: dict[str, Any], resolved: Resolved, ignore: tuple[str, ...] = ()) -> Any:
        """The method's whole-model statistics for these parameters (cached while the relevant ones hold)."""
        if self.spec.statistic is None:
            return None
        stat = self.spec.statistic({**self.spec.defaults(), **node_params})
        if stat is None:
            return None
        key = json.dumps({k: v for k, v in node_params.items() if k not in ignore}, sort_keys=True, default=str)
        if key != self._stats_key:
            self._stats = run_statistic(stat, [(self.res.merge_inputs(i), p, self.context(i, p, None))
                                               for i, p in enumerate(resolved)])
            self._stats_key = key
        return self._stats

    def apply(self, node_params: dict[str, Any], resolved: Resolved, cancel: CancelToken | None = None) -> UpdateStats:
        raise NotImplementedError


class LinearUpdater(Updater):
    """``out = c0·θ0 + Σ a_t τ_t`` (or ``Σ a_t θ_t`` without a base), moved by multiply-adds.

    A change of one coefficient is one multiply-add with its term. A change of several coefficients in
    fixed proportion — a global λ scaling every task's weight, a per-layer λ schedule — is one
    multiply-add with a cached *direction* ``V = Σ d_t τ_t`` (d the proportions; built, per tensor, the
    first time the sliders move that way), so it costs the same whatever the number of models.
    """

    @staticmethod
    def cache_bytes_per_entry(models: int) -> float:
        return 4.0  # the direction buffer

    def __init__(self, res: Resident, spec: MethodSpec):
        super().__init__(res, spec)
        self.form = spec.linear_form()
        self.current: list[tuple[float, ...] | None] = [None] * len(res.spans)
        self.steps = [0] * len(res.spans)
        self.terms = [res.anchor, *res.vectors]
        self.direction: tuple[float, ...] | None = None
        self.direction_buf: torch.Tensor | None = None
        self.direction_ready = [False] * len(res.spans)

    def coefficients(self, i: int, params: dict[str, Any], stats: Any) -> tuple[float, ...]:
        if self.spec.linear is not None:  # the parameters alone decide: no context to build
            a, b = self.spec.linear(params, len(self.res.keys))
        else:
            a, b = self.form(params, len(self.res.keys), self.context(i, params, stats), self.res.merge_inputs(i))
        c0 = b + sum(a) if self.res.anchor is not None else 0.0
        return (float(c0), *(float(x) for x in a))

    def _scale_along_direction(self, delta: list[float]) -> float:
        """``s`` with ``delta = s·direction``, adopting ``delta``'s direction when it is a new one."""
        d = self.direction
        if d is not None:
            s = sum(x * y for x, y in zip(delta, d)) / sum(y * y for y in d)
            if max(abs(x - s * y) for x, y in zip(delta, d)) <= 1e-9 * max(abs(x) for x in delta):
                return s
        peak = max(delta, key=abs)
        self.direction = tuple(x / peak for x in delta)
        self.direction_ready = [False] * len(self.res.spans)
        return peak

    def _direction(self, i: int, j: int, stats: UpdateStats) -> torch.Tensor:
        """``V = Σ d_t·term_t`` over spans ``i..j-1``, built where it is not yet."""
        if self.direction_buf is None:
            self.direction_buf = torch.empty_like(self.res.out)
        v = self.flat(self.direction_buf, i, j)
        if not all(self.direction_ready[i:j]):
            v.zero_()
            for buf, c in zip(self.terms, self.direction):
                if buf is not None and c != 0.0:
                    v.add_(self.flat(buf, i, j), alpha=c)
                    stats.ops += 1
            self.direction_ready[i:j] = [True] * (j - i)
        return v

    def _move(self, i: int, j: int, cur: tuple[float, ...], new: tuple[float, ...], stats: UpdateStats) -> None:
        out = self.flat(self.res.out, i, j)
        delta = [0.0 if buf is None else c_new - c_old for buf, c_old, c_new in zip(self.terms, cur, new)]
        changed = [k for k, x in enumerate(delta) if x != 0.0]
        if len(changed) == 1:
            out.add_(self.flat(self.terms[changed[0]], i, j), alpha=delta[changed[0]])
        else:
            s = self._scale_along_direction(delta)
            out.add_(self._direction(i, j, stats), alpha=s)
        stats.ops += 1

    def _recompute(self, i: int, j: int, new: tuple[float, ...], stats: UpdateStats) -> None:
        out = self.flat(self.res.out, i, j)
        out.zero_() if self.terms[0] is None else torch.mul(self.flat(self.terms[0], i, j), new[0], out=out)
        for buf, c in zip(self.terms[1:], new[1:]):
            if c != 0.0:
                out.add_(self.flat(buf, i, j), alpha=c)
                stats.ops += 1

    def apply(self, node_params: dict[str, Any], resolved: Resolved, cancel: CancelToken | None = None) -> UpdateStats:
        start = time.perf_counter()
        stats = UpdateStats(len(resolved))
        st = self.statistics(node_params, resolved)
        targets = [self.coefficients(i, p, st) for i, p in enumerate(resolved)]
        exact = [c is None or n >= REFRESH_EVERY for c, n in zip(self.current, self.steps)]
        for i, j in _runs(list(zip(self.current, targets, exact))):
            if cancel is not None:
                cancel.raise_if_cancelled()
            cur, new = self.current[i], targets[i]
            if cur == new and not exact[i]:
                continue
            if exact[i]:
                self._recompute(i, j, new, stats)
                stats.recomputed += j - i
            else:
                self._move(i, j, cur, new, stats)
                stats.scaled += j - i
            for k in range(i, j):
                self.current[k] = new
                self.steps[k] = 0 if exact[k] else self.steps[k] + 1
        stats.seconds = time.perf_counter() - start
        return stats


class ScaledUpdater(Updater):
    """``out = θ0 + λ·τm`` with τm cached per tensor, λ the method's scale (see the module docstring)."""

    @staticmethod
    def cache_bytes_per_entry(models: int) -> float:
        return 4.0

    def __init__(self, res: Resident, spec: MethodSpec):
        super().__init__(res, spec)
        self.scale = scale_parameter(spec)
        self.core = torch.zeros_like(res.out)
        self.core_key: list[Any] = [None] * len(res.spans)
        self.lam: list[float | None] = [None] * len(res.spans)
        self.steps = [0] * len(res.spans)

    def compute_core(self, i: int, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
        """τm of span ``i``: the method at λ = 1, minus θ0."""
        merged = self.spec.merge(self.res.merge_inputs(i), {**params, self.scale: 1.0}, ctx)
        return merged - self.res.view(self.res.anchor, i)

    def apply(self, node_params: dict[str, Any], resolved: Resolved, cancel: CancelToken | None = None) -> UpdateStats:
        start = time.perf_counter()
        stats = UpdateStats(len(resolved))
        st = self.statistics(node_params, resolved, ignore=(self.scale,))
        keys = [(json.dumps({k: v for k, v in p.items() if k != self.scale}, sort_keys=True, default=str), id(st))
                for p in resolved]
        lams = [float(p[self.scale]) for p in resolved]
        for i, p in enumerate(resolved):  # tensors whose τm is stale: recompute τm and the output
            if keys[i] == self.core_key[i]:
                continue
            if cancel is not None:
                cancel.raise_if_cancelled()
            core = self.res.view(self.core, i)
            core.copy_(self.compute_core(i, p, self.context(i, p, st)))
            torch.add(self.res.view(self.res.anchor, i), core, alpha=lams[i], out=self.res.view(self.res.out, i))
            self.core_key[i], self.lam[i], self.steps[i] = keys[i], lams[i], 0
            stats.recomputed += 1
            stats.ops += 1
        exact = [n >= REFRESH_EVERY for n in self.steps]
        for i, j in _runs(list(zip(self.lam, lams, exact))):  # λ moves: one multiply-add per run
            if self.lam[i] == lams[i]:
                continue
            if cancel is not None:
                cancel.raise_if_cancelled()
            out, core = self.flat(self.res.out, i, j), self.flat(self.core, i, j)
            if exact[i]:
                torch.add(self.flat(self.res.anchor, i, j), core, alpha=lams[i], out=out)
            else:
                out.add_(core, alpha=lams[i] - self.lam[i])
            for k in range(i, j):
                self.lam[k] = lams[k]
                self.steps[k] = 0 if exact[k] else self.steps[k] + 1
            stats.scaled += j - i
            stats.ops += 1
        stats.seconds = time.perf_counter() - start
        return stats


class StagedUpdater(ScaledUpdater):
    """ScaledUpdater for a method's ``StagedForm``: τm is built from per-model masks cached per tensor."""

    def __init__(self, res: Resident, spec: MethodSpec):
        super().__init__(res, spec)
        self.stages = spec.staged
        self.masks = [torch.zeros(res.numel, dtype=torch.bool, device=self.device) for _ in res.keys]
        self.mask_keys: list[list[Any]] = [[None] * len(res.spans) for _ in res.keys]  # StagedForm.mask_key
        self.memos: list[dict[str, Any]] = [{} for _ in res.spans]  # TensorContext.memo, per tensor
        self.masks_computed = 0

    @staticmethod
    def cache_bytes_per_entry(models: int) -> float:
        return 4.0 + models + 4.0 * models  # τm, the masks, and what the method memoizes (sorted magnitudes)

    def context(self, i: int, params: dict[str, Any], stats: Any) -> TensorContext:
        return replace(super().context(i, params, stats), memo=self.memos[i])

    def compute_core(self, i: int, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
        inputs = self.res.merge_inputs(i)
        keys = [self.stages.mask_key(params, t, ctx) for t in range(len(self.res.keys))]
        stale = [self.mask_keys[t][i] != key for t, key in enumerate(keys)]
        masks = [self.res.view(m, i) for m in self.masks]
        if any(stale):
            self.stages.masks(inputs, params, ctx, masks, stale)
            for t, key in enumerate(keys):
                self.mask_keys[t][i] = key
            self.masks_computed += sum(stale)
        return self.stages.combine(inputs.deltas, masks, params)


class RecomputeUpdater(Updater):
    """Any method: recompute the tensors whose resolved parameters (or statistics) changed."""

    def __init__(self, res: Resident, spec: MethodSpec):
        super().__init__(res, spec)
        self.current: list[Any] = [None] * len(res.spans)

    def apply(self, node_params: dict[str, Any], resolved: Resolved, cancel: CancelToken | None = None) -> UpdateStats:
        start = time.perf_counter()
        stats = UpdateStats(len(resolved))
        st = self.statistics(node_params, resolved)
        for i, p in enumerate(resolved):
            key = (json.dumps(p, sort_keys=True, default=str), id(st))
            if key == self.current[i]:
                continue
            if cancel is not None:
                cancel.raise_if_cancelled()
            self.res.view(self.res.out, i).copy_(self.spec.merge(self.res.merge_inputs(i), p, self.context(i, p, st)))
            self.current[i] = key
            stats.recomputed += 1
            stats.ops += 1
        stats.seconds = time.perf_counter() - start
        return stats


def scale_parameter(spec: MethodSpec) -> str | None:
    """The parameter that scales the method's merged task vector (``θ0 + s·τm``): its declared ``scale``,
    else ``lambda`` when it uses the shared λ, else None."""
    if spec.scale is not None:
        return spec.scale
    return "lambda" if any(p is LAMBDA for p in spec.params) else None


def updater_class(spec: MethodSpec, has_anchor: bool) -> type[Updater]:
    """The cheapest correct updater for a method (see the module docstring)."""
    if spec.linear_form() is not None:
        return LinearUpdater
    if spec.staged is not None and has_anchor:
        return StagedUpdater
    if has_anchor and spec.needs_base and scale_parameter(spec) is not None:
        return ScaledUpdater
    return RecomputeUpdater
