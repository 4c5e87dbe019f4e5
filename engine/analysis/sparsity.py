"""What sparsifying merges see: sign conflicts, magnitude distributions, TALL mask overlap.

- ``SignConflicts``: per layer, the fraction of entries where the task vectors disagree in sign (some
  τt > 0 and some τt < 0), before and after TIES's trim (the top-``density`` magnitudes of each task
  vector per tensor, with the thresholds ``engine.methods.ties`` itself computes). TIES's claim is that
  trimming removes most conflicts; its sign election then resolves the rest.
- ``MagnitudeHistograms``: per task a histogram of log10|τt| over the whole model, with the
  model-wide cut where TIES would keep the top ``density`` and the band Model Breadcrumbs keeps
  (dropping the top ``gamma`` outliers and the smallest entries). Cuts are read off the histogram, so
  they are exact to a bin (1/20 of a decade); the methods themselves cut per tensor by default.
- ``MaskOverlap``: TALL masks ``m_t = |τt| ≥ λ·|τMTL − τt|`` (τMTL = Στt) and, per entry, how many tasks
  use it — 0 is "catastrophic" (no task needs it), 1 is "selfish" (one task only); Consensus merging
  keeps the entries used by at least k tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.analysis.source import TensorDeltas, layer_label
from engine.methods import MergeInputs
from engine.methods.ties import trim_thresholds

LOG_LO, LOG_HI, BINS_PER_DECADE = -12.0, 4.0, 20


@dataclass
class SignConflictTable:
    """Per layer: fraction of entries with a sign conflict, before (``raw``) and after the TIES trim."""

    layers: list[str]
    raw: np.ndarray
    trimmed: np.ndarray
    density: float


def _conflicts(stack: torch.Tensor) -> int:
    return int(((stack > 0).any(0) & (stack < 0).any(0)).sum())


class SignConflicts:
    """Sign conflicts per layer before and after trimming each task vector to ``density``."""

    def __init__(self, density: float = 0.2):
        self.density = density
        self._counts: dict[str, np.ndarray] = {}  # layer → [entries, raw conflicts, trimmed conflicts]

    def observe(self, td: TensorDeltas) -> None:
        stack = torch.stack(td.deltas)
        inputs = MergeInputs(td.base, [str(i) for i in range(len(td.deltas))], deltas=td.deltas)
        thresholds = trim_thresholds(inputs, {"density": [self.density] * len(td.deltas), "scope": "tensor"}, None)
        trimmed = torch.stack([d if thr is None else d * (d.abs() >= thr) for d, thr in zip(td.deltas, thresholds)])
        row = np.array([td.base.numel(), _conflicts(stack), _conflicts(trimmed)], dtype=float)
        key = layer_label(td.layer)
        self._counts[key] = self._counts.get(key, 0.0) + row

    def result(self) -> SignConflictTable:
        layers = sorted(self._counts, key=lambda k: (k == "other", int(k) if k.isdigit() else 0))
        rows = np.array([self._counts[k] for k in layers]).reshape(-1, 3)
        n = np.maximum(rows[:, 0], 1)
        return SignConflictTable(layers, rows[:, 1] / n, rows[:, 2] / n, self.density)


@dataclass
class MagnitudeHistogram:
    """``counts[t]`` over ``edges`` (log10 |τ|), ``zeros[t]`` exact zeros; per-task cuts as magnitudes."""

    edges: np.ndarray
    counts: np.ndarray
    zeros: np.ndarray
    ties_cut: np.ndarray
    band_low: np.ndarray
    band_high: np.ndarray
    density: float
    gamma: float
    band_density: float


def _top_fraction_cut(counts: np.ndarray, edges: np.ndarray, total: float, fraction: float) -> float:
    """The magnitude above which ``fraction`` of ``total`` entries lie (log-linear inside a bin)."""
    if fraction <= 0:
        return float(10 ** edges[-1])
    want = fraction * total
    above = np.cumsum(counts[::-1])[::-1]  # entries in bin i and above
    idx = np.nonzero(above >= want)[0]
    if idx.size == 0:
        return 0.0
    i = idx[-1]
    inside = counts[i]
    over = above[i] - inside
    frac = 0.0 if inside == 0 else (want - over) / inside
    return float(10 ** (edges[i + 1] - frac * (edges[i + 1] - edges[i])))


class MagnitudeHistograms:
    """Histograms of log10|τt| per task with the TIES (``density``) and Breadcrumbs (``band_density``,
    ``gamma``) cuts."""

    def __init__(self, density: float = 0.2, band_density: float = 0.9, gamma: float = 0.01):
        self.density, self.band_density, self.gamma = density, band_density, gamma
        self.edges = np.linspace(LOG_LO, LOG_HI, int((LOG_HI - LOG_LO) * BINS_PER_DECADE) + 1)
        self._counts: np.ndarray | None = None
        self._zeros: np.ndarray | None = None

    def observe(self, td: TensorDeltas) -> None:
        t = len(td.deltas)
        if self._counts is None:
            self._counts = np.zeros((t, len(self.edges) - 1))
            self._zeros = np.zeros(t)
        for i, d in enumerate(td.deltas):
            mag = d.abs().reshape(-1)
            nz = mag[mag > 0]
            self._zeros[i] += mag.numel() - nz.numel()
            logs = nz.double().log10().clamp_(LOG_LO, LOG_HI - 1e-9)
            self._counts[i] += torch.histc(logs, bins=len(self.edges) - 1, min=LOG_LO, max=LOG_HI).cpu().numpy()

    def result(self) -> MagnitudeHistogram:
        counts = self._counts if self._counts is not None else np.zeros((0, len(self.edges) - 1))
        zeros = self._zeros if self._zeros is not None else np.zeros(0)
        totals = counts.sum(1) + zeros
        cut = lambda f: np.array([_top_fraction_cut(c, self.edges, n, f) for c, n in zip(counts, totals)])  # noqa: E731
        # Breadcrumbs keeps the entries ranked (from the top) between gamma and gamma + density
        return MagnitudeHistogram(self.edges, counts, zeros, cut(self.density),
                                  cut(min(1.0, self.band_density + self.gamma)), cut(self.gamma),
                                  self.density, self.gamma, self.band_density)


@dataclass
class MaskOverlapTable:
    """``counts[k]``: entries used by exactly k tasks' TALL masks; ``per_task[t]``: mask density of task t."""

    counts: np.ndarray
    per_task: np.ndarray
    lam: float

    @property
    def catastrophic(self) -> int:
        return int(self.counts[0]) if self.counts.size else 0

    @property
    def selfish(self) -> int:
        return int(self.counts[1]) if self.counts.size > 1 else 0


class MaskOverlap:
    """TALL masks with threshold ``lam`` and how many tasks share each entry."""

    def __init__(self, lam: float = 0.4):
        self.lam = lam
        self._counts: np.ndarray | None = None
        self._active: np.ndarray | None = None
        self._total = 0

    def observe(self, td: TensorDeltas) -> None:
        stack = torch.stack([d.reshape(-1) for d in td.deltas])
        mtl = stack.sum(0)
        masks = stack.abs() >= self.lam * (mtl.unsqueeze(0) - stack).abs()
        counts = torch.bincount(masks.sum(0), minlength=len(td.deltas) + 1).cpu().numpy()
        active = masks.sum(1).cpu().numpy()
        self._counts = counts if self._counts is None else self._counts + counts
        self._active = active if self._active is None else self._active + active
        self._total += stack.shape[1]

    def result(self) -> MaskOverlapTable:
        counts = self._counts if self._counts is not None else np.zeros(1, dtype=np.int64)
        active = self._active if self._active is not None else np.zeros(0)
        return MaskOverlapTable(counts, active / max(self._total, 1), self.lam)
