"""Parameter values that vary per model and per layer, resolved for one tensor.

A layer-varying value may be
- a scalar: the same everywhere;
- a list (mergekit's "gradient"): anchors spread evenly over the depth and read at the tensor's
  relative depth ``t``. Numeric anchors are interpolated linearly between the two neighbours of
  ``t·(n−1)``; a list holding any boolean or text value is not interpolated, it picks the anchor
  ``int(t·(n−1))`` (mergekit does the same for non-numeric parameters);
- a list of overrides ``[{"filter": REGEX, "value": V}, ..., {"value": DEFAULT}]``: the first entry whose
  filter is found in the tensor name (``re.search``) or that has no filter wins, and its value is
  resolved again (so a filter may carry a gradient).

Relative depth, as mergekit 0.1.5 computes it (``MergePlanner.plan_slice`` / ``plan_module``):
``t = layer / (num_layers − 1)`` for a tensor in numbered layer ``layer`` (0-based); ``t = 1`` when the
model has a single layer; ``t = 0`` for every tensor outside the numbered layers — mergekit reads both
its "pre" weights (embeddings) and its "post" weights (final norm, LM head) with ``t = 0``, so they all
take the first anchor, never the last.

mergekit matches a filter as a plain substring of the tensor name; Weightsmith recipes use regular
expressions (a superset). The mergekit importer escapes filters on import.

A per-model value may be a scalar (all models), a list aligned with the inputs (for a per-model
parameter a list is always read per model, never as one gradient), or a mapping from the input node id
to a value; each element may itself be a layer-varying value.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from engine.errors import EngineInputError


def is_schedule(value: Any) -> bool:
    """Whether ``value`` is a gradient list or an override list rather than a plain scalar."""
    return isinstance(value, (list, tuple))


def schedule_problem(value: Any) -> str | None:
    """Why ``value`` is not a layer-varying value ``resolve_layer_value`` can evaluate, or None.

    Checks the shape only, without recursion (the scalars' types and ranges are the parameter's to
    check): a gradient holds single values; an override list holds objects with a ``value`` (itself a
    layer-varying value) and an optional ``filter`` that is a valid regular expression.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            return "a per-layer value must be a number or a list, not an object"
        if not is_schedule(item):
            continue
        if not item:
            return "a per-layer schedule is empty"
        if any(isinstance(v, Mapping) for v in item):
            if not all(isinstance(v, Mapping) for v in item):
                return "a per-layer schedule mixes override entries and plain values"
            for entry in item:
                problem = _entry_problem(entry)
                if problem:
                    return problem
                stack.append(entry["value"])
        elif any(is_schedule(v) for v in item):
            return "a gradient's anchors must be single values, not lists"
    return None


def _entry_problem(entry: Mapping) -> str | None:
    """What is wrong with one ``{"filter": REGEX, "value": V}`` override entry, if anything."""
    if "value" not in entry:
        return "a schedule entry has no 'value'"
    unknown = [k for k in entry if k not in ("filter", "value")]
    if unknown:
        return f"a schedule entry has an unknown key '{unknown[0]}' (use 'filter' and 'value')"
    pattern = entry.get("filter")
    if pattern is None:
        return None
    if not isinstance(pattern, str):
        return f"a schedule filter must be a regular expression (text), got {type(pattern).__name__}"
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"schedule filter '{pattern[:80]}' is not a valid regular expression ({exc})"
    return None


def resolve_layer_value(value: Any, name: str, layer: int | None, num_layers: int) -> Any:
    """Evaluate a (possibly layer-varying) value for tensor ``name`` at ``layer`` of ``num_layers``."""
    if not is_schedule(value):
        return value
    if len(value) == 0:
        raise EngineInputError(f"empty schedule for tensor '{name}'")
    if all(isinstance(v, Mapping) for v in value):
        for entry in value:
            pattern = entry.get("filter")
            if pattern is None or re.search(pattern, name):
                return resolve_layer_value(entry["value"], name, layer, num_layers)
        raise EngineInputError(f"no schedule entry matches tensor '{name}' (add an entry without a filter)")
    if any(isinstance(v, Mapping) for v in value):
        raise EngineInputError(f"schedule for tensor '{name}' mixes override entries and plain values")
    pos = relative_depth(layer, num_layers)
    if any(isinstance(v, (bool, str)) for v in value):
        return value[int(pos * (len(value) - 1))]
    anchors = [float(v) for v in value]
    if len(anchors) == 1:
        return anchors[0]
    scaled = pos * (len(anchors) - 1)
    i = min(int(scaled), len(anchors) - 2)
    frac = scaled - i
    return anchors[i] * (1 - frac) + anchors[i + 1] * frac


def relative_depth(layer: int | None, num_layers: int) -> float:
    """Depth ``t`` in [0, 1] of a layer, as mergekit computes it (see the module docstring).

    Tensors outside the numbered layers (``layer is None``) are at depth 0; in a one-layer model the
    layer is at depth 1.
    """
    if layer is None:
        return 0.0
    if num_layers <= 1:
        return 1.0
    return min(1.0, max(0.0, layer / (num_layers - 1)))


def per_model_values(value: Any, keys: Sequence[str], default: Any = None) -> list[Any]:
    """Expand a per-model value (scalar, list or {node id: value}) into one entry per input key."""
    if isinstance(value, Mapping):
        return [value.get(k, default) for k in keys]
    if isinstance(value, (list, tuple)):
        if len(value) != len(keys):
            raise EngineInputError(f"{len(value)} per-model values given for {len(keys)} models")
        return list(value)
    return [value] * len(keys)


def resolve_params(spec_params: Sequence[Any], values: Mapping[str, Any], keys: Sequence[str], name: str,
                   layer: int | None, num_layers: int) -> dict[str, Any]:
    """Resolve every declared parameter of a method for one tensor.

    Per-model parameters become lists aligned with ``keys``; layer-varying ones are evaluated at the
    tensor's layer. Missing values take the declared default.
    """
    out: dict[str, Any] = {}
    for p in spec_params:
        raw = values.get(p.name, p.default)
        if p.per_model:
            items = per_model_values(raw, keys, p.default)
            out[p.name] = [resolve_layer_value(v if v is not None else p.default, name, layer, num_layers)
                           if p.layerwise else (v if v is not None else p.default) for v in items]
        elif p.layerwise:
            out[p.name] = resolve_layer_value(raw, name, layer, num_layers)
        else:
            out[p.name] = raw
    return out
