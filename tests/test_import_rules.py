"""The import arrows of the architecture (docs/architecture.md, "Who may import whom"), checked statically.

Every module under ``engine/`` and ``app/`` is parsed with ``ast``, never imported, so the check is
fast and sees every import: at module level, inside functions (lazy imports), under
``TYPE_CHECKING``, relative ones (``from ..checkpoints import x``) and ``importlib.import_module``
calls with a literal name. Each failure names the file, the line and the rule it breaks.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
QT = ("PySide2", "PySide6", "PyQt5", "PyQt6", "shiboken2", "shiboken6", "qtpy")
ABOVE_GRAPH = ("engine.evaluation", "engine.live", "engine.learn", "engine.lora_merge", "engine.analysis", "engine.zoo",
               "engine.cli")
APP_PANELS_HOME = "app"  # every subpackage of app/ is a node of the panel import graph


@dataclass(frozen=True)
class Import:
    """One import statement's target, resolved to an absolute module name."""

    importer: str  # the importing module, e.g. ``engine.methods.ties``
    path: str  # its file, relative to the repository root
    line: int
    target: str  # the imported module, e.g. ``engine.checkpoints``


@dataclass(frozen=True)
class Rule:
    """Modules under any of ``applies_to`` may import nothing under any of ``forbidden``."""

    key: str
    text: str
    applies_to: tuple[str, ...]
    forbidden: tuple[str, ...]


def within(module: str, prefix: str) -> bool:
    """Whether ``module`` is ``prefix`` or lies below it (``engine.graph.nodes`` within ``engine.graph``)."""
    return module == prefix or module.startswith(prefix + ".")


