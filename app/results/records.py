"""Results history records: the JSON the project file keeps, and how the views read them.

A *run* record (``"kind": "run"``) is one evaluated merge::

    {"kind": "run", "id": 3, "time": "2025-05-01T12:00:00", "source": "live" | "graph" | "sweep",
     "node": "merge", "method": "ties", "params": {...merge node params...}, "recipe": {...whole recipe...},
     "split": "test", "full": true, "examples": {"digits": 1000, ...},
     "tasks": {"digits": {"accuracy": 0.91, "accuracy_stderr": 0.009, "normalized_accuracy": 0.95,
                          "expert_accuracy": 0.96, "loss": 0.3}, ...},
     "average": {"accuracy": 0.83, "normalized_accuracy": 0.90, ...},
     "references": {"base": {"digits": 0.4, ...}, "experts": {"digits": 0.96, ...}}}

A *sweep* record (``"kind": "sweep"``) holds ``engine.live.SweepResult.to_json()`` under ``"sweep"``
plus ``id``, ``time``, ``node``, ``method`` and ``recipe``. ``restore`` data is the record's recipe and
params. Nothing here imports Qt.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import time
from typing import Any, Iterable, Mapping, Sequence

from engine.errors import EngineInputError
from engine.graph.node_kinds import NodeKind, node_kind
from engine.live import LiveReport, SweepResult
from engine.methods import get_method

PARAM_SYMBOLS = {"lambda": "λ", "density": "density", "weight": "w", "normalize": "norm", "seed": "seed"}


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def next_id(records: Sequence[Mapping[str, Any]]) -> int:
    return max((int(r.get("id", 0)) for r in records), default=0) + 1


def method_label(name: str) -> str:
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
    with the base and the experts that the same Evaluate node scored as its references."""
    records = []
    by_node: dict[str, list[Mapping[str, Any]]] = {}
    for run in result.get("runs", []):
        by_node.setdefault(run.get("evaluate_node", ""), []).append(run)
    nodes = {n["id"]: n for n in recipe.get("nodes", [])}
    for evaluated in by_node.values():
        experts = {t: row.get("expert_accuracy") for run in evaluated for t, row in run["tasks"].items()}
        refs: dict[str, dict[str, float | None]] = {"experts": experts}
        bases = [r for r in evaluated if _kind(r) is not None and _kind(r).source and r.get("name") == "base"]
        if bases:
            refs["base"] = {t: row["accuracy"] for t, row in bases[0]["tasks"].items()}
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
    return {"kind": "sweep", "id": record_id, "time": now(), "node": node_id,
            "method": result.params.get("method", ""), "recipe": dict(recipe), "sweep": result.to_json()}


def runs(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in records if r.get("kind", "run") == "run"]


def sweeps(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in records if r.get("kind") == "sweep"]


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


def metric(record: Mapping[str, Any], task: str, name: str = "accuracy") -> float | None:
    value = record.get("tasks", {}).get(task, {}).get(name)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def references(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """The newest full-split base/expert accuracies found in the records (quick ones as a fallback)."""
    out: dict[str, dict[str, float]] = {}
    for r in sorted(runs(records), key=lambda r: (bool(r.get("full")), r.get("id", 0))):
        for role, per in r.get("references", {}).items():
            out.setdefault(role, {}).update({t: v for t, v in per.items() if v is not None})
    return out


def to_csv(records: Sequence[Mapping[str, Any]]) -> str:
    """The run history as CSV: one row per run, accuracy and normalized accuracy per task, averages."""
    rs = runs(records)
    tasks = task_names(rs)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "time", "source", "node", "method", "params", "split", "full",
                *[f"{t} accuracy" for t in tasks], *[f"{t} normalized" for t in tasks],
                "average accuracy", "average normalized"])
    for r in rs:
        acc = [metric(r, t) for t in tasks]
        norm = [metric(r, t, "normalized_accuracy") for t in tasks]
        avg = r.get("average", {})
        w.writerow([r.get("id"), r.get("time"), r.get("source"), r.get("node"), r.get("method"),
                    json.dumps(r.get("params", {}), sort_keys=True), r.get("split"), r.get("full"),
                    *["" if v is None else f"{v:.6f}" for v in acc + norm],
                    *["" if avg.get(k) is None else f"{avg[k]:.6f}" for k in ("accuracy", "normalized_accuracy")]])
    return buf.getvalue()


def sweep_csv(result: SweepResult) -> str:
    """A sweep as CSV: one row per grid point, the swept values then each task's accuracy."""
    buf = io.StringIO()
    w = csv.writer(buf)
    tasks = result.tasks
    w.writerow([a.path for a in result.axes] + [f"{t} accuracy" for t in tasks] + ["average accuracy",
                                                                                  "average normalized"])
    for index in itertools.product(*(range(len(a.values)) for a in result.axes)):
        values = [a.values[i] for a, i in zip(result.axes, index)]
        row = [float(result.grids["accuracy"][t][index]) for t in tasks]
        avg = [float(result.average[m][index]) for m in ("accuracy", "normalized_accuracy") if m in result.average]
        w.writerow(values + [f"{v:.6f}" for v in row + avg])
    return buf.getvalue()
