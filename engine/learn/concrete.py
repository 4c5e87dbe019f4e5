"""Concrete subspace masks: one Concrete (relaxed Bernoulli) mask shared by all task vectors, meta-learned
on unlabeled test inputs, saved as a mask file for the data-free ``concrete`` merge.

Tang et al. 2023, "Concrete Subspace Learning based Interference Elimination for Multi-task Model
Fusion" (arXiv:2312.06173); FusionBench ``method/concrete_subspace/clip_concrete_task_arithmetic.py``
and ``models/masks/mask_model.py`` (tanganke/fusion_bench). Each parameter has a mask logit ℓ; a step
draws ``m = sigmoid((ℓ + log u − log(1 − u)) / T)``, u uniform (the reparameterised relaxed Bernoulli),
divides m by its mean over each tensor, merges ``θ = θ0 + λ Σ_t m ⊙ τ_t`` and lowers AdaMerging's
objective — the summed prediction entropy of every task on a batch of its unlabeled inputs — by
gradient through ``Task.forward`` (the loop of ``engine.learn.coefficients.optimize``; only ℓ learns).

Choices, after FusionBench's ``clip_concrete_task_arithmetic`` (its configuration): ℓ starts at 0
(keep probability 0.5); temperature 0.5; Adam; task arithmetic's λ stays fixed at 0.3 (the
reference skips the inner optimisation for task arithmetic); the final mask is one more continuous
draw (its ``eval_mask_type: continuous``), rescaled the same way. The draws come from a generator
seeded with ``seed`` on the learning device. The learning rate is FusionBench's 1e-3, which also
scored best on the demo zoo's validation split among {1e-3, 3e-3, 1e-2, 5e-2, 0.2} (higher rates
lower the entropy further and the accuracy with it, as AdaMerging does there); the step count is
200, where FusionBench runs thousands on CLIP.

The final mask goes into a statistics file of kind ``concrete`` (see
``engine.graph.statistics_files``): one tensor per float tensor of the model, stored once, under the
first input model's key; the learned recipe's merge node becomes ``concrete`` naming that file, with
``base_method`` task arithmetic (TIES may be chosen later without learning again).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from engine.errors import EngineInputError
from engine.evaluation.tasks import Task
from engine.graph import Recipe
from engine.graph.resident_inputs import ResidentInputs, load_inputs
from engine.graph.statistics_files import statistics_key
from engine.learn.adamerging import mean_entropy, unlabeled_inputs
from engine.learn.coefficients import optimize
from engine.learn.common import LearnResult, learned_recipe, merge_node
from engine.learn.objectives import task_entropy
from engine.learn.statistics import write_statistics
from engine.runtime import CancelToken, resolve_device
from engine.runtime.progress import ProgressCallback


class ConcreteMix:
    """``θ0 + λ · m̂ ⊙ Σ_t τ_t`` as a differentiable function of the flat mask logits ℓ [numel]: each
    call to ``params`` draws a fresh relaxed-Bernoulli mask m and rescales it per tensor (m̂ = m / mean)."""

    def __init__(self, inputs: ResidentInputs, lam: float, temperature: float, generator: torch.Generator):
        if inputs.anchor is None:
            raise EngineInputError("Concrete masks need a base model on the merge node's 'base' port")
        self.inputs = inputs
        self.summed = inputs.vectors.sum(0)
        self.lam = lam
        self.temperature = temperature
        self.generator = generator

    def sample(self, logits: torch.Tensor) -> list[torch.Tensor]:
        """One continuous mask draw, rescaled per tensor, as one flat piece per tensor (differentiable in ℓ)."""
        u = torch.rand(logits.shape, generator=self.generator, device=logits.device).clamp_(1e-6, 1 - 1e-6)
        mask = torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) / self.temperature)
        pieces = [mask[s.start:s.stop] for s in self.inputs.spans]
        return [p / p.mean() for p in pieces]

    def merged(self, mask: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """The merged state dict for a per-tensor ``mask`` (flat pieces, as ``sample`` returns)."""
        out = dict(self.inputs.fixed)
        for i, (s, m) in enumerate(zip(self.inputs.spans, mask)):
            delta = self.summed[s.start:s.stop] * m
            out[s.name] = (self.inputs.view(self.inputs.anchor, i) + self.lam * delta.view(s.shape))
        return out

    def params(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """The merged tensors through a fresh mask draw (what ``optimize`` learns through)."""
        return self.merged(self.sample(logits))


def learn_concrete(recipe: Recipe, node_id: str | None, tasks: Sequence[Task], statistics: str | Path, *,
                   steps: int = 200, lr: float = 1e-3, lam: float = 0.3, temperature: float = 0.5,
                   initial: float = 0.0, batch_size: int = 32, split: str = "unlabeled", seed: int = 0,
                   device: str = "auto", progress: ProgressCallback | None = None,
                   cancel: CancelToken | None = None) -> LearnResult:
    """Learn a shared Concrete mask for merge node ``node_id`` on the tasks' unlabeled inputs, write the
    final mask to ``statistics`` and return the recipe whose merge node is ``concrete`` over that file.

    ``info`` holds the mean entropy on the whole split with an unlearned draw (logits ``initial``) and
    with the final mask (``initial_entropy``, ``final_entropy``), and the share of parameters whose
    learned keep probability is above 0.5 (``kept``).
    """
    if not tasks:
        raise EngineInputError("Concrete masks need at least one task with unlabeled inputs")
    if temperature <= 0:
        raise EngineInputError(f"the Concrete temperature must be positive, got {temperature}")
    node_id = merge_node(recipe, node_id)
    if not recipe.inputs(node_id, "base"):
        raise EngineInputError("Concrete masks need a base model on the merge node's 'base' port")
    dev = resolve_device(device)
    generator = torch.Generator(device=dev).manual_seed(seed)
    batches = torch.Generator().manual_seed(seed)
    resident = load_inputs(recipe, node_id, device=dev, progress=progress, cancel=cancel)
    mix = ConcreteMix(resident, lam, temperature, generator)
    inputs = unlabeled_inputs(tasks, split, dev)
    start = torch.full((resident.numel,), float(initial), device=dev)
    with torch.no_grad():
        initial_entropy = mean_entropy(tasks, inputs, mix.params(start))

    def objective(params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        entropies = []
        for task, x in zip(tasks, inputs):
            rows = torch.randint(len(x), (min(batch_size, len(x)),), generator=batches).to(dev)
            entropies.append(task_entropy(task, task.forward(params, x[rows]), x[rows]))
        loss = torch.stack(entropies).sum()
        return loss, {"entropy": float(loss.detach()) / len(entropies)}

    logits, history = optimize(mix, start, objective, steps=steps, lr=lr, clamp=None, phase="concrete mask",
                               progress=progress, cancel=cancel)
    with torch.no_grad():
        mask = mix.sample(logits)
        final_entropy = mean_entropy(tasks, inputs, mix.merged(mask))
    first = resident.keys[0]
    tensors = {statistics_key(first, s.name): m.view(s.shape) for s, m in zip(resident.spans, mask)}
    path = write_statistics(statistics, "concrete", resident.keys, tensors,
                            {"temperature": str(temperature), "steps": str(steps)})
    params = {"method": "concrete", "statistics": str(path), "base_method": "task_arithmetic", "lambda": lam}
    info = {"initial_entropy": initial_entropy, "final_entropy": final_entropy, "steps": steps,
            "kept": float((torch.sigmoid(logits) > 0.5).float().mean())}
    return LearnResult(learned_recipe(recipe, node_id, params), history=history, statistics=path, info=info)
