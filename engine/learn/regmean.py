"""RegMean, data part: the Gram matrix of every linear layer's inputs, per model on its own task.

For model t and each ``nn.Linear`` of its task's network (found by ``Task.build_model``, reported
under the weight's state-dict name by ``engine.evaluation.hooks``), ``G_t = X_tᵀ X_t / n_t``: X_t the
layer's inputs (one row per example, or per token for sequence models) over ``examples`` inputs drawn
at random (``seed``) from ``split`` — FusionBench uses 256 training examples; the inputs need no
labels. Dividing by the row count n_t keeps tasks with more rows (longer texts) from dominating. A
language-model task's padding is left out (its ``token_mask``), so n_t counts real tokens.

The Gram matrices go into a statistics file (see ``engine.graph.statistics_files``); the learned recipe's
merge node becomes ``regmean`` naming that file, with ``alpha`` (off-diagonal shrinkage) as its
parameter — it can be changed later without gathering the statistics again, and the same file serves
``mats`` (the system solved by conjugate gradient).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import torch

from engine.evaluation.hooks import linear_input_grams
from engine.evaluation.tasks import Task
from engine.graph import Recipe
from engine.graph.resident_inputs import load_inputs
from engine.graph.statistics_files import statistics_key
from engine.learn.common import LearnResult, learned_recipe, match_tasks, merge_node, sample_rows
from engine.learn.statistics import write_statistics
from engine.runtime import CancelToken, ProgressTracker, resolve_device
from engine.runtime.progress import ProgressCallback


def learn_regmean(recipe: Recipe, node_id: str | None, tasks: Sequence[Task], statistics: str | Path, *,
                  split: str = "train", examples: int = 256, alpha: float = 0.6,
                  task_map: Mapping[str, str] | None = None, batch_size: int = 256, seed: int = 0,
                  device: str = "auto", progress: ProgressCallback | None = None,
                  cancel: CancelToken | None = None) -> LearnResult:
    """Gather each input model's per-layer input Gram matrices on its task, write them to
    ``statistics`` and return the recipe whose merge node ``node_id`` is ``regmean`` over that file.

    Models are matched to tasks by ``task_map`` (node id → task name), by name, or by expert file.
    ``info`` holds the layers covered and each model's example count.
    """
    node_id = merge_node(recipe, node_id)
    dev = resolve_device(device)
    generator = torch.Generator().manual_seed(seed)
    sources = load_inputs(recipe, node_id, device=dev, progress=progress, cancel=cancel)
    owners = match_tasks(recipe, sources.keys, tasks, task_map)
    wanted = set(sources.float_names)
    tracker = ProgressTracker(progress, "regmean", len(sources.keys))
    tensors: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    layers: set[str] = set()
    for t, key in enumerate(sources.keys):
        if cancel is not None:
            cancel.raise_if_cancelled()
        task = owners[key]
        data = task.data(split)
        inputs = data.inputs[sample_rows(len(data), examples, generator)]
        model = task.build_model(sources.model_state(t), dev)
        grams = linear_input_grams(model, inputs, batch_size=batch_size, token_mask=getattr(task, "token_mask", None),
                                   cancel=cancel)
        for name, (gram, rows) in grams.items():
            if name in wanted:
                tensors[statistics_key(key, name)] = gram / rows
                layers.add(name)
        counts[key] = len(inputs)
        del model
        tracker.advance(message=task.name)
    path = write_statistics(statistics, "regmean", sources.keys, tensors, {"split": split})
    params = {"method": "regmean", "statistics": str(path), "alpha": alpha}
    info = {"layers": sorted(layers), "examples": counts, "tasks": {k: t.name for k, t in owners.items()}}
    return LearnResult(learned_recipe(recipe, node_id, params), statistics=path, info=info)
