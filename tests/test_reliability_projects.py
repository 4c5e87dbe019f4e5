"""Corrupt or mistyped projects, autosaves and settings: one clear error or a clean fallback, never a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtWidgets import QMessageBox

from app.main_window import MainWindow
from app.project import Autosave, Project
from app.settings import AppPaths, Settings
from engine.errors import EngineInputError

GOOD_RECIPE = {"format": "weightsmith-recipe", "version": 1, "name": "r", "nodes": [], "edges": []}


def _project(**fields) -> dict:
    return {"format": "weightsmith-project", "version": 1, "recipe": GOOD_RECIPE, **fields}


CORRUPT = {
    "empty": "",
    "not_json": "{nope",
    "not_utf8": b"\xff\xfe\x00garbage",
    "top_list": "[1, 2]",
    "top_number": "5",
    "top_string": '"text"',
    "wrong_format": json.dumps({"format": "something-else"}),
    "version_text": json.dumps({"format": "weightsmith-project", "version": "1"}),
    "version_future": json.dumps({"format": "weightsmith-project", "version": 99}),
    "version_bool": json.dumps({"format": "weightsmith-project", "version": True}),
    "recipe_list": json.dumps(_project(recipe=[1])),
    "recipe_nodes_text": json.dumps(_project(recipe={**GOOD_RECIPE, "nodes": "x"})),
    "layout_text": json.dumps(_project(layout="wide")),
    "layout_docks_number": json.dumps(_project(layout={"docks": 5})),
    "layout_docks_not_base64": json.dumps(_project(layout={"docks": "%%%"})),
    "layout_graph_list": json.dumps(_project(layout={"graph": [1]})),
    "layout_zoom_text": json.dumps(_project(layout={"graph": {"zoom": "big"}})),
    "layout_zoom_negative": json.dumps(_project(layout={"graph": {"zoom": -1}})),
    "layout_centre_short": json.dumps(_project(layout={"graph": {"zoom": 1, "centre": [1]}})),
    "library_list": json.dumps(_project(library=[1])),
    "library_paths_text": json.dumps(_project(library={"paths": "a"})),
    "library_paths_numbers": json.dumps(_project(library={"paths": [1, 2]})),
    "library_base_number": json.dumps(_project(library={"base": 3})),
    "results_object": json.dumps(_project(results={"a": 1})),
    "results_entries_numbers": json.dumps(_project(results=[1, 2])),
    "deep_nesting": "[" * 100_000 + "]" * 100_000,
}


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


@pytest.mark.parametrize("case", list(CORRUPT))
def test_corrupt_projects_raise_one_clear_error_naming_the_file(case, tmp_path):
    path = _write(tmp_path / f"{case}.wsproj", CORRUPT[case])
    with pytest.raises(EngineInputError) as info:
        Project.load(path)
    assert str(path) in str(info.value)



@pytest.mark.parametrize("case", ["layout_docks_not_base64", "layout_zoom_text", "results_entries_numbers",
                                  "library_paths_numbers", "top_list", "deep_nesting"])
def test_the_window_shows_an_error_box_and_keeps_its_project(case, window, tmp_path):
    before = window.recipe.to_json()
    path = _write(tmp_path / f"{case}.wsproj", CORRUPT[case])
    assert window.open_project(path) is False
    assert window.error_box is not None and window.error_box.isVisible()
    assert "Cannot open the project" in window.error_box.windowTitle() + window.error_box.text()
    assert window.recipe.to_json() == before


def test_a_corrupt_autosave_is_set_aside_once_and_never_blocks_a_start(qtbot, tmp_path, monkeypatch):
    paths = AppPaths(tmp_path / "config", tmp_path / "data")
    paths.autosave_dir.mkdir(parents=True)
    bad = _write(paths.autosave_dir / "autosave-999999.wsproj", json.dumps(
        {**_project(), "autosave": {"origin": 5, "saved_at": "yesterday"}}))
    worse = _write(paths.autosave_dir / "autosave-999998.wsproj", "[" * 50_000)
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: QMessageBox.Discard))
    for attempt in range(2):
        win = MainWindow(paths, Settings(output_dir=str(tmp_path / "out")))
        qtbot.addWidget(win)
        win.show()
        assert win.offer_recovery() is None
        notes = win.autosave.set_aside
        assert len(notes) == (2 if attempt == 0 else 0)
        win.close()
    assert not bad.exists() and not worse.exists()
    assert {p.name for p in paths.autosave_dir.glob("*.bad")} == {bad.name + ".bad", worse.name + ".bad"}


def test_autosave_recoveries_survive_wrong_types(tmp_path):
    folder = tmp_path / "autosave"
    auto = Autosave(folder)
    _write(folder / "autosave-1.wsproj", json.dumps({**_project(), "autosave": []}))
    assert auto.recoveries() == [] and len(auto.set_aside) == 1
    auto.discard()


@pytest.mark.parametrize("content, kept", [
    ("[]", {}), ("5", {}), ('{"recent_files": 5}', {}), ('{"recent_files": [1, "a"]}', {}),
    ('{"device": "cpu", "theme": 3}', {"device": "cpu"}), ('{"window_state": null, "save_dtype": "bf16"}',
                                                           {"save_dtype": "bf16"}),
    ("\xff{", {}),
])
def test_bad_settings_fall_back_per_field_and_keep_the_file_as_bad(content, kept, tmp_path):
    paths = AppPaths(tmp_path / "config", tmp_path / "data")
    paths.config.mkdir()
    paths.settings_file.write_text(content, encoding="latin-1")
    settings = Settings.load(paths)
    assert settings == Settings(**kept)
    assert (paths.config / "settings.json.bad").read_bytes() == paths.settings_file.read_bytes()


def test_a_sweep_with_missing_values_saves_as_strict_json_and_reloads_them(tmp_path):
    """A sweep grid point with no value (NaN in memory) is null in the project file, which strict JSON
    readers accept, and NaN again once the sweep is read back."""
    import numpy as np

    from engine.live.sweep import Axis, SweepResult

    sweep = SweepResult([Axis("ties.lambda", (0.5, 1.0))], {"method": "ties"}, True,
                        {"perplexity": {"code": np.array([12.5, np.nan])}}, {"accuracy": np.array([np.inf, 0.25])})
    project = Project({"format": "weightsmith-recipe", "version": 1, "name": "p", "nodes": [], "edges": []},
                      results=[{"kind": "sweep", "sweep": sweep.to_json()}])
    path = tmp_path / "p.wsproj"
    project.save(path)

    def refuse(constant):
        raise ValueError(f"bare {constant} in the project file")

    data = json.loads(path.read_text(), parse_constant=refuse)
    assert data["results"][0]["sweep"]["grids"]["perplexity"]["code"] == [12.5, None]
    back = SweepResult.from_json(Project.load(path).results[0]["sweep"])
    assert back.grids["perplexity"]["code"][0] == 12.5 and np.isnan(back.grids["perplexity"]["code"][1])
    assert np.isnan(back.average["accuracy"][0]) and back.average["accuracy"][1] == 0.25
