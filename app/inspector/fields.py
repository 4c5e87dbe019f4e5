"""Editors for one declared parameter (``engine.methods.base.Param``), built from its schema.

Every field shows a value with ``set_value`` (silently) and reports user edits with
``edited(value, merge_key)``: a slider drag or curve drag carries one merge key per gesture, so the
inspector turns it into a single undo step; other edits carry ``""``.

- ``float``: a slider over the parameter's typical span plus a spin box that takes any number and refuses
  one outside the declared range visibly (red frame and a message; the typed text stays until it is
  corrected or Escape restores the last valid value); Shift with the arrow keys or a slider drag moves in
  tenth steps; layer-varying parameters get a curve button that switches to a per-layer schedule;
- ``int``: a spin box (``seed`` also gets a button that draws a new seed);
- ``bool``: a check box; ``choice``: a combo box; ``str``: a line edit (paths get a Browse button);
- a value the form cannot show (e.g. a schedule of tensor-name filters) is edited as JSON.

The mouse wheel never changes a slider, spin box or combo box that does not have the keyboard focus: it
scrolls the panel instead (``guard_wheel``).
"""

from __future__ import annotations

import json
import random
import uuid
from typing import Any, Callable

from PySide6.QtCore import QEvent, QObject, QSize, Qt, Signal
from PySide6.QtGui import QKeyEvent, QMouseEvent
from PySide6.QtWidgets import (QAbstractScrollArea, QAbstractSpinBox, QApplication, QCheckBox, QComboBox,
                               QDoubleSpinBox, QHBoxLayout, QLabel, QLineEdit, QSlider, QSpinBox, QStyle,
                               QStyleOptionSlider, QToolButton, QVBoxLayout, QWidget)

from app import theme
from app.inspector.schedule import ScheduleEditor
from engine.methods.base import Param
from engine.methods.schedule import is_schedule

SLIDER_STEPS = 1000
SLIDER_PAGE = 10  # an arrow key moves the slider 1 % of its span; with Shift 0.1 %
FINE = 10  # Shift divides a step (arrow keys, spin box steps, slider drags) by this
INT32_MAX = 2**31 - 1
UNBOUNDED = 1e15
INVALID_STYLE = "border: 2px solid #e5484d; border-radius: 3px;"
_ARROWS = {Qt.Key.Key_Right: 1, Qt.Key.Key_Up: 1, Qt.Key.Key_Left: -1, Qt.Key.Key_Down: -1}

Browse = Callable[[QWidget, str], str | None]


class _WheelGuard(QObject):
    """Hands wheel events over controls without focus to the scroll area around them."""

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
        if event.type() != QEvent.Type.Wheel or not isinstance(obj, QWidget) or obj.hasFocus():
            return False
        area = obj.parentWidget()
        while area is not None and not isinstance(area, QAbstractScrollArea):
            area = area.parentWidget()
        if area is not None:
            QApplication.sendEvent(area.viewport(), event)
        return True


_WHEEL_GUARD = _WheelGuard()


def guard_wheel(*widgets: QWidget) -> None:
    """Let the wheel change these controls only once they have focus (a click or Tab gives it)."""
    for w in widgets:
        w.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        w.installEventFilter(_WHEEL_GUARD)


def _escape_reverts(spin: QWidget, event: QEvent) -> bool:
    """Whether ``event`` is Escape offered as a shortcut while ``spin`` holds a refused value."""
    return (event.type() == QEvent.Type.ShortcutOverride and bool(spin.property("invalid"))
            and event.key() == Qt.Key.Key_Escape)


def _fine() -> bool:
    return bool(QApplication.keyboardModifiers() & Qt.KeyboardModifier.ShiftModifier)


def describe_range(param: Param) -> str:
    """"between 0 and 1", "at least 0", "any number"."""
    lo, hi = param.min, param.max
    if lo is not None and hi is not None:
        return f"between {lo:g} and {hi:g}"
    if lo is not None:
        return f"at least {lo:g}"
    return f"at most {hi:g}" if hi is not None else "any number"


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
    """The span a slider covers: the parameter's typical range (else its declared range, at most ±2),
    widened to include ``values``; the spin box takes the full declared range."""
    if param.typical is not None:
        lo, hi = param.typical
    else:
        lo = param.min if param.min is not None else min(0.0, *values)
        hi = param.max if param.max is not None else max(1.0, *values)
        lo, hi = max(lo, -2.0), min(hi, 2.0)
        if lo >= hi:
            lo, hi = param.min or 0.0, param.max or 1.0
    return min(lo, *values), max(hi, *values)


