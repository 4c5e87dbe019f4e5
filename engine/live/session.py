"""``LiveSession``: one merge node kept ready for instant re-merging and re-scoring while it is tuned.

Opening a session streams the node's inputs once into resident buffers on the device
(``engine.graph.resident_inputs``, plus an output buffer: ``engine.live.resident``); afterwards
``update(params)`` brings the merged weights to new parameter values by recomputing only what the change
invalidates (``engine.live.updaters``) and ``evaluate`` scores them on a quick fixed subset or the full
split (``engine.live.evaluation``).

When the inputs do not fit in the device memory the session says so (``mode == "streaming"`` and
``message``) and every update falls back to the streaming executor, which re-reads the checkpoints.

A session is not thread-safe: one thread drives it (``engine.live.loop.LiveLoop`` does).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch

from engine.errors import EngineInputError
from engine.evaluation.tasks import Task
from engine.graph import GraphRun, Recipe
from engine.graph.resident_inputs import layout, load_resident, upstream_recipe
from engine.live import resident as residency
from engine.live.evaluation import LiveEvaluator, base_key, split_for, tasks_for
from engine.live.updaters import UpdateStats, Updater, updater_class
from engine.methods import MethodSpec, Requirement, get_method
from engine.methods.schedule import resolve_params
from engine.runtime import CancelToken, resolve_device
from engine.runtime.formatting import human_bytes
from engine.runtime.progress import ProgressCallback

RESIDENT, STREAMING = "resident", "streaming"


@dataclass
class LiveReport:
    """Scores of the session's current weights: per task, the across-task average, and timings."""

    params: dict[str, Any]
    full: bool
    tasks: dict[str, dict[str, Any]]
    average: dict[str, float]
    examples: dict[str, int]
    eval_seconds: float
    update: UpdateStats | None = None
    references: dict[str, dict[str, float | None]] = field(default_factory=dict)


