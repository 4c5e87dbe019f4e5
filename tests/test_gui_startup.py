"""Start-up: a window first (no torch needed to show it), the studio in its place once the engine is in."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

from PySide6.QtCore import QRect
from PySide6.QtWidgets import QApplication

from app.settings import AppPaths, Settings
from app.startup_window import EngineLoader, StartupWindow, launch

ROOT = Path(__file__).resolve().parents[1]


def test_the_startup_window_needs_neither_torch_nor_the_engine() -> None:
    code = ("import sys; import app.startup_window; "
            "heavy = sorted(m for m in ('torch', 'matplotlib', 'engine.graph', 'app.plotting', 'app.main_window') if m in sys.modules); "
            "assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_launch_shows_a_window_at_once_then_the_studio_in_its_place_with_the_project(qtbot, tmp_path) -> None:
    project = tmp_path / "p.json"
    project.write_text(json.dumps({"format": "weightsmith-recipe", "version": 1, "name": "tiny", "nodes": [],
                                   "edges": []}))
    seen = []
    shell = launch(AppPaths(tmp_path / "config", tmp_path / "data"), Settings(output_dir=str(tmp_path / "out")),
                   str(project), on_studio=seen.append)
    qtbot.addWidget(shell)
    assert shell.isVisible() and shell.windowTitle() == "Weightsmith"  # before any event: shown by launch
    place = shell.geometry()
    qtbot.waitUntil(lambda: bool(seen), timeout=30_000)
    studio = seen[0]
    qtbot.addWidget(studio)
    assert shell.studio is studio and studio.isVisible() and not shell.isVisible()
    assert studio.geometry() == place and studio.recipe.name == "tiny"
    studio.autosave.discard()


def test_the_startup_window_takes_the_studios_saved_place(qtbot, tmp_path) -> None:
    probe = StartupWindow(Settings())
    qtbot.addWidget(probe)
    probe.setGeometry(QRect(40, 50, 610, 420))  # within the offscreen screen
    saved = base64.b64encode(bytes(probe.saveGeometry())).decode("ascii")
    shell = StartupWindow(Settings(window_geometry=saved))
    qtbot.addWidget(shell)
    unsaved = StartupWindow(Settings())
    qtbot.addWidget(unsaved)
    assert shell.size() == probe.size() != unsaved.size()


def test_an_engine_that_does_not_load_is_said_in_the_window(qtbot) -> None:
    shell = StartupWindow(Settings())
    qtbot.addWidget(shell)
    loader = EngineLoader(steps=(("PyTorch", "json"), ("the studio", "weightsmith_no_such_module")), parent=shell)
    loader.stepStarted.connect(shell.show_step)
    loader.failed.connect(shell.show_failure)
    loaded = []
    loader.loaded.connect(lambda: loaded.append(True))
    with qtbot.waitSignal(loader.failed, timeout=10_000):
        loader.start()
    QApplication.processEvents()
    text = shell.status.text()
    assert "did not load" in text and "weightsmith_no_such_module" in text and not loaded
    assert shell.bar.maximum() == 1  # no longer busy
