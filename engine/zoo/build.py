"""``build_zoo``: the demo model zoo, made locally from a seed with no download.

Steps (one progress bar across all of them, cancellable between optimizer steps):

1. draw every task's train/val/test/unlabeled images (``engine.zoo.datasets``) and the pre-training
   corpus (``symbols``: lower-case Latin/Greek letters and signs, a task none of the experts solve);
2. pre-train the backbone on that corpus → ``base.safetensors``;
3. per task, compute a prototype head from the base's features of the task's train split
   (``heads/TASK.safetensors``, frozen from here on, like CLIP's zero-shot heads), then fine-tune the
   whole backbone on the task → ``experts/TASK.safetensors``;
4. score the base and each expert on val and test, and write ``zoo.json`` (the suite manifest the
   evaluation engine reads) and ``demo.json`` (base + experts → merge → Evaluate).

The zoo is written to a temporary sibling folder and renamed into place at the end, so a cancelled
or failed build leaves any previous zoo untouched. Same seed and size → the same tensors (CPU,
same thread count and torch version).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

import engine
from engine.evaluation.runner import Evaluator
from engine.evaluation.suite import SUITE_FORMAT, load_suite
from engine.runtime import CancelToken, ProgressTracker
from engine.runtime.progress import ProgressCallback
from engine.zoo import datasets
from engine.zoo.model import Backbone, BackboneConfig, Classifier
from engine.zoo.train import Schedule, finetune, fit_head, pretrain


@dataclass(frozen=True)
class ZooSize:
    """How big a zoo to build: network shape, examples per split, training schedules, fonts."""

    name: str
    config: BackboneConfig
    examples: dict[str, int]
    pretrain_examples: int
    pretrain: Schedule
    finetune: Schedule
    fonts: datasets.FontChoice = field(default_factory=datasets.FontChoice)
    head_scale: float = 20.0


SIZES: dict[str, ZooSize] = {
    "default": ZooSize(
        "default", BackboneConfig(side=16, width=128, hidden=256, depth=6),
        {"train": 4000, "val": 500, "test": 1000, "unlabeled": 500},
        pretrain_examples=20000, pretrain=Schedule(1500, 2e-3, weight_decay=0.05), finetune=Schedule(400, 5e-4)),
    "reduced": ZooSize(
        "reduced", BackboneConfig(side=16, width=32, hidden=64, depth=4),
        {"train": 400, "val": 100, "test": 100, "unlabeled": 50},
        pretrain_examples=1500, pretrain=Schedule(60, 3e-3, batch=64, warmup=5),
        finetune=Schedule(80, 3e-3, batch=64, warmup=5), fonts=datasets.FontChoice(per_family=1, computer_modern=False)),
}


def default_zoo_dir() -> Path:
    """Where the zoo lives unless told otherwise: the user data folder's ``zoo``."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("weightsmith")) / "zoo"


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def _backbone_state(backbone: Backbone) -> dict[str, torch.Tensor]:
    return {f"backbone.{k}": v.detach().clone().contiguous() for k, v in backbone.state_dict().items()}


def _save(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)


def demo_recipe(task_names: list[str], method: dict[str, Any]) -> dict[str, Any]:
    """The ready recipe: base + every expert → one merge → an Evaluate node on every task."""
    nodes = [{"id": "base", "type": "checkpoint", "params": {"path": "base.safetensors"}}]
    nodes += [{"id": t, "type": "checkpoint", "params": {"path": f"experts/{t}.safetensors"}} for t in task_names]
    nodes += [{"id": "merge", "type": "merge", "params": method},
              {"id": "evaluate", "type": "evaluate", "params": {"suite": "zoo.json", "split": "test"}}]
    edges = [{"from": "base", "to": "merge", "port": "base"}]
    edges += [{"from": t, "to": "merge", "port": "models"} for t in task_names]
    edges += [{"from": src, "to": "evaluate", "port": "models"} for src in ["merge", "base", *task_names]]
    return {"format": "weightsmith-recipe", "version": 1, "name": "zoo-demo", "nodes": nodes, "edges": edges}


DEMO_METHOD = {"method": "ties", "density": 0.2, "lambda": 0.6}


