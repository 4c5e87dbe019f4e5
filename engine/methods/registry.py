"""The method registry: every merge method by name (and mergekit alias), with its declared schema."""

from __future__ import annotations

from engine.errors import EngineInputError
from engine.methods.base import MethodSpec

_METHODS: dict[str, MethodSpec] = {}
_ALIASES: dict[str, str] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Add a method; names and aliases must be unique."""
    for key in (spec.name, *spec.aliases):
        if key in _METHODS or key in _ALIASES:
            raise ValueError(f"merge method name '{key}' registered twice")
    _METHODS[spec.name] = spec
    for alias in spec.aliases:
        _ALIASES[alias] = spec.name
    return spec


def get_method(name: str) -> MethodSpec:
    """The method registered under ``name`` or one of its aliases."""
    key = _ALIASES.get(name, name)
    if key not in _METHODS:
        raise EngineInputError(f"unknown merge method '{name}' (see `weightsmith methods`)")
    return _METHODS[key]


def all_methods() -> list[MethodSpec]:
    """Every registered method, in registration order."""
    return list(_METHODS.values())
