"""Plugin tasks: a user's Python file that defines a task's model builder, data and metric.

The contract (documented for users in ``docs/plugins.md``; an example is
``resources/plugins/example_task.py``). A plugin file defines, at module level:

- ``build_model(state_dict) -> torch.nn.Module`` (required): the network with the given tensors
  loaded; called with every model to score (the merged tensors, the base, an expert);
- ``data(split) -> (inputs, labels)`` (required): tensors for ``split`` — ``test``, ``val``,
  ``train`` (labels: a tensor with one entry per input) or ``unlabeled`` (labels ``None``); return
  ``None`` for a split the task does not have;
- ``metric(outputs, labels) -> float`` (optional): the score of one batch, averaged over examples
  and reported under ``METRIC_NAME`` (default ``accuracy``) with the direction ``HIGHER_IS_BETTER``
  (default true); without it, classification accuracy of the outputs, which must then be
  [batch, classes] logits with class-index labels (anything else is an error naming the file);
- ``NAME`` (default: the file's stem), ``CLASSES`` (class names), ``EXPERT`` (the task's own
  fine-tuned checkpoint, relative to the plugin file, for normalized scores), ``SPLITS`` (the
  split names it offers; default test, val, train, unlabeled).

A file may instead define ``TASKS``, a list of dicts with the same keys in lower case (``name``,
``build_model``, ``data``, ``metric``, ``metric_name``, ``higher_is_better``, ``classes``, ``expert``,
``splits``), for several tasks. A suite manifest names a plugin file with a task entry of kind
``plugin`` (``{"kind": "plugin", "file": "tasks.py"}``, optionally ``"task"``: one of its tasks).

Running a plugin executes its code in this process, so ``load_plugin`` first asks
``engine.evaluation.trust``: the app runs only files the user trusted (by content hash); the command
line runs the file it was asked to and says so. Every failure — a
missing function, an exception inside one, a wrong return value — raises ``EngineInputError``
naming the file and the function.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from engine.errors import EngineInputError
from engine.evaluation import trust
from engine.evaluation.metrics import Accumulator, MetricAccumulator, Scores
from engine.evaluation.task_kinds import TaskEntry, TaskKind, TaskParam, register_task_kind
from engine.evaluation.tasks import SPLITS, Split


class PluginTask:
    """One task defined by a plugin file (implements the ``Task`` protocol)."""

    def __init__(self, path: Path, spec: Mapping[str, Any]):
        self.path = path
        self.name = str(spec.get("name") or path.stem)
        self.classes = tuple(str(c) for c in spec.get("classes") or ())
        expert = spec.get("expert")
        self.expert = (path.parent / expert) if expert else None
        self._build = _required(spec, "build_model", path)
        self._data_fn = _required(spec, "data", path)
        self._metric = spec.get("metric")
        self._metric_name = str(spec.get("metric_name") or "accuracy")
        self._higher_is_better = spec.get("higher_is_better", True)
        if not isinstance(self._higher_is_better, bool):
            raise EngineInputError(f"HIGHER_IS_BETTER of task '{self.name}' must be True or False", path=str(path))
        self._splits = tuple(spec.get("splits") or SPLITS)
        self._data: dict[str, Split] = {}
        self._module: nn.Module | None = None
        st = path.stat()
        self._identity = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def splits(self) -> tuple[str, ...]:
        return self._splits

    def _call(self, function: str, fn: Callable, *args: Any) -> Any:
        try:
            return fn(*args)
        except EngineInputError:
            raise
        except Exception as exc:  # the user's code may raise anything; say where it came from
            raise EngineInputError(f"{function}() of task '{self.name}' raised {type(exc).__name__}: {exc}",
                                   path=str(self.path)) from exc

    def data(self, split: str) -> Split:
        if split not in self._data:
            if split not in self._splits:
                raise EngineInputError(f"task '{self.name}' has no '{split}' split (it has {', '.join(self._splits)})",
                                       path=str(self.path))
            result = self._call("data", self._data_fn, split)
            if result is None:
                raise EngineInputError(f"data('{split}') of task '{self.name}' returned None: it has no such split",
                                       path=str(self.path))
            self._data[split] = self._check_split(split, result)
        return self._data[split]

    def _check_split(self, split: str, result: Any) -> Split:
        if isinstance(result, Split):
            inputs, labels = result.inputs, result.labels
        elif isinstance(result, (tuple, list)) and len(result) == 2:
            inputs, labels = result
        else:
            raise EngineInputError(f"data('{split}') of task '{self.name}' must return (inputs, labels), "
                                   f"got {type(result).__name__}", path=str(self.path))
        if not isinstance(inputs, torch.Tensor) or (labels is not None and not isinstance(labels, torch.Tensor)):
            raise EngineInputError(f"data('{split}') of task '{self.name}' must return tensors", path=str(self.path))
        if labels is not None and len(labels) != len(inputs):
            raise EngineInputError(f"data('{split}') of task '{self.name}' returned {len(inputs)} inputs but "
                                   f"{len(labels)} labels", path=str(self.path))
        if labels is None and split != "unlabeled":
            raise EngineInputError(f"data('{split}') of task '{self.name}' returned no labels", path=str(self.path))
        return Split(inputs, labels)

    def build_model(self, state_dict: Mapping[str, torch.Tensor], device: torch.device | str = "cpu") -> nn.Module:
        module = self._call("build_model", self._build, dict(state_dict))
        if not isinstance(module, nn.Module):
            raise EngineInputError(f"build_model() of task '{self.name}' must return a torch.nn.Module, "
                                   f"got {type(module).__name__}", path=str(self.path))
        return module.to(device).eval()

    def forward(self, params: Mapping[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        """The plugin's network (built once from the first ``params``) as a function of ``params``;
        tensors ``params`` lacks keep the values ``build_model`` gave them."""
        if self._module is None:
            self._module = self.build_model({k: v.detach() for k, v in params.items()}, inputs.device)
        return torch.func.functional_call(self._module.to(inputs.device), dict(params), (inputs,), strict=False)

    def accumulator(self) -> "CheckedAccumulator | MetricAccumulator":
        if self._metric is None:
            return CheckedAccumulator(self)
        return MetricAccumulator(lambda outputs, labels: self._call("metric", self._metric, outputs, labels),
                                 self._metric_name, self._higher_is_better)

    def expected_names(self) -> list[str]:
        """The tensors the expert checkpoint holds (the runner loads them to score the expert)."""
        from engine.checkpoints import open_checkpoint

        with open_checkpoint(self.expert) as ckpt:
            return ckpt.names

    def fingerprint(self) -> str:
        return hashlib.blake2b(f"{self.name}|{self._identity}".encode(), digest_size=12).hexdigest()


class CheckedAccumulator:
    """Classification accuracy for a plugin without ``metric()``, after checking that its outputs are
    [batch, classes] logits and its labels class indices (an error naming the plugin file otherwise)."""

    def __init__(self, task: PluginTask):
        self.task = task
        self.inner = Accumulator()

    def add(self, outputs: Any, labels: torch.Tensor) -> None:
        problem = None
        if not isinstance(outputs, torch.Tensor) or outputs.dim() != 2 or not outputs.is_floating_point():
            shape = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
            problem = f"its model returned {shape}, not [batch, classes] logits"
        elif labels.dim() != 1 or labels.is_floating_point() or len(labels) != len(outputs):
            problem = f"its labels are {labels.dtype} {tuple(labels.shape)}, not one class index per input"
        elif len(labels) and not (0 <= int(labels.min()) and int(labels.max()) < outputs.shape[1]):
            problem = (f"its labels run {int(labels.min())}…{int(labels.max())}, outside the {outputs.shape[1]} "
                       "classes of the outputs")
        if problem:
            raise EngineInputError(f"task '{self.task.name}' defines no metric(), so it is scored as classification, "
                                   f"but {problem}; define metric(outputs, labels) (see docs/plugins.md)",
                                   path=str(self.task.path))
        self.inner.add(outputs, labels)

    def result(self) -> Scores:
        return self.inner.result()


def _required(spec: Mapping[str, Any], key: str, path: Path) -> Callable:
    fn = spec.get(key)
    if not callable(fn):
        raise EngineInputError(f"the plugin defines no {key}() function (see docs/plugins.md)", path=str(path))
    return fn


def load_plugin(path: str | Path) -> list[PluginTask]:
    """Execute the plugin file at ``path`` and return its task(s)."""
    p = Path(path).expanduser().resolve()
    if not p.is_file() or p.suffix != ".py":
        raise EngineInputError("plugin file not found (a .py file is expected)", path=str(p))
    trust.check(p)  # nothing of the file runs unless the user trusts it (engine.evaluation.trust)
    name = "weightsmith_plugin_" + hashlib.blake2b(str(p).encode(), digest_size=6).hexdigest()
    module_spec = importlib.util.spec_from_file_location(name, p)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # a syntax error or any failure at import time of the user's file
        sys.modules.pop(name, None)
        raise EngineInputError(f"the plugin failed to load: {type(exc).__name__}: {exc}", path=str(p)) from exc
    if hasattr(module, "TASKS"):
        specs = module.TASKS
        if not isinstance(specs, (list, tuple)) or not all(isinstance(s, Mapping) for s in specs) or not specs:
            raise EngineInputError("TASKS must be a non-empty list of dicts (see docs/plugins.md)", path=str(p))
    else:
        specs = [{"name": getattr(module, "NAME", None), "build_model": getattr(module, "build_model", None),
                  "data": getattr(module, "data", None), "metric": getattr(module, "metric", None),
                  "metric_name": getattr(module, "METRIC_NAME", None),
                  "higher_is_better": getattr(module, "HIGHER_IS_BETTER", True),
                  "classes": getattr(module, "CLASSES", None), "expert": getattr(module, "EXPERT", None),
                  "splits": getattr(module, "SPLITS", None)}]
    tasks = [PluginTask(p, spec) for spec in specs]
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise EngineInputError(f"the plugin defines two tasks with the same name ({', '.join(names)})", path=str(p))
    return tasks


def _build_plugin(entry: TaskEntry) -> list[PluginTask]:
    tasks = load_plugin(entry.values["file"])
    wanted = entry.values.get("task")
    if wanted is None:
        return tasks
    chosen = [t for t in tasks if t.name == wanted]
    if not chosen:
        raise entry.error(f"the plugin has no task '{wanted}' (it has {', '.join(t.name for t in tasks)})",
                          entry.values["file"])
    return chosen


PLUGIN = register_task_kind(TaskKind(
    "plugin", "Plugin (Python)",
    "Tasks defined by a Python file: model builder, data and metric (runs only when trusted).",
    params=(
        TaskParam("file", "path", None, "the plugin .py file (see docs/plugins.md)", required=True),
        TaskParam("task", "str", None, "only this task of the file (default: all of them)"),
    ),
    build=_build_plugin, data="whatever the plugin's data() returns", model="whatever the plugin's build_model() "
    "takes", metrics=("accuracy", "loss", "entropy"), named=False,
))
