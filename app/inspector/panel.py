"""The Inspector: the selected node's parameters, generated from its schema.

For a Merge node the schema is the chosen method's (``engine.methods``): a method box, the method's
summary, requirements and paper link, one row per input model for per-model parameters, then the
other parameters. Other node kinds use their declared ``params``. The panel takes the
``app.document.Document``: it shows the document's current node, every edit is an undoable command
pushed on the document, and it follows the document's typed signals (undo, redo, other views).
"""

from __future__ import annotations

import html
import re
from typing import Any, Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QComboBox, QFileDialog, QFormLayout, QFrame, QHBoxLayout, QLabel, QMenu,
                               QScrollArea, QVBoxLayout, QWidget)

from app import theme
from app.commands import SetParamCommand, SetParamsCommand
from app.document import Document
from app.graph.palette import switch_method_params
from app.inspector.evaluate_tasks import EvaluateTasksEditor
from app.inspector.fields import Field, guard_wheel, make_field
from app.inspector.weights import PerModelField
from app.library.view import FILE_FILTER
from engine.errors import EngineInputError
from engine.graph.node_kinds import EVALUATE, node_kind
from engine.graph.recipe import Edge
from engine.graph.stacking import parse_slices
from engine.graph.validate import Problem, reference_checkpoint
from engine.methods import MethodSpec, all_methods, get_method
from engine.methods.base import GROUPS, Param, Requirement

LABELS = {"lambda": "λ (lambda)"}
_ARXIV = re.compile(r"arXiv:\s*(\d{4}\.\d{4,5})")


def param_label(p: Param) -> str:
    return LABELS.get(p.name, p.name.replace("_", " ").capitalize())


def reference_html(reference: str) -> str:
    """The method's reference with its arXiv id as a link."""
    text = html.escape(reference)
    m = _ARXIV.search(reference)
    if not m:
        return text
    url = f"https://arxiv.org/abs/{m.group(1)}"
    return f'{text} <a href="{url}" style="color:{theme.color("accent").name()}">paper ↗</a>'


def section(title: str) -> QLabel:
    return QLabel(title.upper(), objectName="Section")


def method_combo() -> QComboBox:
    """Every registered method under a header per group (``MethodSpec.group``), with its summary and
    paper on hover; the headers cannot be chosen."""
    combo = QComboBox(sizeAdjustPolicy=QComboBox.AdjustToMinimumContentsLengthWithIcon)
    guard_wheel(combo)
    model = combo.model()
    by_group: dict[str, list[MethodSpec]] = {}
    for spec in all_methods():
        by_group.setdefault(spec.group, []).append(spec)
    for group in [g for g, _families in GROUPS if g in by_group]:
        combo.addItem(group)
        header = model.item(combo.count() - 1)
        header.setFlags(Qt.ItemFlag.NoItemFlags)
        font = header.font()
        font.setBold(True)
        header.setFont(font)
        for spec in by_group[group]:
            combo.addItem(spec.label, spec.name)
            tip = f"{spec.summary}\n\n{spec.reference}" if spec.reference else spec.summary
            combo.setItemData(combo.count() - 1, tip, Qt.ToolTipRole)
    return combo


