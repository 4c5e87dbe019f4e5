"""The demo zoo as a task source: the ``zoo-mlp`` task kind, registered with the evaluation engine.

A ``zoo-mlp`` entry (the zoo's ``zoo.json`` declares the kind once, as ``architecture.kind``, with the
backbone's shape beside it) names a task's classes, its frozen head, its data file and its expert::

    {"name": "digits", "classes": ["0", …], "head": "heads/digits.safetensors",
     "data": "data/digits.safetensors", "expert": "experts/digits.safetensors"}

A data file is a safetensors file with ``{split}.inputs`` (uint8 images, 255 = white) and
``{split}.labels`` (int64) for the labelled splits and ``unlabeled.inputs`` alone. Every problem with
a head or data file raises EngineInputError naming the file (and the tensor).
``register()`` adds the kind; importing ``engine.zoo`` calls it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from engine.errors import EngineInputError
from engine.evaluation.data_files import file_identity, read_safetensors
from engine.evaluation.task_kinds import TaskEntry, TaskKind, TaskParam, register_task_kind
from engine.evaluation.tasks import SPLITS, ClassifierTask, Split
from engine.zoo.model import BackboneConfig, Classifier


def load_task_data(path: Path, num_classes: int, side: int) -> dict[str, Split]:
    """Read and check a task's data file: shapes, dtypes, label range, at least one labelled split."""
    tensors = read_safetensors(path, "task data")
    splits: dict[str, Split] = {}
    for split in SPLITS:
        key = f"{split}.inputs"
        if key not in tensors:
            continue
        x = tensors[key]
        if x.dtype != torch.uint8 or x.dim() != 3 or tuple(x.shape[1:]) != (side, side):
            raise EngineInputError(f"expected uint8 images of shape [n, {side}, {side}], got {x.dtype} "
                                   f"{tuple(x.shape)}", path=str(path), tensor=key)
        y = tensors.get(f"{split}.labels")
        if y is not None:
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise EngineInputError(f"expected {x.shape[0]} int64 labels, got {y.dtype} {tuple(y.shape)}",
                                       path=str(path), tensor=f"{split}.labels")
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
                raise EngineInputError(f"labels must lie in 0…{num_classes - 1}, found "
                                       f"{int(y.min())}…{int(y.max())}", path=str(path), tensor=f"{split}.labels")
        elif split != "unlabeled":
            raise EngineInputError(f"split '{split}' has inputs but no labels", path=str(path),
                                   tensor=f"{split}.labels")
        splits[split] = Split(x.float() / 255.0, y)
    if not any(s.labels is not None for s in splits.values()):
        raise EngineInputError("the data file holds no labelled split (val.inputs/val.labels, …)", path=str(path))
    return splits


def backbone_config(entry: TaskEntry) -> BackboneConfig:
    """The backbone shape of the suite's ``architecture`` entry."""
    spec = entry.suite.get("architecture")
    if not isinstance(spec, dict):
        raise entry.error("a zoo-mlp suite needs an \"architecture\" entry with the backbone's shape")
    try:
        return BackboneConfig(**{k: int(v) for k, v in spec.items() if k != "kind"})
    except (TypeError, ValueError) as exc:
        raise EngineInputError(f"bad architecture entry {spec} ({exc})", path=str(entry.manifest)) from exc


def _build(entry: TaskEntry) -> list[ClassifierTask]:
    config = backbone_config(entry)
    v = entry.values
    classes = tuple(str(c) for c in v["classes"])
    head_path, data_path = v["head"], v["data"]
    head = read_safetensors(head_path, "task head")
    if set(head) != {"head.weight", "head.scale"} or tuple(head["head.weight"].shape) != (len(classes), config.width):
        raise EngineInputError(f"a head must hold head.weight [{len(classes)}, {config.width}] and head.scale",
                               path=str(head_path))
    return [ClassifierTask(
        name=entry.name, classes=classes, make_module=lambda n=len(classes): Classifier(config, n),
        fixed={k: t.float() for k, t in head.items()},
        load_data=lambda p=data_path, n=len(classes): load_task_data(p, n, config.side),
        identity=f"{file_identity(head_path)}|{file_identity(data_path)}",
        expert=v["expert"], description=entry.description,
    )]


ZOO_MLP = TaskKind(
    "zoo-mlp", "Demo zoo task",
    "A task of Weightsmith's demo zoo: the residual-MLP backbone with the task's frozen prototype head.",
    params=(
        TaskParam("classes", "str", None, "the class names, in head order", required=True, multiple=True),
        TaskParam("head", "path", None, "the task's head: head.weight [classes, width] and head.scale",
                  required=True),
        TaskParam("data", "path", None, "the task's data: {split}.inputs uint8 images and {split}.labels",
                  required=True),
        TaskParam("expert", "path", None, "the task's own fine-tuned backbone"),
    ),
    build=_build, data="a safetensors file of uint8 images and int64 labels per split",
    model="the zoo's backbone (architecture: zoo-mlp)", metrics=("accuracy", "loss", "entropy"),
)


def register() -> None:
    """Register the ``zoo-mlp`` task kind with the evaluation engine."""
    register_task_kind(ZOO_MLP)
