"""Layer stacks (frankenmerges): a model assembled from layer ranges of other models.

A stack's ``slices`` parameter lists, in order, which layers to take from which input:
``"a[0:24], b[20:40]"`` takes layers 0–23 of input node ``a`` then layers 20–39 of ``b`` (the end is
excluded, as in mergekit's ``layer_range`` and Python slices), giving a 44-layer model whose layer
``j`` is renamed accordingly (``model.layers.20.`` of ``b`` becomes ``model.layers.24.``). Ranges may
overlap and an input may appear in several slices (repeating layers is what frankenmerges do); an
empty or reversed range, or one beyond the input's layers, is refused naming the slice.

The tensors outside the numbered layers come, as in mergekit (``MergePlanner.plan_module``), from the
first slice's input for the embeddings (names with ``embed``, ``wte``, ``wpe``…) and from the last
slice's input for the rest (final norm, LM head), unless ``non_layer_from`` names one input for all.

A slice that is itself a merge of several models (mergekit's multi-source slice) is a Merge node over
one single-slice stack per model, feeding the outer stack: the merge then sees a model as deep as the
slice, so its per-layer schedules run over the slice, exactly as mergekit's gradients do.

Layers must fit each other: a tensor that two output layers share (by its name within the layer)
must have the same shape in both. Nothing is read to plan a stack: headers are enough.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from engine.checkpoints import TensorInfo
from engine.checkpoints.layers import with_layer_index
from engine.errors import EngineInputError
from engine.graph.tensor_tables import TensorTable, TensorTables
from engine.methods.base import shown

_SLICE = re.compile(r"\s*([A-Za-z0-9_.\-]+)\s*\[\s*(-?\d+)\s*:\s*(-?\d+)\s*\]\s*")
_EMBEDDING = re.compile(r"embed(?!_out)|(^|\.)(wte|wpe)(\.|$)")  # GPT-NeoX's LM head is 'embed_out'


@dataclass(frozen=True)
class Slice:
    """Layers ``start`` to ``end`` (excluded) of input node ``input``; ``text`` is how it was written."""

    input: str
    start: int
    end: int

    @property
    def text(self) -> str:
        return f"{self.input}[{self.start}:{self.end}]"


def format_slices(slices: list[Slice]) -> str:
    """The ``slices`` parameter text for these slices."""
    return ", ".join(s.text for s in slices)


def parse_slices(value: Any) -> list[Slice]:
    """The slices a ``slices`` parameter lists; a malformed, empty or reversed one is refused by position."""
    if not isinstance(value, str):
        raise EngineInputError(f"'slices' must be text such as \"a[0:24], b[20:40]\", got {shown(value)}")
    if not value.strip():
        raise EngineInputError("no slices set (write e.g. \"a[0:24], b[20:40]\": layers 0–23 of a, "
                               "then 20–39 of b)")
    out = []
    for k, part in enumerate(value.split(","), 1):
        m = _SLICE.fullmatch(part)
        if m is None:
            raise EngineInputError(f"slice {k} '{part.strip()}' is not NODE[START:END] (e.g. a[0:24])")
        s = Slice(m.group(1), int(m.group(2)), int(m.group(3)))
        if s.start < 0:
            raise EngineInputError(f"slice {k} {s.text} starts before layer 0")
        if s.end <= s.start:
            raise EngineInputError(f"slice {k} {s.text} is empty (the end layer is excluded; "
                                   f"write {s.input}[{s.start}:{s.start + 1}] for layer {s.start} alone)")
        out.append(s)
    return out


def slice_problems(params: dict[str, Any], connected: list[str]) -> list[str]:
    """What is wrong with a stack's parameters given its connected inputs (no file is read)."""
    try:
        slices = parse_slices(params.get("slices", ""))
    except EngineInputError as exc:
        return [str(exc)]
    problems = [f"slice {k} {s.text} takes layers from '{s.input}', which is not connected to this stack"
                for k, s in enumerate(slices, 1) if s.input not in connected]
    used = {s.input for s in slices}
    problems += [f"'{c}' is connected but no slice takes layers from it" for c in connected if c not in used]
    source = params.get("non_layer_from") or ""
    if not isinstance(source, str) or (source and source not in connected):
        problems.append(f"non_layer_from names {shown(source)}, which is not an input of this stack")
    return problems


