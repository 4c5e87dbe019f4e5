"""Opening a shared project never runs its plugin code unasked: a prompt per file content, remembered by hash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from engine.evaluation import trust

PLUGIN = """
from pathlib import Path
Path(__file__).with_name("plugin-ran.txt").write_text("the plugin's code ran")
import torch
def build_model(state_dict):
    return torch.nn.Identity()
def data(split):
    return torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)
"""


def _project(folder: Path, tiny_models) -> Path:
    (folder / "task.py").write_text(PLUGIN)
    nodes = [{"id": "base", "type": "checkpoint", "params": {"path": str(tiny_models["base"])}},
             {"id": "e1", "type": "checkpoint", "params": {"path": str(tiny_models["e1"])}},
             {"id": "merge", "type": "merge", "params": {"method": "task_arithmetic"}},
             {"id": "eval", "type": "evaluate", "params": {"suite": "task.py"}}]
    edges = [{"from": "base", "to": "merge", "port": "base"}, {"from": "e1", "to": "merge", "port": "models"},
             {"from": "merge", "to": "eval", "port": "models"}]
    recipe = {"format": "weightsmith-recipe", "version": 1, "name": "shared", "nodes": nodes, "edges": edges}
    path = folder / "shared.wsproj"
    path.write_text(json.dumps({"format": "weightsmith-project", "version": 1, "recipe": recipe}))
    return path


def _answer(choice: str, seen: list[str]) -> None:
    """Click ``choice`` on the trust prompt once it is shown (and record its text)."""
    def click() -> None:
        box = QApplication.activeModalWidget()
        if box is None or box.objectName() != "PluginTrustPrompt":
            QTimer.singleShot(50, click)
            return
        seen.append(box.text())
        next(b for b in box.buttons() if b.text() == choice).click()
    QTimer.singleShot(50, click)


@pytest.fixture
def shared(tmp_path, tiny_models) -> Path:
    folder = tmp_path / "download"
    folder.mkdir()
    return _project(folder, tiny_models)


def test_dont_run_means_the_plugin_never_runs(qtbot, new_window, shared):
    win = new_window()
    seen: list[str] = []
    _answer("Don't run", seen)
    assert win.open_project(shared)
    assert len(seen) == 1 and str(shared.parent / "task.py") in seen[0] and "SHA-256" in seen[0]
    qtbot.wait(1500)  # live tuning starts about 0.2 s after a project opens
    assert not (shared.parent / "plugin-ran.txt").exists()
    assert not trust.is_trusted(shared.parent / "task.py")


def test_trust_is_remembered_by_content_and_asked_again_after_a_change(qtbot, new_window, monkeypatch, shared):
    win = new_window()
    seen: list[str] = []
    _answer("Trust and run", seen)
    assert win.open_project(shared)
    assert len(seen) == 1 and trust.is_trusted(shared.parent / "task.py")
    qtbot.waitUntil(lambda: (shared.parent / "plugin-ran.txt").exists(), timeout=10000)
    win.close()

    again = new_window()  # a new session: no prompt for the same content
    monkeypatch.setattr(again.plugin_gate, "_ask", lambda *a: pytest.fail("asked again for a trusted file"))
    assert again.open_project(shared)
    monkeypatch.undo()
    again.close()

    (shared.parent / "task.py").write_text(PLUGIN + "\n# edited\n")
    third = new_window()
    seen.clear()
    _answer("Don't run", seen)
    assert third.open_project(shared)
    assert len(seen) == 1  # a changed file is a new content hash: asked again


def test_the_cli_says_it_runs_plugin_code(tmp_path, tiny_models, capsys):
    from engine.cli import main

    folder = tmp_path / "cli"
    folder.mkdir()
    project = json.loads(_project(folder, tiny_models).read_text())
    (folder / "recipe.json").write_text(json.dumps(project["recipe"]))
    main(["evaluate", str(folder / "recipe.json")])
    assert f"running Python code from the plugin task file {folder / 'task.py'}" in capsys.readouterr().err
    assert (folder / "plugin-ran.txt").exists()


def test_plugin_entries_of_an_evaluate_node_count_as_plugin_files(tmp_path):
    from app.plugin_trust import plugin_files

    (tmp_path / "mine.py").write_text("TASKS = []\n", encoding="utf-8")
    recipe = {"nodes": [{"id": "ev", "type": "evaluate", "params": {
        "task_entries": [{"name": "t", "kind": "plugin", "file": "mine.py"}, {"name": "u", "kind": "text-perplexity"}]}}]}
    assert plugin_files(recipe, tmp_path) == [(tmp_path / "mine.py").resolve()]
