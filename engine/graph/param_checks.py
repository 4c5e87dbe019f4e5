"""Checks of declared parameter values: scalars, per-model lists and maps, per-layer schedules, paths."""

from __future__ import annotations

from typing import Any, Mapping

from engine.methods.base import Param, shown
from engine.methods.schedule import is_schedule, schedule_problem


def check_param_value(p: Param, value: Any, keys: list[str]) -> list[str]:
    """Problems of one declared parameter's value (scalar, per-model list/map, schedule)."""
    if p.per_model:
        if isinstance(value, Mapping):
            unknown = [k for k in value if k not in keys]
            if unknown:
                return [f"'{p.name}' names '{unknown[0]}', which is not an input of this node"]
            items = list(value.values())
        elif isinstance(value, (list, tuple)):
            if len(value) != len(keys):
                return [f"'{p.name}' has {len(value)} values for {len(keys)} models"]
            items = list(value)
        else:
            items = [value]
    else:
        items = [value]
    problems: list[str] = []
    for item in items:
        shape = schedule_problem(item) if p.layerwise else None
        if shape:
            problems.append(f"'{p.name}': {shape}")
            continue
        for scalar in _schedule_scalars(item) if p.layerwise else [item]:
            msg = p.check_scalar(scalar)
            if msg:
                problems.append(msg)
    if not p.layerwise and any(is_schedule(i) for i in items):
        problems.append(f"'{p.name}' cannot vary per layer")
    return problems


def _schedule_scalars(value: Any) -> list[Any]:
    """The scalars a schedule holds (override entries' values, gradient anchors), in order, without recursion."""
    out, stack = [], [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            stack.append(item.get("value"))
        elif isinstance(item, (list, tuple)):
            stack.extend(reversed(item))
        else:
            out.append(item)
    return out


def path_problem(path: Any) -> str | None:
    """Why a node's path parameter cannot name a file, or None."""
    if not isinstance(path, str):
        return f"must be a file or folder path (text), got {shown(path)}"
    if "\0" in path:
        return "contains a NUL character"
    return None
