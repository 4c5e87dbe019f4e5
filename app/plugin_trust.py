"""Asking before a project's plugin tasks run: one prompt per untrusted plugin file, remembered by content hash.

The engine refuses to import a plugin whose content the user has not trusted
(``engine.evaluation.trust``); this module is the app's side: it finds the ``.py`` task files a recipe's
Evaluate nodes name and, for each one not trusted yet, asks — naming the file and its SHA-256 — before
anything could load it. "Don't run" is remembered for the session (the tasks of that file stay unscored,
and the live status says why); a changed file has a new hash and is asked about again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtWidgets import QMessageBox, QWidget

from engine.evaluation import trust
from engine.graph.node_kinds import EVALUATE


def plugin_files(recipe_json: dict[str, Any], folder: Path | None) -> list[Path]:
    """The ``.py`` task files the recipe's Evaluate nodes name (as their suite, or as ``plugin`` entries of
    their own tasks), resolved against ``folder``."""
    found = []
    for node in recipe_json.get("nodes", []):
        if node.get("type") != EVALUATE.name:
            continue
        params = node.get("params", {})
        entries = params.get(EVALUATE.entries_param)
        named = [params.get(EVALUATE.file_param)]
        if isinstance(entries, list):
            named += [e.get("file") for e in entries if isinstance(e, dict) and e.get("kind") == "plugin"]
        for text in named:
            if isinstance(text, str) and text.endswith(".py"):
                path = Path(text).expanduser()
                path = path if path.is_absolute() or folder is None else folder / path
                if path.is_file() and path.resolve() not in found:
                    found.append(path.resolve())
    return found


class PluginGate:
    """Asks once per untrusted plugin content; remembers this session's refusals."""

    def __init__(self, parent: QWidget):
        self.parent = parent
        self.declined: set[str] = set()  # content hashes the user chose not to run this session

    def confirm(self, recipe_json: dict[str, Any], folder: Path | None) -> bool:
        """Prompt for each untrusted, not yet declined plugin; True when the user trusted at least one."""
        trusted_any = False
        for path in plugin_files(recipe_json, folder):
            digest = trust.digest(path)
            if digest in self.declined or trust.is_trusted(path):
                continue
            if self._ask(path, digest):
                trust.trust(path)
                trusted_any = True
            else:
                self.declined.add(digest)
        return trusted_any

    def _ask(self, path: Path, digest: str) -> bool:
        box = QMessageBox(QMessageBox.Warning, "Run code from this project?",
                          f"This project scores tasks with a Python plugin:\n\n{path}\n\nSHA-256 {digest}\n\n"
                          "Running it executes its code with your permissions. Run it only if you trust "
                          "where it came from. Your answer is remembered for this exact file content.",
                          QMessageBox.NoButton, self.parent)
        run = box.addButton("Trust and run", QMessageBox.AcceptRole)
        box.addButton("Don't run", QMessageBox.RejectRole)
        box.setObjectName("PluginTrustPrompt")
        box.exec()
        return box.clickedButton() is run
