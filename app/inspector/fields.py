"""Editors for one declared parameter (``engine.methods.base.Param``), built from its schema.

Every field shows a value with ``set_value`` (silently) and reports user edits with
``edited(value, merge_key)``: a slider drag or curve drag carries one merge key per gesture, so the
inspector turns it into a single undo step; other edits carry ``""``.

- ``float``: a slider over a comfortable span plus a spin box over the declared range; layer-varying
  parameters get a curve button that switches to a per-layer schedule (``ScheduleEditor``);
- ``int``: a spin box (``seed`` also gets a button that draws a new seed);
- ``bool``: a check box; ``choice``: a combo box; ``str``: a line edit (paths get a Browse button);
- a value the form cannot show (e.g. a schedule of tensor-name filters) is edited as JSON.
"""

from __future__ import annotations

import json
import random
import uuid
from typing import Any, Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QHBoxLayout, QLabel, QLineEdit, QSlider, QSpinBox,
                               QToolButton, QVBoxLayout, QWidget)

from app import theme
from app.inspector.schedule import ScheduleEditor
from engine.methods.base import Param
from engine.methods.schedule import is_schedule

SLIDER_STEPS = 1000
INT32_MAX = 2**31 - 1

Browse = Callable[[QWidget, str], str | None]


class Field(QWidget):
    """Base of the parameter editors."""

    edited = Signal(object, str)

    def __init__(self, param: Param, parent: QWidget | None = None):
        super().__init__(parent)
        self.param = param
        self.setToolTip(param.help)

    def set_value(self, value: Any) -> None:
        raise NotImplementedError


def soft_range(param: Param, values: list[float]) -> tuple[float, float]:
    """The span a slider covers: the declared range, at most ±2 (the spin box reaches the full declared
    range), widened to include ``values``."""
    lo = param.min if param.min is not None else min(0.0, *values)
    hi = param.max if param.max is not None else max(1.0, *values)
    lo, hi = max(lo, -2.0), min(hi, 2.0)
    if lo >= hi:
        lo, hi = param.min or 0.0, param.max or 1.0
    return min(lo, *values), max(hi, *values)


def _is_plain(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class SliderSpin(QWidget):
    """A slider and a spin box showing one float; ``changed(value, merge_key)`` on user edits."""

    changed = Signal(float, str)

    def __init__(self, param: Param, parent: QWidget | None = None):
        super().__init__(parent)
        self.param = param
        self.slider = QSlider(Qt.Horizontal, minimum=0, maximum=SLIDER_STEPS)
        self.spin = QDoubleSpinBox(decimals=3, keyboardTracking=False)
        self.spin.setRange(param.min if param.min is not None else -1e6, param.max if param.max is not None else 1e6)
        self.spin.setMinimumWidth(76)
        self.spin.setAlignment(Qt.AlignRight)
        self.lo, self.hi = soft_range(param, [param.default])
        self.spin.setSingleStep(max(0.001, round((self.hi - self.lo) / 100, 3)))
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.slider, 1)
        layout.addWidget(self.spin)
        self._merge_key = ""
        self.slider.sliderPressed.connect(self._on_pressed)
        self.slider.sliderReleased.connect(self._on_released)
        self.slider.valueChanged.connect(self._on_slider)
        self.spin.valueChanged.connect(self._on_spin)

    def value(self) -> float:
        return self.spin.value()

    def set_value(self, value: float) -> None:
        self.lo, self.hi = soft_range(self.param, [float(value)]) if not self._merge_key else (self.lo, self.hi)
        for w in (self.slider, self.spin):
            w.blockSignals(True)
        self.spin.setValue(float(value))
        self.slider.setValue(self._to_slider(float(value)))
        for w in (self.slider, self.spin):
            w.blockSignals(False)

    def _to_slider(self, v: float) -> int:
        return round((v - self.lo) / (self.hi - self.lo) * SLIDER_STEPS) if self.hi > self.lo else 0

    def _on_pressed(self) -> None:
        self._merge_key = uuid.uuid4().hex

    def _on_released(self) -> None:
        self._merge_key = ""

    def _on_slider(self, pos: int) -> None:
        v = round(self.lo + (self.hi - self.lo) * pos / SLIDER_STEPS, 3)
        self.spin.blockSignals(True)
        self.spin.setValue(v)
        self.spin.blockSignals(False)
        self.changed.emit(self.spin.value(), self._merge_key)

    def _on_spin(self, v: float) -> None:
        self.slider.blockSignals(True)
        self.slider.setValue(self._to_slider(v))
        self.slider.blockSignals(False)
        self.changed.emit(v, "")


