"""The one evaluation service: what scoring a model of a recipe means, for every caller.

``EvaluationService`` is the scorer a ``GraphRun`` hands its Evaluate nodes (``engine.graph`` declares
the node kind; this package says what scoring is). It keeps each Evaluate node's evaluator (suite
data resident on the device) and a score cache between calls, so the Run button, ``weightsmith
evaluate``, sweeps and the learners all score through it, and unchanged models — the base, the
experts, a merge whose parameters did not move — are computed and scored once per cache. Models are
keyed by their subgraph (checkpoint file identities + node kinds and parameters).

An Evaluate node's parameters: ``suite`` (a suite manifest, relative to the recipe) and/or
``task_entries`` (task entries declared on the node, as in a manifest, paths relative to the recipe;
``node_tasks`` gives the node's tasks, the suite's then its own), ``tasks`` (optional: a JSON list of
task names or a comma-separated string; all when absent), ``split`` (``test`` by default),
``batch_size``. Importing this module installs what the graph asks about inline entries: their
checks and path fields (``engine.evaluation.task_detection.InlineEntrySupport``). A scored model's run
is ``{"name", "recipe_node", "evaluate_node", "type", ["method"], "split", "quick_batches", "tasks":
{TASK: {...}}, "average": {...}}``. A model carrying one model per task (EMR-Merging) scores each task on
its own model (``engine.evaluation.task_models``), and its run adds ``"task_models"``: task → input.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

from engine.errors import EngineInputError
from engine.evaluation.runner import EvalCache, Evaluator, checkpoint_key, result_table
from engine.evaluation.suite import load_tasks
from engine.evaluation.task_detection import InlineEntrySupport
from engine.evaluation.task_models import task_models
from engine.evaluation.tasks import Task
from engine.graph import GraphRun, Recipe, RunOptions
from engine.graph.node_kinds import EVALUATE, nodes_of
from engine.runtime import CancelToken
from engine.runtime.progress import ProgressCallback


EVALUATE.use_entry_support(InlineEntrySupport())


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
    """Cache key of a node's output: checkpoint file identities plus every upstream kind and parameter.
    A checkpoint read as it is (no other parameter set) is its file's identity, the key its scores have
    when it is a task's expert, so an expert connected to an Evaluate node is scored once."""
    def describe(nid: str) -> Any:
        node = recipe.nodes[nid]
        if node.kind.source:
            return [node.type, checkpoint_key(recipe.resolve_path(node.params.get(node.kind.file_param, ""))),
                    {k: v for k, v in node.params.items() if k != node.kind.file_param and v}]
        ports = {}
        for e in recipe.input_edges(nid):
            ports.setdefault(e.port, []).append([e.src, describe(e.src)])
        return [node.type, node.params, ports]

    node = recipe.nodes[node_id]
    if node.kind.source and not any(v for k, v in node.params.items() if k != node.kind.file_param):
        return checkpoint_key(recipe.resolve_path(node.params.get(node.kind.file_param, "")))
    text = json.dumps(describe(node_id), sort_keys=True, default=str)
    return "recipe:" + hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _task_sources(recipe: Recipe, node_id: str) -> tuple[Path | None, list[Any], Path]:
    """An Evaluate node's suite file (or None), its inline task entries and the folder their paths are
    relative to; an error when it has neither a suite nor entries."""
    params = recipe.nodes[node_id].params
    entries = params.get(EVALUATE.entries_param) or []
    if not params.get("suite") and not entries:
        raise EngineInputError(f"the Evaluate node '{node_id}' names no task suite ('suite' parameter) and has no "
                               f"tasks of its own ('{EVALUATE.entries_param}')")
    if not isinstance(entries, list):
        raise EngineInputError(f"the Evaluate node '{node_id}': '{EVALUATE.entries_param}' must be a list of task "
                               "entries")
    suite = recipe.resolve_path(params["suite"]) if params.get("suite") else None
    return suite, entries, recipe.resolve_path(".").resolve()


def node_tasks(recipe: Recipe, node_id: str) -> list[Task]:
    """The tasks an Evaluate node scores: its suite's, then its own entries' (filtered by its ``tasks``)."""
    suite, entries, folder = _task_sources(recipe, node_id)
    return load_tasks(suite, entries, folder, task_names(recipe.nodes[node_id].params.get("tasks")))