def is_embedding(name: str) -> bool:
    """Whether a tensor outside the layers sits before them (token/position embeddings), as mergekit's
    architectures list their "pre" weights; the others (final norm, LM head) sit after."""
    return bool(_EMBEDDING.search(name))


def stack_table(tables: TensorTables, node_id: str) -> TensorTable:
    """The tensors a stack node outputs, planned from its inputs' tables (headers only)."""
    params = tables.recipe.nodes[node_id].params
    slices = parse_slices(params.get("slices", ""))
    layer_names: list[str] = []
    sources: dict[str, tuple[str, str]] = {}
    layers: list[tuple[str, int]] = []
    first_layer: dict[str, tuple[int, ...]] = {}
    for k, s in enumerate(slices, 1):
        table = _input_table(tables, s.input, f"slice {k} {s.text}")
        if s.end > table.num_layers:
            have = f"layers 0–{table.num_layers - 1}" if table.num_layers else "no numbered layers"
            raise EngineInputError(f"slice {k} {s.text} asks for layers {s.start}–{s.end - 1}, but '{s.input}' "
                                   f"has {have}")
        by_layer = table.by_layer()
        for i in range(s.start, s.end):
            j = len(layers)
            for name in by_layer[i]:
                key, shape = with_layer_index(name, 0), table.info(name).shape
                if j == 0:
                    first_layer[key] = shape
                elif key in first_layer and first_layer[key] != shape:
                    raise EngineInputError(
                        f"slice {k} {s.text}: '{name}' of '{s.input}' is {list(shape)} but "
                        f"{list(first_layer[key])} in the stack's first layer; the layers do not fit together")
                out = with_layer_index(name, j)
                layer_names.append(out)
                sources[out] = (s.input, name)
            layers.append(table.layers[i])
    chosen = params.get("non_layer_from") or ""
    before_id, after_id = (chosen, chosen) if chosen else (slices[0].input, slices[-1].input)
    before = [n for n in _input_table(tables, before_id, "non_layer_from").non_layer() if is_embedding(n)]
    after = [n for n in _input_table(tables, after_id, "non_layer_from").non_layer() if not is_embedding(n)]
    for src, group in ((before_id, before), (after_id, after)):
        sources.update({n: (src, n) for n in group})
    files_from = _input_table(tables, chosen or slices[0].input, "non_layer_from").files_from

    def info(name: str) -> TensorInfo:
        src, src_name = sources[name]
        found = tables.table(src).info(src_name)
        return TensorInfo(name, found.shape, found.dtype_name)

    return TensorTable(f"stack '{node_id}'", "model", [*before, *layer_names, *after], info, layers,
                       files_from, sources)


def _input_table(tables: TensorTables, input_id: str, what: str) -> TensorTable:
    if input_id not in tables.recipe.nodes:
        raise EngineInputError(f"{what}: there is no node '{input_id}'")
    table = tables.table(input_id)
    if table is None:
        raise EngineInputError(f"{what}: '{input_id}' gives no model weights to take layers from")
    return table


LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
PER_LAYER_KEYS = ("layer_types",)  # per-layer lists in HF configs (sliding / full attention…)


def restack_config(config: dict[str, Any], layers: list[int], where: str) -> list[str]:
    """Set, in place, a model config's layer count to ``len(layers)`` and reorder its per-layer lists so
    output layer ``j`` keeps the settings of source layer ``layers[j]``. Returns notes on what it could
    not set (a config naming its layer count under none of ``LAYER_COUNT_KEYS``)."""
    counts = [k for k in LAYER_COUNT_KEYS if isinstance(config.get(k), int) and not isinstance(config.get(k), bool)]
    if not counts:
        return [f"{where}: no layer count ({', '.join(LAYER_COUNT_KEYS)}) to set to {len(layers)}; "
                "edit the saved config.json"]
    before = config[counts[0]]
    for key in counts:
        config[key] = len(layers)
    for key in PER_LAYER_KEYS:
        values = config.get(key)
        if isinstance(values, list) and len(values) == before and all(i < len(values) for i in layers):
            config[key] = [values[i] for i in layers]
    return []