class LiveSession:
    """A merge node's inputs resident on a device (or, when they do not fit, a streaming fallback).

    ``tasks`` default to those of the Evaluate node the merge feeds; pass ``()`` for weights only.
    ``memory_budget`` (bytes) overrides the free-memory check. The quick subset is the first
    ``quick_batches`` batches of each task, or, with ``quick_budget_s``, sized once to that much scoring
    time (``LiveEvaluator.size_subset``).
    """

    def __init__(self, recipe: Recipe, node_id: str, *, tasks: Sequence[Task] | None = None,
                 device: str | torch.device = "auto", memory_budget: int | None = None, split: str | None = None,
                 quick_batches: int = 1, batch_size: int = 256, quick_budget_s: float | None = None,
                 progress: ProgressCallback | None = None, cancel: CancelToken | None = None):
        self.node_id = node_id
        self.recipe = upstream_recipe(recipe, node_id)
        self.device = resolve_device(device)
        self.spec = self._check_method(self.recipe.node(node_id).params.get("method", "task_arithmetic"))
        self.keys = self.recipe.inputs(node_id, "models")
        self.has_anchor = bool(self.recipe.inputs(node_id, "base"))
        self.params: dict[str, Any] | None = None
        self.resident: residency.Resident | None = None
        self.updater: Updater | None = None
        self._streamed: dict[str, torch.Tensor] | None = None
        self._progress = progress
        tasks = tasks_for(recipe, node_id) if tasks is None else list(tasks)
        self.evaluator = LiveEvaluator(tasks, self.device, split=split or split_for(recipe, node_id),
                                       quick_batches=quick_batches, batch_size=batch_size,
                                       budget_s=quick_budget_s) if tasks else None
        self._base_key = base_key(self.recipe, node_id)

        with GraphRun(self.recipe, device=self.device, progress=progress, cancel=cancel) as run:
            plan = layout(run, node_id)
            cache = updater_class(self.spec, self.has_anchor).cache_bytes_per_entry(len(self.keys))
            self.required_bytes = residency.resident_bytes(plan.numel, len(self.keys), self.has_anchor, cache)
            budget = memory_budget if memory_budget is not None else int(
                residency.SAFETY * residency.available_bytes(self.device))
            if self.required_bytes <= budget:
                self.mode = RESIDENT
                self.message = (f"{len(self.keys)} inputs resident on {self.device.type} "
                                f"({human_bytes(self.required_bytes)})")
                self.resident = residency.Resident.holding(load_resident(run, node_id, plan=plan))
                self.updater = updater_class(self.spec, self.has_anchor)(self.resident, self.spec)
            else:
                self.mode = STREAMING
                self.message = (f"The inputs of '{node_id}' need {human_bytes(self.required_bytes)} on "
                                f"{self.device.type} but {human_bytes(budget)} is available: live tuning falls back "
                                "to streaming, re-reading the checkpoints on every change (slower)")

    @staticmethod
    def _check_method(name: str) -> MethodSpec:
        spec = get_method(name)
        if Requirement.DATA_FREE not in spec.requirements:
            raise EngineInputError(f"{spec.label} needs {', '.join(sorted(r.value for r in spec.requirements))}; "
                                   "live tuning covers data-free methods — run the graph instead")
        return spec

    # ---- weights ---------------------------------------------------------------------------------
    def resolve(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The parameters resolved for every resident tensor (per model, per layer)."""
        res = self.resident
        return [resolve_params(self.spec.params, params, self.keys, s.name, s.layer, res.num_layers) for s in res.spans]

    def update(self, params: Mapping[str, Any], cancel: CancelToken | None = None) -> UpdateStats:
        """Bring the merged weights to ``params`` (the merge node's parameters, method included)."""
        params = copy.deepcopy(dict(params))
        spec = self._check_method(params.get("method", self.spec.name))
        if self.mode == STREAMING:
            return self._update_streaming(params, cancel)
        if spec is not self.spec:
            if spec.needs_base and not self.has_anchor:
                raise EngineInputError(f"{spec.label} needs a base model; connect one to '{self.node_id}'")
            self.spec = spec
            self.updater = updater_class(spec, self.has_anchor)(self.resident, spec)
        stats = self.updater.apply(params, self.resolve(params), cancel)
        self.params = params
        return stats

    def _update_streaming(self, params: dict[str, Any], cancel: CancelToken | None) -> UpdateStats:
        start = time.perf_counter()
        self.recipe.set_params(self.node_id, params)
        self._streamed = None
        with GraphRun(self.recipe, device=self.device, progress=self._progress, cancel=cancel) as run:
            self._streamed = run.materialize(self.node_id)
        self.spec = get_method(params.get("method", self.spec.name))
        self.params = params
        n = len(self._streamed)
        return UpdateStats(n, recomputed=n, ops=n, seconds=time.perf_counter() - start)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The merged model for the current parameters (views into the session's buffers: read only)."""
        if self.params is None:
            raise RuntimeError("call update() before reading the merged weights")
        return self.resident.state_dict() if self.mode == RESIDENT else self._streamed

    def base_state_dict(self) -> dict[str, torch.Tensor] | None:
        """θ0 (None when the merge has no base)."""
        if not self.has_anchor:
            return None
        if self.mode == RESIDENT:
            return self.resident.state_dict(self.resident.anchor)
        with GraphRun(self.recipe, device=self.device) as run:
            return run.materialize(self.recipe.inputs(self.node_id, "base")[0])

    # ---- scores ----------------------------------------------------------------------------------
    def model_key(self) -> str:
        """Cache key of the current weights: this session and its parameters."""
        return f"live:{id(self)}:{json.dumps(self.params, sort_keys=True, default=str)}"

    def evaluate(self, *, full: bool = False, cancel: CancelToken | None = None) -> LiveReport:
        """Score the current weights on the quick subset (``full=False``) or the whole split."""
        if self.evaluator is None:
            raise EngineInputError("this live session has no tasks to evaluate on")
        start = time.perf_counter()
        table = self.evaluator.report(self.state_dict(), model_key=self.model_key(), full=full, cancel=cancel)
        return LiveReport(copy.deepcopy(self.params), full, table["tasks"], table["average"],
                          self.evaluator.examples(full), time.perf_counter() - start)

    def references(self, *, full: bool = False,
                   cancel: CancelToken | None = None) -> dict[str, dict[str, float | None]]:
        """Per-task accuracy of the base and of the experts on the same examples (cached)."""
        if self.evaluator is None:
            return {}
        key = self._base_key or f"live-base:{id(self)}"
        return self.evaluator.references(self.base_state_dict(), key, full=full, cancel=cancel)

    def close(self) -> None:
        """Free the device memory."""
        self.resident = self.updater = self._streamed = None
