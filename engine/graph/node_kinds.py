"""The kinds of node a merge graph holds, each a class that owns everything about it.

A node kind declares its input ports, parameters and output kind, and implements what the rest of
the engine and the GUI ask of it: the kind of value it outputs given its inputs', its own
validation, its value for one tensor name (``compute``), a one-line subtitle, and for sinks what
running it means (``run_sinks``). Every kind is listed once in ``NODE_KINDS``; nothing outside this
module tests a node's type name. Adding a kind is adding a class here (and its test).

Kinds flowing along edges: ``model`` (full weights), ``delta`` (a task vector), ``results``
(evaluation output).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Protocol

import torch

from engine.checkpoints import parse_size
from engine.errors import EngineInputError
from engine.graph.param_checks import check_param_value, path_problem
from engine.graph.stacking import parse_slices, slice_problems, stack_table
from engine.methods import get_method
from engine.methods.base import MethodSpec, Param, shown
from engine.runtime.dtypes import parse_dtype

if TYPE_CHECKING:
    from engine.graph.executor import GraphRun, RunOptions
    from engine.graph.recipe import EdgeIndex, Node, Recipe
    from engine.graph.tensor_tables import TensorTable, TensorTables

MODEL, DELTA, RESULTS = "model", "delta", "results"
DTYPE_CHOICES = ("auto", "fp32", "fp16", "bf16")
SPLIT_CHOICES = ("test", "val", "train")


@dataclass(frozen=True)
class Port:
    """An input port: which kinds it accepts, whether it takes several edges, whether it may stay empty."""

    name: str
    kinds: tuple[str, ...]
    multiple: bool = False
    optional: bool = False
    label: str = ""


@dataclass(frozen=True)
class NodeCheck:
    """What a kind's ``problems`` sees: the recipe, the node, its edges and every node's output kind."""

    recipe: "Recipe"
    node_id: str
    index: "EdgeIndex"
    kinds: Mapping[str, str | None]

    @property
    def node(self) -> "Node":
        return self.recipe.nodes[self.node_id]

    def inputs(self, port: str) -> list[str]:
        return self.index.inputs(self.node_id, port)


class ModelScorer(Protocol):
    """What an Evaluate sink needs to score a model (``engine.evaluation`` provides it)."""

    def score(self, run: "GraphRun", evaluate_id: str, model_id: str, options: "RunOptions") -> dict[str, Any]:
        """The results table of ``model_id`` on the tasks of the Evaluate node ``evaluate_id``."""


class NodeKind:
    """A kind of node. ``source`` kinds read weights from a file named by ``file_param``; ``sink`` kinds
    are the recipe's outputs (``writes_folder``: their ``file_param`` names a folder they write);
    ``method_param`` names the parameter choosing a registry method whose own parameters the node then
    takes. ``renames`` kinds output tensors named and shaped by their own plan (``tensor_table``), not
    their reference's. ``icon`` (a theme icon name) and ``color`` (#rrggbb) are how editors draw it."""

    name: str = ""
    label: str = ""
    help: str = ""
    inputs: tuple[Port, ...] = ()
    output: str | None = None
    params: tuple[Param, ...] = ()
    source: bool = False
    sink: bool = False
    file_param: str | None = None
    writes_folder: bool = False
    method_param: str | None = None
    renames: bool = False
    icon: str = "checkpoint"
    color: str = "#8a8f98"

    def port(self, name: str) -> Port | None:
        return next((p for p in self.inputs if p.name == name), None)

    def method(self, node: "Node") -> MethodSpec | None:
        """The registry method the node's ``method_param`` names (None: no method, or an unknown one)."""
        if self.method_param is None:
            return None
        try:
            return get_method(node.params.get(self.method_param, ""))
        except (EngineInputError, TypeError):
            return None

    def declared_params(self, node: "Node") -> tuple[Param, ...]:
        """Every parameter this node takes (its method's too, for kinds with a method)."""
        spec = self.method(node)
        return (*self.params, *(spec.params if spec else ()))

    def output_kind(self, input_kinds: Mapping[str, list[str | None]]) -> str | None:
        """The kind of value this node outputs, given the kinds arriving on each port."""
        return self.output

    def connection_problem(self, port: str, kind: str | None, existing: list[str | None]) -> str | None:
        """Why a value of ``kind`` cannot join ``existing`` connections on ``port`` (beyond the port's kinds
        and count), or None; the editor refuses such an edge as it is drawn."""
        return None

    def id_prefix(self, params: Mapping[str, Any]) -> str:
        """The readable start of a new node's id, given its parameters."""
        if self.method_param and isinstance(params.get(self.method_param), str) and params[self.method_param]:
            return params[self.method_param]
        return self.name

    def problems(self, check: NodeCheck) -> list[str]:
        """This kind's own validation (ports and kinds are checked for every kind by the validator)."""
        params = check.node.params
        return [m for p in self.params if p.name in params for m in check_param_value(p, params[p.name], [])]

    def compute(self, run: "GraphRun", node_id: str, name: str) -> torch.Tensor | None:
        """The node's value for tensor ``name`` (None = a zero task vector)."""
        raise EngineInputError(f"node '{node_id}' ({self.label}) has no tensor output")

    def subtitle(self, node: "Node") -> str:
        """One line under the node's title in the graph editor."""
        return self.help

    def run_sinks(self, run: "GraphRun", node_ids: list[str], options: "RunOptions") -> None:
        """Run these sink nodes of the graph, recording what they produced in ``run.result``."""
        raise EngineInputError(f"{self.label} nodes are not outputs of a run")

    def tensor_table(self, tables: "TensorTables", node_id: str) -> "TensorTable":
        """For ``renames`` kinds: the tensors the node outputs, planned from its inputs' tables."""
        raise EngineInputError(f"{self.label} nodes follow their inputs' tensor names")

    def map_relative_paths(self, params: dict[str, Any], fn: Callable[[str], str]) -> None:
        """Replace, in place, every relative file path ``params`` holds by ``fn(path)`` (how a recipe is
        re-anchored when it is saved elsewhere or read into a project)."""
        if self.file_param in params:
            params[self.file_param] = _mapped(params[self.file_param], fn)


