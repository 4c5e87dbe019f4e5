"""Task suites on disk: a manifest declaring tasks, each of a registered kind (``engine.evaluation.task_kinds``).

Manifest (JSON; every path relative to the manifest's folder; docs/tasks.md has every kind)::

    {"format": "weightsmith-suite", "version": 1, "name": "my-suite",
     "base": "base",                                  (optional: the suite's pre-trained model)
     "defaults": {"block_size": 128},                 (optional: values for every task whose kind takes them)
     "tasks": [{"name": "python", "kind": "text-perplexity", "data": "data/python.txt",
                "expert": "experts/python"}, …]}

A task entry holds ``name``, ``kind``, an optional ``description`` and the parameters its kind
declares; unknown fields, missing required ones and wrongly typed values are errors naming the
manifest and the task. An entry without ``kind`` takes the ``architecture.kind`` of the manifest
(older suites such as the demo zoo's ``zoo.json`` declare their kind there). A ``.py`` path instead
of a manifest is a plugin file (``engine.evaluation.plugin``); a folder means its ``suite.json`` or
``zoo.json``. Every problem raises EngineInputError naming the file.

An Evaluate node may also declare task entries itself (``task_entries``: the same schema, paths
relative to the recipe's folder, each with its ``kind``): ``inline_entries`` checks them and
``load_tasks`` gives a node's tasks, its suite's followed by its own.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from engine.errors import EngineInputError
# the built-in task kinds register themselves on import
from engine.evaluation import hf, image_tasks, lm_tasks, plugin  # noqa: F401
from engine.evaluation.task_kinds import TaskEntry, task_kind
from engine.evaluation.tasks import Task

SUITE_FORMAT = "weightsmith-suite"
FOLDER_MANIFESTS = ("suite.json", "zoo.json")
INLINE_ANCHOR = "(task entries)"  # inline entries' stand-in manifest: its folder is what paths are relative to


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Parse and check a suite manifest; a folder means its ``suite.json`` or ``zoo.json``."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = next((p / n for n in FOLDER_MANIFESTS if (p / n).is_file()), p / FOLDER_MANIFESTS[0])
    if not p.is_file():
        raise EngineInputError("suite manifest not found (build the demo zoo with `weightsmith zoo build`, or write "
                               "one: see docs/tasks.md)", path=str(p))
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise EngineInputError(f"cannot read suite manifest {p} ({exc})", path=str(p)) from exc
    if not isinstance(data, dict) or data.get("format") != SUITE_FORMAT or not isinstance(data.get("tasks"), list):
        raise EngineInputError(f"not a Weightsmith suite manifest (expected \"format\": \"{SUITE_FORMAT}\" "
                               "and a list of tasks)", path=str(p))
    if not isinstance(data.get("defaults", {}), dict):
        raise EngineInputError("\"defaults\" must be an object of parameter values", path=str(p))
    data["_path"] = str(p)
    return data


def _entries(manifest: dict[str, Any], shared: dict | None = None) -> list[TaskEntry]:
    """Every task entry, checked and resolved against its kind (nothing is loaded yet)."""
    mpath = Path(manifest["_path"])
    architecture = manifest.get("architecture")
    fallback = architecture.get("kind") if isinstance(architecture, dict) else None
    defaults = manifest.get("defaults", {})
    shared = {} if shared is None else shared
    out = []
    for number, raw in enumerate(manifest["tasks"], start=1):
        if not isinstance(raw, dict):
            raise EngineInputError(f"task entry {number} is not an object", path=str(mpath))
        kind_name = raw.get("kind", fallback)
        if kind_name is None:
            raise EngineInputError(f"task entry {number} ({raw.get('name', 'unnamed')}) names no kind", path=str(mpath))
        try:
            kind = task_kind(kind_name)
        except EngineInputError as exc:
            raise EngineInputError(f"task entry {number}: {exc}", path=str(mpath)) from None
        name = raw.get("name")
        if kind.named and (not isinstance(name, str) or not name):
            raise EngineInputError(f"task entry {number} ({kind.name}) needs a \"name\"", path=str(mpath))
        if not kind.named and name is not None:
            raise EngineInputError(f"task entry {number} ({kind.name}) takes its tasks' names from its source; "
                                   "pick one with the kind's own parameters instead of \"name\"", path=str(mpath))
        values = kind.resolve(raw, defaults, mpath)
        out.append(TaskEntry(name, kind.name, values, mpath, manifest, str(raw.get("description", "")), shared))
    return out


def inline_entries(entries: Sequence[Any], folder: str | Path, shared: dict | None = None) -> list[TaskEntry]:
    """Task entries declared outside a manifest (an Evaluate node's ``task_entries``), checked and resolved
    like a manifest's, paths relative to ``folder``. They take no suite ``base`` or ``defaults`` and each
    names its ``kind``. A problem with an entry raises EngineInputError saying ``task entry N``; one with a
    file it names (read later) names that file."""
    if not isinstance(entries, (list, tuple)):
        raise EngineInputError(f"the task entries must be a list of objects, got {type(entries).__name__}")
    anchor = Path(folder).expanduser().resolve() / INLINE_ANCHOR
    manifest = {"format": SUITE_FORMAT, "version": 1, "name": "inline", "tasks": list(entries), "_path": str(anchor)}
    with inline_messages(folder):
        return _entries(manifest, shared)


@contextmanager
def inline_messages(folder: str | Path) -> Iterator[None]:
    """Around work on inline entries of ``folder``: they have no manifest file, so an error naming their
    stand-in manifest loses that name (one naming a data or model file keeps it)."""
    anchor = Path(folder).expanduser().resolve() / INLINE_ANCHOR
    try:
        yield
    except EngineInputError as exc:
        if exc.path != str(anchor):
            raise
        raise EngineInputError(str(exc).removeprefix(f"{anchor}: ")) from None


def _build(entries: list[TaskEntry], names: list[str] | None) -> tuple[list[Task], list[str]]:
    """The tasks of the entries ``names`` asks for (an entry without a name, such as a plugin's, always
    builds) and every task name known, entries' and built unnamed ones'."""
    known = [e.name for e in entries if e.name]
    tasks: list[Task] = []
    for entry in entries:
        if names and entry.name and entry.name not in names:
            continue
        built = task_kind(entry.kind).build(entry)
        known += [t.name for t in built if not entry.name]
        tasks += built
    return tasks, known


def _select(tasks: list[Task], known: list[str], names: list[str] | None, where: str | None) -> list[Task]:
    """``tasks`` (those in ``names``, in that order); a name used twice or an unknown name is an error."""
    by_name: dict[str, Task] = {}
    for task in tasks:
        if task.name in by_name or known.count(task.name) > 1:  # a plugin's task named like another
            raise EngineInputError(f"two tasks are named '{task.name}'", path=where)
        by_name[task.name] = task
    unknown = [n for n in names or [] if n not in by_name]
    if unknown:
        raise EngineInputError(f"unknown task(s) {', '.join(unknown)}; the suite has {', '.join(known)}", path=where)
    return [by_name[n] for n in names] if names else list(by_name.values())


def _suite_entries(path: Path, names: list[str] | None, shared: dict) -> tuple[list[Task], list[str], list[str], str]:
    """A suite's (plugin file's or manifest's) built tasks, every name it knows, its entries' names and
    the file to name in messages."""
    if path.suffix == ".py":
        tasks = plugin.load_plugin(path)
        return tasks, [t.name for t in tasks], [], str(path)
    manifest = read_manifest(path)
    entries = _entries(manifest, shared)
    named = [e.name for e in entries if e.name]
    twice = sorted({n for n in named if named.count(n) > 1})
    if twice:
        raise EngineInputError(f"two tasks are named {', '.join(map(repr, twice))}", path=manifest["_path"])
    tasks, known = _build(entries, names)
    return tasks, known, named, manifest["_path"]


def load_suite(path: str | Path, names: list[str] | None = None) -> list[Task]:
    """The tasks of a suite manifest (all, or those in ``names``, in that order); data loads lazily.

    A ``.py`` path is a plugin file (``engine.evaluation.plugin``) and gives the tasks it defines.
    Only the entries ``names`` asks for are built (an entry without a name, such as a plugin's, always is).
    """
    tasks, known, _named, where = _suite_entries(Path(path), names, {})
    return _select(tasks, known, names, where)


def load_tasks(suite: str | Path | None, entries: Sequence[Any], folder: str | Path,
               names: list[str] | None = None) -> list[Task]:
    """An Evaluate node's tasks: its ``suite``'s (a manifest or plugin file; None: no suite) followed by
    its inline ``entries`` (paths relative to ``folder``); all, or those in ``names``, in that order.
    Task names must be unique across both; the suite's and the entries' tasks share their networks."""
    shared: dict = {}
    tasks, known, named, where = _suite_entries(Path(suite), names, shared) if suite else ([], [], [], None)
    own = inline_entries(entries, folder, shared)
    own_names = [e.name for e in own if e.name]
    twice = sorted({n for n in own_names if own_names.count(n) > 1 or n in named})
    if twice:
        raise EngineInputError(f"two tasks are named {', '.join(map(repr, twice))} (the node's task entries"
                               f"{' and its suite' if suite else ''})", path=where)
    with inline_messages(folder):
        built, own_known = _build(own, names)
    return _select(tasks + built, known + own_known, names, where)


def suite_base(path: str | Path) -> Path | None:
    """The suite's pre-trained base checkpoint, when the manifest names one."""
    manifest = read_manifest(path)
    base = manifest.get("base")
    return Path(manifest["_path"]).parent / base if base else None
