"""Parameter paths: naming one tunable number of a merge node, for sliders and sweeps.

A path is a parameter name (``lambda``, ``density``) or, for a per-model parameter, the name and an
input node id joined by a colon (``weight:digits``). ``set_value`` writes a value at a path into a copy
of a node's parameters; a per-model value given as a scalar or a list is turned into a mapping keyed by
the input ids first, so the other models keep their values.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

from engine.errors import EngineInputError
from engine.methods.base import MethodSpec
from engine.methods.schedule import per_model_values


def split_path(path: str) -> tuple[str, str | None]:
    """``"weight:digits"`` → ``("weight", "digits")``; ``"lambda"`` → ``("lambda", None)``."""
    name, _, key = path.partition(":")
    return name, (key or None)


def get_value(spec: MethodSpec, params: Mapping[str, Any], keys: Sequence[str], path: str) -> Any:
    """The value at ``path`` (the declared default when unset)."""
    name, key = split_path(path)
    p = spec.param(name)
    raw = params.get(name, p.default)
    if key is None:
        return raw
    if key not in keys:
        raise EngineInputError(f"'{key}' is not an input of this merge (inputs: {', '.join(keys)})")
    return per_model_values(raw, keys, p.default)[list(keys).index(key)]


def set_value(spec: MethodSpec, params: Mapping[str, Any], keys: Sequence[str], path: str,
              value: Any) -> dict[str, Any]:
    """A copy of ``params`` with ``path`` set to ``value``."""
    name, key = split_path(path)
    try:
        p = spec.param(name)
    except KeyError:
        raise EngineInputError(f"{spec.label} has no parameter '{name}'") from None
    out = copy.deepcopy(dict(params))
    if key is None:
        out[name] = value
        return out
    if not p.per_model:
        raise EngineInputError(f"'{name}' is not a per-model parameter; use '{name}' without ':{key}'")
    if key not in keys:
        raise EngineInputError(f"'{key}' is not an input of this merge (inputs: {', '.join(keys)})")
    values = per_model_values(out.get(name, p.default), keys, p.default)
    mapping = dict(zip(keys, values))
    mapping[key] = value
    out[name] = mapping
    return out


def tunable_paths(spec: MethodSpec, keys: Sequence[str]) -> list[str]:
    """Every numeric path of a method a slider or a sweep can move: each parameter (a per-model one set
    for all models at once) and, for per-model parameters, each input's own value."""
    out = []
    for p in spec.params:
        if p.type not in ("float", "int"):
            continue
        out += [p.name] + ([f"{p.name}:{k}" for k in keys] if p.per_model else [])
    return out
