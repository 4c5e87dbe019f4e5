"""Recipe validation: every problem at once, each with the node it belongs to.

Checks node types, dangling or duplicate connections, port kinds and counts, cycles, merge methods and
their parameters, save settings, and (when files are opened) readable, mutually compatible checkpoints.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Mapping

from engine.checkpoints import Checkpoint, compare, open_checkpoint, parse_size
from engine.checkpoints.prefix import PrefixStripped
from engine.errors import EngineInputError, RecipeError
from engine.graph.nodes import DELTA, MODEL, get_node_type
from engine.graph.recipe import EdgeIndex, Recipe
from engine.methods import get_method
from engine.methods.base import MethodSpec, Param, shown
from engine.methods.schedule import is_schedule, schedule_problem
from engine.runtime.dtypes import parse_dtype


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
    or, for checkpoints not opened, ``checkpoint_kinds`` (node id → kind; default model)."""
    index = index or recipe.index()
    kinds: dict[str, str | None] = {}
    for nid in topological_order(recipe, index):
        node = recipe.nodes[nid]
        ntype = get_node_type(node.type)
        if node.type == "checkpoint":
            ckpt = checkpoints.get(nid)
            kinds[nid] = ckpt.kind if ckpt is not None else (checkpoint_kinds or {}).get(nid, MODEL)
        elif node.type == "scale":
            src = index.inputs(nid, "input")
            kinds[nid] = kinds.get(src[0]) if src else DELTA
        elif node.type == "add":
            kinds[nid] = MODEL if any(kinds.get(s) == MODEL for s in index.inputs(nid, "inputs")) else DELTA
        else:
            kinds[nid] = ntype.output
    return kinds


def open_checkpoints(recipe: Recipe, problems: list[Problem] | None = None) -> dict[str, Checkpoint]:
    """Open (headers only) every checkpoint node's file; failures go to ``problems`` or raise."""
    opened: dict[str, Checkpoint] = {}
    for nid, node in recipe.nodes.items():
        if node.type != "checkpoint":
            continue
        path = node.params.get("path")
        try:
            if not path:
                raise EngineInputError("no path set")
            if _path_problem(path):
                raise EngineInputError(f"'path' {_path_problem(path)}")
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


def check_param_value(p: Param, value: Any, keys: list[str]) -> list[str]:
    """Problems of one declared parameter's value (scalar, per-model list/map, schedule)."""
    if p.per_model:
        if isinstance(value, Mapping):
            unknown = [k for k in value if k not in keys]
            if unknown:
                return [f"'{p.name}' names '{unknown[0]}', which is not an input of this node"]
            items = list(value.values())
        elif isinstance(value, (list, tuple)):
            if len(value) != len(keys):
                return [f"'{p.name}' has {len(value)} values for {len(keys)} models"]
            items = list(value)
        else:
            items = [value]
    else:
        items = [value]
    problems: list[str] = []
    for item in items:
        shape = schedule_problem(item) if p.layerwise else None
        if shape:
            problems.append(f"'{p.name}': {shape}")
            continue
        for scalar in _schedule_scalars(item) if p.layerwise else [item]:
            msg = p.check_scalar(scalar)
            if msg:
                problems.append(msg)
    if not p.layerwise and any(is_schedule(i) for i in items):
        problems.append(f"'{p.name}' cannot vary per layer")
    return problems


