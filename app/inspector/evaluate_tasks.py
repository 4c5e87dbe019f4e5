"""The tasks an Evaluate node declares itself, in the Inspector: add data files, see what they hold.

``EvaluateTasksEditor`` lists the node's inline task entries (``EvaluateKind.entries_param``: name,
kind, data file). **Add files…** / **Add folder…** and files dropped on it turn each file into a task
entry with ``engine.evaluation.task_detection.detect_task``, reading the head of the file and the
``config.json`` of the model the node scores (the checkpoint its models follow back to: their base,
else their first input); **Remove** drops the selected tasks. Each change is one undoable command on
the document. The preview pane shows the selected task's first examples as its reader parses them and
its problems (the entry's validation, naming file and line) before anything runs.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Sequence

from PySide6.QtCore import Qt
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (QAbstractItemView, QFileDialog, QHBoxLayout, QHeaderView, QLabel, QPlainTextEdit,
                               QToolButton, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget)

from app import theme
from app.commands import SetParamCommand
from app.document import Document
from engine.errors import EngineInputError
from engine.evaluation.task_detection import detect_task, entry_problems, preview_task
from engine.graph.node_kinds import EVALUATE
from engine.graph.validate import reference_checkpoint

DATA_FILTER = "Task data (*.jsonl *.json *.csv *.txt *.md *.rst *.py);;All files (*)"
PREVIEW_EXAMPLES = 3


def scored_model_folder(document: Document, node_id: str) -> Path | None:
    """The model folder whose ``config.json`` decides the kind of a task added to Evaluate node ``node_id``:
    the checkpoint its models follow back to (their base, else their first input), else the first other
    checkpoint upstream that is a model folder; a checkpoint file stands for its folder. None when no
    checkpoint feeds the node."""
    recipe = document.recipe
    try:
        first = reference_checkpoint(recipe, node_id, {})
    except (EngineInputError, KeyError, RecursionError):
        first = None
    folders = []
    for nid in dict.fromkeys([first, *recipe.upstream(node_id)]):
        node = recipe.nodes.get(nid) if nid else None
        try:
            kind = node.kind if node is not None else None
        except EngineInputError:  # a type this build does not know
            continue
        if kind is not None and kind.source and node.params.get(kind.file_param):
            path = recipe.resolve_path(node.params[kind.file_param]).resolve()
            folders.append(path.parent if path.is_file() else path)
    return next((f for f in folders if (f / "config.json").is_file()), folders[0] if folders else None)


def describe_example(example: dict[str, Any]) -> str:
    """One previewed example as text: where it is, then each field on its own line."""
    where = Path(example["file"]).name + (f" · line {example['line']}" if example.get("line") else "")
    lines = [where]
    for key, value in example.items():
        if key in ("file", "line"):
            continue
        shown = " | ".join(map(str, value)) if isinstance(value, list) else str(value)
        lines.append(f"  {key}: {shown}")
    return "\n".join(lines)


class EvaluateTasksEditor(QWidget):
    """Edits the inline task entries of one Evaluate node of ``document`` (see the module doc)."""

    def __init__(self, document: Document, node_id: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.document = document
        self.node_id = node_id
        self.table = QTreeWidget(rootIsDecorated=False, uniformRowHeights=True, alternatingRowColors=True)
        self.table.setHeaderLabels(["Task", "Kind", "File"])
        self.table.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.table.header().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.header().setStretchLastSection(True)
        self.table.setMinimumHeight(96)
        self.table.setMaximumHeight(180)
        self.table.itemSelectionChanged.connect(self._show_preview)
        self.add_files_button = self._button("add-file", "Add files…", "Add tasks from data files (JSONL, CSV, "
                                             "text); the model's config.json decides each task's kind",
                                             self.browse_files)
        self.add_folder_button = self._button("add-folder", "Add folder…", "Add a task from a folder of .txt "
                                              "files or of class folders of images", self.browse_folder)
        self.remove_button = self._button("remove", "Remove", "Remove the selected tasks", self.remove_selected)
        bar = QHBoxLayout()
        bar.setContentsMargins(0, 0, 0, 0)
        for b in (self.add_files_button, self.add_folder_button, self.remove_button):
            bar.addWidget(b)
        bar.addStretch(1)
        self.hint = QLabel(objectName="Hint", wordWrap=True)
        self.message = QLabel(objectName="Problem", wordWrap=True, visible=False)
        self.message.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.preview = QPlainTextEdit(readOnly=True, objectName="TaskPreview")
        self.preview.setLineWrapMode(QPlainTextEdit.WidgetWidth)
        self.preview.setMinimumHeight(110)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addWidget(self.hint)
        layout.addWidget(self.table)
        layout.addLayout(bar)
        layout.addWidget(self.message)
        layout.addWidget(self.preview)
        self.setAcceptDrops(True)
        document.paramsChanged.connect(self._on_params_changed)
        self.refresh()

    def _button(self, icon: str, text: str, tip: str, slot) -> QToolButton:
        button = QToolButton(text=text, toolTip=tip, toolButtonStyle=Qt.ToolButtonTextBesideIcon)
        button.setIcon(theme.icon(icon))
        button.clicked.connect(slot)
        return button

    # ---- the node's entries ----------------------------------------------------------------------
    def entries(self) -> list[dict[str, Any]]:
        """The node's inline task entries as the recipe holds them (a copy)."""
        node = self.document.recipe.nodes.get(self.node_id)
        value = node.params.get(EVALUATE.entries_param) if node is not None else None
        return [dict(e) for e in value if isinstance(e, dict)] if isinstance(value, list) else []

    def folder(self) -> Path:
        """The folder the entries' paths are relative to (the recipe's)."""
        return self.document.recipe.resolve_path(".").resolve()

    def _set_entries(self, entries: list[dict[str, Any]], text: str) -> None:
        command = SetParamCommand(self.document, self.node_id, EVALUATE.entries_param, copy.deepcopy(entries))
        command.setText(text)
        self.document.push(command)

    def _on_params_changed(self, node_id: str, key: str) -> None:
        if node_id == self.node_id and key in (EVALUATE.entries_param, "") and node_id in self.document.recipe.nodes:
            self.refresh()

    def refresh(self) -> None:
        """Show the node's entries again (after an edit, an undo, a redo), keeping the selected names."""
        selected = {item.text(0) for item in self.table.selectedItems()}
        self.table.blockSignals(True)
        self.table.clear()
        for entry in self.entries():
            data = entry.get("data")
            shown = data.get("test", next(iter(data.values()), "")) if isinstance(data, dict) and data else data
            item = QTreeWidgetItem([str(entry.get("name", "")), str(entry.get("kind", "")),
                                    Path(str(shown)).name if shown else ""])
            item.setToolTip(2, str(shown or ""))
            self.table.addTopLevelItem(item)
            item.setSelected(item.text(0) in selected)
        if not self.table.selectedItems() and self.table.topLevelItemCount():
            self.table.topLevelItem(self.table.topLevelItemCount() - 1).setSelected(True)
        self.table.blockSignals(False)
        model = scored_model_folder(self.document, self.node_id)
        self.hint.setText(f"Files become tasks for {model.name}'s config.json (drop files here)." if model else
                          "Connect a model to this node, then add data files as tasks (or drop them here).")
        self.remove_button.setEnabled(bool(self.table.topLevelItemCount()))
        self._show_preview()

    # ---- adding and removing ---------------------------------------------------------------------
    def add_files(self, paths: Sequence[str | Path]) -> list[str]:
        """Turn each file or folder into a task entry and add them all as one undoable step; returns the new
        tasks' names. A file that makes no task is skipped and its reason shown."""
        model = scored_model_folder(self.document, self.node_id)
        if model is None:
            self._say(["Connect a model to this Evaluate node first: its config.json tells which task a file makes."])
            return []
        entries = self.entries()
        folder = self.document.recipe.base_dir
        added, problems = [], []
        for path in paths:
            try:
                entry = detect_task(path, model, relative_to=folder,
                                    taken=[str(e.get("name")) for e in entries])
            except EngineInputError as exc:
                problems.append(str(exc))
                continue
            entries.append(entry)
            added.append(entry["name"])
        self._say(problems)
        if added:
            self._set_entries(entries, f"Add task{'s' if len(added) > 1 else ''} {', '.join(added)}")
            self._select(added[-1])
        return added

    def remove_selected(self) -> list[str]:
        """Remove the selected tasks as one undoable step; returns their names."""
        names = [item.text(0) for item in self.table.selectedItems()]
        if names:
            self._set_entries([e for e in self.entries() if str(e.get("name", "")) not in names],
                              f"Remove task{'s' if len(names) > 1 else ''} {', '.join(names)}")
        return names

    def browse_files(self) -> None:
        """Ask for data files and add them."""
        paths, _filter = QFileDialog.getOpenFileNames(self, "Add tasks from files", str(self.folder()), DATA_FILTER)
        if paths:
            self.add_files(paths)

    def browse_folder(self) -> None:
        """Ask for a folder (of .txt files, or of class folders of images) and add it."""
        path = QFileDialog.getExistingDirectory(self, "Add a task from a folder", str(self.folder()))
        if path:
            self.add_files([path])

    def _select(self, name: str) -> None:
        for i in range(self.table.topLevelItemCount()):
            item = self.table.topLevelItem(i)
            item.setSelected(item.text(0) == name)

    def _say(self, problems: list[str]) -> None:
        self.message.setText("\n".join(f"⚠ {p}" for p in problems))
        self.message.setVisible(bool(problems))

    # ---- preview ---------------------------------------------------------------------------------
    def selected_entry(self) -> dict[str, Any] | None:
        """The entry of the selected row (the first, when several are selected)."""
        items = self.table.selectedItems()
        if not items:
            return None
        return next((e for e in self.entries() if str(e.get("name", "")) == items[0].text(0)), None)

    def _show_preview(self) -> None:
        entry = self.selected_entry()
        if entry is None:
            self.preview.setPlainText("" if self.table.topLevelItemCount() else
                                      "No tasks of this node's own yet. Add JSONL, CSV or text files: each "
                                      "becomes a task scored on the models connected here.")
            return
        folder = self.folder()
        parts = [f"⚠ {p}" for p in entry_problems([entry], folder)]
        try:
            examples = preview_task(entry, folder, PREVIEW_EXAMPLES)
        except EngineInputError as exc:
            examples = []
            if not parts:
                parts.append(f"⚠ {exc}")
        if examples:
            parts.append(f"First {len(examples)} example{'s' if len(examples) > 1 else ''} of '{entry.get('name')}':")
            parts += [describe_example(e) for e in examples]
        self.preview.setPlainText("\n".join(parts))

    # ---- drops -----------------------------------------------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 (Qt's name)
        if event.mimeData().hasUrls() and all(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        self.dragEnterEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 (Qt's name)
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.add_files(paths)
