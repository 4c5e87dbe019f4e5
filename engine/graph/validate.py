"""Recipe validation: every problem at once, each with the node it belongs to.

Checks node types, dangling or duplicate connections, port kinds and counts and cycles for every node;
each node kind adds its own checks (``NodeKind.problems``: merge methods and their parameters, save
settings…); with files opened, readable and mutually compatible checkpoints.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Mapping

from engine.checkpoints import Checkpoint, compare, open_checkpoint
from engine.checkpoints.prefix import PrefixStripped
from engine.errors import EngineInputError, RecipeError
from engine.graph.node_kinds import MODEL, NodeCheck, NodeKind, node_kind
from engine.graph.param_checks import path_problem
from engine.graph.recipe import EdgeIndex, Recipe
from engine.graph.tensor_tables import TensorTables


@dataclass(frozen=True)
class Problem:
    node_id: str | None
    message: str


def topological_order(recipe: Recipe, index: EdgeIndex | None = None) -> list[str]:
    """Node ids with every node after its inputs; raises RecipeError naming a node on a cycle."""
    index = index or recipe.index()
    indegree = {nid: 0 for nid in recipe.nodes}
    for nid in recipe.nodes:
        for dst in index.consumers.get(nid, []):
            if dst in indegree:
                indegree[dst] += 1
    ready = deque(nid for nid, d in indegree.items() if d == 0)
    order: list[str] = []
    while ready:
        nid = ready.popleft()
        order.append(nid)
        for dst in index.consumers.get(nid, []):
            if dst in indegree:
                indegree[dst] -= 1
                if indegree[dst] == 0:
                    ready.append(dst)
    if len(order) < len(recipe.nodes):
        done = set(order)
        stuck = next(nid for nid in recipe.nodes if nid not in done)
        raise RecipeError([(stuck, "the graph has a cycle through this node")])
    return order


def output_kinds(recipe: Recipe, checkpoints: Mapping[str, Checkpoint],
                 checkpoint_kinds: Mapping[str, str] | None = None,
                 index: EdgeIndex | None = None) -> dict[str, str | None]:
    """The kind each node produces (model / delta / results / None), given the opened checkpoints
    or, for source files not opened, ``checkpoint_kinds`` (node id → kind; default model)."""
    index = index or recipe.index()
    kinds: dict[str, str | None] = {}
    for nid in topological_order(recipe, index):
        kind = node_kind(recipe.nodes[nid].type)
        if kind.source:
            opened = checkpoints.get(nid)
            kinds[nid] = opened.kind if opened is not None else (checkpoint_kinds or {}).get(nid, MODEL)
        else:
            kinds[nid] = kind.output_kind({p.name: [kinds.get(s) for s in index.inputs(nid, p.name)]
                                           for p in kind.inputs})
    return kinds


def open_checkpoints(recipe: Recipe, problems: list[Problem] | None = None) -> dict[str, Checkpoint]:
    """Open (headers only) every checkpoint node's file; failures go to ``problems`` or raise."""
    opened: dict[str, Checkpoint] = {}
    for nid, node in recipe.nodes.items():
        kind = node_kind(node.type)
        if not kind.source:
            continue
        path = node.params.get(kind.file_param)
        try:
            if not path:
                raise EngineInputError("no path set")
            if path_problem(path):
                raise EngineInputError(f"'{kind.file_param}' {path_problem(path)}")
            opened[nid] = open_checkpoint(recipe.resolve_path(path))
            prefix = node.params.get("strip_prefix") or ""
            if prefix:
                if not isinstance(prefix, str):
                    raise EngineInputError("'strip_prefix' must be text")
                opened[nid] = PrefixStripped(opened[nid], prefix)
        except EngineInputError as exc:
            if problems is None:
                raise RecipeError([(nid, str(exc))]) from exc
            problems.append(Problem(nid, str(exc)))
    return opened


def validate(recipe: Recipe, *, open_files: bool = True,
             checkpoint_kinds: Mapping[str, str] | None = None) -> list[Problem]:
    """Every problem of the recipe; an empty list means it can run.

    With ``open_files=False`` nothing is read from disk (cheap enough for every edit in the GUI);
    ``checkpoint_kinds`` then tells which checkpoint nodes give task vectors (LoRA adapters)."""
    problems: list[Problem] = []
    known: dict[str, NodeKind] = {}
    for nid, node in recipe.nodes.items():
        try:
            known[nid] = node_kind(node.type)
        except EngineInputError as exc:
            problems.append(Problem(nid, str(exc)))
    for e in recipe.edges:
        if e.src not in recipe.nodes or e.dst not in recipe.nodes:
            missing = e.src if e.src not in recipe.nodes else e.dst
            problems.append(Problem(e.dst if e.dst in recipe.nodes else e.src,
                                    f"connection {e.src} → {e.dst}.{e.port} refers to missing node '{missing}'"))
            continue
        dst_type, src_type = known.get(e.dst), known.get(e.src)
        if dst_type is None or src_type is None:
            continue
        if dst_type.port(e.port) is None:
            problems.append(Problem(e.dst, f"{dst_type.label} has no input port '{e.port}'"))
        if src_type.output is None:
            problems.append(Problem(e.src, f"{src_type.label} has no output to connect"))
    if problems:
        return problems
    index = recipe.index()
    try:
        topological_order(recipe, index)
    except RecipeError as exc:
        return [Problem(n, m) for n, m in exc.problems]

    checkpoints = open_checkpoints(recipe, problems) if open_files else {}
    kinds = output_kinds(recipe, checkpoints, checkpoint_kinds, index)
    for nid in recipe.nodes:
        ntype = known[nid]
        for port in ntype.inputs:
            srcs = index.inputs(nid, port.name)
            if not srcs and not port.optional:
                problems.append(Problem(nid, f"input '{port.label or port.name}' is not connected"))
            if len(srcs) > 1 and not port.multiple:
                problems.append(Problem(nid, f"input '{port.label or port.name}' takes one connection, has {len(srcs)}"))
            for s in srcs:
                if kinds.get(s) not in port.kinds:
                    problems.append(Problem(nid, f"input '{port.name}' takes {' or '.join(port.kinds)}, "
                                                 f"but '{s}' gives {kinds.get(s)}"))
        problems.extend(Problem(nid, m) for m in ntype.problems(NodeCheck(recipe, nid, index, kinds)))
    if open_files and checkpoints:
        problems.extend(_check_compatibility(recipe, checkpoints, index))
    for ckpt in checkpoints.values():
        ckpt.close()
    return problems


