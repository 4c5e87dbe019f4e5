"""Guiding the user: grouped methods, readable nodes in free space, auto-layout, menus, the demo hint,
"Open output folder" after a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtCore import QObject, QRectF, Qt, QUrl, Slot
from PySide6.QtGui import QAction, QDesktopServices, QFontMetricsF

from app.document import Document
from app.graph import style
from app.graph.items import NodeItem, node_font
from app.graph.palette import PaletteEntry
from app.inspector.panel import InspectorPanel
from app.main_window import MainWindow
from app.analysis.panel import AnalysisPanel
from app.formatting import format_duration
from app.project import Project
from app.results.sweep_dialog import SweepDialog
from app.demos import open_demo
from app.workers import JobState
from engine.graph import Edge, Node, Recipe
from engine.methods import all_methods, get_method
from engine.runtime import Progress
from engine.methods.base import GROUPS



class UrlCatcher(QObject):
    """Receives the URLs QDesktopServices would open (instead of a file manager)."""

    def __init__(self):
        super().__init__()
        self.urls: list[QUrl] = []

    @Slot(QUrl)
    def open(self, url: QUrl) -> None:
        self.urls.append(url)


@pytest.fixture
def opened_urls():
    catcher = UrlCatcher()
    QDesktopServices.setUrlHandler("file", catcher, "open")
    yield catcher.urls
    QDesktopServices.unsetUrlHandler("file")


def ties_recipe(models: dict[str, Path], out: Path) -> Recipe:
    recipe = Recipe("demo")
    for k in ("base", "e1", "e2"):
        recipe.add_node(Node(k, "checkpoint", {"path": str(models[k])}))
    recipe.add_node(Node("merge", "merge", {"method": "ties"}))
    recipe.add_node(Node("save", "save", {"path": str(out)}))
    for e in (Edge("base", "merge", "base"), Edge("e1", "merge", "models"), Edge("e2", "merge", "models"),
              Edge("merge", "save", "model")):
        recipe.add_edge(e)
    return recipe


def test_the_method_list_is_grouped_by_family_with_the_paper_on_hover(qtbot) -> None:
    recipe = Recipe("t")
    recipe.add_node(Node("m", "merge", {"method": "ties"}))
    panel = InspectorPanel(Document(recipe))
    qtbot.addWidget(panel)
    panel.show_node("m")
    combo = panel.method_combo
    headers, group, placed = [], None, {}
    for i in range(combo.count()):
        if combo.itemData(i) is None:
            group = combo.itemText(i)
            headers.append(group)
            assert not combo.model().item(i).isEnabled()  # a header cannot be chosen
        else:
            placed[combo.itemData(i)] = group
            tip = combo.itemData(i, Qt.ToolTipRole)
            spec = next(s for s in all_methods() if s.name == combo.itemData(i))
            assert spec.summary in tip and spec.reference in tip
    order = [g for g, _ in GROUPS]
    assert headers == sorted(headers, key=order.index) and len(headers) >= 5
    assert placed == {s.name: s.group for s in all_methods()}
    assert placed["ties"] == "Sparsify & elect" and placed["slerp"] == "Spherical"
    assert placed["iso_c"] == "Subspace / SVD" and placed["regmean"] == "Needs data"
    assert placed["task_arithmetic"] == "Linear family"


def overlaps(win: MainWindow) -> list[tuple[str, str]]:
    items = [(nid, QRectF(win.scene.node_item(nid).pos(), win.scene.node_item(nid).rect().size()))
             for nid in win.recipe.nodes]
    return [(a, b) for i, (a, ra) in enumerate(items) for b, rb in items[i + 1:] if ra.intersects(rb)]


def test_new_nodes_land_in_free_space_and_auto_layout_is_one_undo_step(window, tiny_models, qtbot) -> None:
    paths = [str(tiny_models[k]) for k in ("base", "e1", "e2", "e3")]
    window.add_checkpoints_to_graph(paths[:2])
    window.add_checkpoints_to_graph(paths[2:])  # the same spot again
    for _ in range(3):
        window.add_node(window_palette_entry("merge"))
    assert len(window.recipe.nodes) == 7 and overlaps(window) == []

    before = window.recipe.to_json()
    count = window.undo_stack.count()
    window.auto_layout_action.trigger()
    assert window.undo_stack.count() == count + 1 and window.undo_stack.undoText() == "Auto-layout"
    assert overlaps(window) == []
    assert window.recipe.to_json() != before
    window.undo_stack.undo()
    assert window.recipe.to_json() == before


def window_palette_entry(node_type: str) -> PaletteEntry:
    return PaletteEntry(node_type, node_type, {"method": "ties"} if node_type == "merge" else {})


def test_node_text_is_readable_at_full_zoom(window, tiny_models) -> None:
    nid = window.scene.add_node_at("merge", (0, 0), {"method": "ties"})
    item: NodeItem = window.scene.node_item(nid)
    title, text = node_font(item, style.TITLE_PT, bold=True), node_font(item, style.TEXT_PT)
    assert title.pointSizeF() >= 10 and text.pointSizeF() >= 10
    assert QFontMetricsF(title).height() <= style.HEADER_H and QFontMetricsF(text).height() <= style.SUBTITLE_H


def test_help_menu_lists_every_shortcut_from_the_actions(window, qtbot) -> None:
    menus = {a.text().replace("&", ""): a.menu() for a in window.menuBar().actions()}
    help_texts = [a.text().replace("&", "") for a in menus["Help"].actions()]
    assert {"Documentation", "Keyboard Shortcuts", "Show Demo Zoo Folder"} <= set(help_texts)
    file_texts = [a.text().replace("&", "") for a in menus["File"].actions()]
    assert "Import mergekit YAML…" in file_texts and "Export mergekit YAML…" in file_texts
    assert "Auto-layout" in [a.text().replace("&", "") for a in menus["Graph"].actions()]
    dialog = window.show_shortcuts()
    qtbot.addWidget(dialog)
    rows = {dialog.table.item(r, 0).text(): dialog.table.item(r, 1).text() for r in range(dialog.table.rowCount())}
    assert rows["Check Graph"] == "F7" and rows["Run"] == "F5" and "Auto-layout" in rows
    with_keys = {a.text().replace("&", "").rstrip("…") for a in window.findChildren(QAction)
                 if not a.shortcut().isEmpty()}
    assert with_keys <= set(rows)


def test_docs_and_zoo_folder_open_in_the_file_manager(window, opened_urls) -> None:
    window.docs_action.trigger()
    assert opened_urls and opened_urls[-1].toLocalFile().endswith("README.md")
    window.zoo_folder_action.trigger()  # not built yet: says where it goes
    assert str(window.paths.zoo_dir) in window.statusBar().currentMessage()
    window.paths.zoo_dir.mkdir(parents=True)
    window.zoo_folder_action.trigger()
    assert opened_urls[-1].toLocalFile() == str(window.paths.zoo_dir)


def test_mergekit_yaml_export_and_import_round_trip(window, tiny_models, tmp_path) -> None:
    window.apply_project(Project(ties_recipe(tiny_models, tmp_path / "out").to_json()), None)
    yml = tmp_path / "config.yml"
    assert window.export_mergekit_yaml(yml)
    assert "ties" in yml.read_text()
    window.apply_project(Project(Recipe("empty").to_json()), None)
    assert window.import_mergekit_yaml(yml)
    merges = [n for n in window.recipe.nodes.values() if n.type == "merge"]
    assert len(merges) == 1 and merges[0].params["method"] == "ties"
    assert sum(n.type == "checkpoint" for n in window.recipe.nodes.values()) == 3


def test_a_finished_run_offers_to_open_the_output_folder(window, tiny_models, tmp_path, qtbot, opened_urls) -> None:
    out = tmp_path / "merged"
    window.apply_project(Project(ties_recipe(tiny_models, out).to_json()), None)
    job = window.run_graph()
    qtbot.waitUntil(lambda: job.state.finished, timeout=60_000)
    assert job.state is JobState.DONE
    notice = window.notice
    assert notice is not None and notice.isVisible() and str(out) in notice.text.text()
    notice.buttons["Open output folder"].click()
    assert opened_urls[-1].toLocalFile() == str(out)


def test_the_demo_opens_with_its_merge_selected_and_a_hint(window, tiny_models, tmp_path) -> None:
    demo = window.paths.zoo_dir / "demo.json"
    demo.parent.mkdir(parents=True)
    demo.write_text(json.dumps(ties_recipe(tiny_models, tmp_path / "out").to_json()))
    assert open_demo(window) is None
    assert window.inspector.node_id == "merge" and window.scene.selected_node_ids() == ["merge"]
    assert window.notice is not None and window.notice.isVisible() and "Inspector" in window.notice.text.text()
    window.notice.close_button.click()
    assert window.notice is None or not window.notice.isVisible()


def test_the_eta_waits_for_enough_progress_and_is_smoothed(window, qtbot) -> None:
    reports = [Progress("building", 1, 1000, elapsed_s=0.05),  # 0.1 % after 50 ms: "ETA 0:50" would be a guess
               Progress("building", 100, 1000, elapsed_s=5.0),
               Progress("building", 200, 1000, elapsed_s=10.0),
               Progress("building", 210, 1000, elapsed_s=20.0),  # a slow stretch: raw ETA 75 s
               Progress("training", 1, 100, elapsed_s=0.1)]  # a new phase starts afresh

    def work(progress, _cancel):
        for p in reports:
            progress(p)
        return None

    texts: list[str] = []
    job = window.jobs.submit("Build the demo zoo", work, kind="zoo")
    row = window.tasks.row_for(job)
    job.progressed.connect(lambda _p: texts.append(row.status.text()))
    qtbot.waitUntil(lambda: job.state.finished, timeout=5_000)
    assert texts[0] == "building · 0%"
    assert texts[1] == "building · 10% · ETA 45 s" and texts[2] == "building · 20% · ETA 40 s"
    slow = reports[3].eta_s
    assert slow > 70 and texts[3] == f"building · 21% · ETA {format_duration(0.3 * slow + 0.7 * 30)}"
    assert texts[4] == "training · 1%"


def test_the_sweep_estimate_promises_only_measured_time(qtbot) -> None:
    spec = get_method("ties")
    unmeasured = SweepDialog(spec, ["e1", "e2"], {"method": "ties"}, first="lambda")
    qtbot.addWidget(unmeasured)
    assert "not measured yet" in unmeasured.estimate.text() and "about" not in unmeasured.estimate.text()
    measured = SweepDialog(spec, ["e1", "e2"], {"method": "ties"}, first="lambda", seconds_per_point={True: 3.5})
    qtbot.addWidget(measured)
    points = measured.first.steps.value()
    assert f"about {format_duration(points * 3.5)}" in measured.estimate.text()


def test_a_new_project_starts_with_an_empty_tasks_list(window, qtbot) -> None:
    job = window.jobs.submit("Merge → old project", lambda _p, _c: None)
    qtbot.waitUntil(lambda: job.state is JobState.DONE, timeout=5_000)
    assert window.tasks.row_for(job) is not None
    window.new_project()
    assert window.tasks.rows == [] and window.tasks.empty.isVisibleTo(window.tasks)


@pytest.mark.parametrize("method, says", [("task_arithmetic", "does not trim"), ("ties", "TIES-Merging density 0.2")])
def test_the_analysis_header_names_the_nodes_own_method(qtbot, tiny_models, tmp_path, method, says) -> None:
    recipe = ties_recipe(tiny_models, tmp_path / "out")
    recipe.nodes["merge"].params["method"] = method
    panel = AnalysisPanel(Document(recipe))
    qtbot.addWidget(panel)
    panel.set_target("merge", params_per_model=1000)
    qtbot.waitUntil(lambda: panel.report is not None, timeout=30_000)
    assert says in panel.status.text()
    if method != "ties":
        assert "TIES density" not in panel.status.text()


def test_files_skipped_among_others_are_named_with_the_reason(window, tiny_models, tmp_path, qtbot) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    window.library.add_paths([tiny_models["base"], notes, tiny_models["e1"]])
    qtbot.waitUntil(lambda: window.error_box is not None and window.error_box.isVisible(), timeout=10_000)
    qtbot.waitUntil(lambda: len(window.library.model.ready()) == 2, timeout=10_000)
    assert window.error_box.windowTitle() == "Skipped 1 of 3 files" or "Skipped 1 of 3 files" in window.error_box.text()
    assert "notes.txt" in window.error_box.text() and "unknown checkpoint format" in window.error_box.text()


def test_the_image_demo_offers_the_language_model_demo(window, tiny_models, tmp_path, qtbot) -> None:
    """The first-start hint has a button that opens the LM domains demo (here already built, reduced); the
    File ▸ Open Demo menu holds both demos; the LM demo's hint points at perplexity and generation."""
    import shutil

    from zoo_helpers import reduced_lm_zoo

    demo = window.paths.zoo_dir / "demo.json"
    demo.parent.mkdir(parents=True)
    demo.write_text(json.dumps(ties_recipe(tiny_models, tmp_path / "out").to_json()))
    assert open_demo(window) is None
    from PySide6.QtWidgets import QMenu

    [menu] = [m for m in window.menuBar().findChildren(QMenu) if m.title() == "Open &Demo"]
    assert [a.text() for a in menu.actions()] == ["&Image Classification Demo", "&Language-Model Demo (LM Domains)"]
    shutil.copytree(reduced_lm_zoo(), window.paths.lm_zoo_dir)
    window.notice.buttons["Language-model demo"].click()
    assert window.recipe.name == json.loads((window.paths.lm_zoo_dir / "demo.json").read_text())["name"]
    assert {n.type for n in window.recipe.nodes.values()} >= {"checkpoint", "merge", "evaluate"}
    assert window.scene.selected_node_ids() == [next(n for n, v in window.recipe.nodes.items() if v.type == "merge")]
    text = window.notice.text.text()
    assert "perplexity" in text and "Generation" in text and "Language-model demo" not in window.notice.buttons
