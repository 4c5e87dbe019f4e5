"""Learned task-vector coefficients, shared by AdaMerging, aTLAS and Self Positioning (and the loop by
Concrete masks, ``engine.learn.concrete``).

The merged model is ``θ = θ0 + Σ_t λ[t, g(n)] τ_t[n]`` where tensor ``n`` belongs to coefficient
group ``g(n)``. The granularity decides the groups:

- ``task``: one group, one λ per task (task-wise AdaMerging);
- ``layer``: one group per numbered layer (``backbone.layers.3.*``, ``model.layers.12.*``) and one per
  module outside them (``backbone.embed.*``, ``model.norm.*``) — layer-wise AdaMerging;
- ``tensor``: one group per tensor, aTLAS's "parameter blocks".

The learned values become plain recipe values: a scalar per model, or a per-model override schedule
``[{"filter": "^backbone\\.layers\\.3\\.", "value": 0.41}, …, {"value": DEFAULT}]`` on a
``task_arithmetic`` node with ``lambda`` 1 — so the executor reproduces the merge without data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import torch

from engine.checkpoints import layer_index
from engine.errors import EngineInputError
from engine.graph.resident_inputs import ResidentInputs
from engine.runtime import CancelToken, ProgressTracker
from engine.runtime.progress import ProgressCallback

GRANULARITIES = ("task", "layer", "tensor")
_FIRST_NUMBER = re.compile(r"^(.*?(?:^|\.)\d+)(?:\.|$)")


@dataclass(frozen=True)
class Groups:
    """Coefficient groups: ``labels[g]`` names group g, ``filters[g]`` is the regular expression that
    selects its tensors in a schedule, ``index[name]`` the group of each tensor."""

    labels: list[str]
    filters: list[str]
    index: dict[str, int]


def group_of(name: str, granularity: str) -> tuple[str, str]:
    """(label, schedule filter) of the group tensor ``name`` falls in."""
    if granularity == "task":
        return "all", ""
    if granularity == "tensor":
        return name, f"^{re.escape(name)}$"
    if granularity != "layer":
        raise EngineInputError(f"unknown granularity '{granularity}' (one of {', '.join(GRANULARITIES)})")
    if layer_index(name) is not None:
        prefix = _FIRST_NUMBER.match(name).group(1)
        return prefix, f"^{re.escape(prefix)}(\\.|$)"
    module = name.rsplit(".", 1)[0] if "." in name else name
    return module, f"^{re.escape(module)}\\.[^.]+$" if "." in name else f"^{re.escape(name)}$"


def make_groups(names: Sequence[str], granularity: str) -> Groups:
    """The groups of ``names`` in order of first appearance."""
    labels: list[str] = []
    filters: list[str] = []
    index: dict[str, int] = {}
    for name in names:
        label, pattern = group_of(name, granularity)
        if label not in labels:
            labels.append(label)
            filters.append(pattern)
        index[name] = labels.index(label)
    return Groups(labels, filters, index)


class TaskVectorMix:
    """θ0 + Σ_t λ[t, g] τ_t as a differentiable function of the coefficient matrix λ [T, G].

    Reads θ0 and the task vectors of the float tensors from a merge node's resident inputs (views, no
    copies: T + 1 copies of the model on the device); other tensors (integer buffers) are passed through.
    """

    def __init__(self, inputs: ResidentInputs, groups: Groups):
        if inputs.anchor is None:
            raise EngineInputError("this method needs a base model on the merge node's 'base' port")
        self.names = inputs.float_names
        self.groups = groups
        self.base = {s.name: inputs.view(inputs.anchor, i) for i, s in enumerate(inputs.spans)}
        self.stacked = {s.name: inputs.stacked(i) for i, s in enumerate(inputs.spans)}
        self.group_index = {n: groups.index[n] for n in self.names}
        self.passthrough = dict(inputs.fixed)
        self._num_models = len(inputs.keys)

    @property
    def num_models(self) -> int:
        return self._num_models

    def params(self, coefficients: torch.Tensor) -> dict[str, torch.Tensor]:
        """The merged tensors for ``coefficients`` [T, G] (differentiable in them)."""
        out = dict(self.passthrough)
        for n in self.names:
            lam = coefficients[:, self.group_index[n]]
            out[n] = self.base[n] + torch.tensordot(lam, self.stacked[n], dims=1)
        return out


Objective = Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]


class Mix(Protocol):
    """What ``optimize`` learns through: merged tensors as a differentiable function of one learned
    tensor (``TaskVectorMix``: the coefficient matrix; a Concrete mask's logits)."""

    def params(self, learned: torch.Tensor) -> dict[str, torch.Tensor]:
        """The merged tensors for ``learned`` (differentiable in it)."""


OPTIMIZERS = ("adam", "sgd")


def optimize(mix: Mix, initial: torch.Tensor, objective: Objective, *, steps: int, lr: float,
             clamp: tuple[float, float] | None, phase: str, progress: ProgressCallback | None,
             cancel: CancelToken | None, clip_norm: float | None = None, optimizer: str = "adam",
             penalty: Callable[[torch.Tensor], torch.Tensor] | None = None,
             ) -> tuple[torch.Tensor, list[dict[str, float]]]:
    """Minimise ``objective(mix.params(x))`` (+ ``penalty(x)``) over the learned tensor x (the
    coefficients, or any tensor a mix turns into merged parameters) with Adam or plain SGD
    (``optimizer``); only x receives gradients. ``clip_norm`` caps the gradient's norm; ``clamp``
    projects x into a range after each step. Returns the final x and one history entry per step
    (``step``, ``loss`` — including the penalty — and the objective's figures)."""
    if steps < 1:
        raise EngineInputError("the number of steps must be at least 1")
    if optimizer not in OPTIMIZERS:
        raise EngineInputError(f"unknown optimizer '{optimizer}' ({', '.join(OPTIMIZERS)})")
    coefficients = initial.clone().requires_grad_(True)
    step_rule = (torch.optim.Adam if optimizer == "adam" else torch.optim.SGD)([coefficients], lr=lr)
    tracker = ProgressTracker(progress, phase, steps)
    history: list[dict[str, float]] = []
    for step in range(steps):
        if cancel is not None:
            cancel.raise_if_cancelled()
        loss, figures = objective(mix.params(coefficients))
        if penalty is not None:
            loss = loss + penalty(coefficients)
        step_rule.zero_grad(set_to_none=True)
        loss.backward()
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_([coefficients], clip_norm)
        step_rule.step()
        if clamp is not None:
            with torch.no_grad():
                coefficients.clamp_(*clamp)
        history.append({"step": step + 1, "loss": float(loss.detach()), **figures})
        tracker.advance(message=f"loss {history[-1]['loss']:.4f}")
    return coefficients.detach(), history


def coefficient_table(keys: Sequence[str], groups: Groups, coefficients: torch.Tensor,
                      digits: int = 6) -> dict[str, dict[str, float]]:
    """{model: {group label: value}}, values rounded to ``digits`` decimals (as written in the recipe)."""
    return {k: {label: round(float(coefficients[t, g]), digits) for g, label in enumerate(groups.labels)}
            for t, k in enumerate(keys)}


def table_tensor(table: dict[str, dict[str, float]], groups: Groups, device: torch.device) -> torch.Tensor:
    """The coefficient matrix [T, G] of a ``coefficient_table`` (the values the recipe holds)."""
    return torch.tensor([[row[label] for label in groups.labels] for row in table.values()], device=device)


def weight_schedules(table: dict[str, dict[str, float]], groups: Groups, default: float) -> dict[str, object]:
    """Per-model ``weight`` values for a task_arithmetic node: a scalar per model for one group, else an
    override schedule with one filter per group and ``default`` for any tensor no group covers."""
    if groups.labels == ["all"]:
        return {k: row["all"] for k, row in table.items()}
    return {k: [*({"filter": f, "value": row[label]} for label, f in zip(groups.labels, groups.filters)),
                {"value": default}]
            for k, row in table.items()}