def _is_plain(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class FineSlider(QSlider):
    """A slider whose arrow keys and drags move in tenth steps while Shift is held."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(Qt.Orientation.Horizontal, parent, minimum=0, maximum=SLIDER_STEPS)
        self.setSingleStep(SLIDER_PAGE)
        self.setPageStep(SLIDER_PAGE * 10)
        self._anchor: tuple[float, int] | None = None  # (mouse x, value) where a fine drag started

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 (Qt's name)
        direction = _ARROWS.get(event.key(), 0)
        if direction and event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            self.setValue(self.value() + direction * max(1, self.singleStep() // FINE))
            event.accept()
            return
        super().keyPressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 (Qt's name)
        if not self.isSliderDown() or not event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            self._anchor = None
            super().mouseMoveEvent(event)
            return
        x = event.position().x()
        if self._anchor is None:
            self._anchor = (x, self.value())
        opt = QStyleOptionSlider()
        self.initStyleOption(opt)
        groove = self.style().subControlRect(QStyle.ComplexControl.CC_Slider, opt,
                                             QStyle.SubControl.SC_SliderGroove, self)
        per_px = SLIDER_STEPS / max(1, groove.width())
        self.setSliderPosition(round(self._anchor[1] + (x - self._anchor[0]) * per_px / FINE))
        event.accept()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802 (Qt's name)
        self._anchor = None
        super().mouseReleaseEvent(event)


class TypedSpin(QDoubleSpinBox):
    """A spin box that never clamps what the user types (its owner checks the range) and that
    reverts on Escape (``reverted``); Shift makes its steps a tenth."""

    reverted = Signal()

    def __init__(self, param: Param, parent: QWidget | None = None):
        super().__init__(parent, decimals=3, keyboardTracking=False)
        self.param = param
        reference = QDoubleSpinBox(decimals=3)  # sized for the declared range, not the unbounded one
        reference.setRange(max(param.min, -1e6) if param.min is not None else -1e6,
                           min(param.max, 1e6) if param.max is not None else 1e6)
        self._hints = reference.sizeHint(), reference.minimumSizeHint()
        reference.deleteLater()
        self.setRange(-UNBOUNDED, UNBOUNDED)
        self._shift = False

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        return self._hints[0]

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        return self._hints[1]

    def event(self, event: QEvent) -> bool:
        if _escape_reverts(self, event):  # Escape reverts here rather than cancelling a running task
            event.accept()
            return True
        return super().event(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 (Qt's name)
        if event.key() == Qt.Key.Key_Escape and self.property("invalid"):
            self.reverted.emit()
            event.accept()
            return
        self._shift = bool(event.modifiers() & Qt.KeyboardModifier.ShiftModifier)
        try:
            super().keyPressEvent(event)
        finally:
            self._shift = False

    def stepBy(self, steps: int) -> None:  # noqa: N802 (Qt's name)
        step = self.singleStep() / FINE if self._shift or _fine() else self.singleStep()
        value = round(self.value() + steps * step, self.decimals())
        lo = self.param.min if self.param.min is not None else -UNBOUNDED
        hi = self.param.max if self.param.max is not None else UNBOUNDED
        self.setValue(min(hi, max(lo, value)))

    def stepEnabled(self) -> QAbstractSpinBox.StepEnabledFlag:  # noqa: N802 (Qt's name)
        return QAbstractSpinBox.StepEnabledFlag.StepUpEnabled | QAbstractSpinBox.StepEnabledFlag.StepDownEnabled


class SliderSpin(QWidget):
    """A slider and a spin box showing one float; ``changed(value, merge_key)`` on user edits.

    A typed value outside the declared range is refused: the spin box keeps it with a red frame and
    ``error`` says why, until a valid value is typed or Escape restores the last valid one.
    """

    changed = Signal(float, str)

    def __init__(self, param: Param, parent: QWidget | None = None):
        super().__init__(parent)
        self.param = param
        self.slider = FineSlider()
        self.spin = TypedSpin(param)
        self.spin.setMinimumWidth(76)
        self.spin.setAlignment(Qt.AlignRight)
        self.error = QLabel(objectName="Problem", wordWrap=True)
        self.error.hide()
        guard_wheel(self.slider, self.spin)
        self.lo, self.hi = soft_range(param, [param.default])
        self.spin.setSingleStep(max(0.001, round((self.hi - self.lo) / 100, 3)))
        self._good = float(param.default)
        self._update_tooltips()
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.slider, 1)
        row.addWidget(self.spin)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(row)
        layout.addWidget(self.error)
        self._merge_key = ""
        self.slider.sliderPressed.connect(self._on_pressed)
        self.slider.sliderReleased.connect(self._on_released)
        self.slider.valueChanged.connect(self._on_slider)
        self.spin.valueChanged.connect(self._on_spin)
        self.spin.reverted.connect(self._revert)

    def value(self) -> float:
        return self.spin.value()

    @property
    def invalid(self) -> bool:
        return bool(self.spin.property("invalid"))

    def _revert(self) -> None:
        self._set_invalid("")
        self.set_value(self._good)

    def _update_tooltips(self) -> None:
        span = f"{self.param.help}\nAllowed: {describe_range(self.param)}."
        self.spin.setToolTip(f"{span} Type any value; Shift+arrows step by a tenth.")
        self.slider.setToolTip(f"{span} The slider covers {self.lo:g} … {self.hi:g}; type in the box for more. "
                               "Hold Shift while dragging or with the arrow keys for fine steps.")

    def _set_invalid(self, message: str) -> None:
        self.spin.setProperty("invalid", bool(message))
        self.spin.setStyleSheet(f"QDoubleSpinBox {{ {INVALID_STYLE} }}" if message else "")
        self.error.setText(message)
        self.error.setVisible(bool(message))

    def set_value(self, value: float) -> None:
        if self.invalid and float(value) == self._good:
            return  # the user's refused text stays until they correct it or press Escape
        self._good = float(value)
        self._set_invalid("")
        self.lo, self.hi = soft_range(self.param, [float(value)]) if not self._merge_key else (self.lo, self.hi)
        self._update_tooltips()
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
        self._good = v
        self._set_invalid("")
        self.spin.blockSignals(True)
        self.spin.setValue(v)
        self.spin.blockSignals(False)
        self.changed.emit(v, self._merge_key)

    def _on_spin(self, v: float) -> None:
        problem = self.param.check_scalar(v)
        if problem is not None:
            self._set_invalid(f"{self.spin.text().strip()} is refused: {self.param.name} must be "
                              f"{describe_range(self.param)}. Correct it, or press Esc for {self._good:g}.")
            return
        self._good = v
        self._set_invalid("")
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


class IntSpin(QSpinBox):
    """A whole-number spin box that takes any typed value (its owner checks the range) and reverts on
    Escape while the value is refused (``reverted``)."""

    reverted = Signal()

    def __init__(self, param: Param, parent: QWidget | None = None):
        super().__init__(parent, keyboardTracking=False)
        reference = QSpinBox()  # sized for the declared range, not the unbounded one
        reference.setRange(int(max(param.min, -INT32_MAX)) if param.min is not None else -INT32_MAX,
                           int(min(param.max, INT32_MAX)) if param.max is not None else INT32_MAX)
        self._hints = reference.sizeHint(), reference.minimumSizeHint()
        reference.deleteLater()
        self.setRange(-INT32_MAX, INT32_MAX)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        return self._hints[0]

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        return self._hints[1]

    def event(self, event: QEvent) -> bool:
        if _escape_reverts(self, event):  # Escape reverts here rather than cancelling a running task
            event.accept()
            return True
        return super().event(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 (Qt's name)
        if event.key() == Qt.Key.Key_Escape and self.property("invalid"):
            self.reverted.emit()
            event.accept()
            return
        super().keyPressEvent(event)


class IntField(Field):
    """A whole number in a spin box (out-of-range values are refused visibly, like ``SliderSpin``);
    a ``seed`` gets a button that draws a fresh one."""

    def __init__(self, param: Param, parent: QWidget | None = None):
        super().__init__(param, parent)
        self.spin = IntSpin(param)
        self.spin.setToolTip(f"{param.help}\nAllowed: {describe_range(param)}.")
        guard_wheel(self.spin)
        self.error = QLabel(objectName="Problem", wordWrap=True)
        self.error.hide()
        self._good = int(param.default)
        self.spin.valueChanged.connect(self._on_spin)
        self.spin.reverted.connect(self._revert)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.spin, 1)
        if param.name == "seed":
            dice = QToolButton(toolTip="Draw a new random seed")
            dice.setIcon(theme.icon("dice"))
            dice.clicked.connect(lambda: self.spin.setValue(random.randrange(0, 1_000_000)))
            row.addWidget(dice)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(row)
        layout.addWidget(self.error)

    def _set_invalid(self, message: str) -> None:
        self.spin.setProperty("invalid", bool(message))
        self.spin.setStyleSheet(f"QSpinBox {{ {INVALID_STYLE} }}" if message else "")
        self.error.setText(message)
        self.error.setVisible(bool(message))

    def _revert(self) -> None:
        self._set_invalid("")
        self.set_value(self._good)

    def _on_spin(self, v: int) -> None:
        if self.param.check_scalar(v) is not None:
            self._set_invalid(f"{v} is refused: {self.param.name} must be {describe_range(self.param)}. "
                              f"Correct it, or press Esc for {self._good}.")
            return
        self._good = int(v)
        self._set_invalid("")
        self.edited.emit(int(v), "")

    def set_value(self, value: Any) -> None:
        good = int(value) if _is_plain(value) else int(self.param.default)
        if self.spin.property("invalid") and good == self._good:
            return
        self._good = good
        self._set_invalid("")
        self.spin.blockSignals(True)
        self.spin.setValue(good)
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
        guard_wheel(self.combo)
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
