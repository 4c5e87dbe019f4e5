"""Task kinds: the registry of task sources a suite manifest declares.

A *task kind* turns one task entry of a suite manifest (``{"name": "python", "kind": "text-perplexity",
"data": "data/python.txt", …}``) into ``Task`` objects. Each kind declares its parameters
(``TaskParam``: a method ``Param`` plus ``required``, ``multiple`` and ``per_split``), the data files it
reads, the model it needs and the metrics it reports, so a GUI can generate a form for an entry and
a manifest is checked, with messages naming the manifest and the task, before anything loads.

Built-in kinds register themselves when their module is imported (``engine.evaluation.suite`` imports
them): ``text-perplexity``, ``multiple-choice``, ``generation`` (``engine.evaluation.lm_tasks``),
``text-classification`` (``engine.evaluation.hf``), ``image-classification``
(``engine.evaluation.image_tasks``) and ``plugin`` (``engine.evaluation.plugin``). Other task sources
register theirs the same way — the demo zoo registers ``zoo-mlp`` when its package is imported — so
this package knows no particular benchmark.

API: ``register_task_kind(kind)``, ``task_kind(name)``, ``task_kinds()``; a kind's ``build(entry)``
receives a ``TaskEntry`` whose ``values`` hold every declared parameter, checked, defaults filled in,
and paths resolved against the manifest's folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from engine.errors import EngineInputError
from engine.methods.base import Param, shown

COMMON_KEYS = ("name", "kind", "description")
SPLIT_NAMES = ("test", "val", "train")


@dataclass(frozen=True)
class TaskParam(Param):
    """A declared parameter of a task kind. Beyond ``Param``: ``required`` (no default; the entry must
    give it), ``multiple`` (a list of values, each checked as ``type``; a single value counts as a
    one-item list) and ``per_split`` (a path, or ``{"test": path, "val": path, "train": path}``)."""

    required: bool = False
    multiple: bool = False
    per_split: bool = False

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "required": self.required, "multiple": self.multiple,
                "per_split": self.per_split}

    def resolve(self, value: Any, folder: Path, where: str) -> Any:
        """The checked value (paths made absolute against ``folder``); EngineInputError naming ``where``."""
        if self.per_split:
            if isinstance(value, Mapping):
                unknown = [k for k in value if k not in SPLIT_NAMES]
                if unknown or not value:
                    raise EngineInputError(f"{where}: '{self.name}' maps split names ({', '.join(SPLIT_NAMES)}) to "
                                           f"files, got {shown(dict(value))}")
                return {k: self._one(v, folder, where) for k, v in value.items()}
            return {"test": self._one(value, folder, where)}
        if self.multiple:
            items = value if isinstance(value, (list, tuple)) else [value]
            return [self._one(v, folder, where) for v in items]
        return self._one(value, folder, where)

    def _one(self, value: Any, folder: Path, where: str) -> Any:
        problem = self.check_scalar(value)
        if problem:
            raise EngineInputError(f"{where}: {problem}")
        if self.type == "path":
            return (folder / Path(value).expanduser()).resolve()
        if self.type == "int":
            return int(value)
        if self.type == "float":
            return float(value)
        return value


@dataclass
class TaskEntry:
    """One task entry of a manifest, resolved: ``values`` holds every declared parameter of its kind.

    ``suite`` is the whole manifest (a kind may read suite-level fields such as ``architecture``);
    ``shared`` is a dict the suite's tasks share (one network per model folder, for instance).
    """

    name: str | None
    kind: str
    values: dict[str, Any]
    manifest: Path
    suite: Mapping[str, Any]
    description: str = ""
    shared: dict[Any, Any] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.manifest.parent

    def where(self) -> str:
        """``task 'NAME' (KIND)`` for messages."""
        return f"task '{self.name}' ({self.kind})" if self.name else f"a {self.kind} task"

    def error(self, message: str, path: Path | str | None = None) -> EngineInputError:
        """An input error about this entry, naming ``path`` (default: the manifest)."""
        return EngineInputError(f"{self.where()}: {message}", path=str(path or self.manifest))


@dataclass(frozen=True)
class TaskKind:
    """A task source a manifest can declare: its parameters, what it reads, needs and reports.

    ``build(entry)`` returns the entry's tasks (one for most kinds; a plugin file may define several).
    ``named``: entries must have a ``name`` (a plugin entry takes its tasks' names from the file).
    """

    name: str
    label: str
    help: str
    params: tuple[TaskParam, ...]
    build: Callable[[TaskEntry], list[Any]]
    data: str = ""
    model: str = ""
    metrics: tuple[str, ...] = ()
    named: bool = True

    def param(self, name: str) -> TaskParam:
        """The declared parameter ``name``."""
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        """The kind's description for a GUI form or ``weightsmith`` help: parameters, data, model, metrics."""
        return {"name": self.name, "label": self.label, "help": self.help, "data": self.data, "model": self.model,
                "metrics": list(self.metrics), "params": [p.to_json() for p in self.params]}

    def resolve(self, entry: Mapping[str, Any], defaults: Mapping[str, Any], manifest: Path) -> dict[str, Any]:
        """Every declared parameter's value for ``entry``: its own, else the manifest's ``defaults`` (only
        for parameters this kind declares), else the declared default; checked and resolved."""
        where = f"task '{entry['name']}' ({self.name})" if entry.get("name") else f"a {self.name} task"
        declared = {p.name for p in self.params}
        unknown = [k for k in entry if k not in declared and k not in COMMON_KEYS]
        if unknown:
            raise EngineInputError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; kind '{self.name}' "
                                   f"takes {', '.join(sorted(declared)) or 'no parameters'}", path=str(manifest))
        values: dict[str, Any] = {}
        for p in self.params:
            value = entry.get(p.name, defaults.get(p.name, p.default))
            if value is None:
                if p.required:
                    raise EngineInputError(f"{where}: '{p.name}' is required ({p.help})", path=str(manifest))
                values[p.name] = None
                continue
            try:
                values[p.name] = p.resolve(value, manifest.parent, where)
            except EngineInputError as exc:
                raise EngineInputError(str(exc), path=str(manifest)) from None
        return values


_KINDS: dict[str, TaskKind] = {}


def register_task_kind(kind: TaskKind) -> TaskKind:
    """Add (or replace, by name) a task kind; returns it."""
    _KINDS[kind.name] = kind
    return kind


def task_kind(name: str) -> TaskKind:
    """The registered kind ``name``; EngineInputError listing the known kinds otherwise."""
    if name not in _KINDS:
        raise EngineInputError(f"unknown task kind {shown(name)} (this installation knows "
                               f"{', '.join(sorted(_KINDS)) or 'none'})")
    return _KINDS[name]


def task_kinds() -> tuple[TaskKind, ...]:
    """Every registered kind, by name."""
    return tuple(_KINDS[k] for k in sorted(_KINDS))
