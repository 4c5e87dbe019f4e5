"""Parameter sweeps on a live session: per-task metrics over a 1-D line or a 2-D grid of values.

Every grid point is an incremental update of the resident merge (a λ move is one multiply-add), then an
evaluation — the full split by default, or the quick subset. The result holds, per task, arrays shaped
like the grid (``[n0]`` or ``[n0, n1]``) of every metric it reports (accuracy, perplexity…, the normalized
accuracy and score), each task's primary metric and every metric's direction, plus the across-task
averages, and serialises to JSON for the results history.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from engine.errors import EngineInputError
from engine.evaluation.metrics import higher_is_better
from engine.graph.param_path import ParamPath
from engine.live.session import LiveSession
from engine.methods import get_method
from engine.runtime import CancelToken, ProgressTracker
from engine.runtime.progress import ProgressCallback

METRICS = ("accuracy", "normalized_accuracy", "normalized_score")  # gridded for every task (NaN where absent)


@dataclass(frozen=True)
class Axis:
    """One swept parameter path (``lambda``, ``weight:digits``) and its values."""

    path: str
    values: tuple[float, ...]

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "values": list(self.values)}


def linspace(lo: float, hi: float, steps: int) -> tuple[float, ...]:
    """``steps`` evenly spaced values from ``lo`` to ``hi`` inclusive, rounded to 6 decimals."""
    if steps < 2:
        return (float(lo),)
    return tuple(round(float(v), 6) for v in np.linspace(lo, hi, steps))


@dataclass
class SweepResult:
    """Metrics over the grid: ``grids[metric][task]`` and ``average[metric]`` are arrays shaped like the grid;
    ``primary[task]`` names each task's headline metric and ``directions[metric]`` whether higher is better."""

    axes: list[Axis]
    params: dict[str, Any]
    full: bool
    grids: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    average: dict[str, np.ndarray] = field(default_factory=dict)
    references: dict[str, dict[str, float | None]] = field(default_factory=dict)
    primary: dict[str, str] = field(default_factory=dict)
    directions: dict[str, bool] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(a.values) for a in self.axes)

    @property
    def tasks(self) -> list[str]:
        return list(self.primary) or list(self.grids.get("accuracy", {}))

    def primary_of(self, task: str) -> str:
        """The headline metric of ``task`` (accuracy for a sweep stored before tasks declared one)."""
        return self.primary.get(task, "accuracy")

    def higher_is_better(self, metric: str) -> bool:
        """The direction of ``metric`` as the sweep recorded it (else as ``METRICS`` declares it)."""
        return self.directions.get(metric, higher_is_better(metric))

    def to_json(self) -> dict[str, Any]:
        return {"axes": [a.to_json() for a in self.axes], "params": self.params, "full": self.full,
                "grids": {m: {t: g.tolist() for t, g in per.items()} for m, per in self.grids.items()},
                "average": {m: g.tolist() for m, g in self.average.items()}, "references": self.references,
                "primary": dict(self.primary), "directions": dict(self.directions)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "SweepResult":
        axes = [Axis(a["path"], tuple(float(v) for v in a["values"])) for a in data["axes"]]
        return cls(axes, dict(data.get("params", {})), bool(data.get("full", True)),
                   {m: {t: np.asarray(g, dtype=float) for t, g in per.items()} for m, per in data["grids"].items()},
                   {m: np.asarray(g, dtype=float) for m, g in data.get("average", {}).items()},
                   dict(data.get("references", {})), dict(data.get("primary", {})),
                   {m: bool(v) for m, v in data.get("directions", {}).items()})


def sweep(session: LiveSession, params: Mapping[str, Any], axes: Sequence[Axis], *, full: bool = True,
          cancel: CancelToken | None = None, progress: ProgressCallback | None = None) -> SweepResult:
    """Evaluate ``params`` with each combination of the axes' values (first axis = rows)."""
    if not 1 <= len(axes) <= 2:
        raise EngineInputError("a sweep takes one or two parameters")
    if any(not a.values for a in axes):
        raise EngineInputError("every swept parameter needs at least one value")
    shape = tuple(len(a.values) for a in axes)
    spec = get_method(params.get("method", session.spec.name))
    result = SweepResult(list(axes), dict(params), full)
    tracker = ProgressTracker(progress, "sweeping", int(np.prod(shape)))
    for index in itertools.product(*(range(n) for n in shape)):
        if cancel is not None:
            cancel.raise_if_cancelled()
        point = dict(params)
        for axis, i in zip(axes, index):
            point = ParamPath.parse(axis.path).set(spec.params, point, session.keys, axis.values[i], spec.label)
        session.update(point, cancel=cancel)
        report = session.evaluate(full=full, cancel=cancel)
        for task, row in report.tasks.items():
            result.primary[task] = row.get("primary", "accuracy")
            block = row.get("metrics", {})
            result.directions.update({m: bool(v["higher_is_better"]) for m, v in block.items()})
            for metric in dict.fromkeys((*METRICS, *block)):
                grid = result.grids.setdefault(metric, {}).setdefault(task, np.full(shape, np.nan))
                grid[index] = _number(row.get(metric, block.get(metric, {}).get("value")))
        for metric in METRICS:
            result.average.setdefault(metric, np.full(shape, np.nan))[index] = _number(report.average.get(metric))
        tracker.advance(message=", ".join(f"{a.path}={a.values[i]:g}" for a, i in zip(axes, index)))
    result.references = session.references(full=full, cancel=cancel)
    return result


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else float("nan")
