"""Task suites on disk: a manifest (``zoo.json``) naming tasks, their heads, data files and experts.

Manifest (all paths relative to the manifest's folder)::

    {"format": "weightsmith-suite", "version": 1, "name": "zoo",
     "architecture": {"kind": "zoo-mlp", "side": 16, "width": 128, "hidden": 256, "depth": 6},
     "base": "base.safetensors",
     "tasks": [{"name": "digits", "classes": ["0", …], "description": "…",
                "head": "heads/digits.safetensors", "data": "data/digits.safetensors",
                "expert": "experts/digits.safetensors"}, …]}

A data file is a safetensors file with ``{split}.inputs`` (uint8 images, 255 = white) and
``{split}.labels`` (int64) for the labelled splits and ``unlabeled.inputs`` alone. Every problem with
a manifest or data file raises EngineInputError naming the file (and the tensor).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from engine.errors import EngineInputError
from engine.evaluation.tasks import SPLITS, ClassifierTask, Split

SUITE_FORMAT = "weightsmith-suite"


def _file_identity(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def _read_safetensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise EngineInputError(f"{what} file is missing", path=str(path))
    try:  # copies, not views of a memory map: a file rewritten later must not crash the process
        return {k: v.clone() for k, v in load_file(str(path)).items()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise EngineInputError(f"cannot read {what} file {path}: it is not a valid safetensors file ({exc})",
                               path=str(path)) from exc


def load_task_data(path: Path, num_classes: int, side: int) -> dict[str, Split]:
    """Read and check a task's data file: shapes, dtypes, label range, at least one labelled split."""
    tensors = _read_safetensors(path, "task data")
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


def _architecture(spec: dict[str, Any], path: Path):
    """(module factory taking num_classes, description) for the manifest's architecture."""
    kind = spec.get("kind")
    if kind == "zoo-mlp":
        from engine.zoo.model import BackboneConfig, Classifier

        try:
            config = BackboneConfig(**{k: int(v) for k, v in spec.items() if k != "kind"})
        except (TypeError, ValueError) as exc:
            raise EngineInputError(f"bad architecture entry {spec} ({exc})", path=str(path)) from exc
        return (lambda n: Classifier(config, n)), config
    raise EngineInputError(f"unknown architecture kind {kind!r} (this version knows 'zoo-mlp')", path=str(path))


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Parse and check a suite manifest; a folder means its ``zoo.json``."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "zoo.json"
    if not p.is_file():
        raise EngineInputError("suite manifest not found (build the zoo with `weightsmith zoo build`)", path=str(p))
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise EngineInputError(f"cannot read suite manifest {p} ({exc})", path=str(p)) from exc
    if not isinstance(data, dict) or data.get("format") != SUITE_FORMAT or not isinstance(data.get("tasks"), list):
        raise EngineInputError(f"not a Weightsmith suite manifest (expected \"format\": \"{SUITE_FORMAT}\" "
                               "and a list of tasks)", path=str(p))
    data["_path"] = str(p)
    return data


def load_suite(path: str | Path, names: list[str] | None = None) -> list[ClassifierTask]:
    """The tasks of a suite manifest (all, or those in ``names``, in that order); data loads lazily.

    A ``.py`` path is a plugin file (``engine.evaluation.plugin``) and gives the tasks it defines.
    """
    if Path(path).suffix == ".py":
        from engine.evaluation.plugin import load_plugin

        tasks = {t.name: t for t in load_plugin(path)}
        unknown = [n for n in names or [] if n not in tasks]
        if unknown:
            raise EngineInputError(f"unknown task(s) {', '.join(unknown)}; the plugin has {', '.join(tasks)}",
                                   path=str(path))
        return [tasks[n] for n in names] if names else list(tasks.values())
    manifest = read_manifest(path)
    mpath = Path(manifest["_path"])
    folder = mpath.parent
    make, config = _architecture(manifest.get("architecture") or {}, mpath)
    entries = {}
    for entry in manifest["tasks"]:
        if not isinstance(entry, dict) or not {"name", "classes", "head", "data"} <= set(entry):
            raise EngineInputError(f"task entry {entry!r} needs name, classes, head and data", path=str(mpath))
        entries[entry["name"]] = entry
    wanted = names if names else list(entries)
    unknown = [n for n in wanted if n not in entries]
    if unknown:
        raise EngineInputError(f"unknown task(s) {', '.join(unknown)}; the suite has {', '.join(entries)}",
                               path=str(mpath))
    tasks = []
    for name in wanted:
        entry = entries[name]
        classes = tuple(str(c) for c in entry["classes"])
        head_path, data_path = folder / entry["head"], folder / entry["data"]
        head = _read_safetensors(head_path, "task head")
        if set(head) != {"head.weight", "head.scale"} or tuple(head["head.weight"].shape) != (len(classes), config.width):
            raise EngineInputError(f"a head must hold head.weight [{len(classes)}, {config.width}] and head.scale",
                                   path=str(head_path))
        expert = folder / entry["expert"] if entry.get("expert") else None
        tasks.append(ClassifierTask(
            name=name, classes=classes, make_module=lambda n=len(classes): make(n),
            fixed={k: v.float() for k, v in head.items()},
            load_data=lambda p=data_path, n=len(classes): load_task_data(p, n, config.side),
            identity=f"{_file_identity(head_path)}|{_file_identity(data_path) if data_path.exists() else data_path}",
            expert=expert, description=str(entry.get("description", "")),
        ))
    return tasks


def suite_base(path: str | Path) -> Path | None:
    """The suite's pre-trained base checkpoint, when the manifest names one."""
    manifest = read_manifest(path)
    base = manifest.get("base")
    return Path(manifest["_path"]).parent / base if base else None
