"""The Generation panel: a few prompts of the user's, completed side by side by the live merge, its base
and each of its input models.

The panel takes the ``app.document.Document`` and follows its ``LiveController``: the table has one row
per prompt and one column per model (the merge first, then the base, then each input in the merge's
order). When a slider rests — the controller reports a ``full`` result for the values it was last sent —
the completions are generated greedily (``engine.live.generation``) as a ``LoopJob`` on the live loop's
thread, the only thread that may read the merged weights, so the UI never waits. A new slider value
cancels that job between tokens (the merge column keeps its old text, greyed, until the value rests
again); base and input columns are generated once and then come from the preview's cache. While the
panel cannot be seen (its dock tabbed behind another) nothing is generated; showing it catches up.

Each refreshed merge column is kept with its run: every run record with the same node and parameter
values (the history in ``Document.results``, and whatever else the ``records`` callable offers: the
main window adds the live trail and the live row) gains ``"generations": {"settings": {...},
"completions": [{"prompt", "text", "stopped"}, …]}``; a record made later for those values (a trail
point kept, the live row refreshed) gets them too. The history saves them with the project.

The prompts and the decoding settings belong to the project: ``Document.generation`` holds
``{"prompts": [...], "max_new_tokens": N, "stop": [...], "chat_template": bool}`` and the project file
keeps it under ``generation``. In the prompt list and the stop field, ``\\n`` and ``\\t`` stand for a
new line and a tab (``\\\\`` for a backslash); stop strings are separated by ``|``.

Merges of models that are not causal language models (the image zoo) show why there is no preview.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from typing import Any, Callable, Iterable

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QListWidget,
                               QListWidgetItem, QSpinBox, QSplitter, QStackedWidget, QTableWidget, QTableWidgetItem,
                               QToolButton, QVBoxLayout, QWidget)

from app import theme
from app.document import Document
from app.live import FAILED, OFF, OPENING
from engine.errors import Cancelled, EngineInputError
from engine.live import FULL, LiveEvent, LiveSession, LoopJob
from engine.live.generation import (BASE, MERGE, MODEL, CompletionCache, GenerationPreview, GenerationSettings,
                                    PreviewColumn, causal_lm_folder, preview_session, session_preview)
from engine.runtime import CancelToken

DEFAULT_PROMPTS = ("def ", "The ", '{"name": ')
DEFAULT_SETTINGS = GenerationSettings(max_new_tokens=24)
GENERATING = "generating…"
EMPTY = "(empty: it stopped at once)"
FILED_LIMIT = 64  # merge values whose completions are remembered for run records made later
HEADERS = {MERGE: "{} (live merge)", BASE: "{} (base)", MODEL: "{}"}
NO_MERGE = "Select a merge node that feeds an Evaluate node to preview what it writes."
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def escape(text: str) -> str:
    """A prompt or stop string on one line: backslash, new line and tab written ``\\\\``, ``\\n``, ``\\t``."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


def unescape(text: str) -> str:
    """The inverse of ``escape`` (a backslash before any other character stays as written)."""
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), text)


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _tool(icon: str, tip: str) -> QToolButton:
    button = QToolButton(toolTip=tip)
    button.setIcon(theme.icon(icon))
    return button


