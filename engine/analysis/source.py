"""Where analyses get their task vectors: one tensor name at a time, never the whole model at once.

``task_vectors(recipe, node_id)`` streams the inputs of a merge node through the graph's input loader
(``engine.graph.resident_inputs``: any checkpoint format, task-vector and scale nodes upstream);
``from_state_dicts`` wraps tensors already in memory (tests, a live session's buffers). Both yield
``TensorDeltas``: the tensor's name, its layer, θ0 and one task vector per input model, fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import torch

from engine.checkpoints import layer_index, num_layers
from engine.errors import EngineInputError
from engine.graph import Recipe
from engine.graph.node_kinds import MERGE
from engine.graph.resident_inputs import input_run, stream_inputs
from engine.runtime import CancelToken
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
    if node.kind is not MERGE or not recipe.inputs(node_id, "base"):
        raise EngineInputError(f"'{node_id}' must be a merge node with a base to analyse its task vectors")
    with input_run(recipe, node_id, device=device, progress=progress, cancel=cancel) as run:
        for item in stream_inputs(run, node_id, merged=with_merged, phase="analysing"):
            yield TensorDeltas(item.name, item.layer, item.num_layers, item.inputs.base, list(item.inputs.deltas),
                               item.merged)


def from_state_dicts(base: Mapping[str, torch.Tensor],
                     models: Sequence[Mapping[str, torch.Tensor]]) -> Iterator[TensorDeltas]:
    """Task vectors of in-memory state dicts (floating-point tensors of the base only)."""
    names = [n for n, t in base.items() if t.is_floating_point()]
    layers = num_layers(names)
    for name in names:
        b = base[name].float()
        yield TensorDeltas(name, layer_index(name), layers, b, [m[name].float() - b for m in models])