class InspectorPanel(QWidget):
    """Edits one node of ``document`` (its current node, or the one ``show_node`` names).
    ``describe_checkpoint(path)`` and ``layers_of(path)`` come from the library (a one-line description
    and the layer count of an inspected checkpoint).

    ``sweepRequested(node_id, param)``: "Sweep this parameter…" was chosen from the context menu of a
    merge node's numeric parameter (its label or its controls).
    """

    sweepRequested = Signal(str, str)

    def __init__(self, document: Document, *, describe_checkpoint: Callable[[str], str | None] = lambda _p: None,
                 layers_of: Callable[[str], int] = lambda _p: 0, parent: QWidget | None = None):
        super().__init__(parent)
        self.document = document
        self.recipe = document.recipe
        self.describe_checkpoint = describe_checkpoint
        self.layers_of = layers_of
        self.node_id = ""
        self.fields: dict[str, Field] = {}
        self.method_combo: QComboBox | None = None
        self.task_editor: EvaluateTasksEditor | None = None
        self.problems: list[Problem] = []
        self._models: list[str] = []
        self._method = ""
        self._pushing = False
        self._scroll = QScrollArea(widgetResizable=True)
        self._scroll.setFrameShape(QFrame.NoFrame)
        self._scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._scroll)
        document.currentNodeChanged.connect(self.show_node)
        document.paramsChanged.connect(self._on_params_changed)
        document.edgeAdded.connect(self._on_edge_changed)
        document.edgeRemoved.connect(self._on_edge_changed)
        document.nodeRemoved.connect(self._on_node_removed)
        document.recipeReplaced.connect(self._on_recipe_replaced)
        self.show_node("")

    # ---- building --------------------------------------------------------------------------------
    def show_node(self, node_id: str) -> None:
        """Show ``node_id``'s parameters ("" or an unknown id: the empty state)."""
        self.node_id = node_id if node_id in self.recipe.nodes else ""
        self.fields = {}
        self.method_combo = None
        self.task_editor = None
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.setContentsMargins(12, 10, 12, 12)
        layout.setSpacing(6)
        if not self.node_id:
            hint = QLabel("Select a node in the graph to edit its parameters here.", objectName="Hint",
                          wordWrap=True, alignment=Qt.AlignCenter)
            layout.addStretch(1)
            layout.addWidget(hint)
            layout.addStretch(2)
        else:
            self._build(layout)
            layout.addStretch(1)
        old = self._scroll.takeWidget()
        self._scroll.setWidget(body)
        if old is not None:  # later: this may run inside a signal of one of its widgets (the method box)
            old.deleteLater()

    def _build(self, layout: QVBoxLayout) -> None:
        node = self.recipe.nodes[self.node_id]
        self._problem_label = QLabel(objectName="Problem", wordWrap=True)
        try:
            ntype = node_kind(node.type)
        except EngineInputError:  # a type this build does not know: only its problems are shown
            layout.addWidget(self._problem_label)
            self._show_problems()
            return
        head = QHBoxLayout()
        icon = QLabel()
        icon.setPixmap(theme.icon(ntype.icon, "accent").pixmap(22, 22))
        title = QLabel(self.node_id, objectName="Title")
        title.setTextInteractionFlags(Qt.TextSelectableByMouse)
        kind = QLabel(ntype.label, objectName="Muted")
        head.addWidget(icon)
        head.addWidget(title)
        head.addStretch(1)
        head.addWidget(kind)
        layout.addLayout(head)
        if not ntype.method_param:  # a node with a method shows the method's summary instead
            layout.addWidget(QLabel(ntype.help, objectName="Muted", wordWrap=True))
        layout.addWidget(self._problem_label)
        self._show_problems()

        self._models = self.recipe.inputs(self.node_id, "models")
        self._method = str(node.params.get(ntype.method_param, "")) if ntype.method_param else ""
        params = self._build_method(layout) if ntype.method_param else list(ntype.params)
        if ntype.source:
            info = self.describe_checkpoint(str(self.recipe.resolve_path(node.params.get(ntype.file_param, ""))))
            if info:
                card = QLabel(info, objectName="Muted", wordWrap=True)
                card.setTextFormat(Qt.RichText)
                layout.addWidget(card)

        if ntype is EVALUATE:  # its own tasks have an editor of their own, not a field
            params = [p for p in params if p.name != EVALUATE.entries_param]
        per_model = [p for p in params if p.per_model]
        others = [p for p in params if not p.per_model]
        # the global parameters (λ, density…) first: the slider people move most stays above the fold
        if others:
            layout.addWidget(section("Parameters"))
            form = QFormLayout()
            form.setLabelAlignment(Qt.AlignLeft)
            form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
            form.setRowWrapPolicy(QFormLayout.DontWrapRows)
            form.setVerticalSpacing(8)
            for p in others:
                field = make_field(p, num_layers=self._num_layers, browse=self._browser(node.type, p))
                self._add_field(p, field)
                label = QLabel(param_label(p))
                label.setToolTip(p.help)
                self._offer_sweep(p, label, field)
                form.addRow(label, field)
            layout.addLayout(form)
        if per_model:
            layout.addWidget(section("Per model"))
            if not self._models:
                layout.addWidget(QLabel("Connect models to the 'models' input to set their values one by one.",
                                        objectName="Hint", wordWrap=True))
            for p in per_model:
                name = QLabel(param_label(p))
                name.setToolTip(p.help)
                layout.addWidget(name)
                field = PerModelField(p, self._models, self._num_layers)
                self._add_field(p, field)
                self._offer_sweep(p, name, field)
                layout.addWidget(field)
        if ntype is EVALUATE:
            layout.addWidget(section("Tasks of this node"))
            self.task_editor = EvaluateTasksEditor(self.document, self.node_id)
            layout.addWidget(self.task_editor)
        self._refresh_values()

    def _build_method(self, layout: QVBoxLayout) -> list[Param]:
        combo = method_combo()
        try:
            spec: MethodSpec | None = get_method(self._method)
        except EngineInputError:
            spec = None
            combo.addItem(f"unknown: {self._method}", self._method)
        combo.setCurrentIndex(combo.findData(spec.name if spec else self._method))
        combo.activated.connect(lambda i: combo.itemData(i) and self._set_method(str(combo.itemData(i))))
        self.method_combo = combo
        layout.addWidget(section("Method"))
        layout.addWidget(combo)
        if spec is None:
            return []
        layout.addWidget(QLabel(spec.summary, wordWrap=True))
        chips = QHBoxLayout()
        chips.setSpacing(4)
        for req in sorted(spec.requirements, key=lambda r: r.value):
            chip = QLabel(req.value, objectName="ChipOk" if req is Requirement.DATA_FREE else "ChipWarn")
            chip.setToolTip("What this method needs besides the weights")
            chips.addWidget(chip)
        if spec.needs_base:
            chips.addWidget(QLabel("needs base", objectName="Chip"))
        if spec.random:
            chips.addWidget(QLabel("random · seeded", objectName="Chip"))
        chips.addStretch(1)
        layout.addLayout(chips)
        if spec.reference:
            ref = QLabel(reference_html(spec.reference), objectName="Muted", wordWrap=True, openExternalLinks=True)
            ref.setTextFormat(Qt.RichText)
            layout.addWidget(ref)
        return list(spec.params)

    def _add_field(self, p: Param, field: Field) -> None:
        self.fields[p.name] = field
        field.edited.connect(lambda value, key, name=p.name: self._push(name, value, key))

    def _offer_sweep(self, p: Param, *widgets: QWidget) -> None:
        """A "Sweep this parameter…" context menu on a merge node's numeric parameter."""
        if p.type not in ("float", "int") or not node_kind(self.recipe.nodes[self.node_id].type).method_param:
            return
        for w in widgets:
            w.setContextMenuPolicy(Qt.CustomContextMenu)
            w.customContextMenuRequested.connect(lambda pos, w=w, name=p.name: self._sweep_menu(w, pos, name))
        widgets[0].setToolTip(f"{p.help}\nRight-click to sweep this parameter and plot every task's score.")

    def _sweep_menu(self, widget: QWidget, pos, name: str) -> QMenu:
        menu = QMenu(widget)
        action = menu.addAction(theme.icon("curve"), "Sweep this parameter…")
        action.triggered.connect(lambda: self.sweepRequested.emit(self.node_id, name))
        menu.popup(widget.mapToGlobal(pos))
        return menu

    def _browser(self, node_type: str, p: Param):
        if p.type == "path":
            return lambda parent, current: QFileDialog.getOpenFileName(parent, p.help, current)[0] or None
        if p.type != "str" or p.name != "path":
            return None
        if node_kind(node_type).writes_folder:
            return lambda parent, current: QFileDialog.getExistingDirectory(parent, "Output folder", current) or None
        return lambda parent, current: QFileDialog.getOpenFileName(parent, "Checkpoint", current,
                                                                   FILE_FILTER)[0] or None

    def _num_layers(self) -> int:
        """Layers of the model a merge node follows (its base or first model): from the library, or
        counted in a layer stack's slices."""
        try:
            ref = reference_checkpoint(self.recipe, self.node_id, {})
        except (EngineInputError, KeyError, RecursionError):
            return 0
        if ref is None:
            return 0
        node = self.recipe.nodes[ref]
        if node.kind.renames:  # a layer stack: as many layers as its slices hold
            try:
                return sum(s.end - s.start for s in parse_slices(node.params.get("slices", "")))
            except EngineInputError:
                return 0
        path = node.params.get("path")
        return self.layers_of(str(self.recipe.resolve_path(path))) if path else 0

    # ---- values ----------------------------------------------------------------------------------
    def _defaults(self) -> dict[str, Any]:
        kind = node_kind(self.recipe.nodes[self.node_id].type)
        if kind.method_param:
            try:
                return get_method(self._method).defaults()
            except EngineInputError:
                return {}
        return {p.name: p.default for p in kind.params}

    def _refresh_values(self) -> None:
        params = self.recipe.nodes[self.node_id].params
        defaults = self._defaults()
        for name, field in self.fields.items():
            field.set_value(params.get(name, defaults.get(name)))

    def _push(self, key: str, value: Any, merge_key: str) -> None:
        node = self.recipe.nodes.get(self.node_id)
        if node is None or (node.params.get(key) == value and not merge_key):
            return
        self._pushing = True
        try:
            self.document.push(SetParamCommand(self.document, self.node_id, key, value, merge_key or None))
        finally:
            self._pushing = False
        self._refresh_values()

    def _set_method(self, method: str) -> None:
        node = self.recipe.nodes.get(self.node_id)
        if node is None or method == self._method:
            return
        self.document.push(SetParamsCommand(self.document, self.node_id, switch_method_params(node.params, method)))

    def set_problems(self, problems: list[Problem]) -> None:
        """Validation problems of the whole recipe (the panel shows the current node's)."""
        self.problems = list(problems)
        if self.node_id:
            self._show_problems()

    def _show_problems(self) -> None:
        mine = [p.message for p in self.problems if p.node_id == self.node_id]
        self._problem_label.setText("\n".join(f"⚠ {m}" for m in mine))
        self._problem_label.setVisible(bool(mine))

    # ---- following the document ------------------------------------------------------------------
    def _on_recipe_replaced(self) -> None:
        if self.node_id:
            self.show_node(self.node_id)

    def _on_node_removed(self, node_id: str) -> None:
        if node_id and node_id == self.node_id:
            self.show_node(node_id)

    def _on_edge_changed(self, edge: Edge) -> None:
        if self.node_id and edge.dst == self.node_id and self.recipe.inputs(self.node_id, "models") != self._models:
            self.show_node(self.node_id)

    def _on_params_changed(self, node_id: str, _key: str) -> None:
        if node_id != self.node_id or self._pushing:
            return
        node = self.recipe.nodes[self.node_id]
        try:
            method_param = node_kind(node.type).method_param
        except EngineInputError:  # a type this build does not know
            method_param = None
        if method_param and str(node.params.get(method_param, "")) != self._method:
            self.show_node(self.node_id)
        else:
            self._refresh_values()
