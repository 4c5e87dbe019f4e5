"""The window fits small screens: 1280×720 and 1366×768, a collapsible bottom panel, no self-widening."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDockWidget




@pytest.mark.parametrize("size", [(1280, 720), (1366, 768)])
def test_the_window_fits_small_screens(window, qtbot, size):
    hint = window.minimumSizeHint()
    assert hint.width() <= size[0] - 20 and hint.height() <= size[1] - 40  # room for a title bar and a panel
    window.resize(*size)
    qtbot.waitUntil(lambda: (window.width(), window.height()) == size)
    for dock in (window.library_dock, window.inspector_dock, window.results_dock):
        assert dock.geometry().bottom() <= window.height() and dock.height() > 60


def test_the_bottom_panel_collapses_and_comes_back(window, qtbot):
    window.resize(1280, 720)
    bottom = window.bottom_docks()
    assert window.results_dock in bottom and window.tasks_dock in bottom
    graph_height = window.view.height()
    qtbot.keyClick(window, Qt.Key_J, Qt.ControlModifier)
    assert not any(d.isVisible() for d in bottom)
    qtbot.waitUntil(lambda: window.view.height() > graph_height)
    qtbot.keyClick(window, Qt.Key_J, Qt.ControlModifier)
    assert window.results_dock.isVisible()


def test_a_long_panel_text_does_not_widen_the_window(window, qtbot):
    window.resize(1280, 720)
    qtbot.waitUntil(lambda: window.width() == 1280)
    analysis = next(d for d in window.findChildren(QDockWidget) if d.objectName() == "AnalysisDock")
    analysis.raise_()
    window.analysis_panel.status.setText("a very long explanation " * 40)
    qtbot.wait(100)
    assert window.width() == 1280


def test_lambda_is_above_the_fold_at_1280x720(window, qtbot, tiny_models):
    from engine.graph.build import simple_merge_recipe

    recipe = simple_merge_recipe("ties", [tiny_models["e1"], tiny_models["e2"], tiny_models["e3"]],
                                 base=tiny_models["base"])
    path = tiny_models["base"].parent / "ties.json"
    recipe.save(path)
    window.resize(1280, 720)
    assert window.open_project(path)
    window.inspector.show_node("merge")
    qtbot.waitUntil(lambda: "lambda" in window.inspector.fields)
    field = window.inspector.fields["lambda"]
    viewport = window.inspector._scroll.viewport()
    top = field.mapTo(viewport, field.rect().topLeft()).y()
    assert field.isVisible() and 0 <= top and top + field.height() <= viewport.height()


def test_the_library_shows_eight_rows_at_1600x1000(window, qtbot, tmp_path):
    from safetensors.torch import save_file
    import torch

    paths = []
    for i in range(10):
        paths.append(tmp_path / f"m{i}.safetensors")
        save_file({"w": torch.zeros(2)}, str(paths[-1]))
    window.resize(1600, 1000)
    window.library.add_paths(paths)
    table = window.library.findChild(__import__("PySide6.QtWidgets", fromlist=["QTableView"]).QTableView)
    qtbot.waitUntil(lambda: table.model().rowCount() == 10)
    visible = table.viewport().height() // max(1, table.rowHeight(0))
    assert visible >= 8
