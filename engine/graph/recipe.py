"""The recipe: a versioned JSON document describing the merge graph (nodes, typed edges, outputs).

``Recipe`` is a plain mutable model. The GUI edits it only through undoable commands and mirrors it
in its scene; listeners registered with ``subscribe`` hear every change (no Qt here).
"""

from __future__ import annotations

import copy
import os
import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from engine.errors import EngineInputError
from engine.graph.node_kinds import NodeKind, all_node_kinds, node_kind
from engine.jsonfiles import read_json, write_json

FORMAT = "weightsmith-recipe"
VERSION = 1
KNOWN_KINDS = frozenset(k.name for k in all_node_kinds())
MAX_DEPTH = 32  # deepest nesting of lists/objects a node's params or ui may hold


@dataclass
class Node:
    """One node: ``type`` names its kind, ``params`` its values, ``ui`` what the editor keeps (position)."""

    id: str
    type: str
    params: dict[str, Any] = field(default_factory=dict)
    ui: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> NodeKind:
        """The node's kind (an unknown type name raises EngineInputError)."""
        return node_kind(self.type)

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


class EdgeIndex:
    """A snapshot of a recipe's edges indexed once, for O(1) lookups in whole-graph walks.

    ``inputs`` gives the sources feeding a port in edge order, ``consumers`` the destination of every
    edge leaving a node (once per edge), ``sources`` every source feeding a node (once per edge).
    """

    def __init__(self, edges: list[Edge]):
        self._inputs: dict[tuple[str, str], list[str]] = {}
        self.sources: dict[str, list[str]] = {}
        self.consumers: dict[str, list[str]] = {}
        for e in edges:
            self._inputs.setdefault((e.dst, e.port), []).append(e.src)
            self.sources.setdefault(e.dst, []).append(e.src)
            self.consumers.setdefault(e.src, []).append(e.dst)

    def inputs(self, node_id: str, port: str) -> list[str]:
        return self._inputs.get((node_id, port), [])

    def upstream(self, node_id: str) -> list[str]:
        """Every node ``node_id`` depends on (transitively), nearest first, without repeats."""
        seen: dict[str, None] = {}
        queue = deque(self.sources.get(node_id, []))
        while queue:
            nid = queue.popleft()
            if nid not in seen:
                seen[nid] = None
                queue.extend(self.sources.get(nid, []))
        return list(seen)


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
        return self.index().upstream(node_id)

    def index(self) -> EdgeIndex:
        """The edges as they are now, indexed for whole-graph walks (rebuild it after an edit)."""
        return EdgeIndex(self.edges)

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
        if index is None or index >= len(self.nodes):
            self.nodes[node.id] = node
        else:
            items = list(self.nodes.items())
            items.insert(index, (node.id, node))
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
            shown = repr(version) if isinstance(version, (int, float, str, type(None))) else type(version).__name__
            raise EngineInputError(f"recipe version {shown} is newer than this Weightsmith understands ({VERSION})")
        name = data.get("name", "untitled")
        if not isinstance(name, str):
            raise EngineInputError(f"malformed recipe: \"name\" must be text, got {type(name).__name__}")
        recipe = cls(name, base_dir)
        for i, n in enumerate(_json_list(data, "nodes")):
            node = _node_from_json(n, i)
            spec = node.kind.method(node) if node.type in KNOWN_KINDS else None
            if spec is not None and spec.migrate is not None:
                node.params = spec.migrate(node.params)
            recipe.add_node(node)
        for i, e in enumerate(_json_list(data, "edges")):
            recipe.edges.append(_edge_from_json(e, i))
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
        """Write the recipe JSON atomically. Relative file parameters (checkpoints, output folders, suites)
        of a recipe read from a folder are rewritten to name the same files from the new file's folder."""
        path = Path(path).resolve()
        write_json(path, self.rebased_json(path.parent))

    def rebased_json(self, folder: Path) -> dict[str, Any]:
        """``to_json`` with every relative file path (node file parameters, paths in an Evaluate node's
        task entries) rewritten relative to ``folder`` (a recipe with no folder of its own keeps its paths
        as written: they are relative to wherever it is saved)."""
        if self.base_dir is None:
            return self.to_json()

        def rebase(value: str) -> str:
            target = self.resolve_path(value).resolve()
            try:
                return os.path.relpath(target, folder)
            except ValueError:  # another drive (Windows): no relative path exists
                return str(target)
        return self._json_with_paths(rebase)

    def absolute_json(self) -> dict[str, Any]:
        """``to_json`` with every relative file path made absolute against the recipe's folder."""
        return self._json_with_paths(lambda value: str(self.resolve_path(value).resolve()))

    def _json_with_paths(self, fn: Callable[[str], str]) -> dict[str, Any]:
        data = self.to_json()
        for node in data["nodes"]:
            if node["type"] in KNOWN_KINDS:
                self.nodes[node["id"]].kind.map_relative_paths(node["params"], fn)
        return data


# ---- checked reading of recipe JSON ------------------------------------------------------------
def _json_list(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise EngineInputError(f"malformed recipe: \"{key}\" must be a list, got {type(value).__name__}")
    return value


def _json_id(value: Any, what: str) -> str:
    """An id or port name: text (a whole number is accepted as its text)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise EngineInputError(f"malformed recipe: {what} must be text, got {type(value).__name__}")
    return str(value)


def _node_from_json(n: Any, i: int) -> Node:
    """One node object, checked: text id and type, ``params`` and ``ui`` objects of bounded depth."""
    if not isinstance(n, dict) or "id" not in n or "type" not in n:
        raise EngineInputError(f"malformed recipe: node #{i + 1} must be an object with \"id\" and \"type\"")
    nid = _json_id(n["id"], f"the id of node #{i + 1}")
    node = Node(nid, _json_id(n["type"], f"the type of node '{nid}'"))
    for key in ("params", "ui"):
        value = n.get(key, {})
        if not isinstance(value, dict):
            raise EngineInputError(f"node '{nid}': \"{key}\" must be an object, got {type(value).__name__}")
        for name, item in value.items():
            if nesting_depth(item) > MAX_DEPTH:
                raise EngineInputError(f"node '{nid}': {key} '{name}' is nested deeper than {MAX_DEPTH} levels")
        setattr(node, key, dict(value))
    return node


def _edge_from_json(e: Any, i: int) -> Edge:
    if not isinstance(e, dict) or not {"from", "to", "port"} <= e.keys():
        raise EngineInputError(f"malformed recipe: edge #{i + 1} must be an object with \"from\", \"to\" and \"port\"")
    return Edge(*(_json_id(e[k], f"\"{k}\" of edge #{i + 1}") for k in ("from", "to", "port")))


def nesting_depth(value: Any) -> int:
    """How deeply lists and objects nest in a JSON value (a scalar is 0), found without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, (list, tuple)) else None
        if children is None:
            continue
        deepest = max(deepest, depth + 1)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((c, depth + 1) for c in children)
    return deepest