class FloatField(Field):
    """A float: slider + spin box; with ``layerwise`` a curve button toggles a per-layer schedule.

    ``num_layers()`` tells the schedule editor the model's depth (0 when unknown).
    """

    def __init__(self, param: Param, layerwise: bool, num_layers: Callable[[], int] = lambda: 0,
                 parent: QWidget | None = None):
        super().__init__(param, parent)
        self.num_layers = num_layers
        self.scalar = SliderSpin(param)
        self.scalar.changed.connect(lambda v, key: self.edited.emit(v, key))
        self.curve_button = QToolButton(checkable=True, toolTip="Vary this value over the layers")
        self.curve_button.setIcon(theme.icon("curve"))
        self.curve_button.setVisible(layerwise)
        self.curve_button.toggled.connect(self._on_toggle)
        self.schedule = ScheduleEditor(param)
        self.schedule.edited.connect(self.edited)
        self.schedule.hide()
        self.raw = JsonField(param)
        self.raw.edited.connect(self.edited)
        self.raw.hide()
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.scalar, 1)
        row.addWidget(self.raw, 1)
        row.addWidget(self.curve_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(row)
        layout.addWidget(self.schedule)
        self._value: Any = param.default

    def set_value(self, value: Any) -> None:
        self._value = value
        gradient = is_schedule(value) and all(_is_plain(v) for v in value)
        plain = _is_plain(value)
        self.scalar.setVisible(plain or gradient)
        self.scalar.setEnabled(plain)
        self.raw.setVisible(not plain and not gradient)
        self.schedule.setVisible(gradient)
        self.curve_button.blockSignals(True)
        self.curve_button.setChecked(gradient)
        self.curve_button.blockSignals(False)
        if plain:
            self.scalar.set_value(value)
        elif gradient:
            self.scalar.set_value(sum(value) / len(value))
            self.schedule.set_anchors([float(v) for v in value], self.num_layers())
        else:
            self.raw.set_value(value)

    def _on_toggle(self, on: bool) -> None:
        if on:
            start = float(self._value) if _is_plain(self._value) else float(self.param.default)
            self.edited.emit([start, start], "")
        else:
            anchors = self._value if is_schedule(self._value) and all(_is_plain(v) for v in self._value) else []
            self.edited.emit(round(sum(anchors) / len(anchors), 4) if anchors else self.param.default, "")


class IntField(Field):
    """A whole number in a spin box; a ``seed`` gets a button that draws a fresh one."""

    def __init__(self, param: Param, parent: QWidget | None = None):
        super().__init__(param, parent)
        self.spin = QSpinBox(keyboardTracking=False)
        self.spin.setRange(int(param.min) if param.min is not None else -INT32_MAX,
                           min(int(param.max), INT32_MAX) if param.max is not None else INT32_MAX)
        self.spin.valueChanged.connect(lambda v: self.edited.emit(int(v), ""))
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.spin, 1)
        if param.name == "seed":
            dice = QToolButton(toolTip="Draw a new random seed")
            dice.setIcon(theme.icon("dice"))
            dice.clicked.connect(lambda: self.spin.setValue(random.randrange(0, 1_000_000)))
            layout.addWidget(dice)

    def set_value(self, value: Any) -> None:
        self.spin.blockSignals(True)
        self.spin.setValue(int(value) if _is_plain(value) else int(self.param.default))
        self.spin.blockSignals(False)