class EvaluationService:
    """Scores the models feeding Evaluate nodes, keeping suites, data and scores between calls."""

    def __init__(self, *, device: str = "auto", cache: EvalCache | None = None):
        self.device = device
        self.cache = cache if cache is not None else EvalCache()
        self._evaluators: dict[tuple, Evaluator] = {}

    def evaluator(self, recipe: Recipe, node_id: str) -> tuple[Evaluator, str]:
        """The evaluator and split of one Evaluate node."""
        params = recipe.nodes[node_id].params
        suite, entries, folder = _task_sources(recipe, node_id)
        batch = int(params.get("batch_size", 1024))
        key = (str(suite.resolve()) if suite else "", json.dumps(entries, sort_keys=True, default=str), str(folder),
               tuple(task_names(params.get("tasks")) or ()), batch)
        if key not in self._evaluators:
            self._evaluators[key] = Evaluator(node_tasks(recipe, node_id), device=self.device, batch_size=batch,
                                              cache=self.cache)
        return self._evaluators[key], str(params.get("split", "test"))

    def score(self, run: GraphRun, evaluate_id: str, model_id: str, options: RunOptions) -> dict[str, Any]:
        """One model's run on one Evaluate node's tasks (computed in memory by ``run`` unless cached)."""
        recipe = run.recipe
        evaluator, node_split = self.evaluator(recipe, evaluate_id)
        split = options.split or node_split
        experts = evaluator.expert_scores(split=split, quick=options.quick, cancel=run.cancel, progress=run.progress)
        key = node_key(recipe, model_id)
        per_task, assigned = task_models(run, model_id), {}
        if per_task is not None:  # a model carrying one model per task (EMR): each task scored on its own
            scores, assigned = per_task.scores(evaluator, key, split, options.quick)
        else:
            scores = self._cached(evaluator, key, split, options.quick)
        if scores is None:
            state = run.materialize(model_id)
            scores = evaluator.scores(state, split=split, quick=options.quick, model_key=key,
                                      progress=run.progress, cancel=run.cancel)
            del state
        node = recipe.nodes[model_id]
        method = {node.kind.method_param: node.params.get(node.kind.method_param)} if node.kind.method_param else {}
        return {"name": model_id, "recipe_node": model_id, "evaluate_node": evaluate_id, "type": node.type,
                **method, "split": split, "quick_batches": options.quick, **result_table(scores, experts),
                **({"task_models": assigned} if assigned else {})}

    @staticmethod
    def _cached(evaluator: Evaluator, key: str, split: str, quick: int | None):
        hits = {t.name: evaluator.cache.get((key, t.fingerprint(), split, quick)) for t in evaluator.tasks}
        return None if any(v is None for v in hits.values()) else hits

    def evaluate(self, recipe: Recipe, *, nodes: Sequence[str] | None = None, models: Sequence[str] | None = None,
                 split: str | None = None, quick: int | None = None, progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None) -> dict[str, Any]:
        """``{"runs": [...]}`` for the Evaluate ``nodes`` (default: all), optionally only ``models`` inputs."""
        ids = list(nodes) if nodes else nodes_of(recipe, EVALUATE)
        if not ids:
            raise EngineInputError("the recipe has no Evaluate node")
        for nid in ids:
            if recipe.node(nid).kind is not EVALUATE:
                raise EngineInputError(f"node '{nid}' is not an Evaluate node")
        options = RunOptions(split=split, quick=quick, models=frozenset(models) if models is not None else None)
        with GraphRun(recipe, device=self.device, progress=progress, cancel=cancel, scorer=self) as run:
            return {"runs": run.run(ids, options).evaluations}


def evaluate_recipe(recipe: Recipe, *, nodes: Sequence[str] | None = None, device: str = "auto",
                    split: str | None = None, quick: int | None = None, progress: ProgressCallback | None = None,
                    cancel: CancelToken | None = None, cache: EvalCache | None = None) -> dict[str, Any]:
    """Score every model feeding the recipe's Evaluate nodes (or ``nodes``): ``{"runs": [...]}``."""
    return EvaluationService(device=device, cache=cache).evaluate(recipe, nodes=nodes, split=split, quick=quick,
                                                                   progress=progress, cancel=cancel)
