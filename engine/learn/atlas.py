"""aTLAS: anisotropic scaling of task vectors — one learned coefficient per parameter block of each.

``θ = θ0 + Σ_t Σ_b λ_{t,b} τ_{t,b}``, one λ per task vector t and parameter tensor b (the paper's
"blocks"), learned by gradient descent through ``Task.forward`` on a few samples; only λ receives
gradients.

Choices, after the authors' code (fredzzhang/atlas, ``src/composition.py`` and
``learn_task_addition.py``): λ starts at 0 (the pre-trained model) and is not clamped; Adam with
the gradient norm clipped at 1 (the reference clips too); the objective is the cross-entropy on ``shots``
labelled examples per class of each task (the few-shot setting, drawn from ``split`` with the
``seed``), summed over tasks. ``objective="entropy"`` instead minimises the prediction entropy on the
unlabeled inputs (the paper's test-time-adaptation variant) and needs no labels. The reference code
keeps the coefficients of the epoch with the best validation accuracy; this one keeps the last, so
no validation data is needed. The learning rate defaults to 1e-2 and the step count to 300, chosen
for the demo zoo; the paper trains longer on CLIP.

The result is a ``task_arithmetic`` node with ``lambda`` 1 and one override schedule per model
(``{"filter": "^backbone\\.layers\\.0\\.fc1\\.weight$", "value": …}`` per tensor).
"""

from __future__ import annotations

from typing import Sequence

import torch

from engine.errors import EngineInputError
from engine.evaluation.tasks import Task
from engine.graph import Recipe
from engine.learn.adamerging import mean_entropy, unlabeled_inputs
from engine.learn.common import LearnResult, learned_recipe, load_mix, merge_node
from engine.learn.coefficients import coefficient_table, optimize, table_tensor, weight_schedules
from engine.learn.objectives import task_entropy, task_loss
from engine.runtime import CancelToken, resolve_device
from engine.runtime.progress import ProgressCallback

OBJECTIVES = ("cross_entropy", "entropy")


def few_shot(task: Task, split: str, shots: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``shots`` examples of each class of ``task``'s ``split`` (inputs, labels), drawn at random."""
    data = task.data(split)
    if data.labels is None:
        raise EngineInputError(f"task '{task.name}': split '{split}' has no labels for aTLAS's cross-entropy "
                               "(use objective 'entropy' for unlabeled data)")
    if data.labels.dim() != 1:
        raise EngineInputError(f"task '{task.name}': aTLAS draws its shots per class, and this task's labels are not "
                               "classes (use objective 'entropy')")
    order = torch.randperm(len(data), generator=generator)
    labels = data.labels[order]
    keep = torch.cat([order[labels == c][:shots] for c in labels.unique()])
    return data.inputs[keep], data.labels[keep]


def learn_atlas(recipe: Recipe, node_id: str | None, tasks: Sequence[Task], *, objective: str = "cross_entropy",
                shots: int = 16, split: str | None = None, steps: int = 300, lr: float = 1e-2,
                batch_size: int = 64, initial: float = 0.0, seed: int = 0, device: str = "auto",
                progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> LearnResult:
    """Learn one coefficient per (task vector, tensor) for merge node ``node_id``.

    ``objective`` ``cross_entropy`` uses ``shots`` labelled examples per class from ``split`` (default
    ``train``); ``entropy`` uses the unlabeled inputs of ``split`` (default ``unlabeled``). Each step
    draws ``batch_size`` examples per task. Returns the recipe, the coefficients per model and tensor,
    and the history (``loss`` summed over tasks per step); ``info`` has the sample counts.
    """
    if objective not in OBJECTIVES:
        raise EngineInputError(f"unknown aTLAS objective '{objective}' ({', '.join(OBJECTIVES)})")
    if not tasks:
        raise EngineInputError("aTLAS needs at least one task")
    node_id = merge_node(recipe, node_id)
    dev = resolve_device(device)
    generator = torch.Generator().manual_seed(seed)
    mix, groups = load_mix(recipe, node_id, "tensor", device=dev, progress=progress, cancel=cancel)
    if objective == "cross_entropy":
        samples = [few_shot(t, split or "train", shots, generator) for t in tasks]
        samples = [(x.to(dev), y.to(dev)) for x, y in samples]
    else:
        samples = [(x, None) for x in unlabeled_inputs(tasks, split or "unlabeled", dev)]

    def loss_fn(params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        losses = []
        for task, (x, y) in zip(tasks, samples):
            rows = torch.randint(len(x), (min(batch_size, len(x)),), generator=generator).to(dev)
            outputs = task.forward(params, x[rows])
            losses.append(task_loss(task, outputs, y[rows]) if y is not None else task_entropy(task, outputs, x[rows]))
        return torch.stack(losses).sum(), {}

    start = torch.full((mix.num_models, len(groups.labels)), float(initial), device=dev)
    learned, history = optimize(mix, start, loss_fn, steps=steps, lr=lr, clamp=None, clip_norm=1.0, phase="aTLAS",
                                progress=progress, cancel=cancel)
    keys = recipe.inputs(node_id, "models")
    table = coefficient_table(keys, groups, learned)
    params = {"method": "task_arithmetic", "lambda": 1.0, "normalize": False,
              "weight": weight_schedules(table, groups, float(initial))}
    info = {"objective": objective, "steps": steps, "samples": {t.name: len(x) for t, (x, _) in zip(tasks, samples)}}
    if objective == "entropy":
        final = mix.params(table_tensor(table, groups, dev))
        info["final_entropy"] = mean_entropy(tasks, [x for x, _ in samples], final)
    return LearnResult(learned_recipe(recipe, node_id, params), table, history, info=info)