def _schedule_scalars(value: Any) -> list[Any]:
    """The scalars a schedule holds (override entries' values, gradient anchors), in order, without recursion."""
    out, stack = [], [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            stack.append(item.get("value"))
        elif isinstance(item, (list, tuple)):
            stack.extend(reversed(item))
        else:
            out.append(item)
    return out


def _check_merge(recipe: Recipe, nid: str, kinds: dict[str, str | None],
                 index: EdgeIndex) -> tuple[MethodSpec | None, list[str]]:
    node = recipe.nodes[nid]
    problems: list[str] = []
    method = node.params.get("method", "")
    if not isinstance(method, str):
        return None, [f"'method' must be a method name, got {type(method).__name__}"]
    try:
        spec = get_method(method)
    except EngineInputError as exc:
        return None, [str(exc)]
    models = index.inputs(nid, "models")
    has_base = bool(index.inputs(nid, "base"))
    if len(models) < spec.min_models:
        problems.append(f"{spec.label} needs at least {spec.min_models} model(s), {len(models)} connected")
    if spec.max_models is not None and len(models) > spec.max_models:
        problems.append(f"{spec.label} takes at most {spec.max_models} model(s), {len(models)} connected")
    if spec.needs_base and not has_base:
        problems.append(f"{spec.label} needs a base model on its 'base' port")
    if not has_base and any(kinds.get(m) == DELTA for m in models):
        problems.append("task vectors are connected but no base model to add them to")
    declared = {p.name for p in spec.params}
    for key in node.params:
        if key != "method" and key not in declared:
            problems.append(f"{spec.label} has no parameter '{key}'")
    for p in spec.params:
        if p.name in node.params:
            problems.extend(check_param_value(p, node.params[p.name], models))
    return spec, problems


def validate(recipe: Recipe, *, open_files: bool = True,
             checkpoint_kinds: Mapping[str, str] | None = None) -> list[Problem]:
    """Every problem of the recipe; an empty list means it can run.

    With ``open_files=False`` nothing is read from disk (cheap enough for every edit in the GUI);
    ``checkpoint_kinds`` then tells which checkpoint nodes give task vectors (LoRA adapters)."""
    problems: list[Problem] = []
    known: dict[str, Any] = {}
    for nid, node in recipe.nodes.items():
        try:
            known[nid] = get_node_type(node.type)
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
    for nid, node in recipe.nodes.items():
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
        if node.type == "merge":
            _, msgs = _check_merge(recipe, nid, kinds, index)
            problems.extend(Problem(nid, m) for m in msgs)
        elif node.type == "add" and sum(kinds.get(s) == MODEL for s in index.inputs(nid, "inputs")) > 1:
            problems.append(Problem(nid, "Add takes at most one model (add task vectors onto it)"))
        elif node.type == "save":
            problems.extend(Problem(nid, m) for m in _check_save(node.params, recipe))
        elif ntype.params and node.type not in ("checkpoint",):
            for p in ntype.params:
                if p.name in node.params:
                    problems.extend(Problem(nid, m) for m in check_param_value(p, node.params[p.name], []))
    if open_files and checkpoints:
        problems.extend(_check_compatibility(recipe, checkpoints, index))
    for ckpt in checkpoints.values():
        ckpt.close()
    return problems


def _path_problem(path: Any) -> str | None:
    """Why a node's path parameter cannot name a file, or None."""
    if not isinstance(path, str):
        return f"must be a file or folder path (text), got {shown(path)}"
    if "\0" in path:
        return "contains a NUL character"
    return None


def _check_save(params: Mapping[str, Any], recipe: Recipe) -> list[str]:
    problems = []
    path = params.get("path")
    if not path:
        problems.append("no output folder set")
    elif _path_problem(path):
        problems.append(f"'path' {_path_problem(path)}")
    try:
        parse_dtype(params.get("dtype", "auto"))
    except EngineInputError as exc:
        problems.append(str(exc))
    size = params.get("shard_size", "5GB")
    try:
        valid = isinstance(size, (str, int)) and not isinstance(size, bool) and parse_size(size) > 0
    except (EngineInputError, ValueError, OverflowError):
        valid = False
    if not valid:
        problems.append(f"cannot read shard size {shown(size)} (write e.g. 5GB or 500MB)")
    src = params.get("copy_files_from")
    if src and (not isinstance(src, str) or src not in recipe.nodes):
        problems.append(f"copy_files_from names {shown(src)}, which is not a node")
    return problems


_REFERENCE_PORTS = ("base", "model", "models", "inputs", "input")


def reference_checkpoint(recipe: Recipe, node_id: str, checkpoints: Mapping[str, Checkpoint],
                         memo: dict[str, str | None] | None = None, index: EdgeIndex | None = None) -> str | None:
    """The checkpoint node whose tensor names and shapes a node's output follows: its base if it has
    one, else its first full-model input, recursively.

    Walks the graph with an explicit stack (any depth); ``memo`` keeps answers across calls that share
    ``index``. A node on a cycle takes no reference through the cycle."""
    index = index or recipe.index()
    memo = {} if memo is None else memo
    visiting: set[str] = set()
    stack = [node_id]
    while stack:
        nid = stack[-1]
        node = recipe.nodes.get(nid)
        if nid in memo or node is None or node.type == "checkpoint":
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
    """For every node, the checkpoint nodes it depends on (nearest first), in one pass in dependency order."""
    found: dict[str, tuple[str, ...]] = {}
    for nid in topological_order(recipe, index):
        srcs = index.sources.get(nid, [])
        direct = [s for s in srcs if recipe.nodes[s].type == "checkpoint"]
        found[nid] = tuple(dict.fromkeys([*direct, *(c for s in srcs for c in found[s])]))
    return found


def _check_compatibility(recipe: Recipe, checkpoints: Mapping[str, Checkpoint], index: EdgeIndex) -> list[Problem]:
    problems = []
    refs: dict[str, str | None] = {}
    ups = upstream_checkpoints(recipe, index)
    reports = {}
    for nid, node in recipe.nodes.items():
        if node.type in ("checkpoint",) or get_node_type(node.type).sink:
            continue
        ref = reference_checkpoint(recipe, nid, checkpoints, refs, index)
        if ref is None or ref not in checkpoints:
            continue
        for up in ups[nid]:
            if up != ref and up in checkpoints:
                if (ref, up) not in reports:
                    reports[(ref, up)] = compare(checkpoints[ref], checkpoints[up])
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
