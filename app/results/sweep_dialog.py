"""The "Sweep…" dialog: one or two parameters of the live merge node, their ranges and steps."""

from __future__ import annotations

import statistics
from collections import deque
from typing import Any, Mapping, Sequence

from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QGridLayout, QLabel,
                               QSpinBox, QVBoxLayout, QWidget)

from app.formatting import format_duration
from engine.graph.param_path import ParamPath, tunable_paths
from engine.live import Axis, linspace
from engine.methods import MethodSpec


def default_range(spec: MethodSpec, path: str, current: Any) -> tuple[float, float, int]:
    """A useful first range for a parameter: fractions over 0…1, coefficients from 0 to twice the value."""
    p = spec.param(ParamPath.parse(path).param)
    lo = p.min if p.min is not None else 0.0
    hi = p.max if p.max is not None else 1.0
    if p.name == "seed" or p.type == "int":
        return float(max(lo, 0)), float(min(hi, 9)), 10
    if lo >= 0 and hi <= 1:
        return float(max(lo, 0.05 if p.name == "density" else lo)), float(hi), 11
    value = float(current) if isinstance(current, (int, float)) else 1.0
    return 0.0, float(min(hi, max(1.0, 2 * abs(value)))), 11


class PointTimings:
    """What one sweep point costs, measured on live tuning's own frames: the recent weight updates'
    median plus the recent scoring's median, for the quick subset and for the full split."""

    def __init__(self, keep: int = 8):
        self.updates: deque[float] = deque(maxlen=keep)
        self.scoring: dict[bool, deque[float]] = {True: deque(maxlen=keep), False: deque(maxlen=keep)}

    def add(self, update_s: float | None, scoring_s: float, full: bool) -> None:
        """One frame's weight update (None: the frame reused the weights) and scoring times."""
        if update_s is not None:
            self.updates.append(update_s)
        self.scoring[full].append(scoring_s)

    def seconds_per_point(self) -> dict[bool, float]:
        """``full`` → the estimated seconds of one point (only for what has been measured)."""
        update = statistics.median(self.updates) if self.updates else 0.0
        return {full: update + statistics.median(times) for full, times in self.scoring.items() if times}


class _AxisRow:
    def __init__(self, grid: QGridLayout, row: int, paths: Sequence[str], on_change):
        self.path = QComboBox()
        self.path.addItems(list(paths))
        self.lo, self.hi = QDoubleSpinBox(decimals=3, minimum=-1e6, maximum=1e6, singleStep=0.1), \
            QDoubleSpinBox(decimals=3, minimum=-1e6, maximum=1e6, singleStep=0.1)
        self.steps = QSpinBox(minimum=2, maximum=101, value=11)
        for i, w in enumerate((self.path, QLabel("from"), self.lo, QLabel("to"), self.hi, QLabel("steps"), self.steps)):
            grid.addWidget(w, row, i + 1)
        for w in (self.lo, self.hi):
            w.valueChanged.connect(on_change)
        self.steps.valueChanged.connect(on_change)

    def widgets(self) -> list[QWidget]:
        return [self.path, self.lo, self.hi, self.steps]

    def axis(self) -> Axis:
        return Axis(self.path.currentText(), linspace(self.lo.value(), self.hi.value(), self.steps.value()))


class SweepDialog(QDialog):
    """Choose what to sweep; ``axes()`` and ``full()`` read the choice after ``exec()``.

    ``seconds_per_point`` maps ``full`` (True: the whole split, False: the quick subset) to the measured
    seconds one point takes (weight update and scoring); without a measurement no time is promised.
    """

    def __init__(self, spec: MethodSpec, keys: Sequence[str], params: dict[str, Any], *, first: str | None = None,
                 seconds_per_point: Mapping[bool, float] | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle(f"Sweep — {spec.label}")
        self.spec, self.keys, self.params = spec, list(keys), params
        self.seconds_per_point = dict(seconds_per_point or {})
        paths = [p.local for p in tunable_paths(spec.params, keys)]
        grid = QGridLayout()
        grid.setHorizontalSpacing(6)
        grid.addWidget(QLabel("Parameter"), 0, 0)
        self.first = _AxisRow(grid, 0, paths, self._estimate)
        self.use_second = QCheckBox("and")
        grid.addWidget(self.use_second, 1, 0)
        self.second = _AxisRow(grid, 1, paths, self._estimate)
        self.full_box = QCheckBox("Score the full split at every point (exact; the quick subset is faster)",
                                  checked=True)
        self.estimate = QLabel(objectName="Muted")
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.button(QDialogButtonBox.Ok).setText("Run sweep")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(grid)
        layout.addWidget(self.full_box)
        layout.addWidget(self.estimate)
        layout.addWidget(buttons)
        self.first.path.currentTextChanged.connect(lambda p: self._defaults(self.first, p))
        self.second.path.currentTextChanged.connect(lambda p: self._defaults(self.second, p))
        self.use_second.toggled.connect(self._toggle_second)
        self.full_box.toggled.connect(self._estimate)
        if first and first in paths:
            self.first.path.setCurrentText(first)
        self._defaults(self.first, self.first.path.currentText())
        if len(paths) > 1:
            self.second.path.setCurrentIndex(1 if self.first.path.currentIndex() != 1 else 0)
        self._defaults(self.second, self.second.path.currentText())
        self._toggle_second(False)

    def _defaults(self, row: _AxisRow, path: str) -> None:
        if not path:
            return
        lo, hi, steps = default_range(self.spec, path, ParamPath.parse(path).get(self.spec.params, self.params, self.keys))
        row.lo.setValue(lo)
        row.hi.setValue(hi)
        row.steps.setValue(steps)
        self._estimate()

    def _toggle_second(self, on: bool) -> None:
        for w in self.second.widgets():
            w.setEnabled(on)
        self._estimate()

    def _estimate(self) -> None:
        points = self.first.steps.value() * (self.second.steps.value() if self.use_second.isChecked() else 1)
        per = self.seconds_per_point.get(self.full_box.isChecked())
        if per is None:
            self.estimate.setText(f"{points} points · the time per point is not measured yet; the Tasks panel "
                                  "shows the remaining time once the first points are done")
        else:
            self.estimate.setText(f"{points} points · about {format_duration(points * per)} "
                                  f"(measured: {per:.2f} s per point, weight update and scoring)")

    def axes(self) -> list[Axis]:
        out = [self.first.axis()]
        if self.use_second.isChecked() and self.second.path.currentText() != self.first.path.currentText():
            out.append(self.second.axis())
        return out

    def full(self) -> bool:
        return self.full_box.isChecked()
