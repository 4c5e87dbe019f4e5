"""Project files (``*.wsproj``) and crash recovery.

A project is one JSON document: the recipe, the layout (graph zoom and centre, dock arrangement), the
library (checkpoint paths and the chosen base), the results history (filled by the results panel) and
the generation preview's prompts and settings (``generation``, see ``app.generation_panel``).
Relative paths in a recipe are made absolute against the file's folder when it is read, so a project
stays valid wherever it is saved next.

``Autosave`` writes the open project every few seconds while it changes to the data folder, guarded
by a lock file; at start, an autosave whose lock is no longer held by a live process is left over
from a crash and is offered for recovery.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QLockFile

from engine.errors import EngineInputError
from engine.evaluation import service as _installs_task_entry_paths  # noqa: F401 (absolutize_paths needs them)
from engine.graph.recipe import Recipe
from engine.jsonfiles import expect, read_json, write_json

FORMAT = "weightsmith-project"
VERSION = 1
SUFFIX = ".wsproj"
log = logging.getLogger(__name__)


def absolutize_paths(recipe_json: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A copy of ``recipe_json`` whose relative file paths (checkpoint and save ``path``, Evaluate
    ``suite`` and the paths in its task entries) are absolute against ``folder``."""
    return Recipe.from_json(recipe_json, folder).absolute_json()


def check_layout(layout: Any) -> dict[str, Any]:
    """The ``layout`` object, its known fields type-checked (dock state as base64 text, graph zoom and centre)."""
    expect(layout, dict, "'layout'")
    if layout.get("docks") is not None:
        try:
            base64.b64decode(expect(layout["docks"], str, "'layout.docks'"), validate=True)
        except binascii.Error as exc:
            raise EngineInputError("'layout.docks' is not base64 text") from exc
    graph = layout.get("graph")
    if graph is not None:
        expect(graph, dict, "'layout.graph'")
        zoom = expect(graph.get("zoom", 1.0), float, "'layout.graph.zoom'")
        if not math.isfinite(zoom) or zoom <= 0:
            raise EngineInputError("'layout.graph.zoom' must be a positive number")
        centre = expect(graph.get("centre", [0, 0]), list, "'layout.graph.centre'")
        if len(centre) != 2:
            raise EngineInputError("'layout.graph.centre' must hold two numbers")
        for c in centre:
            if not math.isfinite(expect(c, float, "'layout.graph.centre'")):
                raise EngineInputError("'layout.graph.centre' must hold finite numbers")
    return dict(layout)


@dataclass
class Project:
    """Everything a ``.wsproj`` holds."""

    recipe: dict[str, Any]
    layout: dict[str, Any] = field(default_factory=dict)
    library: dict[str, Any] = field(default_factory=dict)
    results: list[dict[str, Any]] = field(default_factory=list)
    generation: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "recipe": self.recipe, "layout": self.layout,
                "library": self.library, "results": self.results, "generation": self.generation}

    @classmethod
    def from_json(cls, data: Any, folder: Path) -> "Project":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise EngineInputError(f"not a Weightsmith project (expected \"format\": \"{FORMAT}\")")
        version = data.get("version")
        if not isinstance(version, int) or version > VERSION:
            raise EngineInputError(f"project version {version!r} is newer than this Weightsmith understands "
                                   f"({VERSION})")
        recipe = expect(data.get("recipe") or {}, dict, "'recipe'")
        Recipe.from_json(recipe)  # raises a readable error for a malformed recipe
        recipe = absolutize_paths(recipe, folder)
        library = dict(expect(data.get("library") or {}, dict, "'library'"))
        paths = expect(library.get("paths", []), list, "'library.paths'")
        library["paths"] = [str((folder / expect(p, str, "each of 'library.paths'")).resolve()) for p in paths]
        if expect(library.get("base"), (str, type(None)), "'library.base'"):
            library["base"] = str((folder / library["base"]).resolve())
        results = expect(data.get("results") or [], list, "'results'")
        for entry in results:
            expect(entry, dict, "each entry of 'results'")
        generation = dict(expect(data.get("generation") or {}, dict, "'generation'"))
        return cls(recipe, check_layout(data.get("layout") or {}), library, list(results), generation)

    @classmethod
    def load(cls, path: str | Path) -> "Project":
        """Read a ``.wsproj`` project, or a plain recipe ``.json`` (as a new project)."""
        path = Path(path)
        data = read_json(path, "the file")
        folder = path.resolve().parent
        try:
            if isinstance(data, dict) and data.get("format") == "weightsmith-recipe":
                return cls(absolutize_paths(Recipe.from_json(data).to_json(), folder))
            return cls.from_json(data, folder)
        except EngineInputError as exc:
            raise EngineInputError(str(exc), path=str(path)) from exc

    def save(self, path: str | Path) -> None:
        """Write atomically (a temporary file renamed over the target)."""
        path = Path(path)
        write_json(path, self.to_json())