class BoolField(Field):
    """A check box with the parameter's help beside it."""

    def __init__(self, param: Param, parent: QWidget | None = None):
        super().__init__(param, parent)
        self.box = QCheckBox()
        self.box.toggled.connect(lambda on: self.edited.emit(bool(on), ""))
        text = QLabel(param.help[:1].upper() + param.help[1:], objectName="Muted", wordWrap=True)
        text.setBuddy(self.box)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.box, 0, Qt.AlignTop)
        layout.addWidget(text, 1)

    def set_value(self, value: Any) -> None:
        self.box.blockSignals(True)
        self.box.setChecked(bool(value))
        self.box.blockSignals(False)


class ChoiceField(Field):
    def __init__(self, param: Param, parent: QWidget | None = None):
        super().__init__(param, parent)
        self.combo = QComboBox(sizeAdjustPolicy=QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.combo.addItems(list(param.choices))
        self.combo.activated.connect(lambda i: self.edited.emit(self.combo.itemText(i), ""))
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.combo, 1)

    def set_value(self, value: Any) -> None:
        i = self.combo.findText(str(value))
        if i < 0:  # a value from a hand-written recipe; validation reports it
            self.combo.addItem(str(value))
            i = self.combo.count() - 1
        self.combo.setCurrentIndex(i)


class TextField(Field):
    """Text, committed when editing finishes; with ``browse`` a button picks a path."""

    def __init__(self, param: Param, browse: Browse | None = None, parent: QWidget | None = None):
        super().__init__(param, parent)
        self.line = QLineEdit(placeholderText=str(param.default) if param.default else param.help)
        self.line.editingFinished.connect(self._commit)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.line, 1)
        if browse is not None:
            button = QToolButton(toolTip="Browse…")
            button.setIcon(theme.icon("open"))
            button.clicked.connect(lambda: self._browse(browse))
            layout.addWidget(button)
        self._value = ""

    def set_value(self, value: Any) -> None:
        self._value = "" if value is None else str(value)
        self.line.setText(self._value)

    def _commit(self) -> None:
        if self.line.text() != self._value:
            self._value = self.line.text()
            self.edited.emit(self._value, "")

    def _browse(self, browse: Browse) -> None:
        path = browse(self, self.line.text())
        if path:
            self.line.setText(path)
            self._commit()


class JsonField(Field):
    """Any JSON value (used for values the form cannot show, such as tensor-name filter schedules)."""

    def __init__(self, param: Param, parent: QWidget | None = None):
        super().__init__(param, parent)
        self.line = QLineEdit()
        self.line.setToolTip(f"{param.help}\n\nEdited as JSON, e.g. "
                             '[{"filter": "self_attn", "value": 0.3}, {"value": 0.5}]')
        self.line.editingFinished.connect(self._commit)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.line)
        self._text = ""

    def set_value(self, value: Any) -> None:
        self._text = json.dumps(value)
        self.line.setText(self._text)

    def _commit(self) -> None:
        text = self.line.text()
        if text == self._text:
            return
        try:
            value = json.loads(text)
        except ValueError:
            self.line.setText(self._text)
            return
        self._text = text
        self.edited.emit(value, "")


def make_field(param: Param, *, num_layers: Callable[[], int] = lambda: 0, browse: Browse | None = None) -> Field:
    """The editor for one scalar (not per-model) parameter."""
    if param.type == "float":
        return FloatField(param, param.layerwise, num_layers)
    if param.type == "int":
        return IntField(param)
    if param.type == "bool":
        return BoolField(param)
    if param.type == "choice":
        return ChoiceField(param)
    return TextField(param, browse)
