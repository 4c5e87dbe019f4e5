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

import time
from typing import Any, Mapping, Sequence

import torch

from engine.errors import EngineInputError
from engine.evaluation import Evaluator, Scores, checkpoint_key
from engine.evaluation.service import node_tasks
from engine.evaluation.runner import Quick, result_table
from engine.evaluation.tasks import Task
from engine.graph import Recipe
from engine.graph.node_kinds import EVALUATE
from engine.runtime import CancelToken


def evaluate_node(recipe: Recipe, node_id: str) -> str | None:
    """The id of an Evaluate node that ``node_id`` feeds (directly), or None."""
    for edge in recipe.consumers(node_id):
        if recipe.nodes[edge.dst].kind is EVALUATE:
            return edge.dst
    return None


def tasks_for(recipe: Recipe, node_id: str) -> list[Task]:
    """The tasks the Evaluate node fed by ``node_id`` scores on (EngineInputError when there is none)."""
    ev = evaluate_node(recipe, node_id)
    if ev is None:
        raise EngineInputError(f"connect '{node_id}' to an Evaluate node to see its scores live")
    return node_tasks(recipe, ev)


def split_for(recipe: Recipe, node_id: str, default: str = "test") -> str:
    """The split the Evaluate node fed by ``node_id`` scores (``test`` unless it says otherwise)."""
    ev = evaluate_node(recipe, node_id)
    return str(recipe.nodes[ev].params.get("split", default)) if ev else default


PROBE_SIZES = (1, 8, 64)  # examples a task is timed on to size its quick subset, while they fit its share
PROBE_SLACK = 4  # the one-example probe stops the probing only when it takes this many times the share
# A full-split batch is sized to take about this long (from the probes' cost per example): a new slider
# value cancels the full evaluation in flight between two batches, so it waits at most about this.
FULL_BATCH_S = 0.1