@dataclass
class Recovery:
    """An autosave left by a session that did not close properly."""

    file: Path
    saved_at: float
    origin: str | None
    project: Project

    def describe(self) -> str:
        name = Path(self.origin).name if self.origin else "an unsaved project"
        return f"{name}, autosaved {time.strftime('%H:%M on %d %b', time.localtime(self.saved_at))}"


class Autosave:
    """This session's autosave file in ``folder``, held by a lock file while the session runs."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.file = folder / f"autosave-{os.getpid()}{SUFFIX}"
        self._lock = QLockFile(str(self.file.with_suffix(".lock")))
        self._lock.tryLock(0)
        self.set_aside: list[str] = []  # unreadable autosaves renamed *.bad by ``recoveries``, in words

    def write(self, project: Project, origin: Path | None) -> None:
        data = project.to_json()
        data["autosave"] = {"origin": str(origin) if origin else None, "saved_at": time.time()}
        write_json(self.file, data, indent=None)

    def discard(self) -> None:
        """Remove this session's autosave (a clean exit) and release the lock."""
        self.file.unlink(missing_ok=True)
        self._lock.unlock()

    def recoveries(self) -> list[Recovery]:
        """Autosaves of other sessions that are gone (their lock is free), newest first."""
        found = []
        for f in self.folder.glob(f"autosave-*{SUFFIX}"):
            if f == self.file:
                continue
            lock = QLockFile(str(f.with_suffix(".lock")))
            lock.setStaleLockTime(0)  # a lock is stale only when its process is gone, never by age
            if not lock.tryLock(0):
                continue  # another running Weightsmith owns it
            lock.unlock()
            try:
                data = read_json(f, "autosave")
                meta = expect(expect(data, dict, "the autosave").get("autosave", {}), dict, "'autosave'")
                origin = expect(meta.get("origin"), (str, type(None)), "'autosave.origin'")
                saved_at = expect(meta.get("saved_at", f.stat().st_mtime), float, "'autosave.saved_at'")
                project = Project.from_json(data, Path(origin or f).parent)
            except (OSError, EngineInputError) as exc:
                self.set_aside.append(set_aside(f, exc))
                continue
            found.append(Recovery(f, float(saved_at), origin, project))
        return sorted(found, key=lambda r: -r.saved_at)

    @staticmethod
    def forget(recovery: Recovery) -> None:
        recovery.file.unlink(missing_ok=True)


def set_aside(path: Path, why: Exception) -> str:
    """Rename an unreadable file to ``NAME.bad`` (replacing an older one) so it never blocks a start again;
    returns what was done, for the user."""
    bad = path.with_name(path.name + ".bad")
    try:
        path.replace(bad)
    except OSError:
        path.unlink(missing_ok=True)
    log.warning("set aside unreadable %s as %s (%s)", path, bad.name, why)
    return f"An unreadable autosave was set aside as {bad} ({why})"
