"""AdaMerging: task-arithmetic coefficients learned by minimising prediction entropy on unlabeled inputs.

``θ = θ0 + Σ_t λ_t τ_t`` (task-wise) or ``θ0 + Σ_t λ_{t,ℓ} τ_{t,ℓ}`` (layer-wise). The loss is the
sum over tasks of the mean Shannon entropy of each task's predictions on a batch of its unlabeled
inputs, the merged network evaluated through ``Task.forward`` (``torch.func.functional_call``), so
only λ receives gradients; θ0 and the task vectors stay fixed.

Choices, after the authors' code (EnnengYang/AdaMerging) and FusionBench's port: λ starts at 0.3
(the paper's prior, task arithmetic's usual scale); Adam with learning rate 1e-3 (betas 0.9, 0.999);
32 unlabeled examples per task per step (the reference code takes two batches of 16); λ kept in
[0, 1] (the reference code clamps too). The paper
runs 500 steps on CLIP; ``steps`` defaults to that. Layer-wise here means one λ per numbered layer
and per module outside them (see ``engine.learn.coefficients``); the reference code learns one per
parameter tensor, which is aTLAS's granularity (``engine.learn.atlas``). The batches are drawn with
the ``seed``, so a run is reproducible.

The result is a ``task_arithmetic`` node with ``lambda`` 1 and the learned λ as per-model ``weight``
values (scalars, or per-layer override schedules): ``weightsmith run`` needs no data to rebuild it.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from engine.errors import EngineInputError
from engine.evaluation.tasks import Task
from engine.graph import Recipe
from engine.learn.common import LearnResult, learned_recipe, load_mix, merge_node
from engine.learn.coefficients import coefficient_table, optimize, table_tensor, weight_schedules
from engine.learn.objectives import require_learnable, task_entropy
from engine.runtime import CancelToken, resolve_device
from engine.runtime.progress import ProgressCallback

MODES = ("task", "layer")


def unlabeled_inputs(tasks: Sequence[Task], split: str, device: torch.device) -> list[torch.Tensor]:
    """Each task's inputs of ``split`` on ``device`` (labels, if any, are not used)."""
    out = []
    for task in tasks:
        require_learnable(task)
        data = task.data(split)
        if len(data) == 0:
            raise EngineInputError(f"task '{task.name}': split '{split}' is empty")
        out.append(data.inputs.to(device))
    return out


@torch.no_grad()
def mean_entropy(tasks: Sequence[Task], inputs: Sequence[torch.Tensor], params: Mapping[str, torch.Tensor],
                 batch_size: int = 512) -> float:
    """Mean over tasks of the mean prediction entropy on all of each task's ``inputs``."""
    values = []
    for task, x in zip(tasks, inputs):
        total = 0.0
        for start in range(0, len(x), batch_size):
            batch = x[start:start + batch_size]
            total += float(task_entropy(task, task.forward(params, batch), batch)) * len(batch)
        values.append(total / len(x))
    return sum(values) / len(values)


def learn_adamerging(recipe: Recipe, node_id: str | None, tasks: Sequence[Task], *, mode: str = "layer",
                     steps: int = 500, lr: float = 1e-3, initial: float = 0.3, batch_size: int = 32,
                     split: str = "unlabeled", clamp: bool = True, seed: int = 0, device: str = "auto",
                     progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> LearnResult:
    """Learn task-wise (``mode="task"``) or layer-wise (``mode="layer"``) λ for merge node ``node_id``.

    ``tasks`` supply the unlabeled inputs (``split``) and the network (``forward``); every task's
    entropy counts, whichever model it belongs to. Returns the recipe with the learned
    ``task_arithmetic`` node, the coefficients per model and group, the per-step history (``loss``:
    summed entropy of the step's batches, ``entropy``: its mean over tasks) and, in ``info``, the
    mean entropy on the whole split before and after (``initial_entropy``, ``final_entropy``).
    """
    if mode not in MODES:
        raise EngineInputError(f"unknown AdaMerging mode '{mode}' (task or layer)")
    if not tasks:
        raise EngineInputError("AdaMerging needs at least one task with unlabeled inputs")
    node_id = merge_node(recipe, node_id)
    dev = resolve_device(device)
    generator = torch.Generator().manual_seed(seed)
    mix, groups = load_mix(recipe, node_id, mode, device=dev, progress=progress, cancel=cancel)
    inputs = unlabeled_inputs(tasks, split, dev)
    start = torch.full((mix.num_models, len(groups.labels)), float(initial), device=dev)
    initial_entropy = mean_entropy(tasks, inputs, mix.params(start))

    def objective(params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        entropies = []
        for task, x in zip(tasks, inputs):
            rows = torch.randint(len(x), (min(batch_size, len(x)),), generator=generator).to(dev)
            entropies.append(task_entropy(task, task.forward(params, x[rows]), x[rows]))
        loss = torch.stack(entropies).sum()
        return loss, {"entropy": float(loss.detach()) / len(entropies)}

    learned, history = optimize(mix, start, objective, steps=steps, lr=lr, clamp=(0.0, 1.0) if clamp else None,
                                phase=f"adamerging ({mode}-wise)", progress=progress, cancel=cancel)
    keys = recipe.inputs(node_id, "models")
    table = coefficient_table(keys, groups, learned)
    final_entropy = mean_entropy(tasks, inputs, mix.params(table_tensor(table, groups, dev)))
    params = {"method": "task_arithmetic", "lambda": 1.0, "normalize": False,
              "weight": weight_schedules(table, groups, float(initial))}
    return LearnResult(learned_recipe(recipe, node_id, params), table, history,
                       info={"initial_entropy": initial_entropy, "final_entropy": final_entropy, "mode": mode,
                             "steps": steps, "groups": groups.labels})
