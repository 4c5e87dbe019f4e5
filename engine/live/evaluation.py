"""Evaluation in the live loop: a fixed quick subset first, the full split when the value settles.

A thin layer over ``engine.evaluation``: each task's split stays on the device and is scored either on
its first ``quick_batches`` batches — the same examples every time, so two slider positions are
compared on identical data, with the binomial standard error of each accuracy — or whole. A merged
model is scored through the task's functional ``forward`` on the session's weights (no module is built
per frame: building one costs more than scoring the quick subset); the experts go through the
``Evaluator`` and share its cache, keyed the same way. Scores are cached by a model key — the experts
by file identity, the base by its file, a live merge by its parameters — so coming back to an earlier
slider value is free.

``tasks_for`` finds the tasks of a merge node from the Evaluate node it feeds (the ``suite`` and
optional ``tasks`` parameters of the evaluation engine's node).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from engine.errors import EngineInputError
from engine.evaluation import Accumulator, Evaluator, Scores, checkpoint_key, load_suite
from engine.evaluation.recipe import task_names
from engine.evaluation.runner import result_table
from engine.evaluation.tasks import Task
from engine.graph import Recipe
from engine.runtime import CancelToken


def evaluate_node(recipe: Recipe, node_id: str) -> str | None:
    """The id of an Evaluate node that ``node_id`` feeds (directly), or None."""
    for edge in recipe.consumers(node_id):
        if recipe.nodes[edge.dst].type == "evaluate":
            return edge.dst
    return None


def tasks_for(recipe: Recipe, node_id: str) -> list[Task]:
    """The tasks the Evaluate node fed by ``node_id`` scores on (EngineInputError when there is none)."""
    ev = evaluate_node(recipe, node_id)
    if ev is None:
        raise EngineInputError(f"connect '{node_id}' to an Evaluate node to see its scores live")
    params = recipe.nodes[ev].params
    if not params.get("suite"):
        raise EngineInputError(f"the Evaluate node '{ev}' names no task suite")
    return load_suite(recipe.resolve_path(params["suite"]), task_names(params.get("tasks")))


def split_for(recipe: Recipe, node_id: str, default: str = "test") -> str:
    """The split the Evaluate node fed by ``node_id`` scores (``test`` unless it says otherwise)."""
    ev = evaluate_node(recipe, node_id)
    return str(recipe.nodes[ev].params.get("split", default)) if ev else default


class LiveEvaluator:
    """Quick-subset and full-split reports of state dicts, with cached base and expert references."""

    def __init__(self, tasks: Sequence[Task], device: torch.device | str, *, split: str = "test",
                 quick_batches: int = 1, batch_size: int = 256):
        self.evaluator = Evaluator(tasks, device=device, batch_size=batch_size)
        self.tasks = self.evaluator.tasks
        self.device = self.evaluator.device
        self.split = split
        self.quick_batches = quick_batches
        self.batch_size = batch_size
        self._resident: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _quick(self, full: bool) -> int | None:
        return None if full else self.quick_batches

    def examples(self, full: bool) -> dict[str, int]:
        """How many examples each task's report covers."""
        out = {}
        for t in self.tasks:
            n = len(t.data(self.split))
            out[t.name] = n if full else min(n, self.quick_batches * self.batch_size)
        return out

    def experts(self, *, full: bool, cancel: CancelToken | None = None) -> dict[str, Scores | None]:
        return self.evaluator.expert_scores(split=self.split, quick=self._quick(full), cancel=cancel)

    def _data(self, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
        if task.name not in self._resident:
            split = task.data(self.split)
            if split.labels is None:
                raise EngineInputError(f"task '{task.name}': split '{self.split}' has no labels to score against")
            self._resident[task.name] = (split.inputs.to(self.device), split.labels.to(self.device))
        return self._resident[task.name]

    @torch.inference_mode()
    def _score(self, task: Task, state_dict: Mapping[str, torch.Tensor], full: bool,
               cancel: CancelToken | None) -> Scores:
        inputs, labels = self._data(task)
        n = len(labels) if full else min(len(labels), self.quick_batches * self.batch_size)
        acc = Accumulator()
        for start in range(0, n, self.batch_size):
            if cancel is not None:
                cancel.raise_if_cancelled()
            stop = min(n, start + self.batch_size)
            acc.add(task.forward(state_dict, inputs[start:stop]), labels[start:stop])
        return acc.result()

    def scores(self, state_dict: Mapping[str, torch.Tensor], *, model_key: str, full: bool,
               cancel: CancelToken | None = None) -> dict[str, Scores]:
        """Per-task scores, through the task's functional forward (no module is built per call)."""
        out = {}
        for task in self.tasks:
            key = (model_key, task.fingerprint(), self.split, self._quick(full))
            hit = self.evaluator.cache.get(key)
            if hit is None:
                hit = self._score(task, state_dict, full, cancel)
                self.evaluator.cache.put(key, hit)
            out[task.name] = hit
        return out

    def report(self, state_dict: Mapping[str, torch.Tensor], *, model_key: str, full: bool,
               cancel: CancelToken | None = None) -> dict[str, Any]:
        """``{"tasks": {TASK: metrics + expert_accuracy + normalized_accuracy}, "average": {...}}``."""
        experts = self.experts(full=full, cancel=cancel)
        return result_table(self.scores(state_dict, model_key=model_key, full=full, cancel=cancel), experts)

    def references(self, base_state: Mapping[str, torch.Tensor] | None, base_key: str | None, *, full: bool,
                   cancel: CancelToken | None = None) -> dict[str, dict[str, float | None]]:
        """Accuracy per task of the base (when given) and of each task's own expert."""
        experts = self.experts(full=full, cancel=cancel)
        out: dict[str, dict[str, float | None]] = {
            "experts": {name: (s.accuracy if s is not None else None) for name, s in experts.items()}}
        if base_state is not None:
            base = self.scores(base_state, model_key=base_key or "base", full=full, cancel=cancel)
            out["base"] = {name: s.accuracy for name, s in base.items()}
        return out


def base_key(recipe: Recipe, node_id: str) -> str | None:
    """Cache key of the merge's base when it is a checkpoint on disk (its file identity)."""
    bases = recipe.inputs(node_id, "base")
    if not bases or recipe.nodes[bases[0]].type != "checkpoint":
        return None
    return checkpoint_key(recipe.resolve_path(recipe.nodes[bases[0]].params["path"]))
