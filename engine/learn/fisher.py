"""Fisher merging, data part: the diagonal Fisher of each model on its own task, saved for ``fisher``.

For model t (its full weights θt, its task's network and data) the diagonal empirical Fisher is
``F_t = (1/N) Σ_i (∂ log p(y_i | x_i; θt) / ∂θt)²`` over N examples of the task, computed with
per-example gradients (``torch.func.vmap`` over ``torch.func.grad`` of ``Task.forward``; examples
one by one when the network cannot be vmapped).

``labels="data"`` takes y_i from the split's labels (the empirical Fisher, Matena & Raffel's
default for classification); ``labels="model"`` draws y_i from the model's own predictive
distribution with the ``seed`` (an unbiased one-sample estimate of the true Fisher; needs no labels).
The examples are ``examples`` rows drawn at random (``seed``) from ``split`` (FusionBench: 256 from
the training split). FusionBench squares batch-summed gradients, a cheaper but biased estimate;
this follows the paper's per-example definition.

The Fisher values go into a statistics file (see ``engine.graph.statistics_files``) together with each
model's whole-Fisher L2 norm; the learned recipe's merge node becomes ``fisher`` naming that file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from engine.errors import EngineInputError
from engine.evaluation.tasks import Task
from engine.graph import Recipe
from engine.graph.resident_inputs import load_inputs
from engine.graph.statistics_files import statistics_key
from engine.learn.common import LearnResult, learned_recipe, match_tasks, merge_node, sample_rows
from engine.learn.statistics import write_statistics
from engine.runtime import CancelToken, ProgressTracker, resolve_device
from engine.runtime.progress import ProgressCallback

log = logging.getLogger(__name__)

LABEL_SOURCES = ("data", "model")


def _per_example_loss(task: Task, fixed: Mapping[str, torch.Tensor]) -> Callable:
    """−log p(y | x) of one example as a function of the differentiated tensors."""
    def loss(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = task.forward({**fixed, **params}, x.unsqueeze(0))
        return F.cross_entropy(logits.float(), y.unsqueeze(0))
    return loss


def diagonal_fisher(task: Task, state: Mapping[str, torch.Tensor], names: Sequence[str], inputs: torch.Tensor,
                    labels: torch.Tensor | None, *, generator: torch.Generator, chunk: int = 32,
                    tracker: ProgressTracker | None = None,
                    cancel: CancelToken | None = None) -> dict[str, torch.Tensor]:
    """Mean squared per-example gradient of −log p(y|x) for each tensor in ``names`` (fp32, on ``state``'s device).

    ``labels`` None means y is drawn from the model's predictive distribution with ``generator``.
    ``tracker`` advances by one per example.
    """
    params = {n: state[n].detach() for n in names}
    fixed = {n: t for n, t in state.items() if n not in params}
    loss = _per_example_loss(task, fixed)
    batched = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))
    total = {n: torch.zeros_like(t) for n, t in params.items()}
    vectorised = True
    for start in range(0, len(inputs), chunk):
        if cancel is not None:
            cancel.raise_if_cancelled()
        x = inputs[start:start + chunk]
        if labels is not None:
            y = labels[start:start + chunk]
        else:
            with torch.no_grad():
                probs = F.softmax(task.forward(state, x).float(), dim=-1).cpu()
            y = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(x.device)
        if vectorised:
            try:
                grads = batched(params, x, y)
                for n in names:
                    total[n].add_(grads[n].pow(2).sum(0))
            except (RuntimeError, NotImplementedError) as exc:  # a network torch.func cannot vmap
                log.info("task '%s': per-example gradients one at a time (%s)", task.name, exc)
                vectorised = False
        if not vectorised:
            single = torch.func.grad(loss)
            for i in range(len(x)):
                grads = single(params, x[i], y[i])
                for n in names:
                    total[n].add_(grads[n].pow(2))
        if tracker is not None:
            tracker.advance(len(x))
    return {n: t / len(inputs) for n, t in total.items()}


def learn_fisher(recipe: Recipe, node_id: str | None, tasks: Sequence[Task], statistics: str | Path, *,
                 split: str = "train", examples: int = 256, labels: str = "data",
                 task_map: Mapping[str, str] | None = None, seed: int = 0, device: str = "auto",
                 progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> LearnResult:
    """Compute each input model's diagonal Fisher on its task, write them to ``statistics`` and return
    the recipe whose merge node ``node_id`` is ``fisher`` over that file.

    Models are matched to tasks by ``task_map`` (node id → task name), by name, or by expert file.
    ``info`` holds each model's Fisher norm and example count.
    """
    if labels not in LABEL_SOURCES:
        raise EngineInputError(f"unknown label source '{labels}' (data or model)")
    node_id = merge_node(recipe, node_id)
    dev = resolve_device(device)
    generator = torch.Generator().manual_seed(seed)
    sources = load_inputs(recipe, node_id, device=dev, progress=progress, cancel=cancel)
    owners = match_tasks(recipe, sources.keys, tasks, task_map)
    samples = {}
    for key in sources.keys:
        data = owners[key].data(split)
        if labels == "data" and data.labels is None:
            raise EngineInputError(f"task '{owners[key].name}': split '{split}' has no labels; use labels='model'")
        rows = sample_rows(len(data), examples, generator)
        samples[key] = (data.inputs[rows].to(dev), data.labels[rows].to(dev) if labels == "data" else None)
    tracker = ProgressTracker(progress, "fisher", sum(len(x) for x, _ in samples.values()))
    tensors: dict[str, torch.Tensor] = {}
    norms: dict[str, float] = {}
    for t, key in enumerate(sources.keys):
        x, y = samples[key]
        fisher = diagonal_fisher(owners[key], sources.model_state(t), sources.float_names, x, y, generator=generator,
                                 tracker=tracker, cancel=cancel)
        norms[key] = float(torch.sqrt(sum(f.pow(2).sum() for f in fisher.values())))
        tensors.update({statistics_key(key, n): f for n, f in fisher.items()})
    path = write_statistics(statistics, "fisher", sources.keys, tensors,
                            {"fisher_norms": json.dumps(norms), "labels": labels, "split": split})
    params = {"method": "fisher", "statistics": str(path)}
    info = {"fisher_norms": norms, "examples": {k: len(x) for k, (x, _) in samples.items()},
            "tasks": {k: t.name for k, t in owners.items()}}
    return LearnResult(learned_recipe(recipe, node_id, params), statistics=path, info=info)
