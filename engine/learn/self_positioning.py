"""Self Positioning: task-vector interpolation coefficients found by SGD on a small labelled probe set.

``θ = θ0 + Σ_t α_t τ_t``, one coefficient per task vector, α minimising the summed cross-entropy of the
merged network on a *probe set* — the same number of labelled examples from each task (Li et al.
2024, "Improving General Text Embedding Model: Tackling Task Conflict and Data Imbalance through
Model Merging", arXiv:2410.15035, §Self Positioning: a balanced probe set removes the data imbalance
of joint training) — plus ``mu · Σ_t |α_t|``, a penalty that keeps the merge near the pre-trained
model (its form is this implementation's choice). The network is evaluated through ``Task.forward`` (``engine.learn.coefficients``), so only α
receives gradients.

No reference code was found; the open choices are made here as follows. The optimiser is plain SGD
(the paper's "stochastic gradient descent"); the penalty is the L1 norm of α with ``mu`` 0.05; α
starts at 0.3, task arithmetic's usual scale, and is not clamped; ``examples`` (64) labelled rows per
task are drawn from ``split`` (``train``) with the ``seed``, and each step takes ``batch_size`` of them
per task. The learning rate (0.01, from {0.01, 0.03, 0.1, 0.3} with 200 steps) was chosen on the demo
zoo's validation split, where larger rates make SGD's batch noise raise the probe loss and 0.3
diverges; the penalty made no difference there beyond noise (``mu`` 0 scored 0.2 points higher).

The result is a ``task_arithmetic`` node with ``lambda`` 1 and the learned α as per-model ``weight``
values, which ``weightsmith run`` rebuilds without data.
"""

from __future__ import annotations

from typing import Sequence

import torch

from engine.errors import EngineInputError
from engine.evaluation.tasks import Task
from engine.graph import Recipe
from engine.learn.common import LearnResult, learned_recipe, load_mix, merge_node, sample_rows
from engine.learn.coefficients import coefficient_table, optimize, table_tensor, weight_schedules
from engine.learn.objectives import require_learnable, task_loss
from engine.runtime import CancelToken, resolve_device
from engine.runtime.progress import ProgressCallback


def probe_set(tasks: Sequence[Task], split: str, examples: int, generator: torch.Generator,
              device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``examples`` labelled rows of each task's ``split`` (inputs, labels), drawn at random."""
    out = []
    for task in tasks:
        require_learnable(task)
        data = task.data(split)
        if data.labels is None:
            raise EngineInputError(f"task '{task.name}': split '{split}' has no labels for Self Positioning's "
                                   "cross-entropy")
        if len(data) == 0:
            raise EngineInputError(f"task '{task.name}': split '{split}' is empty")
        rows = sample_rows(len(data), examples, generator)
        out.append((data.inputs[rows].to(device), data.labels[rows].to(device)))
    return out


@torch.no_grad()
def probe_loss(tasks: Sequence[Task], probe: Sequence[tuple[torch.Tensor, torch.Tensor]],
               params: dict[str, torch.Tensor]) -> float:
    """Mean over tasks of the cross-entropy on each task's whole probe set."""
    return sum(float(task_loss(task, task.forward(params, x), y)) for task, (x, y) in zip(tasks, probe)) / len(probe)


def learn_self_positioning(recipe: Recipe, node_id: str | None, tasks: Sequence[Task], *, examples: int = 64,
                           split: str = "train", steps: int = 200, lr: float = 0.01, mu: float = 0.05,
                           initial: float = 0.3, batch_size: int = 32, seed: int = 0, device: str = "auto",
                           progress: ProgressCallback | None = None,
                           cancel: CancelToken | None = None) -> LearnResult:
    """Learn one coefficient per task vector of merge node ``node_id`` on a balanced labelled probe set.

    Returns the recipe with the learned ``task_arithmetic`` node, the coefficients per model, the
    per-step history (``loss``: the batches' summed cross-entropy plus the penalty) and, in ``info``,
    the mean cross-entropy on the whole probe set before and after (``initial_loss``, ``final_loss``).
    """
    if not tasks:
        raise EngineInputError("Self Positioning needs at least one task with labelled examples")
    if examples < 1 or batch_size < 1:
        raise EngineInputError("Self Positioning needs at least one example and a batch of at least one")
    if mu < 0:
        raise EngineInputError(f"the penalty weight mu must not be negative, got {mu}")
    node_id = merge_node(recipe, node_id)
    dev = resolve_device(device)
    generator = torch.Generator().manual_seed(seed)
    mix, groups = load_mix(recipe, node_id, "task", device=dev, progress=progress, cancel=cancel)
    probe = probe_set(tasks, split, examples, generator, dev)
    start = torch.full((mix.num_models, 1), float(initial), device=dev)
    initial_loss = probe_loss(tasks, probe, mix.params(start))

    def objective(params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        losses = []
        for task, (x, y) in zip(tasks, probe):
            rows = torch.randint(len(x), (min(batch_size, len(x)),), generator=generator).to(dev)
            losses.append(task_loss(task, task.forward(params, x[rows]), y[rows]))
        loss = torch.stack(losses).sum()
        return loss, {"cross_entropy": float(loss.detach()) / len(losses)}

    learned, history = optimize(mix, start, objective, steps=steps, lr=lr, clamp=None, optimizer="sgd",
                                penalty=lambda alpha: mu * alpha.abs().sum(), phase="self positioning",
                                progress=progress, cancel=cancel)
    keys = recipe.inputs(node_id, "models")
    table = coefficient_table(keys, groups, learned)
    final_loss = probe_loss(tasks, probe, mix.params(table_tensor(table, groups, dev)))
    params = {"method": "task_arithmetic", "lambda": 1.0, "normalize": False,
              "weight": weight_schedules(table, groups, float(initial))}
    info = {"initial_loss": initial_loss, "final_loss": final_loss, "steps": steps, "mu": mu,
            "examples": {t.name: len(x) for t, (x, _) in zip(tasks, probe)}}
    return LearnResult(learned_recipe(recipe, node_id, params), table, history, info=info)
