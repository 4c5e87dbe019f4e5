"""GraphScene: the QGraphicsScene mirroring the document's recipe (model/view, after Orange's canvas).

The scene never owns graph state. Every user gesture becomes a command from ``app.commands`` pushed on
the document's undo stack; the command edits the recipe through the ``app.document.Document``, whose
typed signals (``nodeAdded``, ``edgeRemoved``, ``paramsChanged``…) update the items here. The selection
lives in the document too: the scene reports its selected nodes and follows selections made elsewhere.
Output kinds, port fill and validation marks are refreshed once per burst of edits (a zero-delay
timer), or at once with ``revalidate()``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable, Sequence

from PySide6.QtCore import QMimeData, QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QGraphicsScene, QGraphicsSceneDragDropEvent, QGraphicsSceneMouseEvent, QToolTip,
                               QWidget)

from app.commands import AddNodeCommand, ConnectCommand, DisconnectCommand, MoveNodesCommand, PasteCommand, RemoveNodesCommand
from app.document import Document
from app.graph import style
from app.graph.items import DragEdgeItem, EdgeItem, NodeItem, PortItem, node_height
from app.graph.palette import NODE_MIME, default_params
from engine.errors import EngineInputError, RecipeError
from engine.graph.node_kinds import CHECKPOINT, DELTA, MODEL, node_kind, source_paths
from engine.graph.recipe import Edge, Node, Recipe
from engine.graph.validate import Problem, output_kinds, topological_order, validate

CHECKPOINT_MIME = "application/x-weightsmith-checkpoint"
SCENE_EXTENT = 50_000.0
COLUMN_GAP, ROW_GAP = 270.0, 150.0
WRAP_ROWS, WRAP_GAP = 5, 230.0  # a depth with more nodes wraps into side-by-side columns this far apart
PLACE_MARGIN, PLACE_STEP, PLACE_RINGS = 16.0, 20.0, 50  # gap kept to other nodes; search grid and how far out

def auto_layout(recipe: Recipe) -> dict[str, tuple[float, float]]:
    """Positions for nodes that have none: one column per depth in the graph, rows in recipe order.

    A depth holding more than ``WRAP_ROWS`` nodes (eight experts feeding one merge) wraps into several
    columns, and every depth is centred vertically on the tallest, so a merge sits beside its inputs.
    """
    try:
        order = topological_order(recipe)
    except RecipeError:
        order = list(recipe.nodes)
    depth: dict[str, int] = {}
    for nid in order:
        srcs = [depth[e.src] for e in recipe.input_edges(nid) if e.src in depth]
        depth[nid] = 1 + max(srcs) if srcs else 0
    columns: dict[int, list[str]] = defaultdict(list)
    for nid in recipe.nodes:
        columns[depth.get(nid, 0)].append(nid)
    tallest = min(WRAP_ROWS, max((len(ids) for ids in columns.values()), default=0))
    out, x = {}, 0.0
    for d in sorted(columns):
        ids = columns[d]
        rows = min(len(ids), WRAP_ROWS)
        top = (tallest - rows) * ROW_GAP / 2
        for i, nid in enumerate(ids):
            sub, row = divmod(i, rows)
            out[nid] = (x + sub * WRAP_GAP, top + row * ROW_GAP)
        x += (len(ids) - 1) // rows * WRAP_GAP + COLUMN_GAP
    return out


def _stored_pos(node: Node) -> tuple[float, float] | None:
    pos = node.ui.get("pos")
    if isinstance(pos, (list, tuple)) and len(pos) == 2 and all(isinstance(v, (int, float)) for v in pos):
        return float(pos[0]), float(pos[1])
    return None


def _dropped_paths(mime: QMimeData) -> list[str]:
    """Checkpoint paths carried by a drag: our own MIME type, or local files from a file manager."""
    if mime.hasFormat(CHECKPOINT_MIME):
        try:
            paths = json.loads(bytes(mime.data(CHECKPOINT_MIME).data()).decode("utf-8"))
        except ValueError:
            return []
        return [str(p) for p in paths] if isinstance(paths, list) else []
    return [u.toLocalFile() for u in mime.urls() if u.isLocalFile()]


class GraphScene(QGraphicsScene):
    """The merge graph of ``document`` as a scene. Signals: ``connectionRefused(reason)``,
    ``problemsChanged(list[Problem])`` after each validation.

    ``file_problems`` holds what reading a node's file found (a full check, a failed inspection); they
    show on the node with the structural problems until the node's parameters change."""

    connectionRefused = Signal(str)
    problemsChanged = Signal(list)

    def __init__(self, document: Document, parent: QWidget | None = None):
        super().__init__(parent)
        self.document = document
        self.recipe = document.recipe
        self.undo_stack = document.undo_stack
        self.problems: list[Problem] = []
        self.file_problems: dict[str, list[str]] = {}
        self._nodes: dict[str, NodeItem] = {}
        self._edges: dict[Edge, EdgeItem] = {}
        self._auto_pos: dict[str, tuple[float, float]] = {}
        self._kind_cache: dict[str, str] = {}
        self._drag: SimpleNamespace | None = None
        self._drag_line: DragEdgeItem | None = None
        self._selection_batch = False
        self._paste_count = 0
        self.setSceneRect(-SCENE_EXTENT, -SCENE_EXTENT, 2 * SCENE_EXTENT, 2 * SCENE_EXTENT)
        self._refresh_timer = QTimer(self, singleShot=True, interval=0)
        self._refresh_timer.timeout.connect(self.revalidate)
        self.selectionChanged.connect(self._on_selection_changed)
        self._connections = [
            (document.nodeAdded, self._on_node_added), (document.nodeRemoved, self._on_node_removed),
            (document.edgeAdded, self._on_edge_added), (document.edgeRemoved, self._on_edge_removed),
            (document.paramsChanged, self._on_params_changed), (document.nodeMoved, self._on_node_moved),
            (document.recipeReplaced, self._on_recipe_replaced), (document.selectionChanged, self._follow_selection),
        ]
        for signal, slot in self._connections:
            signal.connect(slot)
        self._rebuild()

    def detach(self) -> None:
        """Stop following the document (before dropping this scene while the document lives on)."""
        for signal, slot in self._connections:
            signal.disconnect(slot)
        self._connections = []

    # ---- queries -------------------------------------------------------------------------------
    def node_item(self, node_id: str) -> NodeItem | None:
        return self._nodes.get(node_id)

    def edge_item(self, edge: Edge) -> EdgeItem | None:
        return self._edges.get(edge)

    def selected_node_ids(self) -> list[str]:
        """Selected node ids, in recipe order."""
        return [nid for nid, item in self._nodes.items() if item.isSelected()]

    def select_node(self, node_id: str) -> None:
        """Select exactly this node ("" clears the selection) and scroll it into view."""
        self._select([node_id] if node_id in self._nodes else [])
        if node_id in self._nodes:
            for view in self.views():
                view.ensureVisible(self._nodes[node_id], 40, 40)

    def _select(self, node_ids: Iterable[str]) -> None:
        """Make exactly these nodes selected, announcing the result once."""
        self._selection_batch = True
        try:
            self.clearSelection()
            for nid in node_ids:
                self._nodes[nid].setSelected(True)
        finally:
            self._selection_batch = False
        self._on_selection_changed()

    def checkpoint_kind(self, path: str) -> str:
        """``delta`` for a PEFT LoRA adapter folder, else ``model`` (the rule ``open_checkpoint`` follows;
        decided from the folder listing alone, so it is instant)."""
        resolved = str(self.recipe.resolve_path(path))
        if resolved not in self._kind_cache:
            self._kind_cache[resolved] = DELTA if (Path(resolved) / "adapter_config.json").is_file() else MODEL
        return self._kind_cache[resolved]

    def checkpoint_kinds(self) -> dict[str, str]:
        """Checkpoint node id → the kind its file gives (LoRA adapters give task vectors)."""
        return {nid: self.checkpoint_kind(path) for nid, path in source_paths(self.recipe).items()}

    def output_kinds(self) -> dict[str, str | None]:
        """The kind every node outputs now (LoRA checkpoints give task vectors)."""
        try:
            return output_kinds(self.recipe, {}, self.checkpoint_kinds())
        except (RecipeError, EngineInputError):  # a cycle or unknown type: fall back to declared kinds
            return {nid: self._declared_output(n.type) for nid, n in self.recipe.nodes.items()}

    @staticmethod
    def _declared_output(type_name: str) -> str | None:
        try:
            return node_kind(type_name).output
        except EngineInputError:
            return None

    def connection_problem(self, src: str, dst: str, port: str) -> str | None:
        """Why ``src`` cannot feed ``dst.port``, or None when the connection is allowed."""
        recipe = self.recipe
        if src not in recipe.nodes or dst not in recipe.nodes:
            return "that node is not in the recipe"
        if src == dst:
            return "a node cannot feed its own input"
        try:
            src_type, dst_type = node_kind(recipe.nodes[src].type), node_kind(recipe.nodes[dst].type)
        except EngineInputError as exc:
            return str(exc)
        if src_type.output is None:
            return f"{src_type.label} has no output to connect"
        port_def = dst_type.port(port)
        if port_def is None:
            return f"{dst_type.label} has no input '{port}'"
        label = port_def.label or port_def.name
        if Edge(src, dst, port) in recipe.edges:
            return f"'{src}' is already connected to {dst} › {label}"
        if dst in recipe.upstream(src):
            return f"that would make a cycle: '{src}' already depends on '{dst}'"
        kinds = self.output_kinds()
        kind = kinds.get(src)
        if kind not in port_def.kinds:
            wanted = " or ".join(style.kind_name(k) for k in port_def.kinds)
            return f"{dst} › {label} takes {wanted}, but '{src}' gives {style.kind_name(kind)}"
        existing = recipe.inputs(dst, port)
        if existing and not port_def.multiple:
            return f"{dst} › {label} takes one connection and already has '{existing[0]}' (delete that edge first)"
        return dst_type.connection_problem(port, kind, [kinds.get(s) for s in existing])

    def set_file_problems(self, node_id: str, messages: list[str]) -> None:
        """Mark (or, with no messages, clear) what reading ``node_id``'s file found, and revalidate."""
        if node_id not in self.recipe.nodes:
            return
        if messages:
            self.file_problems[node_id] = list(messages)
        else:
            self.file_problems.pop(node_id, None)
        self.revalidate()

    def nodes_using(self, path: str) -> list[str]:
        """Checkpoint nodes whose file resolves to ``path``."""
        target = Path(path).resolve()
        return [nid for nid, p in source_paths(self.recipe).items() if self.recipe.resolve_path(p).resolve() == target]

    # ---- edits (each one command on the undo stack) ---------------------------------------------
    def free_spot(self, pos: QPointF | Sequence[float], node_type: str) -> tuple[float, float]:
        """The top-left corner nearest ``pos`` where a node of ``node_type`` overlaps no other node."""
        x, y = (pos.x(), pos.y()) if isinstance(pos, QPointF) else (float(pos[0]), float(pos[1]))
        try:
            height = node_height(node_kind(node_type))
        except EngineInputError:
            height = node_height(None)
        m = PLACE_MARGIN
        taken = [QRectF(item.pos(), item.rect().size()).adjusted(-m, -m, m, m) for item in self._nodes.values()]

        def free(px: float, py: float) -> bool:
            rect = QRectF(px, py, style.NODE_WIDTH, height)
            return not any(rect.intersects(t) for t in taken)

        if free(x, y):
            return x, y
        step = PLACE_STEP
        for ring in range(1, PLACE_RINGS):
            around = [(i, j) for i in range(-ring, ring + 1) for j in (-ring, ring)]
            around += [(i, j) for j in range(-ring + 1, ring) for i in (-ring, ring)]
            spots = [(x + i * step, y + j * step) for i, j in around if free(x + i * step, y + j * step)]
            if spots:
                return min(spots, key=lambda s: (s[0] - x) ** 2 + (s[1] - y) ** 2)
        return x, y

    def auto_layout_all(self) -> bool:
        """Lay every node out again by depth (``auto_layout``) as one undo step; False when nothing moves."""
        layout = auto_layout(self.recipe)
        moves = {}
        for nid, new in layout.items():
            item = self._nodes.get(nid)
            if item is not None and (abs(item.x() - new[0]) > 0.5 or abs(item.y() - new[1]) > 0.5):
                moves[nid] = (_stored_pos(self.recipe.nodes[nid]), new)
        if not moves:
            return False
        cmd = MoveNodesCommand(self.document, moves)
        cmd.setText("Auto-layout")
        self.undo_stack.push(cmd)
        return True

    def add_node_at(self, node_type: str, pos: QPointF | Sequence[float], params: dict[str, Any] | None = None) -> str:
        """Add a node at the free place nearest ``pos`` (its top-left corner), with the type's (and merge
        method's) default parameters updated by ``params``; selects it and returns its id."""
        full = default_params(node_type, params)
        node_id = self.recipe.new_id(node_kind(node_type).id_prefix(full))
        x, y = self.free_spot(pos, node_type)
        node = Node(node_id, node_type, full, {"pos": [float(round(x)), float(round(y))]})
        self.undo_stack.push(AddNodeCommand(self.document, node))
        self.select_node(node_id)
        return node_id

    def add_checkpoints_at(self, paths: Iterable[str], pos: QPointF) -> list[str]:
        """One Checkpoint node per path, each at the free place nearest the one before (starting at
        ``pos``), as one undo step."""
        paths = list(paths)
        if not paths:
            return []
        self.undo_stack.beginMacro(f"Add {len(paths)} checkpoint{'s' if len(paths) > 1 else ''}")
        ids = []
        x, y = pos.x(), pos.y()
        for path in paths:
            node_id = self.recipe.new_id(CHECKPOINT.id_prefix({"path": path}))
            x, y = self.free_spot((x, y), CHECKPOINT.name)
            node = Node(node_id, CHECKPOINT.name, default_params(CHECKPOINT.name, {"path": path}),
                        {"pos": [float(round(x)), float(round(y))]})
            self.undo_stack.push(AddNodeCommand(self.document, node))
            ids.append(node_id)
        self.undo_stack.endMacro()
        self._select(ids)
        return ids

    def connect_nodes(self, src: str, dst: str, port: str, screen_pos: QPointF | None = None) -> bool:
        """Connect ``src`` into ``dst.port`` if allowed; otherwise emit ``connectionRefused(reason)``
        (and show the reason as a tooltip at ``screen_pos``)."""
        reason = self.connection_problem(src, dst, port)
        if reason is not None:
            self.connectionRefused.emit(reason)
            if screen_pos is not None:
                point = screen_pos.toPoint() if isinstance(screen_pos, QPointF) else screen_pos
                QToolTip.showText(point, f"Cannot connect: {reason}")
            return False
        self.undo_stack.push(ConnectCommand(self.document, Edge(src, dst, port)))
        return True

    def delete_selected(self) -> None:
        """Delete the selected nodes (with their edges) and selected edges, as one undo step."""
        node_ids = self.selected_node_ids()
        edges = [e for e in self.recipe.edges
                 if e in self._edges and self._edges[e].isSelected() and e.src not in node_ids and e.dst not in node_ids]
        if not node_ids and not edges:
            return
        macro = bool(node_ids) + len(edges) > 1
        if macro:
            self.undo_stack.beginMacro("Delete selection")
        if node_ids:
            self.undo_stack.push(RemoveNodesCommand(self.document, node_ids))
        for e in edges:
            self.undo_stack.push(DisconnectCommand(self.document, e))
        if macro:
            self.undo_stack.endMacro()

    def copy_selected(self) -> dict[str, Any]:
        """The selected nodes and the edges among them, as ``{"nodes": [...], "edges": [...]}`` JSON."""
        ids = self.selected_node_ids()
        nodes = []
        for nid in ids:
            data = self.recipe.nodes[nid].to_json()
            data.setdefault("ui", {})["pos"] = [self._nodes[nid].x(), self._nodes[nid].y()]
            nodes.append(data)
        self._paste_count = 0
        edges = [e.to_json() for e in self.recipe.edges if e.src in ids and e.dst in ids]
        return {"nodes": nodes, "edges": edges}

    def paste(self, data: dict[str, Any], offset: Sequence[float] | None = None) -> list[str]:
        """Add copies of a ``copy_selected`` fragment with fresh ids (shifted by ``offset``, by default a
        little further on each paste); selects and returns the new ids."""
        nodes = data.get("nodes") if isinstance(data, dict) else None
        if not nodes:
            return []
        if offset is None:
            self._paste_count += 1
            offset = (30.0 * self._paste_count, 30.0 * self._paste_count)
        try:
            cmd = PasteCommand(self.document, nodes, data.get("edges", []), offset)
        except ValueError as exc:
            self.connectionRefused.emit(f"cannot paste: {exc}")
            return []
        self.undo_stack.push(cmd)
        new_ids = list(cmd.new_ids.values())
        self._select(new_ids)
        return new_ids

    def duplicate_selected(self) -> list[str]:
        return self.paste(self.copy_selected())

    def _commit_moves(self) -> None:
        """After a drag, record the moved nodes' new positions as one MoveNodesCommand."""
        moves = {}
        for nid, item in self._nodes.items():
            stored = _stored_pos(self.recipe.nodes[nid])
            ref = stored if stored is not None else self._auto_pos.get(nid)
            new = (float(round(item.x())), float(round(item.y())))
            if ref is None or abs(ref[0] - item.x()) > 0.5 or abs(ref[1] - item.y()) > 0.5:
                moves[nid] = (stored, new)
        if moves:
            self.undo_stack.push(MoveNodesCommand(self.document, moves))

    # ---- mirroring the document ----------------------------------------------------------------
    def _on_node_added(self, node_id: str) -> None:
        self._add_node_item(node_id)
        self._refresh_timer.start()

    def _on_node_removed(self, node_id: str) -> None:
        self._remove_node_item(node_id)
        self._refresh_timer.start()

    def _on_edge_added(self, edge: Edge) -> None:
        self._add_edge_item(edge)
        self._refresh_timer.start()

    def _on_edge_removed(self, edge: Edge) -> None:
        self._remove_edge_item(edge)
        self._refresh_timer.start()

    def _on_params_changed(self, node_id: str, _key: str) -> None:
        self.file_problems.pop(node_id, None)
        self._refresh_node(node_id)
        self._refresh_timer.start()

    def _on_node_moved(self, node_id: str) -> None:
        self._place(node_id)
        self._refresh_timer.start()

    def _on_recipe_replaced(self) -> None:
        self.file_problems.clear()
        self._rebuild()

    def _rebuild(self) -> None:
        for edge in list(self._edges):
            self._remove_edge_item(edge)
        for nid in list(self._nodes):
            self._remove_node_item(nid)
        layout = auto_layout(self.recipe)
        for nid in self.recipe.nodes:
            self._add_node_item(nid, layout)
        for edge in self.recipe.edges:
            self._add_edge_item(edge)
        self.revalidate()

    def _add_node_item(self, node_id: str, layout: dict[str, tuple[float, float]] | None = None) -> None:
        node = self.recipe.nodes[node_id]
        try:
            ntype = node_kind(node.type)
        except EngineInputError:
            ntype = None  # shown without ports; validation marks it
        item = NodeItem(node_id, ntype, node.type)
        self.addItem(item)
        self._nodes[node_id] = item
        self._place(node_id, layout)
        self._refresh_node(node_id)

    def _remove_node_item(self, node_id: str) -> None:
        item = self._nodes.pop(node_id)
        if self._drag is not None and item in (self._drag.port.node, getattr(self._drag.target, "node", None)):
            self._cancel_drag()
        self._auto_pos.pop(node_id, None)
        self.file_problems.pop(node_id, None)
        for edge_item in list(item.edges):
            self._remove_edge_item(edge_item.edge)
        self.removeItem(item)

    def _add_edge_item(self, edge: Edge) -> None:
        src, dst = self._nodes.get(edge.src), self._nodes.get(edge.dst)
        if src is None or dst is None:
            return  # a dangling edge in a malformed recipe: validation reports it
        item = EdgeItem(edge, src, dst)
        self.addItem(item)
        self._edges[edge] = item

    def _remove_edge_item(self, edge: Edge) -> None:
        item = self._edges.pop(edge, None)
        if item is not None:
            item.detach()
            self.removeItem(item)

    def _place(self, node_id: str, layout: dict[str, tuple[float, float]] | None = None) -> None:
        """Put a node's item at its stored position, or where ``auto_layout`` puts it."""
        item = self._nodes[node_id]
        pos = _stored_pos(self.recipe.nodes[node_id])
        if pos is None:
            pos = (layout or auto_layout(self.recipe))[node_id]
            self._auto_pos[node_id] = pos
        else:
            self._auto_pos.pop(node_id, None)
        item.setPos(*pos)

    def _refresh_node(self, node_id: str) -> None:
        """Update a node's subtitle, badges and help from its parameters."""
        node = self.recipe.nodes[node_id]
        item = self._nodes[node_id]
        badges: list[tuple[str, QColor]] = []
        help_text = item.node_type.help if item.node_type else ""
        kind = item.node_type
        if kind is None:
            item.set_content(help_text, badges, help_text)
            return
        subtitle = kind.subtitle(node)
        if kind.source:
            path = str(node.params.get(kind.file_param) or "")
            help_text = path or help_text
            if path and self.checkpoint_kind(path) == DELTA:
                badges.append(("LoRA", style.KIND_COLORS[DELTA]))
        elif kind.method_param:
            spec = kind.method(node)
            if spec is not None:
                help_text = spec.summary
                badges = [(r.value, style.REQUIREMENT_COLORS.get(r.value, style.UNKNOWN_KIND))
                          for r in sorted(spec.requirements, key=lambda r: r.value)]
        elif kind.sink and "dtype" in node.params:
            badges.append((str(node.params["dtype"]), style.UNKNOWN_KIND))
        item.set_content(subtitle, badges, help_text)

    def revalidate(self) -> None:
        """Refresh output kinds, port fill and the validation marks of every node now."""
        self._refresh_timer.stop()
        kinds = self.output_kinds()
        connected: dict[str, set[str]] = defaultdict(set)
        for e in self.recipe.edges:
            connected[e.dst].add(e.port)
        for nid, item in self._nodes.items():
            if item.output is not None:
                item.output.set_output_kind(kinds.get(nid))
            item.set_connected(connected[nid])
        into: dict[tuple[str, str], list[Edge]] = defaultdict(list)
        for e in self.recipe.edges:
            into[(e.dst, e.port)].append(e)
        for edge, edge_item in self._edges.items():
            edge_item.set_kind(kinds.get(edge.src))
            siblings = into[(edge.dst, edge.port)]
            edge_item.set_slot(siblings.index(edge), len(siblings))
        self.problems = validate(self.recipe, open_files=False, checkpoint_kinds=self.checkpoint_kinds())
        self.problems += [Problem(nid, m) for nid, messages in self.file_problems.items() for m in messages
                          if Problem(nid, m) not in self.problems]
        by_node: dict[str, list[str]] = defaultdict(list)
        for p in self.problems:
            if p.node_id is not None:
                by_node[p.node_id].append(p.message)
        for nid, item in self._nodes.items():
            item.set_problems(by_node.get(nid, []))
        self.problemsChanged.emit(self.problems)

    def _on_selection_changed(self) -> None:
        if not self._selection_batch:
            self.document.set_selection(self.selected_node_ids())

    def _follow_selection(self, node_ids: list[str]) -> None:
        """A selection made elsewhere (the document's): select the same items."""
        if set(node_ids) != set(self.selected_node_ids()):
            self._select(nid for nid in node_ids if nid in self._nodes)

    # ---- connection dragging (called by PortItem) ----------------------------------------------
    def begin_connection(self, port: PortItem, scene_pos: QPointF) -> None:
        # one line item lives as long as the scene and is only shown while dragging: adding and deleting
        # an item inside the scene's own mouse-event delivery crashed PySide6 now and then
        if self._drag_line is None:
            self._drag_line = DragEdgeItem(style.kind_color(port.kinds[0]))
            self.addItem(self._drag_line)
        line = self._drag_line
        line.color = style.kind_color(port.kinds[0])
        line.setVisible(True)
        self._drag = SimpleNamespace(port=port, line=line, target=None)
        self.drag_connection(scene_pos)

    def _target_at(self, scene_pos: QPointF) -> PortItem | None:
        """The port a connection dragged from ``self._drag.port`` would attach to at ``scene_pos``."""
        want_output = not self._drag.port.is_output
        for item in self.items(QRectF(scene_pos - QPointF(6, 6), scene_pos + QPointF(6, 6))):
            if isinstance(item, PortItem) and item.is_output == want_output:
                return item
            if isinstance(item, NodeItem):
                return item.output if want_output else item.nearest_input(scene_pos)
        return None

    @staticmethod
    def _endpoints(start: PortItem, target: PortItem | None) -> tuple[str, str, str] | None:
        """(src, dst, port) of a connection dragged from ``start`` to ``target``."""
        if target is None:
            return None
        out, inp = (start, target) if start.is_output else (target, start)
        return out.node.node_id, inp.node.node_id, inp.name

    def drag_connection(self, scene_pos: QPointF) -> None:
        if self._drag is None:
            return
        target = self._target_at(scene_pos)
        if self._drag.target is not None and self._drag.target is not target:
            self._drag.target.highlight = None
            self._drag.target.update()
        self._drag.target = target
        ends = self._endpoints(self._drag.port, target)
        refused = ends is not None and self.connection_problem(*ends) is not None
        if target is not None:
            target.highlight = not refused
            target.update()
        start = self._drag.port.scenePos()
        snap = target.scenePos() if target is not None else scene_pos
        out_pos, in_pos = (start, snap) if self._drag.port.is_output else (snap, start)
        self._drag.line.set_ends(out_pos, in_pos, refused)

    def end_connection(self, scene_pos: QPointF, screen_pos: QPointF | None = None) -> None:
        if self._drag is None:
            return
        self.drag_connection(scene_pos)
        ends = self._endpoints(self._drag.port, self._drag.target)
        self._cancel_drag()
        if ends is not None:
            self.connect_nodes(*ends, screen_pos=screen_pos)

    def _cancel_drag(self) -> None:
        """Remove the dragged connection's line and highlight."""
        drag, self._drag = self._drag, None
        drag.line.setVisible(False)
        if drag.target is not None:
            drag.target.highlight = None
            drag.target.update()

    # ---- Qt event handlers ---------------------------------------------------------------------
    # A connection drag is handled here, before any item sees the press: no port ever grabs the mouse.
    # (With ports as mouse grabbers, PySide6 crashed now and then in Qt's ungrab after the release.)
    def mousePressEvent(self, event: QGraphicsSceneMouseEvent) -> None:  # noqa: N802 (Qt's name)
        if event.button() == Qt.MouseButton.LeftButton:
            port = next((i for i in self.items(event.scenePos()) if isinstance(i, PortItem)), None)
            if port is not None:
                self.begin_connection(port, event.scenePos())
                event.accept()
                return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QGraphicsSceneMouseEvent) -> None:  # noqa: N802 (Qt's name)
        if self._drag is not None:
            self.drag_connection(event.scenePos())
            event.accept()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QGraphicsSceneMouseEvent) -> None:  # noqa: N802 (Qt's name)
        if self._drag is not None and event.button() == Qt.MouseButton.LeftButton:
            self.end_connection(event.scenePos(), event.screenPos())
            event.accept()
            return
        super().mouseReleaseEvent(event)
        if event.button() == Qt.MouseButton.LeftButton:
            self._commit_moves()

    @staticmethod
    def _accepts(mime: QMimeData) -> bool:
        return mime.hasFormat(NODE_MIME) or mime.hasFormat(CHECKPOINT_MIME) or bool(_dropped_paths(mime))

    def dragEnterEvent(self, event: QGraphicsSceneDragDropEvent) -> None:  # noqa: N802 (Qt's name)
        if self._accepts(event.mimeData()):
            event.acceptProposedAction()
        else:
            super().dragEnterEvent(event)

    def dragMoveEvent(self, event: QGraphicsSceneDragDropEvent) -> None:  # noqa: N802 (Qt's name)
        if self._accepts(event.mimeData()):
            event.acceptProposedAction()
        else:
            super().dragMoveEvent(event)

    def dropEvent(self, event: QGraphicsSceneDragDropEvent) -> None:  # noqa: N802 (Qt's name)
        mime = event.mimeData()
        corner = event.scenePos() - QPointF(style.NODE_WIDTH / 2, style.HEADER_H / 2)
        if mime.hasFormat(NODE_MIME):
            try:
                data = json.loads(bytes(mime.data(NODE_MIME).data()).decode("utf-8"))
                self.add_node_at(str(data["type"]), corner, dict(data.get("params", {})))
            except (ValueError, KeyError, TypeError, EngineInputError):
                event.ignore()
                return
        elif not self.add_checkpoints_at(_dropped_paths(mime), corner):
            super().dropEvent(event)
            return
        event.acceptProposedAction()
