"""Undoable edits of the document's recipe: every change the GUI makes to the merge graph is one of these.

Each command edits the recipe through the ``app.document.Document``'s mutators in ``redo`` and restores
it exactly (``recipe.to_json()`` equal to before) in ``undo``; the mutators emit the document's typed
signals, which the views follow. Push them with ``document.push`` (the document's single
``QUndoStack``); group several with ``beginMacro``/``endMacro``.
"""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from PySide6.QtGui import QUndoCommand

from engine.graph.recipe import Edge, Node, Recipe

if TYPE_CHECKING:
    from app.document import Document

Pos = Sequence[float]

_SET_PARAM_ID = 0x57E7  # QUndoCommand.id() shared by every SetParamCommand (merging needs an id != -1)


class AddNodeCommand(QUndoCommand):
    """Add ``node`` at the end of the recipe, then ``edges`` (which may touch it)."""

    def __init__(self, document: "Document", node: Node, edges: Iterable[Edge] = (),
                 parent: QUndoCommand | None = None):
        super().__init__(f"Add {node.id}", parent)
        self.document = document
        self.node = copy.deepcopy(node)
        self.edges = list(edges)

    def redo(self) -> None:
        self.document.add_node(copy.deepcopy(self.node))
        for e in self.edges:
            self.document.add_edge(e)

    def undo(self) -> None:
        for e in reversed(self.edges):
            self.document.remove_edge(e)
        self.document.remove_node(self.node.id)


class RemoveNodesCommand(QUndoCommand):
    """Remove nodes and every edge touching them; undo puts nodes and edges back at their places."""

    def __init__(self, document: "Document", node_ids: Iterable[str], parent: QUndoCommand | None = None):
        ids = set(node_ids)
        self.node_ids = [nid for nid in document.recipe.nodes if nid in ids]
        text = f"Delete {self.node_ids[0]}" if len(self.node_ids) == 1 else f"Delete {len(self.node_ids)} nodes"
        super().__init__(text, parent)
        self.document = document
        self._removed: list[tuple[Node, int, list[tuple[int, Edge]]]] = []

    def redo(self) -> None:
        self._removed = [self.document.remove_node(nid) for nid in self.node_ids]

    def undo(self) -> None:
        for node, index, edges in reversed(self._removed):
            self.document.restore_node(node, index, edges)
        self._removed = []


class ConnectCommand(QUndoCommand):
    """Add an edge (at the end of the edge list, i.e. last in its port's order)."""

    def __init__(self, document: "Document", edge: Edge, parent: QUndoCommand | None = None):
        super().__init__(f"Connect {edge.src} → {edge.dst}.{edge.port}", parent)
        self.document = document
        self.edge = edge

    def redo(self) -> None:
        self.document.add_edge(self.edge)

    def undo(self) -> None:
        self.document.remove_edge(self.edge)


class DisconnectCommand(QUndoCommand):
    """Remove an edge; undo puts it back at its old place in the edge order."""

    def __init__(self, document: "Document", edge: Edge, parent: QUndoCommand | None = None):
        super().__init__(f"Disconnect {edge.src} → {edge.dst}.{edge.port}", parent)
        self.document = document
        self.edge = edge
        self._index = -1

    def redo(self) -> None:
        self._index = self.document.remove_edge(self.edge)

    def undo(self) -> None:
        self.document.add_edge(self.edge, self._index)


class SetParamCommand(QUndoCommand):
    """Set one parameter. Consecutive commands on the same node and key that carry the same non-None
    ``merge_key`` merge into one undo step (a slider drag passes one key per press). Redo and undo
    change that one key (``paramsChanged(node_id, key)``), except undoing a key the node did not have."""

    def __init__(self, document: "Document", node_id: str, key: str, value: Any, merge_key: str | None = None,
                 parent: QUndoCommand | None = None):
        super().__init__(f"Set {node_id}.{key}", parent)
        self.document = document
        self.node_id = node_id
        self.key = key
        self.value = copy.deepcopy(value)
        self.merge_key = merge_key
        self._old_params = copy.deepcopy(document.recipe.node(node_id).params)

    def id(self) -> int:  # noqa: A003 (Qt's name)
        return _SET_PARAM_ID if self.merge_key is not None else -1

    def mergeWith(self, other: QUndoCommand) -> bool:  # noqa: N802 (Qt's name)
        if not (isinstance(other, SetParamCommand) and other.merge_key == self.merge_key
                and other.node_id == self.node_id and other.key == self.key):
            return False
        self.value = copy.deepcopy(other.value)
        if self.key in self._old_params and self._old_params[self.key] == self.value:
            self.setObsolete(True)  # dragged back to where it started: no undo step at all
        return True

    def redo(self) -> None:
        self.document.set_param(self.node_id, self.key, self.value)

    def undo(self) -> None:
        if self.key in self._old_params:
            self.document.set_param(self.node_id, self.key, self._old_params[self.key])
        else:
            self.document.set_params(self.node_id, self._old_params)


class SetParamsCommand(QUndoCommand):
    """Replace all of a node's parameters (e.g. switching a merge method and its defaults)."""

    def __init__(self, document: "Document", node_id: str, params: Mapping[str, Any],
                 parent: QUndoCommand | None = None):
        super().__init__(f"Set {node_id} parameters", parent)
        self.document = document
        self.node_id = node_id
        self.params = copy.deepcopy(dict(params))
        self._old_params = copy.deepcopy(document.recipe.node(node_id).params)

    def redo(self) -> None:
        self.document.set_params(self.node_id, self.params)

    def undo(self) -> None:
        self.document.set_params(self.node_id, self._old_params)


