"""Parameter paths: the one way to name a tunable number of a recipe, for sliders, sweeps and the CLI.

A path is ``NODE.PARAM`` (``merge.lambda``) or, for one model's entry of a per-model parameter,
``NODE.PARAM:MODEL`` (``merge.weight:digits``). Inside one node (a slider, a live sweep) the node part
is left out: ``lambda``, ``weight:digits``. Node ids may hold dots (``llama-3.1``): the parameter is
what follows the last dot before the colon, since parameter names never hold one.

Setting a per-model entry turns a scalar or list value into a mapping keyed by the input ids first, so
the other models keep their values.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from engine.errors import EngineInputError
from engine.methods.base import Param
from engine.methods.schedule import per_model_values

if TYPE_CHECKING:
    from engine.graph.recipe import Recipe


@dataclass(frozen=True)
class ParamPath:
    """A parameter (``param``), optionally one model's entry of it (``model``), of a node (``node``;
    None for a path inside a node)."""

    param: str
    model: str | None = None
    node: str | None = None

    @classmethod
    def parse(cls, text: str, *, node: str | None = None) -> "ParamPath":
        """Read ``[NODE.]PARAM[:MODEL]``; ``node`` is the node of a path written inside one."""
        head, _, model = str(text).strip().partition(":")
        owner, dot, param = head.rpartition(".")
        if not param or (dot and not owner) or (":" in text and not model):
            raise EngineInputError(f"bad parameter path {text!r}; write NODE.PARAM or NODE.PARAM:MODEL "
                                   "(e.g. merge.lambda, merge.weight:digits)")
        return cls(param, model or None, owner or node)

    @property
    def local(self) -> str:
        """The path inside its node: ``PARAM`` or ``PARAM:MODEL``."""
        return self.param + (f":{self.model}" if self.model else "")

    def __str__(self) -> str:
        return f"{self.node}.{self.local}" if self.node else self.local

    def declared(self, params: Sequence[Param], label: str = "this node") -> Param:
        """The declared parameter the path names (EngineInputError when there is none)."""
        found = next((p for p in params if p.name == self.param), None)
        if found is None:
            raise EngineInputError(f"{label} has no parameter '{self.param}'")
        if self.model is not None and not found.per_model:
            raise EngineInputError(f"'{self.param}' is not a per-model parameter; use '{self.param}' "
                                   f"without ':{self.model}'")
        return found

    def get(self, params: Sequence[Param], values: Mapping[str, Any], keys: Sequence[str]) -> Any:
        """The value at this path in a node's ``values`` (the declared default when unset)."""
        p = self.declared(params)
        raw = values.get(self.param, p.default)
        if self.model is None:
            return raw
        return per_model_values(raw, keys, p.default)[self._model_index(keys)]

    def set(self, params: Sequence[Param], values: Mapping[str, Any], keys: Sequence[str], value: Any,
            label: str = "this node") -> dict[str, Any]:
        """A copy of a node's ``values`` with this path set to ``value``."""
        p = self.declared(params, label)
        out = copy.deepcopy(dict(values))
        if self.model is None:
            out[self.param] = value
            return out
        index = self._model_index(keys)
        mapping = dict(zip(keys, per_model_values(out.get(self.param, p.default), keys, p.default)))
        mapping[keys[index]] = value
        out[self.param] = mapping
        return out

    def apply(self, recipe: "Recipe", value: Any) -> None:
        """Set this (node-qualified) path to ``value`` in ``recipe``."""
        if self.node is None:
            raise EngineInputError(f"parameter path '{self}' names no node (write NODE.{self.local})")
        node = recipe.node(self.node)
        declared = node.kind.declared_params(node)
        recipe.set_params(self.node, self.set(declared, node.params, recipe.inputs(self.node, "models"), value,
                                              label=f"node '{self.node}'"))

    def _model_index(self, keys: Sequence[str]) -> int:
        if self.model not in keys:
            raise EngineInputError(f"'{self.model}' is not a model input of "
                                   f"{'node ' + repr(self.node) if self.node else 'this merge'} "
                                   f"(inputs: {', '.join(keys)})")
        return list(keys).index(self.model)


def tunable_paths(params: Sequence[Param], keys: Sequence[str], node: str | None = None) -> list[ParamPath]:
    """Every numeric path a slider or a sweep can move: each parameter (a per-model one set for all
    models at once) and, for per-model parameters, each input's own value."""
    out = []
    for p in params:
        if p.type in ("float", "int"):
            out.append(ParamPath(p.name, None, node))
            out += [ParamPath(p.name, k, node) for k in keys] if p.per_model else []
    return out
