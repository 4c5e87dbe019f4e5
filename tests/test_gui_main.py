"""The main window driven like a user: drop files, drag to the graph, connect, tune, run, save, recover."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PySide6.QtCore import QLockFile, QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent
from PySide6.QtWidgets import QApplication, QMessageBox, QWidget
from safetensors.torch import load_file, save_file

from app.graph.palette import PaletteEntry
from app.library.model import FormatRole
from app.main_window import MainWindow
from app.project import Project
from app.settings import AppPaths, Settings
from app.job_dialog import JobProgressDialog
from app.demos import open_demo
from app.workers import JobState
from engine.graph import Node, Recipe, materialize
from engine.runtime import Progress
from tests.conftest import square_models

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def window(qtbot, tmp_path: Path, monkeypatch) -> MainWindow:
    """A main window with its own settings and data folders; unsaved changes are discarded on close."""
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: QMessageBox.Discard))
    paths = AppPaths(tmp_path / "config", tmp_path / "data")
    win = MainWindow(paths, Settings(output_dir=str(tmp_path / "out")))
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    return win


def drag_and_drop(widget: QWidget, mime: QMimeData, pos: QPoint | None = None) -> None:
    """Deliver enter, move and drop events to ``widget`` as a drag from elsewhere would."""
    at = pos if pos is not None else widget.rect().center()
    for event in (QDragEnterEvent(at, Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier),
                  QDragMoveEvent(at, Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier),
                  QDropEvent(QPointF(at), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)):
        QApplication.sendEvent(widget, event)


def file_mime(paths: list[Path]) -> QMimeData:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    return mime


def wait_library(qtbot, win: MainWindow, count: int) -> None:
    qtbot.waitUntil(lambda: len(win.library.model.ready()) == count and not win.library.pending, timeout=10_000)


def drag_library_to_graph(win: MainWindow, paths: list[str], at: QPoint) -> None:
    """Select library rows and drag them onto the graph view (the MIME the library's drag carries)."""
    model = win.library.model
    indexes = [model.index(model.row_of(p), 0) for p in paths]
    drag_and_drop(win.view.viewport(), model.mimeData(indexes), at)


def connect_ports(qtbot, win: MainWindow, src: str, dst: str, port: str) -> None:
    """Drag with the mouse from ``src``'s output port to ``dst``'s input ``port``."""
    view = win.view
    start = view.mapFromScene(win.scene.node_item(src).output.scenePos())
    end = view.mapFromScene(win.scene.node_item(dst).inputs[port].scenePos())
    qtbot.mousePress(view.viewport(), Qt.LeftButton, pos=start)
    qtbot.mouseMove(view.viewport(), (start + end) / 2)
    qtbot.mouseMove(view.viewport(), end)
    qtbot.mouseRelease(view.viewport(), Qt.LeftButton, pos=end)


def build_ties_graph(qtbot, win: MainWindow, models: dict[str, Path], out: Path) -> SimpleNamespace:
    """Everything through the UI: library drop, drags to the graph, port drags, inspector edits."""
    drag_and_drop(win.library, file_mime([models["base"], models["e1"], models["e2"]]))
    wait_library(qtbot, win, 3)
    paths = {k: str(models[k].resolve()) for k in ("base", "e1", "e2")}
    drag_library_to_graph(win, [paths["base"]], QPoint(120, 80))
    drag_library_to_graph(win, [paths["e1"], paths["e2"]], QPoint(120, 260))
    assert [n.type for n in win.recipe.nodes.values()] == ["checkpoint"] * 3
    merge = win.add_node(PaletteEntry("Merge", "merge", {"method": "task_arithmetic"}))
    save = win.add_node(PaletteEntry("Save", "save"))
    win.scene.node_item(merge).setPos(420, 150)
    win.scene.node_item(save).setPos(720, 150)
    win.view.zoom_to_fit()
    connect_ports(qtbot, win, "base", merge, "base")
    connect_ports(qtbot, win, "e1", merge, "models")
    connect_ports(qtbot, win, "e2", merge, "models")
    connect_ports(qtbot, win, merge, save, "model")
    assert len(win.recipe.edges) == 4

    win.scene.select_node(merge)
    combo = win.inspector.method_combo
    combo.setCurrentIndex(combo.findData("ties"))
    combo.activated.emit(combo.currentIndex())
    assert win.recipe.nodes[merge].params["method"] == "ties"
    win.inspector.fields["density"].rows[""].scalar.spin.setValue(0.5)
    assert win.recipe.nodes[merge].params["density"] == 0.5

    win.scene.select_node(save)
    path_field = win.inspector.fields["path"]
    path_field.line.setText(str(out))
    path_field.line.editingFinished.emit()
    assert win.recipe.nodes[save].params["path"] == str(out)
    return SimpleNamespace(merge=merge, save=save)


def test_build_a_ties_graph_through_the_ui_and_run_it(qtbot, window, tiny_models, tmp_path) -> None:
    out = tmp_path / "merged"
    ids = build_ties_graph(qtbot, window, tiny_models, out)
    with qtbot.waitSignal(window.runFinished, timeout=30_000):
        window.run_action.trigger()
    assert window.run_job.state is JobState.DONE, window.run_job.error
    saved = load_file(out / "model.safetensors")
    expected = materialize(Recipe.from_json(window.recipe.to_json()), ids.merge, device="cpu")
    assert saved.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.allclose(saved[name].to(tensor.dtype), tensor, atol=1e-6), name
    row = window.tasks.row_for(window.run_job)
    assert row is not None and row.bar.value() == 1000 and "done" in row.status.text()
    assert "no run yet" not in window.status.last_run.label.text()


def test_undo_and_redo_restore_the_recipe_exactly(qtbot, window, tiny_models, tmp_path) -> None:
    empty = window.recipe.to_json()
    build_ties_graph(qtbot, window, tiny_models, tmp_path / "m")
    final = window.recipe.to_json()
    stack = window.undo_stack
    states = []
    for i in range(stack.count() + 1):
        stack.setIndex(i)
        states.append(window.recipe.to_json())
    assert states[0] == empty and states[-1] == final
    for i in reversed(range(stack.count() + 1)):  # undo step by step gives the same states back
        stack.setIndex(i)
        assert window.recipe.to_json() == states[i]
    for i in range(stack.count() + 1):
        stack.setIndex(i)
        assert window.recipe.to_json() == states[i]


def test_a_slider_drag_is_one_undo_step(qtbot, window, tiny_models, tmp_path) -> None:
    ids = build_ties_graph(qtbot, window, tiny_models, tmp_path / "m")
    window.scene.select_node(ids.merge)
    slider = window.inspector.fields["lambda"].scalar.slider
    before, count = window.recipe.to_json(), window.undo_stack.count()
    slider.sliderPressed.emit()
    for pos in (100, 300, 600, 800):
        slider.setValue(pos)
    slider.sliderReleased.emit()
    assert window.undo_stack.count() == count + 1
    assert window.recipe.nodes[ids.merge].params["lambda"] != before["nodes"][3]["params"]["lambda"]
    window.undo_stack.undo()
    assert window.recipe.to_json() == before
    assert window.inspector.fields["lambda"].scalar.spin.value() == 1.0  # the inspector follows undo


@pytest.fixture
def medium_models(tmp_path: Path) -> dict[str, Path]:
    """A base and two experts of 48 MB each: a run long enough to cancel half-way."""
    return square_models(tmp_path, 12)


def test_cancel_from_the_tasks_panel_leaves_no_output(qtbot, window, medium_models, tmp_path) -> None:
    out = tmp_path / "merged"
    build_ties_graph(qtbot, window, medium_models, out)
    before = sorted(tmp_path.iterdir())
    window.run_action.trigger()
    job = window.run_job
    qtbot.waitUntil(lambda: job.progress is not None and job.progress.fraction > 0, timeout=30_000)
    row = window.tasks.row_for(job)
    assert row.bar.value() > 0 and "merging" in row.status.text()  # the ETA waits for 5 % and 2 s of the phase
    assert window.cancel_action.isEnabled() and not window.run_action.isEnabled()
    with qtbot.waitSignal(window.runFinished, timeout=30_000):
        qtbot.mouseClick(row.button, Qt.LeftButton)
    assert job.state is JobState.CANCELLED
    assert not out.exists()
    assert sorted(tmp_path.iterdir()) == before  # no partial or temporary output either
    assert row.status.text() == "cancelled"
    assert window.run_action.isEnabled() and not window.cancel_action.isEnabled()


def test_dropping_a_corrupt_file_shows_an_error_and_changes_nothing(qtbot, window, tiny_models, tmp_path) -> None:
    drag_and_drop(window.library, file_mime([tiny_models["base"]]))
    wait_library(qtbot, window, 1)
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    library_before, recipe_before = window.library.to_json(), window.recipe.to_json()
    drag_and_drop(window.library, file_mime([bad]))
    qtbot.waitUntil(lambda: window.error_box is not None and window.error_box.isVisible(), timeout=10_000)
    assert "broken.safetensors" in window.error_box.text() + window.error_box.windowTitle()
    assert window.library.to_json() == library_before
    assert window.recipe.to_json() == recipe_before
    assert "broken.safetensors" in window.log_panel.text()
    window.error_box.accept()
    drag_and_drop(window.library, file_mime([tiny_models["e1"]]))  # the app keeps working
    wait_library(qtbot, window, 2)


def test_file_open_on_a_checkpoint_adds_it_to_the_library(qtbot, window, tiny_models) -> None:
    assert window.open_project(tiny_models["e1"])
    wait_library(qtbot, window, 1)
    assert window.recipe.nodes == {} and window.library.model.paths() == [str(tiny_models["e1"].resolve())]


def test_library_shows_details_and_fit_to_the_base(qtbot, window, tiny_models, tmp_path) -> None:
    other = tmp_path / "wider.safetensors"
    save_file({"model.embed_tokens.weight": torch.zeros(16, 12)}, other)
    drag_and_drop(window.library, file_mime([tiny_models["base"], tiny_models["e1"], other]))
    wait_library(qtbot, window, 3)
    model = window.library.model
    qtbot.waitUntil(lambda: all(e.compat is not None for e in model.entries if e.path != model.base_path))
    assert model.base_path == str(tiny_models["base"].resolve())
    assert model.entry(str(tiny_models["e1"].resolve())).compat.compatible
    misfit = model.entry(str(other.resolve()))
    assert not misfit.compat.compatible and "shape" in misfit.compat.reason()
    window.library.select_path(misfit.path)
    assert "Does not fit" in window.library.details.fit.text()
    window.library.select_path(str(tiny_models["e1"].resolve()))
    details = window.library.details
    assert details.tensors.rowCount() == 12
    details.filter.setText("layers.1.")
    assert details.proxy.rowCount() == 3 and details.count.text() == "3 of 12 tensors"
    row = [model.data(model.index(1, c)) for c in range(model.columnCount())]
    assert row == ["e1", "3.1 KB", "fp32", "752", "3", "fits"]
    assert model.data(model.index(1, 0), FormatRole) == "safetensors"


def test_save_and_reopen_a_project_gives_the_same_recipe(qtbot, window, tiny_models, tmp_path, monkeypatch) -> None:
    build_ties_graph(qtbot, window, tiny_models, tmp_path / "m")
    target = tmp_path / "work" / "ties.wsproj"
    target.parent.mkdir()
    monkeypatch.setattr("app.main_window.QFileDialog.getSaveFileName", lambda *a, **k: (str(target), ""))
    assert window.save_project_as()
    assert not window.modified and window.windowTitle().startswith("ties.wsproj")
    saved = window.recipe.to_json()

    other = MainWindow(window.paths, Settings())
    qtbot.addWidget(other)
    assert other.open_project(target)
    assert other.recipe.to_json() == saved
    wait_library(qtbot, other, 3)
    assert other.library.model.base_path == window.library.model.base_path
    assert str(target.resolve()) in other.settings.recent_files
    assert other.undo_stack.count() == 0 and not other.modified


def test_a_crashed_session_offers_recovery(qtbot, window, tiny_models, tmp_path) -> None:
    recipe = Recipe("lost-work")
    recipe.add_node(Node("base", "checkpoint", {"path": str(tiny_models["base"])}))
    orphan = window.paths.autosave_dir / "autosave-999999.wsproj"
    data = Project(recipe.to_json()).to_json()
    data["autosave"] = {"origin": None, "saved_at": 1_700_000_000}
    orphan.write_text(json.dumps(data))
    banner = window.offer_recovery()
    assert banner is not None and "unsaved project" in banner.recovery.describe()
    qtbot.mouseClick(banner.recover_button, Qt.LeftButton)
    assert window.recipe.to_json()["name"] == "lost-work" and list(window.recipe.nodes) == ["base"]
    assert window.modified and not orphan.exists()


CRASHING_SESSION = """
import os, sys
from pathlib import Path
from app.project import Autosave, Project
from engine.graph import Node, Recipe
recipe = Recipe("crashed")
recipe.add_node(Node("save", "save", {"path": "/tmp/out"}))
session = Autosave(Path(sys.argv[1]))
session.write(Project(recipe.to_json()), None)
os._exit(1)  # no clean exit: the autosave and its lock file stay behind
"""


def test_recovery_after_a_real_crash_but_not_from_a_live_session(qtbot, window) -> None:
    folder = window.paths.autosave_dir
    crash = subprocess.run([sys.executable, "-c", CRASHING_SESSION, str(folder)], cwd=ROOT, timeout=120,
                           capture_output=True, text=True)
    assert crash.returncode == 1, crash.stderr[-2000:]
    assert len(list(folder.glob("*.lock"))) == 2  # the crashed session's and this window's
    live = folder / "autosave-1.wsproj"  # another running session: its lock is held
    Project(Recipe("live").to_json()).save(live)
    held = QLockFile(str(live.with_suffix(".lock")))
    assert held.tryLock(0)
    assert [r.project.recipe["name"] for r in window.autosave.recoveries()] == ["crashed"]
    held.unlock()


def test_autosave_writes_changes_and_a_clean_exit_removes_it(qtbot, window) -> None:
    window.add_node(PaletteEntry("Scale", "scale"))
    window.autosave_now()
    assert window.autosave.file.is_file()
    assert json.loads(window.autosave.file.read_text())["recipe"]["nodes"][0]["type"] == "scale"
    window.close()
    assert not window.autosave.file.exists()
    assert window.paths.settings_file.is_file()


def test_run_with_problems_explains_instead_of_running(qtbot, window) -> None:
    window.add_node(PaletteEntry("Merge", "merge", {"method": "ties"}))
    assert window.run_graph() is None
    assert window.error_box.isVisible() and "needs a base model" in window.error_box.text()


def test_theme_switch_and_menus(qtbot, window) -> None:
    window.set_theme("light")
    assert QApplication.instance().palette().window().color().lightness() > 200
    window.set_theme("dark")
    assert QApplication.instance().palette().window().color().lightness() < 60
    titles = [a.text().replace("&", "") for a in window.menuBar().actions()]
    assert titles[:4] == ["File", "Edit", "Graph", "View"]
    assert window.run_action.shortcut().toString() == "F5" and window.cancel_action.shortcut().toString() == "Esc"
    assert not window.cancel_action.isEnabled()


def test_screenshot_command_writes_a_png(tmp_path, tiny_models) -> None:
    project = tmp_path / "p.wsproj"
    Project(Recipe("shot").to_json(), library={"paths": [str(tiny_models["base"])]}).save(project)
    out = tmp_path / "shot.png"
    env = {**os.environ, "WEIGHTSMITH_HOME": str(tmp_path / "home"), "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run([sys.executable, "-m", "app", "--screenshot", str(out), "--project", str(project),
                           "--theme", "light"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.stat().st_size > 10_000
    assert not list((tmp_path / "home" / "data" / "autosave").glob("*.wsproj"))


def fake_zoo_build(models: dict[str, Path], gate: threading.Event):
    """Stands in for ``engine.zoo.build_zoo``: reports progress, waits for ``gate``, writes demo.json."""
    def build(out, *, size, progress, cancel):
        progress(Progress("building zoo", 1, 4, elapsed_s=1.0, message="pre-training"))
        while not gate.wait(0.01):
            cancel.raise_if_cancelled()
        out.mkdir(parents=True)
        recipe = Recipe("zoo-demo")
        for name in ("base", "e1"):
            recipe.add_node(Node(name, "checkpoint", {"path": str(models[name])}))
        (out / "demo.json").write_text(json.dumps(recipe.to_json()))
        return out / "zoo.json"
    return build


def test_first_start_builds_the_demo_zoo_then_opens_the_demo(qtbot, window, tiny_models, monkeypatch) -> None:
    gate = threading.Event()
    monkeypatch.setattr("app.demos.build_zoo", fake_zoo_build(tiny_models, gate))
    job = open_demo(window)
    dialog = window.findChild(JobProgressDialog)
    qtbot.waitUntil(lambda: dialog.bar.value() == 250, timeout=5000)
    assert dialog.isVisible() and not dialog.isModal() and "pre-training" in dialog.status.text()
    assert window.tasks.row_for(job) is not None
    gate.set()
    qtbot.waitUntil(lambda: job.state.finished, timeout=10_000)
    assert job.state is JobState.DONE and not dialog.isVisible()
    assert window.recipe.name == "zoo-demo" and list(window.recipe.nodes) == ["base", "e1"]
    assert open_demo(window) is None  # built once: later starts open it directly


def test_cancelling_the_zoo_build_starts_an_empty_project(qtbot, window, tiny_models, monkeypatch) -> None:
    monkeypatch.setattr("app.demos.build_zoo", fake_zoo_build(tiny_models, threading.Event()))
    job = open_demo(window)
    dialog = window.findChild(JobProgressDialog)
    qtbot.waitUntil(lambda: job.state is JobState.RUNNING, timeout=5000)
    qtbot.mouseClick(dialog.cancel_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: job.state.finished, timeout=5000)
    assert job.state is JobState.CANCELLED and window.recipe.nodes == {}
    assert not window.paths.zoo_dir.exists()


def test_hidden_zoo_build_leaves_the_users_own_work_alone(qtbot, window, tiny_models, monkeypatch) -> None:
    gate = threading.Event()
    monkeypatch.setattr("app.demos.build_zoo", fake_zoo_build(tiny_models, gate))
    job = open_demo(window)
    dialog = window.findChild(JobProgressDialog)
    qtbot.mouseClick(dialog.hide_button, Qt.LeftButton)
    assert not dialog.isVisible() and not job.state.finished
    window.add_checkpoints_to_graph([str(tiny_models["e2"])])  # the app is usable meanwhile
    gate.set()
    qtbot.waitUntil(lambda: job.state.finished, timeout=10_000)
    assert job.state is JobState.DONE and list(window.recipe.nodes) == ["e2"]
    assert "demo is ready" in window.statusBar().currentMessage()
