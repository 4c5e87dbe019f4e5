"""Scoring a model that carries one model per task (EMR-Merging's parts): each task on its own model.

A model carries task parts when it is a merge node whose method declares ``TaskParts`` (task t's model
is computed from the node's inputs), or a checkpoint whose folder holds saved EMR parts
(``engine.methods.emr.SavedParts``: task t's model is rebuilt from the unified weights).

Which of the model's tasks (its merge inputs, in order) an Evaluate task is scored with:

1. the input whose checkpoint file is the task's expert (same resolved path), else
2. the input whose node id is the task's name (for a saved model: the node id recorded in its parts).

A task matched by no input, or by several, is an input error naming the task and the model: scoring a
task on another task's model, or on the unified weights, would report numbers the method does not give.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from engine.errors import EngineInputError
from engine.evaluation.metrics import Scores
from engine.evaluation.runner import Evaluator, Quick
from engine.evaluation.tasks import Task
from engine.graph import GraphRun
from engine.methods import get_method
from engine.methods.emr import SavedParts


def _same_file(a: Any, b: Any) -> bool:
    return a is not None and b is not None and Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def assign_tasks(parts: Sequence[dict[str, Any]], tasks: Sequence[Task], model_id: str) -> dict[str, int]:
    """Task name → the position of the part (``{"name", "expert"}``) it is scored with (rules above)."""
    out = {}
    for task in tasks:
        matches = [i for i, p in enumerate(parts) if _same_file(p.get("expert"), task.expert)]
        if not matches:
            matches = [i for i, p in enumerate(parts) if p.get("name") == task.name]
        if len(matches) != 1:
            known = ", ".join(str(p.get("name")) for p in parts)
            why = ("several of its models match" if matches
                   else "none of its models is this task's expert or named after it")
            raise EngineInputError(f"'{model_id}' holds one model per task ({known}) but task '{task.name}' cannot be "
                                   f"given one: {why}")
        out[task.name] = matches[0]
    return out


class TaskModels:
    """The per-task models of one model of a run: ``build(t)`` gives task model t's state dict."""

    def __init__(self, run: GraphRun, model_id: str, parts: list[dict[str, Any]],
                 build: Callable[[int], dict[str, torch.Tensor]]):
        self.run, self.model_id, self.parts, self.build = run, model_id, parts, build

    def scores(self, evaluator: Evaluator, key: str, split: str,
               quick: Quick) -> tuple[dict[str, Scores], dict[str, str]]:
        """Each task's scores on its own model (cached under ``key#task:<t>``) and, per task, the part used."""
        assignment = assign_tasks(self.parts, evaluator.tasks, self.model_id)
        out: dict[str, Scores] = {}
        for t in sorted(set(assignment.values())):
            tasks = [task for task in evaluator.tasks if assignment[task.name] == t]
            model_key = f"{key}#task:{t}"
            hits = {task.name: evaluator.cache.get((model_key, task.fingerprint(), split,
                                                    evaluator.plan(task, split, quick)[2])) for task in tasks}
            if any(v is None for v in hits.values()):
                state = self.build(t)
                hits = evaluator.scores(state, split=split, quick=quick, model_key=model_key, tasks=tasks,
                                        progress=self.run.progress, cancel=self.run.cancel)
                del state
            out.update(hits)
        return ({task.name: out[task.name] for task in evaluator.tasks},
                {name: str(self.parts[t]["name"]) for name, t in assignment.items()})


def task_models(run: GraphRun, model_id: str) -> TaskModels | None:
    """The per-task models ``model_id`` carries, or None when it is an ordinary model."""
    node = run.recipe.nodes[model_id]
    kind = node.kind
    if kind.method_param and get_method(node.params[kind.method_param]).task_parts is not None:
        keys = run.recipe.inputs(model_id, "models")
        parts = [{"name": k, "expert": run.checkpoints[k].path if k in run.checkpoints else None} for k in keys]

        def build_merged(t: int) -> dict[str, torch.Tensor]:
            run.task_views[model_id] = t
            try:
                return run.materialize(model_id)
            finally:
                del run.task_views[model_id]

        return TaskModels(run, model_id, parts, build_merged)
    if model_id in run.checkpoints:
        saved = SavedParts.beside(run.checkpoints[model_id].path)
        if saved is None:
            return None
        unified: dict[str, torch.Tensor] = {}

        def build_saved(t: int) -> dict[str, torch.Tensor]:
            if not unified:
                unified.update(run.materialize(model_id))
            return saved.task_state(unified, t)

        return TaskModels(run, model_id, saved.tasks, build_saved)
    return None
