"""Layer detection from tensor names: the first ``.N.`` component is the layer index."""

from __future__ import annotations

import re
from typing import Iterable

_LAYER = re.compile(r"(?:^|\.)(\d+)(?:\.|$)")


def layer_index(name: str) -> int | None:
    """Layer index of a tensor name (``model.layers.12.mlp.up_proj.weight`` → 12), or None."""
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


def num_layers(names: Iterable[str]) -> int:
    """Number of numbered layers (highest index + 1) among ``names``; 0 when none is numbered."""
    indices = [i for i in (layer_index(n) for n in names) if i is not None]
    return max(indices) + 1 if indices else 0


def with_layer_index(name: str, index: int) -> str:
    """``name`` with its layer index (the component ``layer_index`` reads) replaced by ``index``
    (``model.layers.3.mlp.up_proj.weight``, 7 → ``model.layers.7.mlp.up_proj.weight``)."""
    m = _LAYER.search(name)
    if m is None:
        raise ValueError(f"tensor '{name}' has no layer index")
    return f"{name[:m.start(1)]}{index}{name[m.end(1):]}"
