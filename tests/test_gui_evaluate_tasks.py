"""The Evaluate node's inspector adds tasks from files: a JSONL file dropped on its task list becomes a task
(previewed before any run, its problems shown), the edit undoes and redoes as one step, and the task is
scored through the evaluation service."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent
from PySide6.QtWidgets import QApplication

pytest.importorskip("transformers")

from app.commands import DisconnectCommand  # noqa: E402
from app.inspector.evaluate_tasks import EvaluateTasksEditor  # noqa: E402
from app.project import Project  # noqa: E402
from engine.evaluation import EvaluationService  # noqa: E402
from hf_helpers import causal_lm, write_jsonl  # noqa: E402

CHOICES = [{"question": "the cat sat on the", "choices": ["mat", "sea"], "answer": 0},
           {"question": "blue sky over the", "choices": ["sea", "cat"], "answer": "sea"}]


def drop_files(widget, paths: list[Path]) -> None:
    """Deliver enter, move and drop events carrying ``paths`` to ``widget``, as a drag from a file manager."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    at = widget.rect().center()
    for event in (QDragEnterEvent(at, Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier),
                  QDragMoveEvent(at, Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier),
                  QDropEvent(QPointF(at), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)):
        QApplication.sendEvent(widget, event)


def rows(editor: EvaluateTasksEditor) -> list[list[str]]:
    return [[editor.table.topLevelItem(i).text(c) for c in range(3)] for i in range(editor.table.topLevelItemCount())]


@pytest.fixture
def project(tmp_path) -> Path:
    """A project folder: a tiny Llama checkpoint feeding an Evaluate node with no tasks yet, and data files."""
    folder = tmp_path / "project"  # (the window keeps its own folders in tmp_path)
    causal_lm(folder / "llama")
    data = folder / "data"
    data.mkdir()
    write_jsonl(data / "trivia.jsonl", CHOICES)
    write_jsonl(data / "broken.jsonl", [CHOICES[0], {"question": "x", "choices": ["only one"], "answer": 0}])
    (data / "odd.bin").write_bytes(b"\0")
    return folder


def open_evaluate(window, folder: Path) -> EvaluateTasksEditor:
    recipe = {"format": "weightsmith-recipe", "version": 1, "name": "own tasks",
              "nodes": [{"id": "llama", "type": "checkpoint", "params": {"path": "llama"}},
                        {"id": "evaluate", "type": "evaluate", "params": {"suite": "", "batch_size": 64}}],
              "edges": [{"from": "llama", "to": "evaluate", "port": "models"}]}
    window.apply_project(Project(recipe), folder / "project.wsproj")
    window.document.set_selection(["evaluate"])
    editor = window.inspector.task_editor
    assert isinstance(editor, EvaluateTasksEditor) and editor.isVisible()
    return editor


def test_a_dropped_jsonl_file_becomes_a_previewed_task_that_undoes_and_is_scored(window, project, qtbot):
    editor = open_evaluate(window, project)
    document, node = window.document, window.document.recipe.nodes["evaluate"]
    assert rows(editor) == [] and "llama" in editor.hint.text()

    drop_files(editor, [project / "data" / "trivia.jsonl"])
    assert rows(editor) == [["trivia", "multiple-choice", "trivia.jsonl"]]
    [entry] = node.params["task_entries"]
    assert entry == {"name": "trivia", "kind": "multiple-choice", "data": "data/trivia.jsonl", "model": "llama",
                     "delimiter": " "}
    preview = editor.preview.toPlainText()
    assert "trivia.jsonl · line 1" in preview and "question: the cat sat on the" in preview
    assert "choices: mat | sea" in preview and "answer: sea" in preview and "⚠" not in preview
    assert document.undo_stack.count() == 1 and document.undo_stack.undoText() == "Add task trivia"
    assert window.scene.node_item("evaluate").subtitle == "1 task"

    document.undo_stack.undo()
    assert rows(editor) == [] and node.params == {"suite": "", "batch_size": 64}  # exactly as before
    assert "No tasks of this node's own yet" in editor.preview.toPlainText()
    document.undo_stack.redo()
    assert rows(editor) == [["trivia", "multiple-choice", "trivia.jsonl"]]

    [run] = EvaluationService(device="cpu").evaluate(document.recipe)["runs"]
    assert run["recipe_node"] == "llama"
    score = run["tasks"]["trivia"]
    assert score["n"] == 2 and 0.0 <= score["accuracy"] <= 1.0 and score["primary"] == "accuracy"


def test_adding_files_in_one_step_with_problems_shown_before_any_run(window, project, qtbot):
    editor = open_evaluate(window, project)
    document = window.document
    added = editor.add_files([project / "data" / "trivia.jsonl", project / "data" / "odd.bin",
                              project / "data" / "broken.jsonl", project / "data" / "trivia.jsonl"])
    assert added == ["trivia", "broken", "trivia-2"]
    assert document.undo_stack.count() == 1  # three tasks, one undo step
    assert editor.message.isVisible() and "odd.bin" in editor.message.text() and "'.bin'" in editor.message.text()
    assert [r[0] for r in rows(editor)] == ["trivia", "broken", "trivia-2"]

    editor.table.clearSelection()
    editor.table.topLevelItem(1).setSelected(True)
    text = editor.preview.toPlainText()
    assert "broken.jsonl: line 2: a choice list needs at least two entries" in text
    assert "First 1 example" not in text  # the reader stops at the bad line: nothing half-previewed
    window.scene.revalidate()
    problems = [p.message for p in window.inspector.problems if p.node_id == "evaluate"]
    assert any("line 2" in m and "broken.jsonl" in m for m in problems)
    assert "line 2" in window.inspector._problem_label.text()

    editor.remove_selected()
    assert [r[0] for r in rows(editor)] == ["trivia", "trivia-2"] and document.undo_stack.count() == 2
    window.scene.revalidate()
    assert not [p for p in window.inspector.problems if p.node_id == "evaluate"]
    document.undo_stack.undo()
    assert [r[0] for r in rows(editor)] == ["trivia", "broken", "trivia-2"]


def test_without_a_model_nothing_is_added_and_the_editor_says_why(window, project, qtbot):
    editor = open_evaluate(window, project)
    edge = window.document.recipe.edges[0]
    window.document.push(DisconnectCommand(window.document, edge))
    window.document.set_selection([])
    window.document.set_selection(["evaluate"])
    editor = window.inspector.task_editor
    assert "Connect a model" in editor.hint.text()
    assert editor.add_files([project / "data" / "trivia.jsonl"]) == []
    assert "Connect a model" in editor.message.text() and window.document.undo_stack.count() == 1  # the disconnection only
