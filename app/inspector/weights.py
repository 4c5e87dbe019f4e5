"""Per-model parameters (``weight``, ``density``, …): one row per connected input model.

The recipe value is a scalar for every model, or a mapping from input node id to a value (the form
this editor writes; lists in edge order are read too). "Same for all models" switches between them.
Each row is the ordinary field for the parameter, so a model's row can hold a per-layer schedule.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any, Callable, Mapping

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QGridLayout, QLabel, QVBoxLayout, QWidget

from app.inspector.fields import Field, make_field
from engine.methods.base import Param


class PerModelField(Field):
    """Rows of ``make_field(param)`` for each input model (or one row for all of them)."""

    def __init__(self, param: Param, models: list[str], num_layers: Callable[[], int] = lambda: 0,
                 parent: QWidget | None = None):
        super().__init__(param, parent)
        self.models = list(models)
        self._num_layers = num_layers
        self.same = QCheckBox("Same for all models")
        self.same.setToolTip("One value for every model, or one per model")
        self.same.setEnabled(bool(self.models))
        self.same.toggled.connect(self._on_same_toggled)
        self._grid = QGridLayout()
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setHorizontalSpacing(8)
        self._grid.setVerticalSpacing(4)
        self.rows: dict[str, Field] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addWidget(self.same)
        layout.addLayout(self._grid)
        self._value: Any = param.default
        self._shared: bool | None = None

    # ---- value ---------------------------------------------------------------------------------
    def per_model(self, value: Any) -> dict[str, Any] | None:
        """The value as {model id: value}, or None when it is one value for all models."""
        if isinstance(value, Mapping):
            return {m: copy.deepcopy(value.get(m, self.param.default)) for m in self.models}
        if isinstance(value, (list, tuple)) and len(value) == len(self.models):
            return dict(zip(self.models, copy.deepcopy(list(value))))
        return None

    def set_value(self, value: Any) -> None:
        self._value = copy.deepcopy(value)
        by_model = self.per_model(value)
        shared = by_model is None or not self.models
        if shared != self._shared:
            self._build_rows(shared)
        self.same.blockSignals(True)
        self.same.setChecked(shared)
        self.same.blockSignals(False)
        if shared:
            self.rows[""].set_value(value)
        else:
            for m, field in self.rows.items():
                field.set_value(by_model[m])

    def _build_rows(self, shared: bool) -> None:
        self._shared = shared
        for field in self.rows.values():
            field.deleteLater()
        while self._grid.count():
            item = self._grid.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.rows = {}
        keys = [""] if shared else self.models
        for r, m in enumerate(keys):
            label = QLabel("all models" if shared else m, objectName="Muted" if shared else "")
            label.setToolTip(self.param.help if shared else f"{self.param.name} of input '{m}'")
            label.setMaximumWidth(110)
            label.setContentsMargins(0, 4, 0, 0)  # level with the slider row
            # a list for a per-model parameter means one value per model, so "all models" is a plain value
            param = replace(self.param, layerwise=False) if shared else self.param
            field = make_field(param, num_layers=self._num_layers)
            field.edited.connect(lambda v, key, m=m: self._on_row_edited(m, v, key))
            self._grid.addWidget(label, r, 0, Qt.AlignLeft | Qt.AlignTop)
            self._grid.addWidget(field, r, 1)
            self.rows[m] = field
        self._grid.setColumnStretch(1, 1)

    def _on_row_edited(self, model: str, value: Any, merge_key: str) -> None:
        if model == "":
            self.edited.emit(value, merge_key)
            return
        by_model = self.per_model(self._value) or {m: copy.deepcopy(self._value) for m in self.models}
        by_model[model] = value
        self.edited.emit(by_model, merge_key)

    def _on_same_toggled(self, same: bool) -> None:
        by_model = self.per_model(self._value)
        if same and by_model:
            self.edited.emit(copy.deepcopy(next(iter(by_model.values()))), "")
        elif not same:
            self.edited.emit({m: copy.deepcopy(self._value) for m in self.models}, "")
