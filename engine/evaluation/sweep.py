"""Coefficient sweeps over a recipe: every point of a 1-D or 2-D grid of parameter values, scored
through the evaluation service, with CSV and JSON output."""

from __future__ import annotations

import csv
import io
import itertools
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from engine.errors import EngineInputError
from engine.evaluation.runner import EvalCache
from engine.evaluation.service import EvaluationService
from engine.graph import Recipe
from engine.graph.param_path import ParamPath
from engine.jsonfiles import strict
from engine.runtime import CancelToken
from engine.runtime.progress import ProgressCallback


def parse_sweep_param(text: str) -> tuple[ParamPath, float, float, int]:
    """``NODE.PARAM=START:STOP:STEPS`` (``NODE.PARAM:MODEL`` for one model's value) → a sweep axis."""
    path, eq, spec = text.partition("=")
    try:
        start, stop, steps = spec.split(":")
        axis = (ParamPath.parse(path), float(start), float(stop), int(steps))
    except ValueError:
        raise EngineInputError(f"bad sweep parameter {text!r}; expected NODE.PARAM=START:STOP:STEPS, "
                               "e.g. merge.lambda=0:1:11") from None
    if not eq or axis[0].node is None or axis[3] < 1:
        raise EngineInputError(f"bad sweep parameter {text!r}; expected NODE.PARAM=START:STOP:STEPS with STEPS ≥ 1")
    return axis


def _grid_values(start: float, stop: float, steps: int) -> list[float]:
    return [round(float(v), 6) for v in np.linspace(start, stop, steps)] if steps > 1 else [float(start)]


def sweep(recipe: Recipe, params: Sequence[tuple[ParamPath | str, float, float, int]], *, nodes: Sequence[str] | None = None,
          device: str = "auto", split: str | None = None, quick: int | None = None,
          progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
          cache: EvalCache | None = None) -> dict[str, Any]:
    """Evaluate the recipe at every point of a grid over ``params`` = [(``NODE.PARAM``, start, stop, steps)].

    Returns ``{"axes": [{"param", "values"}], "points": [{"values": {param: v}, "runs": [...]}],
    "references": [...]}``; points are in row-major order (the last axis fastest). Runs of models the
    swept nodes do not reach (the base, the experts) appear once under ``references``.
    """
    if not 1 <= len(params) <= 2:
        raise EngineInputError("a sweep takes one or two parameters")
    paths = [p if isinstance(p, ParamPath) else ParamPath.parse(p) for p, *_ in params]
    for path in paths:
        if path.node is None:
            raise EngineInputError(f"sweep parameter '{path}' names no node (write NODE.{path.local})")
        recipe.node(path.node)
    axes = [{"param": str(path), "values": _grid_values(a, b, n)} for path, (_, a, b, n) in zip(paths, params)]
    swept = {path.node for path in paths}
    affected = swept | {n for n in recipe.nodes if swept & set(recipe.upstream(n))}
    service = EvaluationService(device=device, cache=cache)
    cancel = cancel or CancelToken()
    points, references = [], None
    for values in itertools.product(*(ax["values"] for ax in axes)):
        cancel.raise_if_cancelled()
        point = recipe.copy()
        for path, v in zip(paths, values):
            path.apply(point, v)
        result = service.evaluate(point, nodes=nodes, split=split, quick=quick, progress=progress, cancel=cancel)
        if references is None:
            references = [r for r in result["runs"] if r["recipe_node"] not in affected]
        points.append({"values": {ax["param"]: v for ax, v in zip(axes, values)},
                       "runs": [r for r in result["runs"] if r["recipe_node"] in affected]})
    return {"axes": axes, "points": points, "references": references or []}


CSV_FIRST = ("accuracy", "normalized_accuracy", "normalized_score", "loss", "entropy", "accuracy_stderr")


def csv_metrics(result: dict[str, Any]) -> list[str]:
    """The sweep's metric columns: every numeric metric any task or average holds (perplexity, exact match…),
    the usual ones first."""
    seen: dict[str, None] = {}
    for point in result["points"]:
        for run in point["runs"]:
            for row in (*run["tasks"].values(), run["average"]):
                seen.update((k, None) for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
    return [m for m in CSV_FIRST if m in seen] + [m for m in seen if m not in CSV_FIRST]


def sweep_csv(result: dict[str, Any]) -> str:
    """The sweep as CSV: one row per (point, run, task), plus an ``average`` row per (point, run); an empty
    cell is a metric that task does not have."""
    params = [ax["param"] for ax in result["axes"]]
    metrics = csv_metrics(result)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*params, "run", "task", *metrics])
    for point in result["points"]:
        values = [point["values"][p] for p in params]
        for run in point["runs"]:
            for task, row in run["tasks"].items():
                writer.writerow([*values, run["name"], task, *(_cell(row.get(m)) for m in metrics)])
            writer.writerow([*values, run["name"], "average", *(_cell(run["average"].get(m)) for m in metrics)])
    return buf.getvalue()


def _cell(value: Any) -> str:
    return "" if not isinstance(value, (int, float)) or value != value else f"{value:.6g}"


def write_results(result: dict[str, Any], path: str | Path) -> Path:
    """Write evaluation or sweep results as strict JSON (``.json``: a metric that has no value is null, never
    NaN) or, for sweeps, CSV (``.csv``)."""
    p = Path(path)
    if p.suffix.lower() == ".csv":
        if "points" not in result:
            raise EngineInputError("CSV output is for sweeps; write evaluation results as .json")
        text = sweep_csv(result)
    else:
        text = json.dumps(strict(result), indent=1, allow_nan=False)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(p)
    return p
