"""Results history records: the JSON the project file keeps, and how the views read them.

A *run* record (``"kind": "run"``) is one evaluated merge::

    {"kind": "run", "id": 3, "time": "2025-05-01T12:00:00", "source": "live" | "run",
     "node": "merge", "method": "ties", "params": {...merge node params...}, "recipe": {...whole recipe...},
     "split": "test", "full": true, "examples": {"digits": 1000, ...}, "pinned": true (on one run at most),
     "tasks": {"python": {"primary": "perplexity", "perplexity": 171.4, "accuracy": 0.06, …,
                          "metrics": {"perplexity": {"value": 171.4, "higher_is_better": false}, …},
                          "normalized_score": 0.72, "normalized_accuracy": 0.55, "expert_score": 123.9}, ...},
     "average": {"accuracy": 0.83, ...},
     "references": {"base": {"python": 196.0, ...}, "experts": {"python": 123.9, ...}},
     "generations": [...] (the generation preview's completions of this merge, when it ran)}

Each task row names its headline metric (``primary``: accuracy for a classifier, perplexity for text
perplexity…) and every metric's direction (``metrics``); the references are each task's primary metric
for the base and the task's expert. A record written before tasks named a primary metric reads as
accuracy. Values of different metrics are never averaged: the views average ``normalized_score`` (1.0 =
as good as the expert, higher always better; ``mean_normalized``).

A *sweep* record (``"kind": "sweep"``) holds ``engine.live.SweepResult.to_json()`` under ``"sweep"``
plus ``id``, ``time``, ``node``, ``method`` and ``recipe``. ``restore`` data is the record's recipe and
params. Nothing here imports Qt.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import time
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from engine.errors import EngineInputError
from engine.evaluation.metrics import higher_is_better as declared_direction
from engine.evaluation.metrics import normalized_score
from engine.graph.node_kinds import NodeKind, node_kind
from engine.graph.param_path import ParamPath
from engine.live import LiveReport, SweepResult
from engine.methods import get_method

PARAM_SYMBOLS = {"lambda": "λ", "density": "density", "weight": "w", "normalize": "norm", "seed": "seed"}
PRIMARY, NORMALIZED = "primary", "normalized_score"  # the metric choices that mean "each task's own" / "vs expert"
AVERAGE = "average"  # a sweep series: the mean normalized score over the tasks
FRACTIONS = {"accuracy", "normalized_accuracy", "normalized_score", "accuracy_norm", "exact_match", "contains",
             "regex_match"}  # metrics that are proportions (drawn and printed as percents)


def now() -> str:
    """The current local time as the records write it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def next_id(records: Sequence[Mapping[str, Any]]) -> int:
    """The id the next record of ``records`` gets."""
    return max((int(r.get("id", 0)) for r in records), default=0) + 1


def method_label(name: str) -> str:
    """A method's display name (the name itself for a method this build does not know)."""
    try:
        return get_method(name).label
    except EngineInputError:
        return name


def run_record(report: LiveReport, *, recipe: Mapping[str, Any], node_id: str, split: str, source: str,
               record_id: int) -> dict[str, Any]:
    """A run record from a live report (quick or full)."""
    params = dict(report.params)
    return {"kind": "run", "id": record_id, "time": now(), "source": source, "node": node_id,
            "method": params.get("method", ""), "params": params, "recipe": dict(recipe), "split": split,
            "full": report.full, "examples": dict(report.examples),
            "tasks": {t: dict(row) for t, row in report.tasks.items()}, "average": dict(report.average),
            "references": {k: dict(v) for k, v in report.references.items()}}


def _kind(run: Mapping[str, Any]) -> NodeKind | None:
    """The kind of node an evaluated run came from (None for a type this build does not know)."""
    try:
        return node_kind(run.get("type"))
    except EngineInputError:
        return None


