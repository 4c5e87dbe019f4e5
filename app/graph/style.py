"""Colours, sizes and names shared by the graph items and the view.

Kind and category colours are mid-saturation hues that read on light and dark palettes; everything
else (backgrounds, text, outlines) is taken from the widget palette.
"""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette

from engine.errors import EngineInputError
from engine.graph.node_kinds import DELTA, MODEL, RESULTS, node_kind

KIND_COLORS = {MODEL: QColor("#4c8bf5"), DELTA: QColor("#f29d38"), RESULTS: QColor("#35b585")}
KIND_NAMES = {MODEL: "model", DELTA: "task vector", RESULTS: "results"}
UNKNOWN_KIND = QColor("#8a8f98")

ERROR_COLOR = QColor("#e5484d")
REQUIREMENT_COLORS = {"data-free": QColor("#35b585"), "unlabeled data": QColor("#e0a100"),
                      "labeled data": QColor("#f07a3a"), "gradients": QColor("#e5484d")}

NODE_WIDTH = 200.0
HEADER_H = 30.0
SUBTITLE_H = 24.0
PORT_ROW_H = 24.0
TITLE_PT, TEXT_PT, BADGE_PT = 11.0, 10.0, 9.0  # node text, readable at 100 % zoom
PORT_RADIUS = 5.5
CORNER = 8.0
GRID = 20.0


def kind_color(kind: str | None) -> QColor:
    return KIND_COLORS.get(kind or "", UNKNOWN_KIND)


def kind_name(kind: str | None) -> str:
    return KIND_NAMES.get(kind or "", kind or "nothing")


def category_color(node_type: str) -> QColor:
    """The colour a node kind declares (grey for a type this build does not know)."""
    try:
        return QColor(node_kind(node_type).color)
    except EngineInputError:
        return UNKNOWN_KIND


def is_dark(palette: QPalette) -> bool:
    return palette.color(QPalette.ColorRole.Window).lightnessF() < 0.5


def mix(a: QColor, b: QColor, t: float) -> QColor:
    """``a`` blended towards ``b`` by ``t`` (0 gives a, 1 gives b)."""
    return QColor.fromRgbF(a.redF() + (b.redF() - a.redF()) * t, a.greenF() + (b.greenF() - a.greenF()) * t,
                           a.blueF() + (b.blueF() - a.blueF()) * t, 1.0)


def canvas_color(palette: QPalette) -> QColor:
    """The graph background: the window colour, nudged away from the node body colour."""
    window = palette.color(QPalette.ColorRole.Window)
    return window.darker(112) if is_dark(palette) else window.darker(104)


def node_body_color(palette: QPalette) -> QColor:
    base = palette.color(QPalette.ColorRole.Base)
    window = palette.color(QPalette.ColorRole.Window)
    return mix(base, window, 0.25) if not is_dark(palette) else window.lighter(118)


def muted_text(palette: QPalette) -> QColor:
    return mix(palette.color(QPalette.ColorRole.Text), node_body_color(palette), 0.45)