class GenerationPanel(QWidget):
    """Prompts and their completions by the live merge, its base and its inputs (see the module doc).

    ``records`` returns every run record the completions may be kept with (default: the document's
    history). ``refreshes`` counts the fills of the merge column, ``merge_params`` are the values it shows.
    """

    _column = Signal(int, object)  # job number, PreviewColumn (sent from the live loop's thread)
    _finished = Signal(int, object)  # job number, the job's error or None

    def __init__(self, document: Document, parent: QWidget | None = None, *,
                 records: Callable[[], Iterable[dict[str, Any]]] | None = None):
        super().__init__(parent)
        self.document = document
        self._run_records = records or (lambda: document.results)
        self._filed: OrderedDict[str, dict[str, Any]] = OrderedDict()  # run key → the completions filed
        self.controller = document.live
        self.refreshes = 0
        self.merge_params: dict[str, Any] | None = None  # the values the merge column shows
        self._shown = False
        self._folder: str | None = None  # the live merge's causal-LM folder, when it has one
        self._columns: list[tuple[str, str]] = []  # (role, node id) per table column
        self._settled: dict[str, Any] | None = None  # values that rested and wait for (or have) completions
        self._job: LoopJob | None = None
        self._job_number = 0
        self._job_key = ""
        self._done_key = ""
        self._previews: dict[int, GenerationPreview] = {}  # by session; used on the live loop's thread only
        self._cache = CompletionCache()  # outlives sessions: a reloaded merge finds its inputs' completions
        self._build()
        self._column.connect(self._on_column)
        self._finished.connect(self._on_finished)
        self.controller.stateChanged.connect(self._on_state)
        self.controller.resultReady.connect(self._on_result)
        document.paramsChanged.connect(self._on_params_changed)
        document.opened.connect(self._load_project)
        self._load_project()
        self._on_state(self.controller.state, self.controller.message)

    # ---- layout ----------------------------------------------------------------------------------
    def _build(self) -> None:
        self.status = QLabel(objectName="Muted")
        self.max_tokens = QSpinBox(minimum=1, maximum=1024, toolTip="The most tokens generated per prompt")
        self.stop_edit = QLineEdit(placeholderText="stop strings",
                                   toolTip="Strings that end a completion (cut off), separated by |; \\n is a new "
                                           "line, \\t a tab")
        self.stop_edit.setMaximumWidth(140)
        self.chat_box = QCheckBox("Chat template", toolTip="Wrap each prompt as a user message with the tokenizer's "
                                                            "chat template")
        bar = QHBoxLayout()
        bar.addWidget(self.status, 1)
        bar.addWidget(QLabel("Max tokens"))
        bar.addWidget(self.max_tokens)
        bar.addWidget(QLabel("Stop"))
        bar.addWidget(self.stop_edit)
        bar.addWidget(self.chat_box)

        self.prompt_list = QListWidget(toolTip="Your prompts (double-click to edit; \\n is a new line)")
        self.prompt_list.setEditTriggers(QAbstractItemView.DoubleClicked | QAbstractItemView.EditKeyPressed)
        self.add_button = _tool("add", "Add a prompt")
        self.remove_button = _tool("remove", "Remove the selected prompt")
        buttons = QHBoxLayout()
        buttons.addWidget(QLabel("Prompts", objectName="Title"), 1)
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.remove_button)
        prompts = QWidget()
        left = QVBoxLayout(prompts)
        left.setContentsMargins(0, 0, 0, 0)
        left.addLayout(buttons)
        left.addWidget(self.prompt_list, 1)

        self.table = QTableWidget(0, 0)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setWordWrap(True)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.Interactive)
        self.table.horizontalHeader().setDefaultSectionSize(220)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        split = QSplitter(Qt.Horizontal)
        split.addWidget(prompts)
        split.addWidget(self.table)
        split.setStretchFactor(1, 1)
        split.setSizes([220, 800])

        self.message = QLabel(wordWrap=True, alignment=Qt.AlignCenter, objectName="Muted")
        self.pages = QStackedWidget()
        self.pages.addWidget(self.message)
        self.pages.addWidget(split)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(bar)
        layout.addWidget(self.pages, 1)

        self.add_button.clicked.connect(lambda: self.add_prompt("Once upon a time", edit=True))
        self.remove_button.clicked.connect(self._remove_selected)
        self.prompt_list.itemChanged.connect(lambda _item: self._edited())
        self.max_tokens.valueChanged.connect(lambda _v: self._edited())
        self.stop_edit.editingFinished.connect(self._edited)
        self.chat_box.toggled.connect(lambda _on: self._edited())

    # ---- the project's prompts and settings --------------------------------------------------------
    def prompts(self) -> list[str]:
        """The prompts, in order."""
        return [unescape(self.prompt_list.item(i).text()) for i in range(self.prompt_list.count())]

    def settings(self) -> GenerationSettings:
        """The decoding settings the controls show."""
        stop = tuple(unescape(s) for s in self.stop_edit.text().split("|") if s)
        return GenerationSettings(self.max_tokens.value(), stop, self.chat_box.isChecked())

    def set_prompts(self, prompts: list[str]) -> None:
        """Replace the prompts (kept in the project)."""
        self.prompt_list.blockSignals(True)
        self.prompt_list.clear()
        for p in prompts:
            self._append_item(p)
        self.prompt_list.blockSignals(False)
        self._edited()

    def add_prompt(self, text: str, *, edit: bool = False) -> None:
        """Add a prompt at the end (and open it for editing with ``edit``)."""
        item = self._append_item(text)
        if edit:
            self.prompt_list.setCurrentItem(item)
            self.prompt_list.editItem(item)

    def remove_prompt(self, row: int) -> None:
        """Remove the prompt in ``row``."""
        self.prompt_list.takeItem(row)
        self._edited()

    def _remove_selected(self) -> None:
        rows = sorted((self.prompt_list.row(i) for i in self.prompt_list.selectedItems()), reverse=True)
        for row in rows:
            self.prompt_list.takeItem(row)
        if rows:
            self._edited()

    def _append_item(self, text: str) -> QListWidgetItem:
        item = QListWidgetItem(escape(text))
        item.setFlags(item.flags() | Qt.ItemIsEditable)
        self.prompt_list.addItem(item)  # emits itemChanged only for later edits
        return item

    def _load_project(self) -> None:
        """Show the open project's prompts and settings (the defaults for a project without any)."""
        data = self.document.generation
        try:
            settings = GenerationSettings.from_json(data) if data else DEFAULT_SETTINGS
        except EngineInputError:
            settings = DEFAULT_SETTINGS
        prompts = data.get("prompts") if isinstance(data.get("prompts"), list) else list(DEFAULT_PROMPTS)
        for widget in (self.max_tokens, self.stop_edit, self.chat_box):
            widget.blockSignals(True)
        self.max_tokens.setValue(settings.max_new_tokens)
        self.stop_edit.setText("|".join(escape(s) for s in settings.stop))
        self.chat_box.setChecked(settings.chat_template)
        for widget in (self.max_tokens, self.stop_edit, self.chat_box):
            widget.blockSignals(False)
        self.set_prompts([p for p in prompts if isinstance(p, str)])

    def _edited(self) -> None:
        """Prompts or settings changed: keep them in the project, lay the rows out again, regenerate."""
        self.document.generation = {"prompts": self.prompts(), **self.settings().to_json()}
        prompts = self.prompts()
        self.table.clearContents()  # every cell is filled again for the new prompts (cached ones at once)
        self.table.setRowCount(len(prompts))
        self.table.setVerticalHeaderLabels([self._elide(escape(p)) for p in prompts])
        self._cancel()
        self._done_key = ""
        self._request()

    @staticmethod
    def _elide(text: str, width: int = 32) -> str:
        return text if len(text) <= width else text[:width - 1] + "…"

    # ---- following live tuning -------------------------------------------------------------------
    def set_shown(self, shown: bool) -> None:
        """Whether the panel can be seen (its dock says so); completions are generated only while it can."""
        self._shown = shown
        if shown:
            self._request()
        else:
            self._cancel()

    def _on_state(self, state: str, message: str) -> None:
        self._cancel()
        self._settled = None
        self._done_key = ""
        node, recipe = self.controller.node_id, self.document.recipe
        if state == OFF or node not in recipe.nodes:
            self._show_message(NO_MERGE)
            return
        try:
            folder = str(causal_lm_folder(recipe, node))
        except EngineInputError as exc:
            text = str(exc)
            self._show_message(text[:1].upper() + text[1:])
            return
        if state == FAILED:
            self._show_message(f"No live merge to preview: {message}")
            return
        columns = ([(MERGE, node)] + [(BASE, n) for n in recipe.inputs(node, "base")]
                   + [(MODEL, n) for n in recipe.inputs(node, "models")])
        if folder != self._folder or columns != self._columns:
            self._folder, self._columns = folder, columns
            self.table.clearContents()
            self.table.setColumnCount(len(columns))
            self.table.setHorizontalHeaderLabels([HEADERS[role].format(n) for role, n in columns])
            self.merge_params = None
        self.pages.setCurrentIndex(1)
        self.status.setText("loading the live session…" if state == OPENING else "waiting for the merge's scores…")

    def _show_message(self, text: str) -> None:
        self._folder = None
        self._columns = []
        self.table.setColumnCount(0)
        self.message.setText(text)
        self.pages.setCurrentIndex(0)
        self.status.setText("")

    def _on_result(self, event: LiveEvent) -> None:
        """A full result for the values last sent means they rested: preview them. Any result may have
        made a run record (after this slot) that should keep completions already generated."""
        QTimer.singleShot(0, self, self._refile)
        if event.kind == FULL and _same(event.params, self.controller.params):
            self._settled = dict(event.params)
            self._request()

    def _on_params_changed(self, node_id: str, _key: str) -> None:
        if node_id != self.controller.node_id or self._folder is None:
            return
        self._cancel()
        self._settled = None
        col = self._col(MERGE, node_id)
        for row in range(self.table.rowCount()):
            item = self.table.item(row, col) if col is not None else None
            if item is not None:
                item.setForeground(theme.color("muted"))
        self.status.setText("waiting for the slider to rest…")

    # ---- generating ------------------------------------------------------------------------------
    def _request(self) -> None:
        """Generate the completions of the value that rested, unless they are shown already."""
        loop, prompts = self.controller.loop, self.prompts()
        if not self._shown or self._settled is None or self._folder is None or loop is None or not prompts:
            return
        settings = self.settings()
        key = json.dumps([self._settled, prompts, settings.to_json()], sort_keys=True, default=str)
        if key in (self._done_key, self._job_key if self._job is not None else None):
            return
        self._cancel()
        self._job_number += 1
        number, folder = self._job_number, self._folder
        previews, cache = self._previews, self._cache

        def generate(session: LiveSession, cancel: CancelToken) -> None:
            cancel.raise_if_cancelled()
            preview = previews.get(id(session))
            if preview is None:  # one per session: it shares the session's evaluation module
                previews.clear()
                preview = previews[id(session)] = session_preview(session, folder, cache)
            preview_session(session, preview, prompts, settings, lambda column: self._column.emit(number, column),
                            cancel=cancel)

        self._job_key = key
        self._job = loop.run_job(LoopJob(generate, lambda _result, error: self._finished.emit(number, error)))
        for col, (role, _node) in enumerate(self._columns):
            for row in range(self.table.rowCount()):
                item = self.table.item(row, col)
                if role == MERGE or item is None:
                    self._set_cell(row, col, GENERATING, muted=True)
        self.status.setText(GENERATING)

    def _cancel(self) -> None:
        if self._job is not None:
            self._job.cancel()
            self._job = None
        self._job_number += 1  # what the cancelled job still sends is ignored

    def _col(self, role: str, node_id: str) -> int | None:
        try:
            return self._columns.index((role, node_id))
        except ValueError:
            return None

    def _set_cell(self, row: int, col: int, text: str, *, muted: bool = False, tip: str = "",
                  completion: str | None = None) -> None:
        item = QTableWidgetItem(text)
        item.setData(Qt.UserRole, completion)
        if muted:
            item.setForeground(theme.color("muted"))
            font = QFont(item.font())
            font.setItalic(True)
            item.setFont(font)
        item.setToolTip(tip)
        self.table.setItem(row, col, item)

    def completion(self, row: int, role: str, node_id: str) -> str | None:
        """The completion the table shows for prompt ``row`` and one model (None while there is none)."""
        col = self._col(role, node_id)
        item = self.table.item(row, col) if col is not None else None
        return item.data(Qt.UserRole) if item is not None else None

    def _on_column(self, number: int, column: PreviewColumn) -> None:
        col = self._col(column.role, column.node_id)
        if number != self._job_number or col is None:
            return
        for row, c in enumerate(column.completions):
            note = "" if c.stopped else f"\n\n(reached {self.settings().max_new_tokens} tokens without a stop)"
            self._set_cell(row, col, escape(c.text) or EMPTY, muted=not c.text, completion=c.text,
                           tip=f"{escape(c.prompt)} → {escape(c.text)}{note}")
        self.table.resizeRowsToContents()
        if column.role == MERGE:
            self.merge_params = dict(column.params or {})
            self.refreshes += 1
            self._file(column)

    def _on_finished(self, number: int, error: BaseException | None) -> None:
        if number != self._job_number:
            return
        self._job = None
        if error is None:
            self._done_key = self._job_key
            values = " · ".join(f"{k} {v}" for k, v in (self.merge_params or {}).items() if k != "method")
            self.status.setText(f"greedy completions · the merge at {values or 'its values'}")
        elif not isinstance(error, Cancelled):
            self.status.setText(f"⚠ {error}")

    def _file(self, column: PreviewColumn) -> None:
        """Keep the merge's completions with every run record of the same node and values."""
        key = json.dumps([column.node_id, column.params], sort_keys=True, default=str)
        self._filed[key] = {"settings": self.settings().to_json(),
                            "completions": [c.to_json() for c in column.completions]}
        self._filed.move_to_end(key)
        while len(self._filed) > FILED_LIMIT:
            self._filed.popitem(last=False)
        for record in self._run_records():
            if self._key(record) == key:
                record["generations"] = self._filed[key]

    def _refile(self) -> None:
        """Give run records made since (the live row, a kept point) the completions of their values."""
        if not self._filed:
            return
        for record in self._run_records():
            if "generations" not in record and (payload := self._filed.get(self._key(record))) is not None:
                record["generations"] = payload

    @staticmethod
    def _key(record: dict[str, Any]) -> str | None:
        if record.get("kind", "run") != "run":
            return None
        return json.dumps([record.get("node"), record.get("params")], sort_keys=True, default=str)