_REFERENCE_PORTS = ("base", "model", "models", "inputs", "input")


def reference_checkpoint(recipe: Recipe, node_id: str, checkpoints: Mapping[str, Checkpoint],
                         memo: dict[str, str | None] | None = None, index: EdgeIndex | None = None) -> str | None:
    """The checkpoint node whose tensor names and shapes a node's output follows: its base if it has
    one, else its first full-model input, recursively. A node of a kind that ``renames`` (a layer
    stack) plans names of its own: the walk stops there and answers that node.

    Walks the graph with an explicit stack (any depth); ``memo`` keeps answers across calls that share
    ``index``. A node on a cycle takes no reference through the cycle."""
    index = index or recipe.index()
    memo = {} if memo is None else memo
    visiting: set[str] = set()
    stack = [node_id]
    while stack:
        nid = stack[-1]
        node = recipe.nodes.get(nid)
        if nid in memo or node is None or node_kind(node.type).source or node_kind(node.type).renames:
            if nid not in memo:
                memo[nid] = nid if node is not None and (
                    checkpoints.get(nid) is None or checkpoints[nid].kind == MODEL) else None
            stack.pop()
            continue
        srcs = [s for port in _REFERENCE_PORTS for s in index.inputs(nid, port)]
        todo = [s for s in srcs if s not in memo and s not in visiting]
        if todo and nid not in visiting:
            visiting.add(nid)
            stack.extend(reversed(todo))
            continue
        visiting.discard(nid)
        memo[nid] = next((memo[s] for s in srcs if memo.get(s) is not None), None)
        stack.pop()
    return memo[node_id]


def upstream_checkpoints(recipe: Recipe, index: EdgeIndex) -> dict[str, tuple[str, ...]]:
    """For every node, the checkpoint nodes it depends on (nearest first), in one pass in dependency order;
    a renaming node (a layer stack) stands for what it reads."""
    found: dict[str, tuple[str, ...]] = {}
    for nid in topological_order(recipe, index):
        srcs = index.sources.get(nid, [])
        kinds = {s: node_kind(recipe.nodes[s].type) for s in srcs}
        direct = [s for s in srcs if kinds[s].source or kinds[s].renames]
        found[nid] = tuple(dict.fromkeys([*direct, *(c for s in srcs if not kinds[s].renames for c in found[s])]))
    return found


def _check_compatibility(recipe: Recipe, checkpoints: Mapping[str, Checkpoint], index: EdgeIndex) -> list[Problem]:
    problems = []
    refs: dict[str, str | None] = {}
    ups = upstream_checkpoints(recipe, index)
    reports = {}
    tables = TensorTables(recipe, lambda: checkpoints,
                          lambda n: reference_checkpoint(recipe, n, checkpoints, refs, index))
    planned: dict[str, bool] = {}  # renaming node → whether its plan fits its inputs
    for nid, node in recipe.nodes.items():
        kind = node_kind(node.type)
        if kind.renames:
            try:
                kind.tensor_table(tables, nid)
                planned[nid] = True
            except EngineInputError as exc:
                problems.append(Problem(nid, str(exc)))
                planned[nid] = False
    for nid, node in recipe.nodes.items():
        kind = node_kind(node.type)
        if kind.source or kind.sink or kind.renames:
            continue
        ref = reference_checkpoint(recipe, nid, checkpoints, refs, index)
        if ref is None or not (ref in checkpoints or planned.get(ref)):
            continue
        for up in ups[nid]:
            if up != ref and (up in checkpoints or planned.get(up)):
                if (ref, up) not in reports:
                    reports[(ref, up)] = compare(*(checkpoints.get(n) or tables.table(n) for n in (ref, up)))
                if not reports[(ref, up)].compatible:
                    problems.append(Problem(nid, f"'{up}' does not fit '{ref}': {reports[(ref, up)].reason()}"))
    # the same pair is reported once, at the first node that joins them
    unique, seen = [], set()
    for p in problems:
        key = p.message
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def require_valid(recipe: Recipe, *, open_files: bool = True) -> None:
    """Raise RecipeError listing every problem, if there is any."""
    problems = validate(recipe, open_files=open_files)
    if problems:
        raise RecipeError([(p.node_id, p.message) for p in problems])
