"""Recipe builders for the common shapes: base + models → one merge → Save (the CLI's quick form)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from engine.graph.recipe import Edge, Node, Recipe


def simple_merge_recipe(method: str, models: Sequence[str | Path], *, base: str | Path | None = None,
                        params: dict[str, Any] | None = None, weights: Sequence[float] | None = None,
                        out: str | Path | None = None, dtype: str = "auto", shard_size: str = "5GB",
                        name: str = "merge") -> Recipe:
    """One merge of ``models`` (on ``base``) with ``params``; a Save node when ``out`` is given.

    Checkpoint node ids are made from the file names; ``weights`` become the per-model ``weight``.
    """
    recipe = Recipe(name)
    if base is not None:
        recipe.add_node(Node("base", "checkpoint", {"path": str(base)}))
    ids = []
    for path in models:
        nid = recipe.new_id(Path(str(path)).stem.replace(".", "_") or "model")
        recipe.add_node(Node(nid, "checkpoint", {"path": str(path)}))
        ids.append(nid)
    merge_params: dict[str, Any] = {"method": method, **(params or {})}
    if weights is not None:
        merge_params["weight"] = {nid: float(w) for nid, w in zip(ids, weights)}
    recipe.add_node(Node("merge", "merge", merge_params))
    if base is not None:
        recipe.add_edge(Edge("base", "merge", "base"))
    for nid in ids:
        recipe.add_edge(Edge(nid, "merge", "models"))
    if out is not None:
        recipe.add_node(Node("save", "save", {"path": str(out), "dtype": dtype, "shard_size": shard_size}))
        recipe.add_edge(Edge("merge", "save", "model"))
    return recipe