def build_zoo(directory: str | Path | None = None, *, size: str = "default", seed: int = 0,
              progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> Path:
    """Build the zoo into ``directory`` (default: ``default_zoo_dir()``), replacing what is there.

    Returns the path of the written ``zoo.json``. ``size`` is ``default`` (about 2 minutes on two
    CPU cores) or ``reduced`` (seconds; for tests). Raises ``Cancelled`` when ``cancel`` is set.
    """
    if size not in SIZES:
        raise ValueError(f"unknown zoo size '{size}' (use {', '.join(SIZES)})")
    spec = SIZES[size]
    out = Path(directory).expanduser() if directory is not None else default_zoo_dir()
    cancel = cancel or CancelToken()
    tasks = list(datasets.TASKS.values())
    steps = len(tasks) * (3 + spec.finetune.steps) + spec.pretrain.steps + 2  # data, head, steps, score
    tracker = ProgressTracker(progress, "building zoo", steps)

    def step(message: str = "") -> None:
        cancel.raise_if_cancelled()
        tracker.advance(message=message)

    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is as fast, and the bytes do not depend on the core count
    tmp = out.parent / f".{out.name}.building"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        meta = {"weightsmith_zoo": size, "seed": str(seed), "weightsmith_version": engine.__version__}
        train = {}
        for task in tasks:
            parts = {s: datasets.generate(task, n, s, seed, spec.fonts) for s, n in spec.examples.items()}
            tensors = {}
            for split, (x, y) in parts.items():
                tensors[f"{split}.inputs"] = _to_uint8(x)
                if split != "unlabeled":
                    tensors[f"{split}.labels"] = y
            _save(tmp / "data" / f"{task.name}.safetensors", tensors, meta)
            train[task.name] = (tensors["train.inputs"].float() / 255, tensors["train.labels"])
            step(f"data: {task.name}")
        px, py = datasets.generate(datasets.PRETRAIN, spec.pretrain_examples, "train", seed, spec.fonts)
        px = _to_uint8(px).float() / 255
        step("data: pre-training corpus")

        torch.manual_seed(seed)
        backbone = Backbone(spec.config)
        pretrain(backbone, px, py, len(datasets.SYMBOLS), spec.pretrain, seed, lambda: step("pre-training"))
        base_state = backbone.state_dict()
        _save(tmp / "base.safetensors", _backbone_state(backbone), {**meta, "role": "base"})

        for i, task in enumerate(tasks):
            x, y = train[task.name]
            model = Classifier(spec.config, len(task.classes))
            model.backbone.load_state_dict(base_state)
            fit_head(model, x, y, spec.head_scale)
            _save(tmp / "heads" / f"{task.name}.safetensors",
                  {f"head.{k}": v.detach().clone() for k, v in model.head.state_dict().items()}, {**meta, "task": task.name})
            step(f"head: {task.name}")
            finetune(model, x, y, spec.finetune, seed + 1 + i, lambda t=task.name: step(f"fine-tuning {t}"))
            _save(tmp / "experts" / f"{task.name}.safetensors", _backbone_state(model.backbone),
                  {**meta, "role": "expert", "task": task.name})

        manifest = {
            "format": SUITE_FORMAT, "version": 1, "name": "zoo",
            "description": "Weightsmith's demo zoo: a residual-MLP backbone pre-trained on symbol recognition and "
                           "one expert fine-tuned per task, each task with its own frozen prototype head.",
            "architecture": {"kind": "zoo-mlp", **spec.config.to_json()},
            "base": "base.safetensors",
            "tasks": [{"name": t.name, "classes": list(t.classes), "description": t.description,
                       "head": f"heads/{t.name}.safetensors", "data": f"data/{t.name}.safetensors",
                       "expert": f"experts/{t.name}.safetensors"} for t in tasks],
            "build": {"size": size, "seed": seed, "torch": torch.__version__, "weightsmith": engine.__version__,
                      "examples": spec.examples, "pretrain_corpus": datasets.PRETRAIN.description},
        }
        (tmp / "zoo.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
        manifest["build"]["scores"] = _reference_scores(tmp, step)
        manifest["build"]["seconds"] = round(time.perf_counter() - start, 1)
        (tmp / "zoo.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
        (tmp / "demo.json").write_text(json.dumps(demo_recipe([t.name for t in tasks], DEMO_METHOD), indent=1),
                                       encoding="utf-8")
        step("done")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        torch.set_num_threads(threads)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out / "zoo.json"


def _reference_scores(folder: Path, step) -> dict[str, dict[str, dict[str, float]]]:
    """Accuracy of the base and of each task's expert on its task, on val and test."""
    from engine.evaluation.runner import load_weights

    tasks = load_suite(folder / "zoo.json")
    evaluator = Evaluator(tasks, device="cpu")
    base = load_weights(folder / "base.safetensors", tasks[0].expected_names())
    out: dict[str, dict[str, dict[str, float]]] = {}
    for task in tasks:
        expert = load_weights(task.expert, task.expected_names())
        out[task.name] = {
            role: {split: evaluator.scores(sd, split=split, tasks=[task])[task.name].accuracy for split in ("val", "test")}
            for role, sd in (("base", base), ("expert", expert))}
        step(f"scoring {task.name}")
    return out
