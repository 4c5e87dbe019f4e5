"""A merge node's inputs in memory: streamed one tensor at a time, or held resident in flat buffers.

Live tuning, the learners and the analyses all need what a merge node's method receives — the base θ0
and the inputs as task vectors τt (or, without a base, the models θt) — outside a normal run. This
module is the one place that loads them, through the streaming ``GraphRun``, so checkpoints of any
format and task-vector, scale and add nodes upstream work exactly as in a run:

- ``stream_inputs(run, node_id)`` yields ``InputTensors`` per tensor name: the ``MergeInputs`` the method
  would get (and, when asked, the node's merged tensor) — one tensor in memory at a time (analyses);
- ``load_resident(run, node_id)`` (or ``load_inputs(recipe, node_id)``, which opens the run) collects
  that stream into ``ResidentInputs`` on the run's device (live tuning, learners).

``ResidentInputs`` layout: every floating-point tensor of the node's output occupies one ``Span`` of flat
fp32 buffers, in file order: the *anchor* (θ0 when the merge has a base, else absent) and one row per
input of the ``vectors`` matrix ``[models, numel]`` (its task vector when there is an anchor, else the
model itself). A tensor is a view into a buffer, the task vectors of a tensor for all models are one
``[models, *shape]`` view, and neighbouring tensors are one joint span. Integer buffers (position ids,
masks) are not merged: the node's reference copy is kept as is (``fixed``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch

from engine.checkpoints import layer_index, num_layers
from engine.graph.executor import GraphRun
from engine.graph.recipe import Recipe
from engine.methods import MergeInputs
from engine.runtime import CancelToken, ProgressTracker
from engine.runtime.progress import ProgressCallback


@dataclass(frozen=True)
class Span:
    """Where one tensor lives in the flat buffers."""

    name: str
    shape: tuple[int, ...]
    start: int
    stop: int
    layer: int | None


@dataclass(frozen=True)
class Layout:
    """A merge node's output: the float tensors' spans, every tensor name in file order, the layer count."""

    spans: list[Span]
    names: list[str]
    num_layers: int

    @property
    def numel(self) -> int:
        """Entries per flat buffer (all float tensors together)."""
        return self.spans[-1].stop if self.spans else 0


@dataclass
class InputTensors:
    """One tensor of a merge node's inputs: for a float tensor the ``MergeInputs`` its method receives
    (fp32 on the run's device) and, when asked, the node's ``merged`` result; for an integer buffer
    ``inputs`` is None and ``fixed`` is the node's copy of it."""

    name: str
    layer: int | None
    num_layers: int
    inputs: MergeInputs | None
    fixed: torch.Tensor | None = None
    merged: torch.Tensor | None = None


def upstream_recipe(recipe: Recipe, node_id: str) -> Recipe:
    """A copy of the recipe holding only ``node_id`` and what it depends on (no sinks, no other branches)."""
    keep = set(recipe.upstream(node_id)) | {node_id}
    sub = Recipe(recipe.name, recipe.base_dir)
    for nid, node in recipe.nodes.items():
        if nid in keep:
            sub.nodes[nid] = type(node)(node.id, node.type, dict(node.params), {})
    sub.edges = [e for e in recipe.edges if e.src in keep and e.dst in keep]
    return sub


def input_run(recipe: Recipe, node_id: str, *, device: str | torch.device = "auto",
              progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> GraphRun:
    """A ``GraphRun`` over ``node_id`` and what it depends on (only that part of the recipe must be valid)."""
    return GraphRun(upstream_recipe(recipe, node_id), device=device, progress=progress, cancel=cancel)


def layout(run: GraphRun, node_id: str) -> Layout:
    """The spans of a merge node's float tensors, every output name in order, and the layer count."""
    infos = run.tensor_infos(node_id)
    names = [i.name for i in infos]
    spans, offset = [], 0
    for info in infos:
        if info.dtype.is_floating_point:
            n = math.prod(info.shape)
            spans.append(Span(info.name, tuple(info.shape), offset, offset + n, layer_index(info.name)))
            offset += n
    return Layout(spans, names, num_layers(names))


def stream_inputs(run: GraphRun, node_id: str, *, fixed: bool = False, merged: bool = False,
                  phase: str = "reading inputs", plan: Layout | None = None) -> Iterator[InputTensors]:
    """Yield a merge node's inputs tensor by tensor, in file order (the next name's reads overlap).

    Float tensors only, unless ``fixed`` (then integer buffers come too, as ``InputTensors.fixed``).
    With ``merged`` the method's whole-model statistics are gathered first and each float tensor also
    carries the node's merged value. A yielded tensor is valid until the next one is asked for.
    Progress goes to the run's callback under ``phase``; the run's cancel token stops the stream.
    """
    plan = plan or layout(run, node_id)
    spans = {s.name: s for s in plan.spans}
    names = plan.names if fixed else [s.name for s in plan.spans]
    if merged:
        run.gather_statistics([node_id])
    tracker = ProgressTracker(run.progress, phase, len(names))
    if not names:
        return
    for name in run.stream(names, run.checkpoints_for([node_id])):
        span = spans.get(name)
        if span is None:
            item = InputTensors(name, layer_index(name), plan.num_layers, None, fixed=run.compute(node_id, name))
        else:
            inputs, _, _ = run.merge_inputs(node_id, name)
            item = InputTensors(name, span.layer, plan.num_layers, inputs,
                                merged=run.value(node_id, name) if merged else None)
        yield item
        tracker.advance(message=name)


@dataclass
class ResidentInputs:
    """A merge node's inputs in flat fp32 buffers on one device (see the module docstring).

    ``keys``: the input node ids in edge order; ``anchor``: θ0 flat, or None without a base;
    ``vectors``: ``[len(keys), numel]``, row t the task vector τt (with an anchor) or the model θt;
    ``fixed``: the integer buffers; ``order``: every tensor name in file order.
    """

    keys: list[str]
    spans: list[Span]
    order: list[str]
    num_layers: int
    anchor: torch.Tensor | None
    vectors: torch.Tensor
    fixed: dict[str, torch.Tensor]

    @property
    def numel(self) -> int:
        return self.vectors.shape[1]

    @property
    def nbytes(self) -> int:
        """Bytes held by the anchor and the vectors."""
        buffers = [self.vectors] + ([self.anchor] if self.anchor is not None else [])
        return sum(t.numel() * t.element_size() for t in buffers)

    @property
    def float_names(self) -> list[str]:
        """The names of the float tensors (the spans), in file order."""
        return [s.name for s in self.spans]

    def view(self, flat: torch.Tensor, i: int) -> torch.Tensor:
        """Span ``i`` of a flat buffer, shaped as its tensor."""
        s = self.spans[i]
        return flat[s.start:s.stop].view(s.shape)

    def stacked(self, i: int) -> torch.Tensor:
        """Span ``i`` of every vector at once, ``[len(keys), *shape]`` (a view)."""
        s = self.spans[i]
        return self.vectors[:, s.start:s.stop].view(len(self.keys), *s.shape)

    def merge_inputs(self, i: int) -> MergeInputs:
        """What a method receives for span ``i`` (views into the buffers: read them, don't write)."""
        if self.anchor is not None:
            return MergeInputs(self.view(self.anchor, i), self.keys, deltas=[self.view(v, i) for v in self.vectors])
        return MergeInputs(None, self.keys, models=[self.view(v, i) for v in self.vectors])

    def state_dict(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """A flat buffer (the anchor, a merged output) as a state dict of views, integer buffers included,
        in file order."""
        views = {s.name: self.view(flat, i) for i, s in enumerate(self.spans)}
        return {n: views[n] if n in views else self.fixed[n] for n in self.order}

    def model_state(self, t: int) -> dict[str, torch.Tensor]:
        """Input t's full weights θt as a state dict in file order: θ0 + τt in fresh tensors with an anchor,
        views of its row without one (read them, don't write)."""
        row = self.vectors[t]
        flat = row if self.anchor is None else self.anchor + row
        return self.state_dict(flat)


def load_resident(run: GraphRun, node_id: str, *, plan: Layout | None = None,
                  phase: str = "loading inputs") -> ResidentInputs:
    """Stream a merge node's inputs once into ``ResidentInputs`` on ``run.device``."""
    plan = plan or layout(run, node_id)
    keys = run.recipe.inputs(node_id, "models")
    has_anchor = bool(run.recipe.inputs(node_id, "base"))
    anchor = torch.empty(plan.numel, dtype=torch.float32, device=run.device) if has_anchor else None
    vectors = torch.empty(len(keys), plan.numel, dtype=torch.float32, device=run.device)
    fixed: dict[str, torch.Tensor] = {}
    spans = {s.name: s for s in plan.spans}
    for item in stream_inputs(run, node_id, fixed=True, phase=phase, plan=plan):
        if item.inputs is None:
            fixed[item.name] = item.fixed.clone()
            continue
        s = spans[item.name]
        parts = item.inputs.deltas if has_anchor else item.inputs.models
        for row, t in zip(vectors, parts):
            row[s.start:s.stop].copy_(t.reshape(-1))
        if anchor is not None:
            anchor[s.start:s.stop].copy_(item.inputs.base.reshape(-1))
    return ResidentInputs(keys, plan.spans, plan.names, plan.num_layers, anchor, vectors, fixed)


def load_inputs(recipe: Recipe, node_id: str, *, device: str | torch.device = "auto",
                progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> ResidentInputs:
    """``load_resident`` in a run of its own over ``node_id`` and what it depends on."""
    with input_run(recipe, node_id, device=device, progress=progress, cancel=cancel) as run:
        return load_resident(run, node_id)