def _mapped(value: Any, fn: Callable[[str], str]) -> Any:
    """``value`` with ``fn`` applied to each relative path it holds (a path, a list or a split → path map)."""
    if isinstance(value, str):
        return fn(value) if value and not Path(value).expanduser().is_absolute() else value
    if isinstance(value, list):
        return [_mapped(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _mapped(v, fn) for k, v in value.items()}
    return value


GENERIC_FILE_STEMS = {"model", "pytorch_model", "adapter_model", "diffusion_pytorch_model"}



class CheckpointKind(NodeKind):
    name, label = "checkpoint", "Checkpoint"
    help = "A model file or folder on disk (a LoRA adapter gives a task vector)."
    output = MODEL
    params = (Param("path", "str", "", "file or folder of the checkpoint"),
              Param("strip_prefix", "str", "", "use only the tensors under this prefix, without it (e.g. 'bert.' "
                    "merges a task-head model onto its backbone; the head is left out)"))
    source = True
    file_param = "path"
    icon, color = "checkpoint", "#4c8bf5"

    def problems(self, check: NodeCheck) -> list[str]:
        return []  # the file is checked when it is opened (``open_checkpoints``)

    def id_prefix(self, params: Mapping[str, Any]) -> str:
        """``…/llama-ft/model.safetensors`` → ``llama-ft``; a file with a telling name gives its stem."""
        path = params.get("path")
        if not isinstance(path, str) or not path:
            return self.name
        p = Path(path)
        stem = p.stem if p.suffix in (".safetensors", ".bin", ".pt", ".pth", ".ckpt") else p.name
        return p.parent.name if stem in GENERIC_FILE_STEMS and p.parent.name else stem

    def compute(self, run: "GraphRun", node_id: str, name: str) -> torch.Tensor | None:
        return run.checkpoint_tensor(node_id, name)

    def subtitle(self, node: "Node") -> str:
        """The file name, with its folder when the name alone says nothing (``digits/model.safetensors``)."""
        path = str(node.params.get("path") or "")
        if not path:
            return "no file set"
        p = Path(path)
        return f"{p.parent.name}/{p.name}" if p.stem in GENERIC_FILE_STEMS and p.parent.name else p.name


class TaskVectorKind(NodeKind):
    name, label, help = "task_vector", "Task vector", "θt − θ0: what fine-tuning changed."
    inputs = (Port("model", (MODEL,), label="θt"), Port("base", (MODEL,), label="θ0"))
    output = DELTA
    icon, color = "task-vector", "#f29d38"

    def compute(self, run: "GraphRun", node_id: str, name: str) -> torch.Tensor | None:
        return run.value(run.input(node_id, "model"), name) - run.value(run.input(node_id, "base"), name)


class MergeKind(NodeKind):
    name, label, help = "merge", "Merge", "Any merge method of the registry."
    inputs = (Port("base", (MODEL,), optional=True, label="base θ0"),
              Port("models", (MODEL, DELTA), multiple=True, label="models"))
    output = MODEL
    params = (Param("method", "str", "task_arithmetic", "merge method (see `weightsmith methods`)"),)
    method_param = "method"
    icon, color = "merge", "#9b6cf0"

    def problems(self, check: NodeCheck) -> list[str]:
        node = check.node
        method = node.params.get("method", "")
        if not isinstance(method, str):
            return [f"'method' must be a method name, got {type(method).__name__}"]
        try:
            spec = get_method(method)
        except EngineInputError as exc:
            return [str(exc)]
        models, has_base = check.inputs("models"), bool(check.inputs("base"))
        problems: list[str] = []
        if len(models) < spec.min_models:
            problems.append(f"{spec.label} needs at least {spec.min_models} model(s), {len(models)} connected")
        if spec.max_models is not None and len(models) > spec.max_models:
            problems.append(f"{spec.label} takes at most {spec.max_models} model(s), {len(models)} connected")
        if spec.needs_base and not has_base:
            problems.append(f"{spec.label} needs a base model on its 'base' port")
        if not has_base and any(check.kinds.get(m) == DELTA for m in models):
            problems.append("task vectors are connected but no base model to add them to")
        declared = {p.name for p in spec.params}
        problems += [f"{spec.label} has no parameter '{key}'" for key in node.params
                     if key != "method" and key not in declared]
        for p in spec.params:
            if p.name in node.params:
                problems.extend(check_param_value(p, node.params[p.name], models))
        return problems

    def compute(self, run: "GraphRun", node_id: str, name: str) -> torch.Tensor | None:
        return run.merge_output(node_id, name)

    def subtitle(self, node: "Node") -> str:
        spec = self.method(node)
        return spec.label if spec else f"unknown method '{node.params.get('method', '')}'"


class ScaleKind(NodeKind):
    name, label, help = "scale", "Scale", "Multiply a model or task vector by a factor (negative negates)."
    inputs = (Port("input", (MODEL, DELTA)),)
    output = DELTA
    params = (Param("factor", "float", 1.0, "multiplier", min=-10.0, max=10.0),)
    icon, color = "scale", "#2fb4c4"

    def output_kind(self, input_kinds: Mapping[str, list[str | None]]) -> str | None:
        return (input_kinds.get("input") or [DELTA])[0]

    def compute(self, run: "GraphRun", node_id: str, name: str) -> torch.Tensor | None:
        x = run.value(run.input(node_id, "input"), name)
        return None if x is None else x * float(run.recipe.nodes[node_id].params.get("factor", 1.0))

    def subtitle(self, node: "Node") -> str:
        factor = node.params.get("factor", 1.0)
        return f"× {factor:g}" if isinstance(factor, (int, float)) else f"× {factor}"


class AddKind(NodeKind):
    name, label, help = "add", "Add", "Sum of task vectors, optionally onto one model."
    inputs = (Port("inputs", (MODEL, DELTA), multiple=True),)
    output = DELTA
    icon, color = "add", "#2fb4c4"

    def output_kind(self, input_kinds: Mapping[str, list[str | None]]) -> str | None:
        return MODEL if MODEL in input_kinds.get("inputs", []) else DELTA

    def connection_problem(self, port: str, kind: str | None, existing: list[str | None]) -> str | None:
        if kind == MODEL and MODEL in existing:
            return "Add takes at most one model; connect task vectors to add onto it"
        return None

    def problems(self, check: NodeCheck) -> list[str]:
        models = sum(check.kinds.get(s) == MODEL for s in check.inputs("inputs"))
        return ["Add takes at most one model (add task vectors onto it)"] if models > 1 else []

    def compute(self, run: "GraphRun", node_id: str, name: str) -> torch.Tensor | None:
        value = None
        for src in run.recipe.inputs(node_id, "inputs"):
            x = run.value(src, name)
            if x is not None:
                value = x.clone() if value is None else value.add_(x)
        return value


class StackKind(NodeKind):
    """Layers taken in order from layer ranges of the inputs (``engine.graph.stacking``)."""

    name, label = "stack", "Layer stack"
    help = ("A model built from layer ranges of its inputs, in order (frankenmerges; mergekit's slices and "
            "passthrough): slices \"a[0:24], b[20:40]\" take layers 0–23 of a, then 20–39 of b.")
    inputs = (Port("models", (MODEL,), multiple=True, label="models"),)
    output = MODEL
    params = (Param("slices", "str", "", "the slices in order, NODE[START:END] separated by commas (the end "
                    "layer is excluded), e.g. a[0:24], b[20:40]"),
              Param("non_layer_from", "str", "", "input whose embeddings, final norm and LM head to keep "
                    "(default: the embeddings of the first slice's input, the rest of the last's, as mergekit)"))
    renames = True
    icon, color = "merge", "#d4699c"

    def problems(self, check: NodeCheck) -> list[str]:
        return slice_problems(check.node.params, check.inputs("models"))

    def tensor_table(self, tables: "TensorTables", node_id: str) -> "TensorTable":
        return stack_table(tables, node_id)

    def compute(self, run: "GraphRun", node_id: str, name: str) -> torch.Tensor | None:
        src, src_name = run.reference(node_id).sources[name]
        return run.compute(src, src_name)

    def subtitle(self, node: "Node") -> str:
        try:
            slices = parse_slices(node.params.get("slices", ""))
        except EngineInputError:
            return "no valid slices set"
        return f"{len(slices)} slice{'s' if len(slices) != 1 else ''}, {sum(s.end - s.start for s in slices)} layers"


class SaveKind(NodeKind):
    name, label = "save", "Save"
    help = "Write the model as (sharded) safetensors with index, config and model card."
    inputs = (Port("model", (MODEL,)),)
    params = (
        Param("path", "str", "", "output folder"),
        Param("dtype", "choice", "auto", "output dtype (auto keeps each tensor's input dtype)", choices=DTYPE_CHOICES),
        Param("shard_size", "str", "5GB", "largest shard, e.g. 5GB or 500MB"),
        Param("copy_files_from", "str", "", "node whose config/tokenizer files to copy (default: the base)"),
        Param("tokenizer_source", "str", "base", "the output's vocabulary: 'base' (the tokenizer copied with the "
              "files), a checkpoint node id (its tokenizer), or 'union' (every model's tokens); embedding rows "
              "are aligned by token (docs/vocabulary.md)"),
        Param("model_card", "bool", True, "write a README.md model card"),
    )
    sink = True
    file_param = "path"
    writes_folder = True
    icon, color = "save", "#8a8f98"

    def problems(self, check: NodeCheck) -> list[str]:
        params, problems = check.node.params, []
        path = params.get("path")
        if not path:
            problems.append("no output folder set")
        elif path_problem(path):
            problems.append(f"'path' {path_problem(path)}")
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
        if src and (not isinstance(src, str) or src not in check.recipe.nodes):
            problems.append(f"copy_files_from names {shown(src)}, which is not a node")
        tok = params.get("tokenizer_source", "base")
        if tok not in ("base", "union") and not (isinstance(tok, str) and tok in check.recipe.nodes
                                                 and _BY_NAME.get(check.recipe.nodes[tok].type, NodeKind).source):
            problems.append(f"tokenizer_source is {shown(tok)}: write 'base', 'union' or a checkpoint node id")
        return problems

    def subtitle(self, node: "Node") -> str:
        path = str(node.params.get("path") or "")
        return Path(path).name if path else "no output folder set"

    def run_sinks(self, run: "GraphRun", node_ids: list[str], options: "RunOptions") -> None:
        run.save_all(node_ids, force=options.force)


class TaskEntrySupport(Protocol):
    """What the graph asks about an Evaluate node's inline task entries (``engine.evaluation`` provides it)."""

    def problems(self, entries: list[Any], folder: Path) -> list[str]:
        """The problems of ``entries`` (paths relative to ``folder``), read cheaply: no model is loaded."""

    def path_keys(self, entry: Mapping[str, Any]) -> list[str]:
        """The fields of ``entry`` that hold file paths (by its task kind's declared parameters)."""


class EvaluateKind(NodeKind):
    """Scores models on tasks: a suite manifest (``suite``), tasks declared on the node itself
    (``task_entries``: task entries as in a manifest, paths relative to the recipe), or both.
    ``entries_param`` names the parameter holding the inline entries; their checks (kinds, fields, the
    head of each data file) and which of their fields are paths come from the support the evaluation
    engine installs with ``use_entry_support`` (the graph knows no task kinds); without it only their
    shape is checked and their paths stay as written."""

    name, label = "evaluate", "Evaluate"
    help = ("Score models on a task suite or on tasks added here (docs/tasks.md): per-task metrics such as "
            "accuracy, perplexity or exact match, and each against its task's expert.")
    inputs = (Port("models", (MODEL,), multiple=True, label="models"),)
    output = RESULTS
    params = (
        Param("suite", "str", "", "task suite manifest (suite.json; the demo zoos' zoo.json) or a plugin .py"),
        Param("split", "choice", "test", "which split to score", choices=SPLIT_CHOICES),
        Param("batch_size", "int", 1024, "examples per forward pass", min=1, max=65536),
        Param("task_entries", "list", [], "tasks declared on the node: task entries as in a suite manifest "
                                          "(docs/tasks.md), paths relative to the recipe"),
    )
    sink = True
    file_param = "suite"
    entries_param = "task_entries"
    icon, color = "evaluate", "#35b585"
    _entry_support: TaskEntrySupport | None = None

    def use_entry_support(self, support: TaskEntrySupport) -> None:
        """Check inline task entries and find their paths with ``support`` from now on."""
        self._entry_support = support

    def map_relative_paths(self, params: dict[str, Any], fn: Callable[[str], str]) -> None:
        super().map_relative_paths(params, fn)
        entries = params.get(self.entries_param)
        if self._entry_support is None or not isinstance(entries, list):
            return
        for entry in entries:
            if isinstance(entry, dict):
                for key in self._entry_support.path_keys(entry):
                    if key in entry:
                        entry[key] = _mapped(entry[key], fn)

    def problems(self, check: NodeCheck) -> list[str]:
        params = check.node.params
        problems = [m for p in self.params if p.name in params and p.name != self.entries_param
                    for m in check_param_value(p, params[p.name], [])]
        entries = params.get(self.entries_param)
        if entries is None or entries == []:
            return problems
        if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
            return [*problems, f"'{self.entries_param}' must be a list of task entries (objects), got {shown(entries)}"]
        if self._entry_support is not None:
            problems += self._entry_support.problems(entries, check.recipe.resolve_path(".").resolve())
        return problems

    def subtitle(self, node: "Node") -> str:
        suite = str(node.params.get("suite") or "")
        entries = node.params.get(self.entries_param)
        count = len(entries) if isinstance(entries, list) else 0
        added = f"{count} task{'s' if count != 1 else ''}" if count else ""
        if suite:
            return f"{Path(suite).name} + {added}" if added else Path(suite).name
        return added or "no task suite set"

    def run_sinks(self, run: "GraphRun", node_ids: list[str], options: "RunOptions") -> None:
        if run.scorer is None:
            raise EngineInputError("this run has no evaluation service to score Evaluate nodes with")
        for ev_id in node_ids:
            for src in run.recipe.inputs(ev_id, "models"):
                if options.models is None or src in options.models:
                    run.result.evaluations.append(run.scorer.score(run, ev_id, src, options))


CHECKPOINT, TASK_VECTOR, MERGE = CheckpointKind(), TaskVectorKind(), MergeKind()
SCALE, ADD, STACK, SAVE, EVALUATE = ScaleKind(), AddKind(), StackKind(), SaveKind(), EvaluateKind()

NODE_KINDS: tuple[NodeKind, ...] = (CHECKPOINT, TASK_VECTOR, MERGE, SCALE, ADD, STACK, SAVE, EVALUATE)
_BY_NAME = {k.name: k for k in NODE_KINDS}


def node_kind(name: str) -> NodeKind:
    """The kind a node's ``type`` names; an unknown name is an input error."""
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise EngineInputError(f"unknown node type {shown(name)}") from None


def all_node_kinds() -> tuple[NodeKind, ...]:
    """Every node kind, in palette order."""
    return NODE_KINDS


def nodes_of(recipe: "Recipe", *kinds: NodeKind) -> list[str]:
    """The ids of the recipe's nodes of any of ``kinds``, in recipe order."""
    return [nid for nid, n in recipe.nodes.items() if _BY_NAME.get(n.type) in kinds]


def sink_ids(recipe: "Recipe", order: Iterable[str]) -> list[str]:
    """The recipe's output nodes (every sink kind), in ``order``."""
    return [nid for nid in order if _BY_NAME.get(recipe.nodes[nid].type, NodeKind).sink]


def source_paths(recipe: "Recipe") -> dict[str, Any]:
    """Source nodes (checkpoints) whose file is set: node id → the path as written in the recipe."""
    out = {}
    for nid, node in recipe.nodes.items():
        kind = _BY_NAME.get(node.type)
        if kind is not None and kind.source and node.params.get(kind.file_param):
            out[nid] = node.params[kind.file_param]
    return out
