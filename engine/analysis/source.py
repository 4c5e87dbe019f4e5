"""Where analyses get their task vectors: one tensor name at a time, never the whole model at once.

``task_vectors(recipe, node_id)`` streams the inputs of a merge node through the graph executor (any
checkpoint format, task-vector and scale nodes upstream); ``from_state_dicts`` wraps tensors already in
memory (tests, a live session's buffers). Both yield ``TensorDeltas``: the tensor's name, its layer,
θ0 and one task vector per input model, fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import torch

from engine.checkpoints import layer_index, num_layers
from engine.errors import EngineInputError
from engine.graph import GraphRun, Recipe
from engine.runtime import CancelToken, ProgressTracker
from engine.runtime.progress import ProgressCallback


@dataclass
class TensorDeltas:
    """One floating-point tensor's base θ0, task vectors τt (input order) and, when asked, the merged θ."""

    name: str
    layer: int | None
    num_layers: int
    base: torch.Tensor
    deltas: list[torch.Tensor]
    merged: torch.Tensor | None = None


def layer_label(layer: int | None) -> str:
    """How a layer is labelled in results: its index, or ``other`` for tensors outside numbered layers."""
    return "other" if layer is None else str(layer)


def task_vectors(recipe: Recipe, node_id: str, *, device: str | torch.device = "cpu", with_merged: bool = False,
                 progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> Iterator[TensorDeltas]:
    """Stream a merge node's task vectors (its models minus its base), tensor by tensor; with
    ``with_merged`` also the node's merged tensor (after the method's statistics pass, if it has one)."""
    node = recipe.node(node_id)
    if node.type != "merge" or not recipe.inputs(node_id, "base"):
        raise EngineInputError(f"'{node_id}' must be a merge node with a base to analyse its task vectors")
    with GraphRun(recipe, device=device, progress=progress, cancel=cancel) as run:
        if with_merged:
            run.gather_statistics([node_id])
        infos = [i for i in run.tensor_infos(node_id) if i.dtype.is_floating_point]
        names = [i.name for i in infos]
        layers = num_layers(names)
        tracker = ProgressTracker(progress, "analysing", len(names))
        if not names:
            return
        for name in run.stream(names, run.checkpoints_for([node_id])):
            inputs, _, _ = run.merge_inputs(node_id, name)
            merged = run.value(node_id, name) if with_merged else None
            yield TensorDeltas(name, layer_index(name), layers, inputs.base, list(inputs.deltas), merged)
            tracker.advance(message=name)


def from_state_dicts(base: Mapping[str, torch.Tensor],
                     models: Sequence[Mapping[str, torch.Tensor]]) -> Iterator[TensorDeltas]:
    """Task vectors of in-memory state dicts (floating-point tensors of the base only)."""
    names = [n for n, t in base.items() if t.is_floating_point()]
    layers = num_layers(names)
    for name in names:
        b = base[name].float()
        yield TensorDeltas(name, layer_index(name), layers, b, [m[name].float() - b for m in models])
