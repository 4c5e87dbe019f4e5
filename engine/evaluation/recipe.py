"""The Evaluate node, recipe evaluation, and coefficient sweeps over a recipe.

An ``evaluate`` node takes any number of models on its ``models`` port and scores each on a task
suite. Parameters: ``suite`` (path of a suite manifest such as the zoo's ``zoo.json``, relative to
the recipe), ``tasks`` (optional: a JSON list of task names or a comma-separated string; all tasks
when absent), ``split`` (``test`` by default), ``batch_size``.

``evaluate_recipe`` computes each connected model in memory with the streaming executor (no disk
round-trip) and returns ``{"runs": [{"name", "recipe_node", "evaluate_node", "tasks": {TASK:
{"accuracy", "normalized_accuracy", "loss", …}}, "average": {…}}]}``. Models are cached by a key of
their subgraph (checkpoint file identities + node types and parameters), so unchanged models — the
base, the experts, a merge whose parameters did not move — are computed and scored once per cache.

``sweep`` varies node parameters over a 1-D or 2-D grid and evaluates every point.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from engine.errors import EngineInputError
from engine.evaluation.runner import EvalCache, Evaluator, checkpoint_key, result_table
from engine.evaluation.suite import load_suite
from engine.graph import GraphRun, NodeType, Port, Recipe, register_node_type, require_valid, topological_order
from engine.graph.nodes import MODEL, RESULTS
from engine.methods.base import Param
from engine.runtime import CancelToken
from engine.runtime.progress import ProgressCallback

SPLIT_CHOICES = ("test", "val", "train")

EVALUATE = register_node_type(NodeType(
    "evaluate", "Evaluate", "Score models on a task suite: accuracy, normalized accuracy, loss, entropy.",
    inputs=(Port("models", (MODEL,), multiple=True, label="models"),), output=RESULTS, sink=True,
    params=(
        Param("suite", "str", "", "task suite manifest (the zoo's zoo.json)"),
        Param("split", "choice", "test", "which split to score", choices=SPLIT_CHOICES),
        Param("batch_size", "int", 1024, "examples per forward pass", min=1, max=65536),
    ),
))


def task_names(value: Any) -> list[str] | None:
    """The ``tasks`` parameter as a list of names (None = every task of the suite)."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()] or None
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise EngineInputError(f"'tasks' must be a list of task names or a comma-separated string, got {value!r}")


def node_key(recipe: Recipe, node_id: str) -> str:
    """Cache key of a node's output: checkpoint file identities plus every upstream type and parameter."""
    def describe(nid: str) -> Any:
        node = recipe.nodes[nid]
        if node.type == "checkpoint":
            return ["checkpoint", checkpoint_key(recipe.resolve_path(node.params.get("path", "")))]
        ports = {}
        for e in recipe.input_edges(nid):
            ports.setdefault(e.port, []).append([e.src, describe(e.src)])
        return [node.type, node.params, ports]

    text = json.dumps(describe(node_id), sort_keys=True, default=str)
    return "recipe:" + hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


class RecipeEvaluator:
    """Evaluates a recipe's Evaluate nodes, keeping suites, data and scores between calls (sweeps)."""

    def __init__(self, *, device: str = "auto", cache: EvalCache | None = None):
        self.device = device
        self.cache = cache if cache is not None else EvalCache()
        self._evaluators: dict[tuple, Evaluator] = {}

    def evaluator(self, recipe: Recipe, node_id: str) -> tuple[Evaluator, str]:
        """The evaluator and split of one Evaluate node."""
        params = recipe.nodes[node_id].params
        if not params.get("suite"):
            raise EngineInputError(f"the Evaluate node '{node_id}' names no task suite ('suite' parameter)")
        suite = recipe.resolve_path(params["suite"])
        names = task_names(params.get("tasks"))
        batch = int(params.get("batch_size", 1024))
        key = (str(suite.resolve()), tuple(names or ()), batch)
        if key not in self._evaluators:
            self._evaluators[key] = Evaluator(load_suite(suite, names), device=self.device, batch_size=batch,
                                              cache=self.cache)
        return self._evaluators[key], str(params.get("split", "test"))

    def run(self, recipe: Recipe, *, nodes: Sequence[str] | None = None, models: Iterable[str] | None = None,
            split: str | None = None, quick: int | None = None, progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None) -> dict[str, Any]:
        """``{"runs": [...]}`` for the Evaluate ``nodes`` (default: all), optionally only ``models`` inputs."""
        require_valid(recipe)
        cancel = cancel or CancelToken()
        evaluate_ids = list(nodes) if nodes else [n for n in topological_order(recipe)
                                                   if recipe.nodes[n].type == "evaluate"]
        if not evaluate_ids:
            raise EngineInputError("the recipe has no Evaluate node")
        only = set(models) if models is not None else None
        runs = []
        graph: GraphRun | None = None
        try:
            for ev_id in evaluate_ids:
                if recipe.nodes[ev_id].type != "evaluate":
                    raise EngineInputError(f"node '{ev_id}' is not an Evaluate node")
                evaluator, node_split = self.evaluator(recipe, ev_id)
                use_split = split or node_split
                experts = evaluator.expert_scores(split=use_split, quick=quick, cancel=cancel, progress=progress)
                for src in recipe.inputs(ev_id, "models"):
                    if only is not None and src not in only:
                        continue
                    key = node_key(recipe, src)
                    scores = _cached(evaluator, key, use_split, quick)
                    if scores is None:
                        if graph is None:
                            graph = GraphRun(recipe, device=evaluator.device, progress=progress, cancel=cancel,
                                             validate=False)
                        state = graph.materialize(src)
                        scores = evaluator.scores(state, split=use_split, quick=quick, model_key=key,
                                                  progress=progress, cancel=cancel)
                        del state
                    node = recipe.nodes[src]
                    runs.append({"name": src, "recipe_node": src, "evaluate_node": ev_id, "type": node.type,
                                 **({"method": node.params.get("method")} if node.type == "merge" else {}),
                                 "split": use_split, "quick_batches": quick, **result_table(scores, experts)})
        finally:
            if graph is not None:
                graph.close()
        return {"runs": runs}


