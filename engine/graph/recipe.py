"""The recipe: a versioned JSON document describing the merge graph (nodes, typed edges, outputs).

``Recipe`` is a plain mutable model. The GUI edits it only through undoable commands and mirrors it
in its scene; listeners registered with ``subscribe`` hear every change (no Qt here).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from engine.errors import EngineInputError
from engine.jsonfiles import read_json, write_json

FORMAT = "weightsmith-recipe"
VERSION = 1


@dataclass
class Node:
    """One node: ``type`` names a NodeType, ``params`` its values, ``ui`` what the editor keeps (position)."""

    id: str
    type: str
    params: dict[str, Any] = field(default_factory=dict)
    ui: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "type": self.type, "params": copy.deepcopy(self.params)}
        if self.ui:
            out["ui"] = copy.deepcopy(self.ui)
        return out


@dataclass(frozen=True)
class Edge:
    """A connection from ``src``'s output into ``dst``'s input ``port``."""

    src: str
    dst: str
    port: str

    def to_json(self) -> dict[str, str]:
        return {"from": self.src, "to": self.dst, "port": self.port}


Listener = Callable[[str, dict[str, Any]], None]


class Recipe:
    """The merge graph. Edge order into a multi-input port is the order of the models."""

    def __init__(self, name: str = "untitled", base_dir: Path | None = None):
        self.name = name
        self.base_dir = Path(base_dir) if base_dir else None
        self.nodes: dict[str, Node] = {}
        self.edges: list[Edge] = []
        self._listeners: list[Listener] = []

    # ---- observation -------------------------------------------------------------------------
    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(event, details)`` after every change (events: node_added, node_removed,
        edge_added, edge_removed, params_changed, ui_changed, reset)."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def _emit(self, event: str, **details: Any) -> None:
        for listener in list(self._listeners):
            listener(event, details)

    # ---- queries -----------------------------------------------------------------------------
    def node(self, node_id: str) -> Node:
        try:
            return self.nodes[node_id]
        except KeyError:
            raise EngineInputError(f"no node '{node_id}' in the recipe") from None

    def inputs(self, node_id: str, port: str) -> list[str]:
        """Source node ids feeding ``port`` of ``node_id``, in order."""
        return [e.src for e in self.edges if e.dst == node_id and e.port == port]

    def input_edges(self, node_id: str) -> list[Edge]:
        return [e for e in self.edges if e.dst == node_id]

    def consumers(self, node_id: str) -> list[Edge]:
        return [e for e in self.edges if e.src == node_id]

    def upstream(self, node_id: str) -> list[str]:
        """Every node that ``node_id`` depends on (transitively), nearest first, without repeats."""
        seen: list[str] = []
        stack = [e.src for e in self.input_edges(node_id)]
        while stack:
            nid = stack.pop(0)
            if nid not in seen:
                seen.append(nid)
                stack.extend(e.src for e in self.input_edges(nid))
        return seen

    def new_id(self, prefix: str) -> str:
        """A fresh node id such as ``merge``, ``merge_2``."""
        base = re.sub(r"[^A-Za-z0-9_]+", "_", prefix).strip("_") or "node"
        if base not in self.nodes:
            return base
        i = 2
        while f"{base}_{i}" in self.nodes:
            i += 1
        return f"{base}_{i}"

    def resolve_path(self, value: str | Path) -> Path:
        """A node's path parameter, relative paths taken from the recipe file's folder."""
        p = Path(value).expanduser()
        if not p.is_absolute() and self.base_dir is not None:
            p = self.base_dir / p
        return p

    # ---- edits -------------------------------------------------------------------------------
    def add_node(self, node: Node, index: int | None = None) -> Node:
        if node.id in self.nodes:
            raise EngineInputError(f"a node '{node.id}' already exists")
        items = list(self.nodes.items())
        items.insert(len(items) if index is None else index, (node.id, node))
        self.nodes = dict(items)
        self._emit("node_added", node_id=node.id)
        return node

    def remove_node(self, node_id: str) -> tuple[Node, int, list[tuple[int, Edge]]]:
        """Remove a node and its edges; returns what ``restore_node`` needs to undo it."""
        node = self.node(node_id)
        index = list(self.nodes).index(node_id)
        removed = [(i, e) for i, e in enumerate(self.edges) if node_id in (e.src, e.dst)]
        for _, e in reversed(removed):
            self.remove_edge(e)
        del self.nodes[node_id]
        self._emit("node_removed", node_id=node_id)
        return node, index, removed

    def restore_node(self, node: Node, index: int, edges: list[tuple[int, Edge]]) -> None:
        """Undo ``remove_node``: the node at its old position, its edges at their old places."""
        self.add_node(node, index)
        for i, e in edges:
            self.add_edge(e, i)

    def add_edge(self, edge: Edge, index: int | None = None) -> Edge:
        if edge in self.edges:
            raise EngineInputError(f"'{edge.src}' is already connected to '{edge.dst}.{edge.port}'")
        for nid in (edge.src, edge.dst):
            self.node(nid)
        self.edges.insert(len(self.edges) if index is None else index, edge)
        self._emit("edge_added", edge=edge)
        return edge

    def remove_edge(self, edge: Edge) -> int:
        index = self.edges.index(edge)
        del self.edges[index]
        self._emit("edge_removed", edge=edge)
        return index

    def set_params(self, node_id: str, params: dict[str, Any]) -> dict[str, Any]:
        """Replace a node's params; returns the previous ones (for undo)."""
        node = self.node(node_id)
        old = node.params
        node.params = copy.deepcopy(params)
        self._emit("params_changed", node_id=node_id)
        return old

    def set_param(self, node_id: str, key: str, value: Any) -> Any:
        """Set one parameter; returns its previous value (``None`` when it was unset)."""
        node = self.node(node_id)
        old = node.params.get(key)
        node.params[key] = copy.deepcopy(value)
        self._emit("params_changed", node_id=node_id, key=key)
        return old

    def set_ui(self, node_id: str, **ui: Any) -> None:
        self.node(node_id).ui.update(ui)
        self._emit("ui_changed", node_id=node_id)

    # ---- JSON --------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "name": self.name,
                "nodes": [n.to_json() for n in self.nodes.values()], "edges": [e.to_json() for e in self.edges]}

    def replace_with(self, other: "Recipe") -> None:
        """Take over another recipe's content (keeps listeners); used by undo of whole-recipe edits."""
        self.name, self.nodes, self.edges = other.name, copy.deepcopy(other.nodes), list(other.edges)
        self._emit("reset")

    def copy(self) -> "Recipe":
        return Recipe.from_json(self.to_json(), self.base_dir)

    @classmethod
    def from_json(cls, data: dict[str, Any], base_dir: Path | None = None) -> "Recipe":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise EngineInputError(f"not a Weightsmith recipe (expected \"format\": \"{FORMAT}\")")
        version = data.get("version")
        if not isinstance(version, int) or version > VERSION:
            raise EngineInputError(f"recipe version {version!r} is newer than this Weightsmith understands ({VERSION})")
        recipe = cls(str(data.get("name", "untitled")), base_dir)
        try:
            for n in data.get("nodes", []):
                recipe.add_node(Node(str(n["id"]), str(n["type"]), dict(n.get("params", {})), dict(n.get("ui", {}))))
            for e in data.get("edges", []):
                recipe.edges.append(Edge(str(e["from"]), str(e["to"]), str(e["port"])))
        except (KeyError, TypeError) as exc:
            raise EngineInputError(f"malformed recipe: missing or wrong field {exc}") from exc
        return recipe

    @classmethod
    def load(cls, path: str | Path) -> "Recipe":
        path = Path(path)
        data = read_json(path, "recipe")
        try:
            return cls.from_json(data, path.resolve().parent)
        except EngineInputError as exc:
            raise EngineInputError(str(exc), path=str(path)) from exc

    def save(self, path: str | Path) -> None:
        """Write the recipe JSON atomically."""
        write_json(path, self.to_json())
