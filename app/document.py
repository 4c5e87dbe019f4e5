"""The open document: the recipe, its undo history, the selection, the jobs and live tuning, as one QObject.

After orange-canvas-core's ``SchemeEditWidget`` and ``Scheme``: every panel takes the ``Document`` in
its constructor and connects to its typed signals; no panel reaches into the main window or another
panel. The engine's ``Recipe`` stays a plain Python object; the document is its only writer in the
GUI. Every user edit is a ``QUndoCommand`` (``app.commands``) pushed with ``push``; the commands call
the mutators below (``add_node``, ``set_param``…), which change the recipe and then emit:

- ``nodeAdded(node_id)``, ``nodeRemoved(node_id)`` (a node's edges are removed, with
  ``edgeRemoved``, before it), ``edgeAdded(Edge)``, ``edgeRemoved(Edge)``;
- ``paramsChanged(node_id, key)``: one parameter, or ``key`` ``""`` when the node's whole parameter
  set was replaced (a method switch, a restored run);
- ``nodeMoved(node_id)``: the node's editor data (its position) changed;
- ``recipeReplaced()``: the whole content changed (a project opened, a recipe replaced or that undone);
- ``opened()``: a different project was opened (after ``recipeReplaced``; the undo history is empty);
- ``changed()``: after every change of any of the kinds above;
- ``selectionChanged(list)`` and ``currentNodeChanged(node_id)`` (the one selected node, or "").

The document also holds the project's results history (``results``), the generation preview's prompts
and settings (``generation``, read again on ``opened``), the ``JobManager`` that runs
work off the UI thread (``jobs``) and the ``LiveController`` that tunes a merge node live (``live``).
"""

from __future__ import annotations

import copy
from typing import Any, Iterable, Mapping

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoCommand, QUndoStack

from app.live import LiveController
from app.workers import JobManager
from engine.graph.recipe import Edge, Node, Recipe


class Document(QObject):
    """The recipe being edited and everything that follows it; see the module docstring for the signals."""

    nodeAdded = Signal(str)
    nodeRemoved = Signal(str)
    edgeAdded = Signal(object)
    edgeRemoved = Signal(object)
    paramsChanged = Signal(str, str)
    nodeMoved = Signal(str)
    recipeReplaced = Signal()
    opened = Signal()
    changed = Signal()
    selectionChanged = Signal(list)
    currentNodeChanged = Signal(str)

    def __init__(self, recipe: Recipe | None = None, *, device: str = "auto", parent: QObject | None = None):
        super().__init__(parent)
        self.recipe = recipe if recipe is not None else Recipe("untitled")
        self.undo_stack = QUndoStack(self)
        self.jobs = JobManager(self)
        self.results: list[dict[str, Any]] = []
        self.generation: dict[str, Any] = {}  # the generation preview's prompts and settings (app.generation_panel)
        self.revision = 0  # counts every change (autosave and stale checks compare it)
        self._selection: list[str] = []
        self._current = ""
        self.live = LiveController(self, device=device)

    # ---- edits -----------------------------------------------------------------------------------
    def push(self, command: QUndoCommand) -> None:
        """Run ``command`` (its ``redo``) and put it on the undo stack."""
        self.undo_stack.push(command)

    def _changed(self) -> None:
        self.revision += 1
        self.changed.emit()

    def add_node(self, node: Node, index: int | None = None) -> None:
        """Add ``node`` (at ``index`` in the node order, by default last)."""
        self.recipe.add_node(node, index)
        self.nodeAdded.emit(node.id)
        self._changed()

    def remove_node(self, node_id: str) -> tuple[Node, int, list[tuple[int, Edge]]]:
        """Remove a node and its edges; returns what ``restore_node`` needs to put them back."""
        removed = self.recipe.remove_node(node_id)
        for _index, edge in reversed(removed[2]):
            self.edgeRemoved.emit(edge)
        self.nodeRemoved.emit(node_id)
        if node_id in self._selection:
            self.set_selection([n for n in self._selection if n != node_id])
        self._changed()
        return removed

    def restore_node(self, node: Node, index: int, edges: list[tuple[int, Edge]]) -> None:
        """Undo ``remove_node``: the node at its old place in the order, its edges at theirs."""
        self.recipe.restore_node(node, index, edges)
        self.nodeAdded.emit(node.id)
        for _index, edge in edges:
            self.edgeAdded.emit(edge)
        self._changed()

    def add_edge(self, edge: Edge, index: int | None = None) -> None:
        """Connect ``edge`` (at ``index`` in the edge order, by default last: last in its port's order)."""
        self.recipe.add_edge(edge, index)
        self.edgeAdded.emit(edge)
        self._changed()

    def remove_edge(self, edge: Edge) -> int:
        """Disconnect ``edge``; returns its old place in the edge order."""
        index = self.recipe.remove_edge(edge)
        self.edgeRemoved.emit(edge)
        self._changed()
        return index

    def set_param(self, node_id: str, key: str, value: Any) -> None:
        """Set one parameter (``paramsChanged(node_id, key)``)."""
        self.recipe.set_param(node_id, key, value)
        self.paramsChanged.emit(node_id, key)
        self._changed()

    def set_params(self, node_id: str, params: Mapping[str, Any]) -> None:
        """Replace all of a node's parameters (``paramsChanged(node_id, "")``)."""
        self.recipe.set_params(node_id, dict(params))
        self.paramsChanged.emit(node_id, "")
        self._changed()

    def set_ui(self, node_id: str, ui: Mapping[str, Any], *, replace: bool = False) -> None:
        """Update a node's editor data (its position…) with ``ui``; with ``replace``, keys not in ``ui``
        are removed."""
        node = self.recipe.node(node_id)
        if replace:
            node.ui.clear()
        self.recipe.set_ui(node_id, **copy.deepcopy(dict(ui)))
        self.nodeMoved.emit(node_id)
        self._changed()

    def replace_recipe(self, other: Recipe) -> None:
        """Take over ``other``'s content (an undoable whole-recipe edit calls this)."""
        self.recipe.replace_with(other)
        self.recipeReplaced.emit()
        self.set_selection([n for n in self._selection if n in self.recipe.nodes])
        self._changed()

    def open(self, recipe: Recipe, results: Iterable[dict[str, Any]] = ()) -> None:
        """Make ``recipe`` (and its results history) the open project: the undo history starts afresh."""
        self.recipe.base_dir = recipe.base_dir
        self.results = list(results)
        self.undo_stack.clear()
        self.replace_recipe(recipe)
        self.opened.emit()

    # ---- selection -------------------------------------------------------------------------------
    @property
    def selection(self) -> list[str]:
        """The selected node ids, in recipe order."""
        return list(self._selection)

    @property
    def current_node(self) -> str:
        """The one selected node ("" when none or several are selected)."""
        return self._current

    def set_selection(self, node_ids: Iterable[str]) -> None:
        """Select exactly ``node_ids`` (unknown ids are dropped); emits only what changed."""
        wanted = set(node_ids)
        ids = [nid for nid in self.recipe.nodes if nid in wanted]
        if ids != self._selection:
            self._selection = ids
            self.selectionChanged.emit(list(ids))
        current = ids[0] if len(ids) == 1 else ""
        if current != self._current:
            self._current = current
            self.currentNodeChanged.emit(current)

    # ---- closing ---------------------------------------------------------------------------------
    def shutdown(self, wait_ms: int = 10_000) -> None:
        """The window closes for good: stop live tuning (joining its thread), cancel every job and wait
        up to ``wait_ms`` for them to end."""
        self.live.stop()
        self.jobs.cancel_all()
        self.jobs.wait(wait_ms)
