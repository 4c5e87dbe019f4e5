"""Recipe validation: every problem at once, each with the node it belongs to.

Checks node types, dangling or duplicate connections, port kinds and counts, cycles, merge methods and
their parameters, save settings, and (when files are opened) readable, mutually compatible checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from engine.checkpoints import Checkpoint, compare, open_checkpoint, parse_size
from engine.errors import EngineInputError, RecipeError
from engine.graph.nodes import DELTA, MODEL, get_node_type
from engine.graph.recipe import Recipe
from engine.methods import get_method
from engine.methods.base import MethodSpec, Param
from engine.methods.schedule import is_schedule
from engine.runtime.dtypes import parse_dtype


@dataclass(frozen=True)
class Problem:
    node_id: str | None
    message: str


def topological_order(recipe: Recipe) -> list[str]:
    """Node ids with every node after its inputs; raises RecipeError naming a node on a cycle."""
    indegree = {nid: 0 for nid in recipe.nodes}
    for e in recipe.edges:
        if e.src in indegree and e.dst in indegree:
            indegree[e.dst] += 1
    ready = [nid for nid, d in indegree.items() if d == 0]
    order: list[str] = []
    while ready:
        nid = ready.pop(0)
        order.append(nid)
        for e in recipe.edges:
            if e.src == nid and e.dst in indegree:
                indegree[e.dst] -= 1
                if indegree[e.dst] == 0:
                    ready.append(e.dst)
    if len(order) < len(recipe.nodes):
        stuck = next(nid for nid in recipe.nodes if nid not in order)
        raise RecipeError([(stuck, "the graph has a cycle through this node")])
    return order


def output_kinds(recipe: Recipe, checkpoints: Mapping[str, Checkpoint],
                 checkpoint_kinds: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """The kind each node produces (model / delta / results / None), given the opened checkpoints
    or, for checkpoints not opened, ``checkpoint_kinds`` (node id → kind; default model)."""
    kinds: dict[str, str | None] = {}
    for nid in topological_order(recipe):
        node = recipe.nodes[nid]
        ntype = get_node_type(node.type)
        if node.type == "checkpoint":
            ckpt = checkpoints.get(nid)
            kinds[nid] = ckpt.kind if ckpt is not None else (checkpoint_kinds or {}).get(nid, MODEL)
        elif node.type == "scale":
            src = recipe.inputs(nid, "input")
            kinds[nid] = kinds.get(src[0]) if src else DELTA
        elif node.type == "add":
            kinds[nid] = MODEL if any(kinds.get(s) == MODEL for s in recipe.inputs(nid, "inputs")) else DELTA
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
            opened[nid] = open_checkpoint(recipe.resolve_path(path))
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
        for scalar in _schedule_scalars(item) if p.layerwise else [item]:
            msg = p.check_scalar(scalar)
            if msg:
                problems.append(msg)
    if not p.layerwise and any(is_schedule(i) for i in items):
        problems.append(f"'{p.name}' cannot vary per layer")
    return problems


def _schedule_scalars(value: Any) -> list[Any]:
    if isinstance(value, Mapping):
        return _schedule_scalars(value.get("value"))
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _schedule_scalars(v)]
    return [value]


def _check_merge(recipe: Recipe, nid: str, kinds: dict[str, str | None]) -> tuple[MethodSpec | None, list[str]]:
    node = recipe.nodes[nid]
    problems: list[str] = []
    try:
        spec = get_method(str(node.params.get("method", "")))
    except EngineInputError as exc:
        return None, [str(exc)]
    models = recipe.inputs(nid, "models")
    has_base = bool(recipe.inputs(nid, "base"))
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
    try:
        topological_order(recipe)
    except RecipeError as exc:
        return [Problem(n, m) for n, m in exc.problems]

    checkpoints = open_checkpoints(recipe, problems) if open_files else {}
    kinds = output_kinds(recipe, checkpoints, checkpoint_kinds)
    for nid, node in recipe.nodes.items():
        ntype = known[nid]
        for port in ntype.inputs:
            srcs = recipe.inputs(nid, port.name)
            if not srcs and not port.optional:
                problems.append(Problem(nid, f"input '{port.label or port.name}' is not connected"))
            if len(srcs) > 1 and not port.multiple:
                problems.append(Problem(nid, f"input '{port.label or port.name}' takes one connection, has {len(srcs)}"))
            for s in srcs:
                if kinds.get(s) not in port.kinds:
                    problems.append(Problem(nid, f"input '{port.name}' takes {' or '.join(port.kinds)}, "
                                                 f"but '{s}' gives {kinds.get(s)}"))
        if node.type == "merge":
            _, msgs = _check_merge(recipe, nid, kinds)
            problems.extend(Problem(nid, m) for m in msgs)
        elif node.type == "add" and sum(kinds.get(s) == MODEL for s in recipe.inputs(nid, "inputs")) > 1:
            problems.append(Problem(nid, "Add takes at most one model (add task vectors onto it)"))
        elif node.type == "save":
            problems.extend(Problem(nid, m) for m in _check_save(node.params, recipe))
        elif ntype.params and node.type not in ("checkpoint",):
            for p in ntype.params:
                if p.name in node.params:
                    problems.extend(Problem(nid, m) for m in check_param_value(p, node.params[p.name], []))
    if open_files and checkpoints:
        problems.extend(_check_compatibility(recipe, checkpoints))
    for ckpt in checkpoints.values():
        ckpt.close()
    return problems


def _check_save(params: Mapping[str, Any], recipe: Recipe) -> list[str]:
    problems = []
    if not params.get("path"):
        problems.append("no output folder set")
    try:
        parse_dtype(params.get("dtype", "auto"))
        parse_size(params.get("shard_size", "5GB"))
    except EngineInputError as exc:
        problems.append(str(exc))
    src = params.get("copy_files_from")
    if src and src not in recipe.nodes:
        problems.append(f"copy_files_from names '{src}', which is not a node")
    return problems


def reference_checkpoint(recipe: Recipe, node_id: str, checkpoints: Mapping[str, Checkpoint]) -> str | None:
    """The checkpoint node whose tensor names and shapes a node's output follows: its base if it has
    one, else its first full-model input, recursively."""
    node = recipe.nodes[node_id]
    if node.type == "checkpoint":
        return node_id if checkpoints.get(node_id) is None or checkpoints[node_id].kind == MODEL else None
    order = []
    for port in ("base", "model", "models", "inputs", "input"):
        order.extend(recipe.inputs(node_id, port))
    for src in order:
        ref = reference_checkpoint(recipe, src, checkpoints)
        if ref is not None:
            return ref
    return None


def _check_compatibility(recipe: Recipe, checkpoints: Mapping[str, Checkpoint]) -> list[Problem]:
    problems = []
    for nid, node in recipe.nodes.items():
        if node.type in ("checkpoint",) or get_node_type(node.type).sink:
            continue
        ref = reference_checkpoint(recipe, nid, checkpoints)
        if ref is None or ref not in checkpoints:
            continue
        for up in recipe.upstream(nid):
            if up != ref and up in checkpoints and recipe.nodes[up].type == "checkpoint":
                report = compare(checkpoints[ref], checkpoints[up])
                if not report.compatible:
                    problems.append(Problem(nid, f"'{up}' does not fit '{ref}': {report.reason()}"))
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