def _cached(evaluator: Evaluator, key: str, split: str, quick: int | None):
    hits = {t.name: evaluator.cache.get((key, t.fingerprint(), split, quick)) for t in evaluator.tasks}
    return None if any(v is None for v in hits.values()) else hits


def evaluate_recipe(recipe: Recipe, *, nodes: Sequence[str] | None = None, device: str = "auto",
                    split: str | None = None, quick: int | None = None, progress: ProgressCallback | None = None,
                    cancel: CancelToken | None = None, cache: EvalCache | None = None) -> dict[str, Any]:
    """Score every model feeding the recipe's Evaluate nodes (or ``nodes``): ``{"runs": [...]}``."""
    return RecipeEvaluator(device=device, cache=cache).run(recipe, nodes=nodes, split=split, quick=quick,
                                                            progress=progress, cancel=cancel)


# ---------------------------------------------------------------- sweeps


def parse_sweep_param(text: str) -> tuple[str, float, float, int]:
    """``NODE.PARAM=START:STOP:STEPS`` (``NODE.PARAM.MODEL`` for one model's value) → a sweep axis."""
    try:
        path, spec = text.split("=", 1)
        start, stop, steps = spec.split(":")
        axis = (path.strip(), float(start), float(stop), int(steps))
    except ValueError:
        raise EngineInputError(f"bad sweep parameter {text!r}; expected NODE.PARAM=START:STOP:STEPS, "
                               "e.g. merge.lambda=0:1:11") from None
    if "." not in axis[0] or axis[3] < 1:
        raise EngineInputError(f"bad sweep parameter {text!r}; expected NODE.PARAM=START:STOP:STEPS with STEPS ≥ 1")
    return axis


def set_path(recipe: Recipe, path: str, value: float) -> None:
    """Set ``NODE.PARAM`` (or ``NODE.PARAM.MODEL``, one model's entry of a per-model parameter)."""
    node_id, _, rest = path.partition(".")
    node = recipe.node(node_id)
    param, _, model = rest.partition(".")
    if not model:
        recipe.set_param(node_id, param, value)
        return
    models = recipe.inputs(node_id, "models")
    if model not in models:
        raise EngineInputError(f"'{model}' is not a model input of node '{node_id}'")
    current = node.params.get(param, 1.0)
    if isinstance(current, dict):
        per_model = dict(current)
    elif isinstance(current, list):
        per_model = dict(zip(models, current))
    else:
        per_model = {m: current for m in models}
    per_model[model] = value
    recipe.set_param(node_id, param, per_model)


def _grid_values(start: float, stop: float, steps: int) -> list[float]:
    return [round(float(v), 6) for v in np.linspace(start, stop, steps)] if steps > 1 else [float(start)]


def sweep(recipe: Recipe, params: Sequence[tuple[str, float, float, int]], *, nodes: Sequence[str] | None = None,
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
    axes = [{"param": p, "values": _grid_values(a, b, n)} for p, a, b, n in params]
    swept = {ax["param"].split(".", 1)[0] for ax in axes}
    for node_id in swept:
        recipe.node(node_id)
    affected = swept | {n for n in recipe.nodes if swept & set(recipe.upstream(n))}
    runner = RecipeEvaluator(device=device, cache=cache)
    cancel = cancel or CancelToken()
    points, references = [], None
    for values in itertools.product(*(ax["values"] for ax in axes)):
        cancel.raise_if_cancelled()
        point = recipe.copy()
        for ax, v in zip(axes, values):
            set_path(point, ax["param"], v)
        result = runner.run(point, nodes=nodes, split=split, quick=quick, progress=progress, cancel=cancel)
        if references is None:
            references = [r for r in result["runs"] if r["recipe_node"] not in affected]
        points.append({"values": {ax["param"]: v for ax, v in zip(axes, values)},
                       "runs": [r for r in result["runs"] if r["recipe_node"] in affected]})
    return {"axes": axes, "points": points, "references": references or []}


CSV_METRICS = ("accuracy", "normalized_accuracy", "loss", "entropy", "accuracy_stderr")


def sweep_csv(result: dict[str, Any]) -> str:
    """The sweep as CSV: one row per (point, run, task), plus an ``average`` row per (point, run)."""
    params = [ax["param"] for ax in result["axes"]]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*params, "run", "task", *CSV_METRICS])
    for point in result["points"]:
        values = [point["values"][p] for p in params]
        for run in point["runs"]:
            for task, row in run["tasks"].items():
                writer.writerow([*values, run["name"], task, *(_cell(row.get(m)) for m in CSV_METRICS)])
            writer.writerow([*values, run["name"], "average", *(_cell(run["average"].get(m)) for m in CSV_METRICS)])
    return buf.getvalue()


def _cell(value: Any) -> str:
    return "" if value is None else f"{value:.6g}"


def write_results(result: dict[str, Any], path: str | Path) -> Path:
    """Write evaluation or sweep results as JSON (``.json``) or, for sweeps, CSV (``.csv``)."""
    p = Path(path)
    if p.suffix.lower() == ".csv":
        if "points" not in result:
            raise EngineInputError("CSV output is for sweeps; write evaluation results as .json")
        text = sweep_csv(result)
    else:
        text = json.dumps(result, indent=1)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(p)
    return p
