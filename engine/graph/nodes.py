"""Node types of the merge graph: their typed input ports, output kind and declared parameters.

Kinds flowing along edges: ``model`` (full weights), ``delta`` (a task vector), ``results``
(evaluation output). Other engine packages add node types with ``register_node_type`` (the
evaluation engine adds ``evaluate``).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import EngineInputError
from engine.methods.base import Param

MODEL, DELTA, RESULTS = "model", "delta", "results"


@dataclass(frozen=True)
class Port:
    """An input port: which kinds it accepts, whether it takes several edges, whether it may stay empty."""

    name: str
    kinds: tuple[str, ...]
    multiple: bool = False
    optional: bool = False
    label: str = ""


@dataclass(frozen=True)
class NodeType:
    """A kind of node. ``output`` is the declared output kind (None for pure sinks);
    ``sink`` nodes are the recipe's outputs (Save, Evaluate)."""

    name: str
    label: str
    help: str
    inputs: tuple[Port, ...]
    output: str | None
    params: tuple[Param, ...] = ()
    sink: bool = False

    def port(self, name: str) -> Port | None:
        return next((p for p in self.inputs if p.name == name), None)


_TYPES: dict[str, NodeType] = {}


def register_node_type(node_type: NodeType) -> NodeType:
    """Add a node type (names are unique)."""
    if node_type.name in _TYPES:
        raise ValueError(f"node type '{node_type.name}' registered twice")
    _TYPES[node_type.name] = node_type
    return node_type


def get_node_type(name: str) -> NodeType:
    try:
        return _TYPES[name]
    except KeyError:
        raise EngineInputError(f"unknown node type '{name}'") from None


def node_types() -> list[NodeType]:
    return list(_TYPES.values())


DTYPE_CHOICES = ("auto", "fp32", "fp16", "bf16")

CHECKPOINT = register_node_type(NodeType(
    "checkpoint", "Checkpoint", "A model file or folder on disk (a LoRA adapter gives a task vector).",
    inputs=(), output=MODEL,
    params=(Param("path", "str", "", "file or folder of the checkpoint"),
            Param("strip_prefix", "str", "", "use only the tensors under this prefix, without it (e.g. 'bert.' "
                  "merges a task-head model onto its backbone; the head is left out)")),
))
TASK_VECTOR = register_node_type(NodeType(
    "task_vector", "Task vector", "θt − θ0: what fine-tuning changed.",
    inputs=(Port("model", (MODEL,), label="θt"), Port("base", (MODEL,), label="θ0")), output=DELTA,
))
MERGE = register_node_type(NodeType(
    "merge", "Merge", "Any merge method of the registry.",
    inputs=(Port("base", (MODEL,), optional=True, label="base θ0"),
            Port("models", (MODEL, DELTA), multiple=True, label="models")),
    output=MODEL,
    params=(Param("method", "str", "task_arithmetic", "merge method (see `weightsmith methods`)"),),
))
SCALE = register_node_type(NodeType(
    "scale", "Scale", "Multiply a model or task vector by a factor (negative negates).",
    inputs=(Port("input", (MODEL, DELTA)),), output=DELTA,
    params=(Param("factor", "float", 1.0, "multiplier", min=-10.0, max=10.0),),
))
ADD = register_node_type(NodeType(
    "add", "Add", "Sum of task vectors, optionally onto one model.",
    inputs=(Port("inputs", (MODEL, DELTA), multiple=True),), output=DELTA,
))
SAVE = register_node_type(NodeType(
    "save", "Save", "Write the model as (sharded) safetensors with index, config and model card.",
    inputs=(Port("model", (MODEL,)),), output=None, sink=True,
    params=(
        Param("path", "str", "", "output folder"),
        Param("dtype", "choice", "auto", "output dtype (auto keeps each tensor's input dtype)", choices=DTYPE_CHOICES),
        Param("shard_size", "str", "5GB", "largest shard, e.g. 5GB or 500MB"),
        Param("copy_files_from", "str", "", "node whose config/tokenizer files to copy (default: the base)"),
        Param("model_card", "bool", True, "write a README.md model card"),
    ),
))
