"""The batched evaluation runner: scores a state dict held in memory on a list of tasks.

``Evaluator`` keeps each task's data on the compute device between calls and caches scores by a
model key (checkpoint file identity, a recipe subgraph hash, or a content fingerprint), so unchanged
models (the base, the experts) are scored once. ``quick=N`` scores only the first N batches of each
split — a fixed subset, for live tuning — with the accuracy's standard error; the full split is the
default. Progress goes through a ``ProgressTracker`` (one step per batch) and a ``CancelToken`` is
polled between batches. A task may bound the batch size (``max_batch_size(device)``, from its memory
budget) and add notes to its scores (``notes(split)``: cut texts, a dtype fallback).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import torch

from engine.checkpoints import open_checkpoint
from engine.errors import EngineInputError
from engine.evaluation.metrics import Scores, accumulator_for, average, normalized_accuracy, normalized_score
from engine.evaluation.tasks import Task
from engine.runtime import CancelToken, ProgressTracker, resolve_device
from engine.runtime.progress import ProgressCallback


Quick = Union[int, Mapping[str, int], None]  # a fixed subset: N first batches, or examples per task name


class EvalCache:
    """Least-recently-used scores keyed by (model key, task fingerprint, split, batches scored)."""

    def __init__(self, max_entries: int = 4096):
        self.max_entries = max_entries
        self._items: OrderedDict[tuple, Scores] = OrderedDict()

    def get(self, key: tuple) -> Scores | None:
        """The cached scores under ``key`` (marked recently used), or None."""
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        return None

    def put(self, key: tuple, scores: Scores) -> None:
        """Store scores, dropping the least recently used entry beyond ``max_entries``."""
        self._items[key] = scores
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


def checkpoint_key(path: str | Path) -> str:
    """Identity of a checkpoint on disk: resolved path plus size and mtime of each weight file."""
    p = Path(path).expanduser().resolve()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    parts = [str(p)] + [f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files]
    return "file:" + hashlib.blake2b("|".join(parts).encode(), digest_size=16).hexdigest()


def state_dict_fingerprint(state_dict: Mapping[str, torch.Tensor]) -> str:
    """A content hash of a state dict (names, shapes, dtypes and every byte)."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(state_dict):
        t = state_dict[name].detach()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        h.update(t.contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return "content:" + h.hexdigest()


def load_weights(path: str | Path, names: Sequence[str], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The named tensors of a checkpoint on disk, as fp32 on ``device`` (errors name file and tensor)."""
    with open_checkpoint(path) as ckpt:
        return {n: ckpt.get(n, device, dtype=torch.float32) for n in names}


class Evaluator:
    """Scores state dicts on ``tasks`` on one device. Reuse one for many models: data stays resident."""

    def __init__(self, tasks: Sequence[Task], *, device: str | torch.device = "auto", batch_size: int = 1024,
                 cache: EvalCache | None = None):
        if not tasks:
            raise EngineInputError("no tasks to evaluate on")
        self.tasks = list(tasks)
        self.device = resolve_device(device)
        self.batch_size = int(batch_size)
        self.cache = cache if cache is not None else EvalCache()
        self.batch_limits: dict[str, int] = {}  # examples per batch at most, by task name (set by live tuning)
        self._resident: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def _split(self, task: Task, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        key = (task.fingerprint(), split)
        if key not in self._resident:
            data = task.data(split)
            if data.labels is None:
                raise EngineInputError(f"task '{task.name}': split '{split}' has no labels to score against")
            self._resident[key] = (data.inputs.to(self.device), data.labels.to(self.device))
        return self._resident[key]

    def batch_size_for(self, task: Task) -> int:
        """The evaluator's batch size, or less when the task's memory budget says so (``max_batch_size``)
        or ``batch_limits`` does (cancellation is polled between batches: smaller ones answer sooner)."""
        limit = getattr(task, "max_batch_size", None)
        size = min(self.batch_size, int(limit(self.device))) if callable(limit) else self.batch_size
        return max(1, min(size, self.batch_limits.get(task.name, size)))

    def plan(self, task: Task, split: str, quick: Quick) -> tuple[int, int, Any]:
        """How ``quick`` scores ``task``: (examples, batch size, the tag its scores are cached under).

        ``quick`` None: the whole split; an int N: the first N batches; a mapping: the first
        ``quick[task.name]`` examples (a subset sized by the caller, e.g. to a time budget)."""
        n, size = len(self._split(task, split)[1]), self.batch_size_for(task)
        if isinstance(quick, Mapping):
            m = min(n, max(1, int(quick.get(task.name, n))))
            return m, min(size, m), ("examples", m)
        if quick:
            return min(n, quick * size), size, quick
        return n, size, None

    def _batches(self, task: Task, split: str, quick: Quick) -> int:
        examples, size, _ = self.plan(task, split, quick)
        return -(-examples // size)

    @torch.inference_mode()
    def _score(self, task: Task, state_dict: Mapping[str, torch.Tensor], split: str, quick: Quick,
               tracker: ProgressTracker, cancel: CancelToken | None, functional: bool) -> Scores:
        inputs, labels = self._split(task, split)
        if functional:
            def model(x: torch.Tensor) -> torch.Tensor:
                return task.forward(state_dict, x)
        else:
            model = task.build_model(state_dict, self.device)
        acc = accumulator_for(task)
        examples, size, _ = self.plan(task, split, quick)
        for start in range(0, examples, size):
            if cancel is not None:
                cancel.raise_if_cancelled()
            sl = slice(start, min(examples, start + size))
            acc.add(model(inputs[sl]), labels[sl])
            tracker.advance(message=task.name)
        notes = getattr(task, "notes", None)
        return acc.result().with_notes(notes(split)) if callable(notes) else acc.result()

    def scores(self, state_dict: Mapping[str, torch.Tensor], *, split: str = "test", quick: Quick = None,
               model_key: str | None = None, tasks: Sequence[Task] | None = None,
               progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
               functional: bool = False) -> dict[str, Scores]:
        """Per-task scores of ``state_dict``. With ``model_key``, cached results are reused and stored.

        ``quick`` picks a fixed subset (see ``plan``); ``tasks`` narrows the task list;
        ``functional`` scores through the task's functional ``forward`` on these very tensors instead of
        building a module (what live tuning does every frame: building one costs more than a quick subset).
        """
        chosen = list(tasks) if tasks is not None else self.tasks
        out: dict[str, Scores] = {}
        todo = []
        for task in chosen:
            hit = self.cache.get((model_key, task.fingerprint(), split, self.plan(task, split, quick)[2])) \
                if model_key else None
            if hit is not None:
                out[task.name] = hit
            else:
                todo.append(task)
        tracker = ProgressTracker(progress, "evaluating", sum(self._batches(t, split, quick) for t in todo))
        for task in todo:
            out[task.name] = self._score(task, state_dict, split, quick, tracker, cancel, functional)
            if model_key:
                self.cache.put((model_key, task.fingerprint(), split, self.plan(task, split, quick)[2]), out[task.name])
        return {t.name: out[t.name] for t in chosen}

    def expert_scores(self, *, split: str = "test", quick: Quick = None, cancel: CancelToken | None = None,
                      progress: ProgressCallback | None = None) -> dict[str, Scores | None]:
        """Each task's own expert scored on that task (None for a task without an expert); cached by file."""
        out: dict[str, Scores | None] = {}
        for task in self.tasks:
            if task.expert is None:
                out[task.name] = None
                continue
            key = checkpoint_key(task.expert)
            cached = self.cache.get((key, task.fingerprint(), split, self.plan(task, split, quick)[2]))
            if cached is None:
                weights = load_weights(task.expert, task.expected_names(), self.device)
                cached = self.scores(weights, split=split, quick=quick, model_key=key, tasks=[task],
                                     progress=progress, cancel=cancel)[task.name]
            out[task.name] = cached
        return out

    def report(self, state_dict: Mapping[str, torch.Tensor], *, split: str = "test", quick: int | None = None,
               model_key: str | None = None, progress: ProgressCallback | None = None,
               cancel: CancelToken | None = None) -> dict:
        """Scores with normalized accuracy and the across-task average: ``{"tasks": {...}, "average": {...}}``."""
        experts = self.expert_scores(split=split, quick=quick, cancel=cancel)
        scores = self.scores(state_dict, split=split, quick=quick, model_key=model_key, progress=progress,
                             cancel=cancel)
        return result_table(scores, experts)


def result_table(scores: Mapping[str, Scores], experts: Mapping[str, Scores | None]) -> dict:
    """The JSON of one evaluated model: per task its metrics (``Scores.to_json``), the expert's accuracy and
    primary metric (``expert_accuracy``, ``expert_score``; null without an expert) and the model's against
    them (``normalized_accuracy``, ``normalized_score``: higher is better, see ``normalized_score``); then
    the across-task ``average`` of every metric all tasks have."""
    tasks: dict[str, dict] = {}
    for name, s in scores.items():
        row = s.to_json()
        expert = experts.get(name)
        row["expert_accuracy"] = expert.accuracy if expert is not None else None
        row["normalized_accuracy"] = normalized_accuracy(s.accuracy, row["expert_accuracy"])
        row["expert_score"] = expert.value(s.primary) if expert is not None else None
        row["normalized_score"] = normalized_score(s.value(s.primary), row["expert_score"],
                                                   s.higher_is_better(s.primary))
        for key in ("normalized_accuracy", "normalized_score"):
            if row[key] is not None:
                row["metrics"][key] = {"value": row[key], "higher_is_better": True}
        tasks[name] = row
    return {"tasks": tasks, "average": average(tasks)}


def evaluate(state_dict: Mapping[str, torch.Tensor], tasks: Sequence[Task], *, split: str = "test",
             device: str | torch.device = "auto", batch_size: int = 1024, quick: int | None = None,
             progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> dict:
    """One-shot evaluation of a state dict: ``{"tasks": {TASK: metrics}, "average": {...}}``."""
    return Evaluator(tasks, device=device, batch_size=batch_size).report(
        state_dict, split=split, quick=quick, progress=progress, cancel=cancel)