def evaluation_records(result: Mapping[str, Any], recipe: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Run records (ids still to assign) from ``evaluate_recipe``'s output: one per merged model scored,
    with the base and the experts that the same Evaluate node scored as its references (each task's
    primary metric)."""
    records = []
    by_node: dict[str, list[Mapping[str, Any]]] = {}
    for run in result.get("runs", []):
        by_node.setdefault(run.get("evaluate_node", ""), []).append(run)
    nodes = {n["id"]: n for n in recipe.get("nodes", [])}
    for evaluated in by_node.values():
        experts = {t: row.get("expert_score", row.get("expert_accuracy")) for run in evaluated
                   for t, row in run["tasks"].items()}
        refs: dict[str, dict[str, float | None]] = {"experts": experts}
        bases = [r for r in evaluated if _kind(r) is not None and _kind(r).source and r.get("name") == "base"]
        if bases:
            refs["base"] = {t: row.get(row.get("primary", "accuracy")) for t, row in bases[0]["tasks"].items()}
        for run in evaluated:
            if _kind(run) is None or not _kind(run).method_param:  # only merges are runs; the rest are references
                continue
            params = dict(nodes.get(run["recipe_node"], {}).get("params", {}))
            records.append({"kind": "run", "time": now(), "source": "run", "node": run["recipe_node"],
                            "method": params.get("method", run.get("method", "")), "params": params,
                            "recipe": dict(recipe), "split": run.get("split", "test"), "full": True,
                            "examples": {t: row.get("n") for t, row in run["tasks"].items()},
                            "tasks": {t: dict(row) for t, row in run["tasks"].items()},
                            "average": dict(run.get("average", {})), "references": refs})
    return records


def sweep_record(result: SweepResult, *, recipe: Mapping[str, Any], node_id: str, record_id: int) -> dict[str, Any]:
    """A sweep record of a finished sweep of ``node_id``."""
    return {"kind": "sweep", "id": record_id, "time": now(), "node": node_id,
            "method": result.params.get("method", ""), "recipe": dict(recipe), "sweep": result.to_json()}


def runs(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The run records among ``records``."""
    return [r for r in records if r.get("kind", "run") == "run"]


def sweeps(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The sweep records among ``records``."""
    return [r for r in records if r.get("kind") == "sweep"]


def pinned(records: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The run pinned as the reference (None when none is)."""
    return next((r for r in runs(records) if r.get("pinned")), None)


def task_names(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every task any run was scored on, in order of first appearance."""
    out: list[str] = []
    for r in records:
        for t in r.get("tasks", {}):
            if t not in out:
                out.append(t)
    return out


def _short(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}:{_short(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return str(value)


def params_summary(params: Mapping[str, Any]) -> str:
    """``λ 0.3 · density 0.2`` — the parameters set on the node, method excluded."""
    parts = [f"{PARAM_SYMBOLS.get(k, k)} {_short(v)}" for k, v in params.items() if k != "method"]
    return " · ".join(parts) or "defaults"


def same_run(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two run records describe the same merge evaluated the same way."""
    return (a.get("node") == b.get("node") and a.get("full") == b.get("full") and a.get("split") == b.get("split")
            and json.dumps(a.get("params"), sort_keys=True) == json.dumps(b.get("params"), sort_keys=True))


# ---- metrics and their directions ----------------------------------------------------------------
def _number(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def primary(record: Mapping[str, Any], task: str) -> str:
    """The headline metric of ``task`` in ``record`` (accuracy for a record older than primary metrics)."""
    return record.get("tasks", {}).get(task, {}).get("primary", "accuracy")


def resolve(record: Mapping[str, Any], task: str, name: str) -> str:
    """The metric a choice names for one task: ``primary`` is the task's own headline metric."""
    return primary(record, task) if name == PRIMARY else name


def higher_is_better(record: Mapping[str, Any], task: str, name: str) -> bool:
    """The direction of metric ``name`` of ``task`` as the record states it (else as the engine declares it)."""
    name = resolve(record, task, name)
    block = record.get("tasks", {}).get(task, {}).get("metrics", {}).get(name)
    return bool(block["higher_is_better"]) if block and "higher_is_better" in block else declared_direction(name)


def metric(record: Mapping[str, Any], task: str, name: str = PRIMARY) -> float | None:
    """A task's value of metric ``name`` (``primary``: its headline metric); None when it has none. A
    record older than ``normalized_score`` reads its normalized accuracy there (the same number when the
    primary metric is accuracy)."""
    name = resolve(record, task, name)
    row = record.get("tasks", {}).get(task, {})
    value = _number(row.get(name, row.get("metrics", {}).get(name, {}).get("value")))
    if value is None and name == NORMALIZED and "normalized_score" not in row and primary(record, task) == "accuracy":
        value = _number(row.get("normalized_accuracy"))
    return value


def stderr(record: Mapping[str, Any], task: str, name: str = PRIMARY) -> float | None:
    """The standard error of a task's metric ``name``, where the scoring gave one: the metric's own, or
    for the normalized score the primary metric's carried through the division by the expert's score."""
    name = resolve(record, task, name)
    row = record.get("tasks", {}).get(task, {})
    if name == NORMALIZED:
        main = primary(record, task)
        err, value, expert = stderr(record, task, main), metric(record, task, main), _number(row.get("expert_score"))
        if expert is None and main == "accuracy":
            expert = _number(row.get("expert_accuracy"))
        if err is None or value is None or not expert or not value:
            return None
        return err / expert if higher_is_better(record, task, main) else expert * err / value ** 2
    return _number(row.get("metrics", {}).get(name, {}).get("stderr", row.get(f"{name}_stderr")))


def task_metrics(records: Iterable[Mapping[str, Any]], name: str = PRIMARY) -> dict[str, tuple[str, bool]]:
    """Each task's metric for choice ``name`` and its direction, as the newest record scoring it says."""
    out: dict[str, tuple[str, bool]] = {}
    for r in records:
        for t in r.get("tasks", {}):
            out[t] = (resolve(r, t, name), higher_is_better(r, t, name))
    return out


def mean_normalized(record: Mapping[str, Any]) -> tuple[float | None, int]:
    """The mean normalized score over the tasks that have one, and how many do (tasks of different
    metrics are averaged only this way)."""
    values = [v for t in record.get("tasks", {}) if (v := metric(record, t, NORMALIZED)) is not None]
    return (sum(values) / len(values) if values else None), len(values)


def common_average(record: Mapping[str, Any]) -> tuple[str, float] | None:
    """(metric, mean) of the tasks' primary metric when every task has the same one (a raw average makes
    sense then); None when the tasks use different metrics or some have no value."""
    tasks = list(record.get("tasks", {}))
    names = {primary(record, t) for t in tasks}
    if len(names) != 1:
        return None
    values = [metric(record, t) for t in tasks]
    if not values or any(v is None for v in values):
        return None
    return names.pop(), sum(values) / len(values)


def metric_label(name: str, higher: bool) -> str:
    """``perplexity ↓`` / ``accuracy ↑``: a metric's name with the direction that is better."""
    return f"{name.replace('_', ' ')} {'↑' if higher else '↓'}"


def format_value(name: str, value: float | None, err: float | None = None) -> str:
    """A metric's value as the tables print it: proportions in percent points, others to 4 digits."""
    if value is None:
        return "–"
    if name in FRACTIONS:
        return f"{value * 100:.1f}" + (f" ±{err * 100:.1f}" if err is not None else "")
    return f"{value:.4g}" + (f" ±{err:.2g}" if err is not None else "")


def best(values: Sequence[float | None], higher: bool) -> int | None:
    """The index of the best of ``values`` in direction ``higher`` (None when none is a number)."""
    scored = [(v if higher else -v, i) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    return max(scored)[1] if scored else None


def references(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """The newest full-split base/expert primary metrics found in the records (quick ones as a fallback)."""
    out: dict[str, dict[str, float]] = {}
    for r in sorted(runs(records), key=lambda r: (bool(r.get("full")), r.get("id", 0))):
        for role, per in r.get("references", {}).items():
            out.setdefault(role, {}).update({t: v for t, v in per.items() if v is not None})
    return out


def normalized_references(refs: Mapping[str, Mapping[str, float]],
                          metrics: Mapping[str, tuple[str, bool]]) -> dict[str, dict[str, float]]:
    """The references on the normalized-score scale: the experts at 1, the base against them."""
    experts = refs.get("experts", {})
    base = {t: normalized_score(v, experts.get(t), metrics[t][1] if t in metrics else True)
            for t, v in refs.get("base", {}).items()}
    return {"experts": {t: 1.0 for t, v in experts.items() if v},
            "base": {t: v for t, v in base.items() if v is not None}}


# ---- sweeps --------------------------------------------------------------------------------------
def sweep_metric(result: SweepResult, series: str) -> tuple[str, bool]:
    """The metric a sweep series shows and its direction: ``average`` is the mean normalized score,
    a task its primary metric."""
    if series == AVERAGE:
        return NORMALIZED, True
    name = result.primary_of(series)
    return name, result.higher_is_better(name)


def sweep_grid(result: SweepResult, series: str, name: str | None = None) -> np.ndarray:
    """A sweep series over the grid: a task's metric ``name`` (default its primary one), or for
    ``average`` the mean normalized score over the tasks that have one at each point."""
    if series != AVERAGE:
        name = name or result.primary_of(series)
        return result.grids.get(name, {}).get(series, np.full(result.shape, np.nan))
    per = [_normalized_grid(result, t) for t in result.tasks]
    stack = np.array([g for g in per if np.isfinite(g).any()])
    if not len(stack):
        return np.full(result.shape, np.nan)
    count = np.isfinite(stack).sum(axis=0)
    return np.where(count > 0, np.nansum(stack, axis=0) / np.maximum(count, 1), np.nan)


def _normalized_grid(result: SweepResult, task: str) -> np.ndarray:
    grid = result.grids.get(NORMALIZED, {}).get(task)
    if grid is None and result.primary_of(task) == "accuracy":  # a sweep stored before normalized scores
        grid = result.grids.get("normalized_accuracy", {}).get(task)
    return grid if grid is not None else np.full(result.shape, np.nan)


def best_point(result: SweepResult, series: str) -> tuple[tuple[int, ...], float] | None:
    """The grid index of the best value of a sweep series (by its metric's direction) and the value."""
    grid = sweep_grid(result, series)
    if not np.isfinite(grid).any():
        return None
    _name, higher = sweep_metric(result, series)
    flat = int(np.nanargmax(grid) if higher else np.nanargmin(grid))
    index = tuple(int(i) for i in np.unravel_index(flat, grid.shape))
    return index, float(grid[index])


def params_at(result: SweepResult, index: Sequence[int], keys: Sequence[str]) -> dict[str, Any]:
    """The merge parameters of one sweep point: the sweep's parameters with each axis at its value there
    (``keys``: the merge's model inputs, for per-model paths). An integer parameter gets an int."""
    spec = get_method(result.params.get("method", ""))
    params = dict(result.params)
    for axis, i in zip(result.axes, index):
        path = ParamPath.parse(axis.path)
        value: Any = axis.values[i]
        if path.declared(spec.params, spec.label).type == "int":
            value = int(round(value))
        params = path.set(spec.params, params, keys, value, spec.label)
    return params


# ---- export --------------------------------------------------------------------------------------
def to_csv(records: Sequence[Mapping[str, Any]]) -> str:
    """The run history as CSV: one row per run, each task's primary metric and normalized score, the mean
    normalized score."""
    rs = runs(records)
    tasks = task_names(rs)
    names = task_metrics(rs)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "time", "source", "node", "method", "params", "split", "full",
                *[f"{t} {names[t][0]}" for t in tasks], *[f"{t} normalized" for t in tasks], "average normalized"])
    for r in rs:
        values = [metric(r, t) for t in tasks] + [metric(r, t, NORMALIZED) for t in tasks]
        w.writerow([r.get("id"), r.get("time"), r.get("source"), r.get("node"), r.get("method"),
                    json.dumps(r.get("params", {}), sort_keys=True), r.get("split"), r.get("full"),
                    *["" if v is None else f"{v:.6g}" for v in values + [mean_normalized(r)[0]]]])
    return buf.getvalue()


def sweep_csv(result: SweepResult) -> str:
    """A sweep as CSV: one row per grid point, the swept values, each task's primary metric, the mean
    normalized score."""
    buf = io.StringIO()
    w = csv.writer(buf)
    tasks = result.tasks
    w.writerow([a.path for a in result.axes] + [f"{t} {result.primary_of(t)}" for t in tasks]
               + ["average normalized"])
    grids = [sweep_grid(result, t) for t in tasks] + [sweep_grid(result, AVERAGE)]
    for index in itertools.product(*(range(len(a.values)) for a in result.axes)):
        values = [a.values[i] for a, i in zip(result.axes, index)]
        w.writerow(values + ["" if not np.isfinite(g[index]) else f"{float(g[index]):.6g}" for g in grids])
    return buf.getvalue()