def module_name(path: Path, root: Path) -> str:
    """``engine/graph/__init__.py`` → ``engine.graph``; ``engine/cli.py`` → ``engine.cli``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def scan(root: Path = ROOT, tops: tuple[str, ...] = ("engine", "app")) -> dict[str, tuple[str, str, bool]]:
    """Every module under ``tops``: name → (file relative to ``root``, source, whether it is a package)."""
    out = {}
    for top in tops:
        for path in sorted((root / top).rglob("*.py")):
            out[module_name(path, root)] = (path.relative_to(root).as_posix(), path.read_text(encoding="utf-8"),
                                            path.name == "__init__.py")
    return out


def parse_imports(module: str, path: str, source: str, *, is_package: bool = False,
                  known: frozenset[str] | set[str] = frozenset()) -> list[Import]:
    """The imports of one module's source. ``from pkg import name`` imports ``pkg.name`` when that is a
    module in ``known``, else ``pkg``; relative imports are resolved against ``module``."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.Import):
            found += [Import(module, path, node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.append(Import(module, path, node.lineno, candidate if candidate in known else base))
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and (getattr(node.func, "attr", None) == "import_module" or getattr(node.func, "id", None)
                   in ("import_module", "__import__"))):
            found.append(Import(module, path, node.lineno, node.args[0].value))
    return sorted(set(found), key=lambda i: (i.line, i.target))


def all_imports(modules: dict[str, tuple[str, str, bool]]) -> list[Import]:
    """The imports of every scanned module."""
    known = set(modules)
    return [imp for name, (path, source, is_package) in modules.items()
            for imp in parse_imports(name, path, source, is_package=is_package, known=known)]


def engine_parts(modules) -> tuple[str, ...]:
    """The engine's direct children (``engine.graph``, ``engine.cli``, ``engine.errors``, …)."""
    return tuple(sorted({".".join(m.split(".")[:2]) for m in modules if m.startswith("engine.")}))


def rules(modules) -> list[Rule]:
    """The rules, from the top of the arrows down."""
    runtime_may_import = ("engine.runtime", "engine.errors")
    return [
        Rule("engine-no-qt", "nothing in engine/ knows there is a screen: no Qt", ("engine",), QT),
        Rule("engine-no-app", "engine/ never imports app/ (the GUI is a face of the engine)", ("engine",), ("app",)),
        Rule("engine-no-cli", "the command line is a face of the engine: nothing else in engine/ imports engine.cli",
             tuple(p for p in engine_parts(modules) if p != "engine.cli"), ("engine.cli",)),
        Rule("methods", "methods are pure tensor functions: no checkpoints, no recipe, nothing above the graph",
             ("engine.methods",), ("engine.checkpoints", "engine.graph", *ABOVE_GRAPH)),
        Rule("checkpoints", "checkpoints know no recipe: no graph, methods or anything above the graph",
             ("engine.checkpoints",), ("engine.graph", "engine.methods", *ABOVE_GRAPH)),
        Rule("graph", "the graph sits below evaluation, live tuning, learners, analysis, the zoo and the CLI",
             ("engine.graph",), ABOVE_GRAPH),
        Rule("evaluation", "evaluation knows no particular benchmark: the zoo registers itself as a task source",
             ("engine.evaluation",), ("engine.zoo",)),
        Rule("runtime", "runtime is the bottom layer: it imports only engine.runtime and engine.errors",
             ("engine.runtime",), tuple(p for p in engine_parts(modules) if p not in runtime_may_import)),
    ]


def rule_violations(imports: list[Import], rule: Rule) -> list[str]:
    """``file:line: a imports b: rule`` for every import that breaks ``rule``."""
    return [f"{i.path}:{i.line}: {i.importer} imports {i.target}: {rule.text}" for i in imports
            if any(within(i.importer, a) for a in rule.applies_to)
            and any(within(i.target, f) for f in rule.forbidden)]


def subpackages(modules, home: str) -> set[str]:
    """The subpackages of ``home`` (``app.results``, ``app.inspector``…), with or without ``__init__.py``."""
    depth = home.count(".") + 1
    return {".".join(m.split(".")[:depth + 1]) for m, (_, _, is_package) in modules.items()
            if within(m, home) and m != home and (m.count(".") > depth or is_package)}


def package_of(module: str, packages: set[str]) -> str | None:
    """The package of ``packages`` that ``module`` is or lies in; None when it lies in none."""
    return next((p for p in packages if within(module, p)), None)


def package_cycles(imports: list[Import], packages: set[str]) -> list[str]:
    """One message per cycle in the import graph between ``packages``, naming an import (file and line)
    for each arrow of the cycle."""
    edges: dict[str, dict[str, Import]] = {}
    for i in imports:
        a, b = package_of(i.importer, packages), package_of(i.target, packages)
        if a and b and a != b:
            edges.setdefault(a, {}).setdefault(b, i)
    cycles: list[list[str]] = []

    def walk(start: str, node: str, trail: list[str]) -> None:
        for nxt in sorted(edges.get(node, {})):
            if nxt == start:
                cycles.append(trail)
            elif nxt > start and nxt not in trail:  # each cycle once: from its smallest package
                walk(start, nxt, trail + [nxt])

    for start in sorted(packages):
        walk(start, start, [start])
    messages = []
    for cycle in cycles:
        arrows = [edges[a][b] for a, b in zip(cycle, cycle[1:] + cycle[:1])]
        messages.append(" → ".join(cycle + cycle[:1]) + ": panel packages import each other in a circle ("
                        + "; ".join(f"{i.path}:{i.line} imports {i.target}" for i in arrows) + ")")
    return messages


MODULES = scan()
IMPORTS = all_imports(MODULES)
RULES = rules(MODULES)


@pytest.mark.parametrize("rule", RULES, ids=[r.key for r in RULES])
def test_engine_imports_follow_the_arrows(rule: Rule):
    assert any(within(m, a) for m in MODULES for a in rule.applies_to), f"the rule names no module: {rule.text}"
    problems = rule_violations(IMPORTS, rule)
    assert not problems, "\n".join(problems)


def test_app_subpackages_import_each_other_without_a_cycle():
    packages = subpackages(MODULES, APP_PANELS_HOME)
    assert {"app.results", "app.analysis", "app.graph", "app.inspector", "app.library"} <= packages
    problems = package_cycles(IMPORTS, packages)
    assert not problems, "\n".join(problems)


# ---- the checker itself -------------------------------------------------------------------------
def test_the_checker_resolves_relative_and_lazy_imports():
    source = ("import torch\n"
              "from . import ties\n"
              "def merge():\n"
              "    from ..checkpoints.open import open_checkpoint\n"
              "    import importlib\n"
              "    return importlib.import_module('engine.zoo')\n")
    found = parse_imports("engine.methods.fake", "engine/methods/fake.py", source,
                          known={"engine.methods.ties", "engine.checkpoints.open"})
    assert [(i.line, i.target) for i in found] == [
        (1, "torch"), (2, "engine.methods.ties"), (4, "engine.checkpoints.open"), (5, "importlib"), (6, "engine.zoo")]


def test_the_checker_catches_a_broken_rule_with_file_and_line():
    modules = {"engine.methods.fake": ("engine/methods/fake.py",
                                       "def f():\n    from ..checkpoints import open_checkpoint\n", False),
               "engine.checkpoints": ("engine/checkpoints/__init__.py", "", True),
               "engine.runtime.device": ("engine/runtime/device.py",
                                         "from engine.errors import EngineInputError\nimport PySide6.QtCore\n", False),
               "engine.errors": ("engine/errors.py", "", False)}
    imports = all_imports(modules)
    problems = [p for rule in rules(modules) for p in rule_violations(imports, rule)]
    assert problems == [
        "engine/runtime/device.py:2: engine.runtime.device imports PySide6.QtCore: "
        "nothing in engine/ knows there is a screen: no Qt",
        "engine/methods/fake.py:2: engine.methods.fake imports engine.checkpoints: "
        "methods are pure tensor functions: no checkpoints, no recipe, nothing above the graph",
    ]


def test_the_checker_finds_a_cycle_through_a_lazy_import():
    modules = {"app.results.integration": ("app/results/integration.py", "from app.analysis import Panel\n", False),
               "app.results.canvas": ("app/results/canvas.py", "", False),
               "app.analysis": ("app/analysis/__init__.py", "from app.analysis.plots import Panel\n", True),
               "app.analysis.plots": ("app/analysis/plots.py", "def draw():\n    from ..results import canvas\n",
                                      False),
               "app.library.view": ("app/library/view.py", "from app.results.canvas import x\n", False),
               "app.main_window": ("app/main_window.py", "import app.results.canvas\nimport app.library.view\n", False)}
    packages = subpackages(modules, "app")
    assert packages == {"app.results", "app.analysis", "app.library"}
    assert package_cycles(all_imports(modules), packages) == [
        "app.analysis → app.results → app.analysis: panel packages import each other in a circle "
        "(app/analysis/plots.py:2 imports app.results.canvas; app/results/integration.py:1 imports app.analysis)"]
