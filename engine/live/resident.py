"""The inputs of one merge node held resident on the compute device, in flat buffers.

Every floating-point tensor of the merge's output occupies one span of a flat fp32 buffer, in file
order. Buffers: the *anchor* (θ0 when the merge has a base, else absent), one *vector* per input (its
task vector τt = θt − θ0 when there is an anchor, else the model θt itself), and the *output*. A
tensor of the merged model is a view into the output buffer, so evaluating it copies nothing, and a
coefficient change that is the same for many neighbouring tensors is one multiply-add over their
joint span. Integer buffers (position ids, masks) are not merged; the reference model's copy is kept.

Loading streams the tensors one name at a time through the graph executor, so checkpoints of any
format, task-vector and scale nodes upstream all work as in a normal run.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Iterator

import torch

from engine.checkpoints import layer_index, num_layers
from engine.graph import GraphRun, Recipe
from engine.methods import MergeInputs
from engine.runtime import CancelToken, ProgressTracker
from engine.runtime.progress import ProgressCallback

FP32 = 4
SAFETY = 0.75  # share of the free device memory a live session may fill


@dataclass(frozen=True)
class Span:
    """Where one tensor lives in the flat buffers."""

    name: str
    shape: tuple[int, ...]
    start: int
    stop: int
    layer: int | None


def upstream_recipe(recipe: Recipe, node_id: str) -> Recipe:
    """A copy of the recipe holding only ``node_id`` and what it depends on (no sinks, no other branches)."""
    keep = set(recipe.upstream(node_id)) | {node_id}
    sub = Recipe(recipe.name, recipe.base_dir)
    for nid, node in recipe.nodes.items():
        if nid in keep:
            sub.nodes[nid] = type(node)(node.id, node.type, dict(node.params), {})
    sub.edges = [e for e in recipe.edges if e.src in keep and e.dst in keep]
    return sub


def available_bytes(device: torch.device) -> int:
    """Free memory on ``device`` right now (CPU: the kernel's MemAvailable estimate)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory() - torch.mps.current_allocated_memory())
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def resident_bytes(numel: int, models: int, has_anchor: bool, extra_bytes_per_entry: float = 0.0) -> int:
    """Memory a resident session takes: anchor + vectors + output in fp32, plus a method's caches."""
    return int(numel * (FP32 * (models + 1 + int(has_anchor)) + extra_bytes_per_entry))


class Resident:
    """Flat fp32 buffers of one merge node's inputs and output on a device (see the module docstring)."""

    def __init__(self, keys: list[str], spans: list[Span], anchor: torch.Tensor | None, vectors: list[torch.Tensor],
                 fixed: dict[str, torch.Tensor], order: list[str], layers: int):
        self.keys = keys
        self.spans = spans
        self.anchor = anchor
        self.vectors = vectors
        self.out = torch.zeros_like(vectors[0])
        self.fixed = fixed
        self.order = order
        self.num_layers = layers

    @property
    def numel(self) -> int:
        return self.out.numel()

    @property
    def nbytes(self) -> int:
        buffers = [self.out, *self.vectors] + ([self.anchor] if self.anchor is not None else [])
        return sum(t.numel() * t.element_size() for t in buffers)

    def view(self, flat: torch.Tensor, i: int) -> torch.Tensor:
        """Span ``i`` of a flat buffer, shaped as its tensor."""
        s = self.spans[i]
        return flat[s.start:s.stop].view(s.shape)

    def merge_inputs(self, i: int) -> MergeInputs:
        """What a method receives for span ``i`` (views into the resident buffers: read them, don't write)."""
        if self.anchor is not None:
            return MergeInputs(self.view(self.anchor, i), self.keys, deltas=[self.view(v, i) for v in self.vectors])
        return MergeInputs(None, self.keys, models=[self.view(v, i) for v in self.vectors])

    def state_dict(self, flat: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The merged model (or another flat buffer, e.g. the anchor) as views, in file order."""
        flat = self.out if flat is None else flat
        views = {s.name: self.view(flat, i) for i, s in enumerate(self.spans)}
        return {n: views[n] if n in views else self.fixed[n] for n in self.order}


def plan(run: GraphRun, node_id: str) -> tuple[list[Span], list[str], int]:
    """The float spans of a merge node's output, every output name in order, and the layer count."""
    infos = run.tensor_infos(node_id)
    names = [i.name for i in infos]
    layers = num_layers(names)
    spans, offset = [], 0
    for info in infos:
        if info.dtype.is_floating_point:
            n = math.prod(info.shape)
            spans.append(Span(info.name, tuple(info.shape), offset, offset + n, layer_index(info.name)))
            offset += n
    return spans, names, layers


def stream_names(run: GraphRun, node_id: str, names: list[str]) -> Iterator[str]:
    """The executor's name-by-name stream (reads of the next name overlap the current one)."""
    return run.stream(names, run.checkpoints_for([node_id]))


def load(run: GraphRun, node_id: str, *, progress: ProgressCallback | None = None,
         cancel: CancelToken | None = None) -> Resident:
    """Stream a merge node's inputs once into resident buffers on ``run.device``."""
    spans, names, layers = plan(run, node_id)
    keys = run.recipe.inputs(node_id, "models")
    has_anchor = bool(run.recipe.inputs(node_id, "base"))
    total = spans[-1].stop if spans else 0
    alloc = lambda: torch.empty(total, dtype=torch.float32, device=run.device)  # noqa: E731
    anchor = alloc() if has_anchor else None
    vectors = [alloc() for _ in keys]
    fixed: dict[str, torch.Tensor] = {}
    by_name = {s.name: i for i, s in enumerate(spans)}
    tracker = ProgressTracker(progress, "loading inputs", len(names))
    if names:
        for name in stream_names(run, node_id, names):
            if cancel is not None:
                cancel.raise_if_cancelled()
            i = by_name.get(name)
            if i is None:
                fixed[name] = run.compute(node_id, name).clone()
            else:
                s = spans[i]
                inputs, _, _ = run.merge_inputs(node_id, name)
                parts = inputs.deltas if has_anchor else inputs.models
                for flat, t in zip(vectors, parts):
                    flat[s.start:s.stop].copy_(t.reshape(-1))
                if anchor is not None:
                    anchor[s.start:s.stop].copy_(inputs.base.reshape(-1))
            tracker.advance(message=name)
    return Resident(keys, spans, anchor, vectors, fixed, names, layers)
