"""Settings persisted with platformdirs, the Settings dialog, and the project file format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.project import Project, absolutize_paths
from app.settings import MAX_RECENT, AppPaths, Settings
from app.settings_dialog import SettingsDialog
from engine.errors import EngineInputError
from engine.graph import Node, Recipe


def test_settings_round_trip_and_recent_files(tmp_path) -> None:
    paths = AppPaths(tmp_path / "config", tmp_path / "data")
    assert Settings.load(paths) == Settings()
    s = Settings(device="cpu", save_dtype="bf16", output_dir="/out", theme="light")
    for i in range(MAX_RECENT + 2):
        s.add_recent(tmp_path / f"p{i}.wsproj")
    s.add_recent(tmp_path / "p5.wsproj")
    s.save(paths)
    loaded = Settings.load(paths)
    assert loaded == s
    assert loaded.recent_files[0].endswith("p5.wsproj") and len(loaded.recent_files) == MAX_RECENT


def test_unreadable_settings_fall_back_to_defaults(tmp_path) -> None:
    paths = AppPaths(tmp_path / "config", tmp_path / "data")
    paths.config.mkdir()
    paths.settings_file.write_text("{not json")
    assert Settings.load(paths) == Settings()
    paths.settings_file.write_text(json.dumps({"theme": "neon", "device": "cpu", "unknown": 1}))
    loaded = Settings.load(paths)
    assert loaded.theme == "dark" and loaded.device == "cpu"


def test_weightsmith_home_puts_every_folder_under_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WEIGHTSMITH_HOME", str(tmp_path))
    paths = AppPaths.default()
    assert paths.settings_file == tmp_path / "config" / "settings.json"
    assert paths.autosave_dir == tmp_path / "data" / "autosave" and paths.zoo_dir == tmp_path / "data" / "zoo"


def test_settings_dialog_edits_a_copy(qtbot) -> None:
    original = Settings()
    dialog = SettingsDialog(original)
    qtbot.addWidget(dialog)
    dialog.device.setCurrentIndex(dialog.device.findData("cpu"))
    dialog.dtype.setCurrentIndex(dialog.dtype.findData("fp16"))
    dialog.theme.setCurrentIndex(dialog.theme.findData("light"))
    dialog.output.setText("/somewhere")
    result = dialog.result_settings()
    assert (result.device, result.save_dtype, result.theme, result.output_dir) == ("cpu", "fp16", "light", "/somewhere")
    assert original == Settings()


def test_project_files_resolve_relative_paths_and_reject_foreign_json(tmp_path) -> None:
    recipe = Recipe("rel")
    recipe.add_node(Node("base", "checkpoint", {"path": "models/base.safetensors"}))
    recipe.add_node(Node("save", "save", {"path": "/abs/out"}))
    data = absolutize_paths(recipe.to_json(), tmp_path)
    assert data["nodes"][0]["params"]["path"] == str(tmp_path / "models" / "base.safetensors")
    assert data["nodes"][1]["params"]["path"] == "/abs/out"

    recipe_file = tmp_path / "r.json"
    recipe.save(recipe_file)
    assert Project.load(recipe_file).recipe == data  # a recipe opens as a new project
    (tmp_path / "x.wsproj").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(EngineInputError, match="not a Weightsmith project"):
        Project.load(tmp_path / "x.wsproj")
    (tmp_path / "y.wsproj").write_text("{")
    with pytest.raises(EngineInputError, match="not valid JSON"):
        Project.load(tmp_path / "y.wsproj")
    future = Project(recipe.to_json()).to_json() | {"version": 99}
    (tmp_path / "z.wsproj").write_text(json.dumps(future))
    with pytest.raises(EngineInputError, match="newer"):
        Project.load(Path(tmp_path / "z.wsproj"))