class MoveNodesCommand(QUndoCommand):
    """Move nodes: ``moves`` maps node id to (old_pos, new_pos); positions live in ``node.ui["pos"]``.

    An ``old_pos`` of None means the node had no stored position; undo removes it again.
    """

    def __init__(self, document: "Document", moves: Mapping[str, tuple[Pos | None, Pos]],
                 parent: QUndoCommand | None = None):
        super().__init__(f"Move {next(iter(moves))}" if len(moves) == 1 else f"Move {len(moves)} nodes", parent)
        self.document = document
        self.moves = {nid: [float(new[0]), float(new[1])] for nid, (_old, new) in moves.items()}
        self._old_ui: dict[str, dict[str, Any]] = {}
        for nid, (old, _new) in moves.items():
            ui = copy.deepcopy(document.recipe.node(nid).ui)
            if old is None:  # the node had no stored position (laid out automatically)
                ui.pop("pos", None)
            else:
                ui["pos"] = [float(old[0]), float(old[1])]
            self._old_ui[nid] = ui

    def redo(self) -> None:
        for nid, pos in self.moves.items():
            self.document.set_ui(nid, {"pos": list(pos)})

    def undo(self) -> None:
        for nid, ui in self._old_ui.items():
            self.document.set_ui(nid, ui, replace=True)


def _id_prefix(node_id: str) -> str:
    """``merge_3`` → ``merge``: pasted copies are numbered afresh."""
    return re.sub(r"_\d+$", "", node_id) or node_id


def _rename_refs(value: Any, renamed: Mapping[str, str]) -> Any:
    """A parameter value with node-id references (per-model dict keys) renamed."""
    if isinstance(value, dict):
        return {renamed.get(k, k): v for k, v in value.items()}
    return value


class PasteCommand(QUndoCommand):
    """Add copies of nodes (fresh ids, positions shifted by ``offset``) and the edges among them.

    Raises ValueError for malformed fragments (before anything is pushed). ``new_ids`` maps each copied id to its new id once the command has been pushed.
    """

    def __init__(self, document: "Document", nodes_json: Sequence[Mapping[str, Any]],
                 edges_json: Sequence[Mapping[str, str]], offset: Pos = (30.0, 30.0),
                 parent: QUndoCommand | None = None):
        for n in nodes_json:
            if not (isinstance(n, Mapping) and isinstance(n.get("id"), str) and isinstance(n.get("type"), str)):
                raise ValueError("a copied node lacks its 'id' or 'type'")
        for e in edges_json:
            if not (isinstance(e, Mapping) and all(isinstance(e.get(k), str) for k in ("from", "to", "port"))):
                raise ValueError("a copied edge lacks 'from', 'to' or 'port'")
        super().__init__("Paste" if len(nodes_json) != 1 else f"Paste {nodes_json[0]['id']}", parent)
        self.document = document
        self.nodes_json = copy.deepcopy(list(nodes_json))
        self.edges_json = copy.deepcopy(list(edges_json))
        self.offset = (float(offset[0]), float(offset[1]))
        self.new_ids: dict[str, str] = {}
        self._nodes: list[Node] = []
        self._edges: list[Edge] = []

    def _build(self) -> None:
        """Choose fresh ids against the current recipe (first redo only, so redo is repeatable)."""
        recipe = self.document.recipe
        taken = set(recipe.nodes)
        for n in self.nodes_json:
            prefix = _id_prefix(str(n["id"]))
            new_id = recipe.new_id(prefix)
            i = 2
            while new_id in taken:
                new_id = f"{prefix}_{i}"
                i += 1
            taken.add(new_id)
            self.new_ids[str(n["id"])] = new_id
        for n in self.nodes_json:
            ui = copy.deepcopy(dict(n.get("ui", {})))
            if "pos" in ui:
                ui["pos"] = [float(ui["pos"][0]) + self.offset[0], float(ui["pos"][1]) + self.offset[1]]
            params = {k: _rename_refs(v, self.new_ids) for k, v in dict(n.get("params", {})).items()}
            if params.get("copy_files_from") in self.new_ids:
                params["copy_files_from"] = self.new_ids[params["copy_files_from"]]
            self._nodes.append(Node(self.new_ids[str(n["id"])], str(n["type"]), params, ui))
        self._edges = [Edge(self.new_ids[e["from"]], self.new_ids[e["to"]], str(e["port"]))
                       for e in self.edges_json if e["from"] in self.new_ids and e["to"] in self.new_ids]

    def redo(self) -> None:
        if not self._nodes:
            self._build()
        for node in self._nodes:
            self.document.add_node(copy.deepcopy(node))
        for e in self._edges:
            self.document.add_edge(e)

    def undo(self) -> None:
        for node in reversed(self._nodes):
            self.document.remove_node(node.id)


class ReplaceRecipeCommand(QUndoCommand):
    """Replace the whole recipe content (open a preset, import mergekit YAML) as one undo step."""

    def __init__(self, document: "Document", new_recipe_json: Mapping[str, Any], text: str = "Replace recipe",
                 parent: QUndoCommand | None = None):
        super().__init__(text, parent)
        self.document = document
        self.new_json = copy.deepcopy(dict(new_recipe_json))
        self._old_json = document.recipe.to_json()
        Recipe.from_json(self.new_json)  # raise EngineInputError now, not inside the undo stack

    def redo(self) -> None:
        self.document.replace_recipe(Recipe.from_json(self.new_json, self.document.recipe.base_dir))

    def undo(self) -> None:
        self.document.replace_recipe(Recipe.from_json(self._old_json, self.document.recipe.base_dir))