class LiveEvaluator:
    """Quick-subset and full-split reports of state dicts, with cached base and expert references, scored
    by the evaluation engine's ``Evaluator`` (the same loop and metrics as a run's, through the tasks'
    functional forward)."""

    def __init__(self, tasks: Sequence[Task], device: torch.device | str, *, split: str = "test",
                 quick_batches: int = 1, batch_size: int = 256, budget_s: float | None = None):
        self.evaluator = Evaluator(tasks, device=device, batch_size=batch_size)
        self.tasks = self.evaluator.tasks
        self.device = self.evaluator.device
        self.split = split
        self.quick_batches = quick_batches
        self.batch_size = batch_size
        self.budget_s = budget_s
        self.subset: dict[str, int] | None = None  # examples per task of the quick subset, once sized

    def _quick(self, full: bool) -> Quick:
        if full:
            return None
        return self.subset if self.budget_s and self.subset is not None else self.quick_batches

    def examples(self, full: bool) -> dict[str, int]:
        """How many examples each task's report covers."""
        quick = self._quick(full)
        return {t.name: self.evaluator.plan(t, self.split, quick)[0] for t in self.tasks}

    def size_subset(self, state_dict: Mapping[str, torch.Tensor], cancel: CancelToken | None = None) -> None:
        """With a time budget: time each task on ``state_dict`` at growing subset sizes while they fit the
        task's share of ``budget_s`` (a task whose one example takes several shares, such as generation,
        is probed on that one example), take a fixed cost per call and a cost per example from the last
        two, and size the task's quick subset so that scoring every task takes about ``budget_s`` (at least
        one example each, and eight where they cost under four shares: one example says little), and its
        full-split batches so that one takes about ``FULL_BATCH_S`` (at least eight examples; a task timed
        on one example only keeps its batches). Done once; the subset then stays
        fixed, so every slider position is scored on the same examples."""
        if not self.budget_s or self.subset is not None:
            return
        share = self.budget_s / len(self.tasks)
        subset = {}
        for task in self.tasks:
            n = len(task.data(self.split))
            sizes, seconds = [], []
            for k in PROBE_SIZES:  # a larger probe only while the last one left room in the task's share (the
                sizes.append(min(n, k))  # first may hold a fixed cost of a few times the share)
                seconds.append(self._time(task, state_dict, sizes[-1], cancel))
                if seconds[-1] >= share * (PROBE_SLACK if len(sizes) == 1 else 1) or sizes[-1] == n:
                    break
            sizes, seconds = sizes[-2:], seconds[-2:]
            if len(sizes) == 2:  # a fixed cost per call (building the call, data moves) and a cost per example
                # (never under a tenth of the average: timing noise must not make examples look free)
                per_example = max((seconds[1] - seconds[0]) / (sizes[1] - sizes[0]), seconds[1] / sizes[1] / 10)
                fixed = max(seconds[0] - sizes[0] * per_example, 0.0)
            else:
                per_example, fixed = seconds[0] / sizes[0], 0.0
            fitting = int((share - fixed) / per_example)
            floor = min(PROBE_SIZES[1], int(PROBE_SLACK * share / per_example))  # a few examples when they are cheap
            subset[task.name] = min(n, max(1, fitting, floor))
            if len(sizes) == 2:  # a cost per example was measured: batches of about FULL_BATCH_S, but not so
                # small that batching stops paying (a task probed on one example, generation, keeps its own)
                self.evaluator.batch_limits[task.name] = max(PROBE_SIZES[1], int(FULL_BATCH_S / per_example))
        self.subset = subset

    def experts(self, *, full: bool, cancel: CancelToken | None = None) -> dict[str, Scores | None]:
        return self.evaluator.expert_scores(split=self.split, quick=self._quick(full), cancel=cancel)

    def _time(self, task: Task, state_dict: Mapping[str, torch.Tensor], examples: int,
              cancel: CancelToken | None) -> float:
        """Seconds to score ``task``'s first ``examples`` (after one untimed pass that warms the path up)."""
        probe = {task.name: examples}
        for _ in range(2):
            start = time.perf_counter()
            self.evaluator.scores(state_dict, split=self.split, quick=probe, tasks=[task], functional=True,
                                  cancel=cancel)
        return time.perf_counter() - start

    def scores(self, state_dict: Mapping[str, torch.Tensor], *, model_key: str, full: bool,
               cancel: CancelToken | None = None) -> dict[str, Scores]:
        """Per-task scores, through the task's functional forward (no module is built per call)."""
        return self.evaluator.scores(state_dict, split=self.split, quick=self._quick(full), model_key=model_key,
                                     cancel=cancel, functional=True)

    def report(self, state_dict: Mapping[str, torch.Tensor], *, model_key: str, full: bool,
               cancel: CancelToken | None = None) -> dict[str, Any]:
        """``{"tasks": {TASK: metrics + expert_accuracy + normalized_accuracy}, "average": {...}}``."""
        if not full:
            self.size_subset(state_dict, cancel)
        experts = self.experts(full=full, cancel=cancel)
        return result_table(self.scores(state_dict, model_key=model_key, full=full, cancel=cancel), experts)

    def references(self, base_state: Mapping[str, torch.Tensor] | None, base_key: str | None, *, full: bool,
                   cancel: CancelToken | None = None) -> dict[str, dict[str, float | None]]:
        """Each task's primary metric (accuracy, perplexity…) for the base (when given) and the task's own
        expert, on the examples the live reports use."""
        if not full and base_state is not None:
            self.size_subset(base_state, cancel)
        experts = self.experts(full=full, cancel=cancel)
        out: dict[str, dict[str, float | None]] = {
            "experts": {name: (s.value(s.primary) if s is not None else None) for name, s in experts.items()}}
        if base_state is not None:
            base = self.scores(base_state, model_key=base_key or "base", full=full, cancel=cancel)
            out["base"] = {name: s.value(s.primary) for name, s in base.items()}
        return out


def base_key(recipe: Recipe, node_id: str) -> str | None:
    """Cache key of the merge's base when it is a checkpoint on disk (its file identity)."""
    bases = recipe.inputs(node_id, "base")
    if not bases or not recipe.nodes[bases[0]].kind.source:
        return None
    base = recipe.nodes[bases[0]]
    return checkpoint_key(recipe.resolve_path(base.params[base.kind.file_param]))
