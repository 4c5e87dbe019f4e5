"""Light and dark themes: the Fusion style, a palette, the style sheet template and recolourable icons.

Icons are the SVGs in ``resources/icons`` (drawn with ``currentColor``); ``icon(name, role)`` renders
one through an icon engine that paints in the current theme's colour for ``role`` at any size and
device-pixel ratio, so a theme switch recolours every icon on the next repaint.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from string import Template

from PySide6.QtCore import QByteArray, QRect, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QIcon, QIconEngine, QPainter, QPalette, QPixmap
from PySide6.QtSvg import QSvgRenderer
from PySide6.QtWidgets import QApplication

RESOURCES = Path(__file__).resolve().parent.parent / "resources"
ICONS = RESOURCES / "icons"

PALETTES: dict[str, dict[str, str]] = {
    "dark": {
        "window": "#1b1e23", "panel": "#21252b", "base": "#181b20", "alt_base": "#1d2025", "raised": "#2a2f37",
        "hover": "#2c323b", "pressed": "#343b46", "border": "#323843", "scroll": "#3b424e", "text": "#dde2ea",
        "muted": "#8a93a3", "accent": "#5b8cff", "accent_text": "#ffffff", "selection": "#2b4272",
        "ok": "#46c079", "warn": "#e6a83e", "err": "#f0595c", "banner": "#2e2a20", "icon": "#c3c9d4",
        "disabled": "#59606c", "grid": "#2a2f37",
    },
    "light": {
        "window": "#eef0f4", "panel": "#f9fafb", "base": "#ffffff", "alt_base": "#f5f6f8", "raised": "#ffffff",
        "hover": "#e6e9ef", "pressed": "#dde1e8", "border": "#d5d9e1", "scroll": "#c6cbd4", "text": "#1d2129",
        "muted": "#626a78", "accent": "#2f6bf0", "accent_text": "#ffffff", "selection": "#cfdcfb",
        "ok": "#1e9a52", "warn": "#b7770c", "err": "#d3393c", "banner": "#fff6e0", "icon": "#3b4250",
        "disabled": "#aeb4be", "grid": "#e6e8ed",
    },
}

_current = "dark"


def current_theme() -> str:
    return _current


def color(role: str) -> QColor:
    """A named colour of the current theme (``text``, ``muted``, ``accent``, ``ok``, ``warn``, …)."""
    return QColor(PALETTES[_current][role])


def _palette(name: str) -> QPalette:
    c = {k: QColor(v) for k, v in PALETTES[name].items()}
    pal = QPalette()
    roles = {
        QPalette.Window: c["window"], QPalette.WindowText: c["text"], QPalette.Base: c["base"],
        QPalette.AlternateBase: c["alt_base"], QPalette.Text: c["text"], QPalette.Button: c["raised"],
        QPalette.ButtonText: c["text"], QPalette.Highlight: c["accent"], QPalette.HighlightedText: c["accent_text"],
        QPalette.ToolTipBase: c["raised"], QPalette.ToolTipText: c["text"], QPalette.PlaceholderText: c["muted"],
        QPalette.Link: c["accent"], QPalette.Light: c["hover"], QPalette.Midlight: c["border"],
        QPalette.Mid: c["border"], QPalette.Dark: c["window"], QPalette.Shadow: QColor(0, 0, 0, 90),
    }
    for role, col in roles.items():
        pal.setColor(role, col)
    for role in (QPalette.WindowText, QPalette.Text, QPalette.ButtonText):
        pal.setColor(QPalette.Disabled, role, c["disabled"])
    return pal


def apply_theme(app: QApplication, name: str) -> None:
    """Switch the whole application to the ``dark`` or ``light`` theme."""
    global _current
    if name not in PALETTES:
        raise ValueError(f"unknown theme '{name}'")
    _current = name
    app.setStyle("Fusion")
    app.setPalette(_palette(name))
    qss = Template((RESOURCES / "style.qss").read_text(encoding="utf-8"))
    app.setStyleSheet(qss.substitute(PALETTES[name], icons=ICONS.as_posix()))


@lru_cache(maxsize=None)
def _svg(name: str) -> str:
    return (ICONS / f"{name}.svg").read_text(encoding="utf-8")


class _SvgIconEngine(QIconEngine):
    """Paints one SVG icon in the current theme's colour for its role, sharp at every scale."""

    def __init__(self, name: str, role: str):
        super().__init__()
        self._name = name
        self._role = role

    def _renderer(self, mode: QIcon.Mode) -> QSvgRenderer:
        role = "disabled" if mode == QIcon.Disabled else self._role
        return _renderer(self._name, PALETTES[_current].get(role, role))

    def paint(self, painter: QPainter, rect: QRect, mode: QIcon.Mode, state: QIcon.State) -> None:
        self._renderer(mode).render(painter, QRectF(rect))

    def pixmap(self, size: QSize, mode: QIcon.Mode, state: QIcon.State) -> QPixmap:
        return self.scaledPixmap(size, mode, state, 1.0)

    def scaledPixmap(self, size: QSize, mode: QIcon.Mode, state: QIcon.State, scale: float) -> QPixmap:
        pm = QPixmap(size * scale)
        pm.fill(Qt.transparent)
        painter = QPainter(pm)
        self._renderer(mode).render(painter, QRectF(pm.rect()))
        painter.end()
        pm.setDevicePixelRatio(scale)
        return pm

    def clone(self) -> "QIconEngine":
        return _SvgIconEngine(self._name, self._role)

    def key(self) -> str:
        return "weightsmith-svg"


@lru_cache(maxsize=512)
def _renderer(name: str, hex_color: str) -> QSvgRenderer:
    return QSvgRenderer(QByteArray(_svg(name).replace("currentColor", hex_color).encode()))


def icon(name: str, role: str = "icon") -> QIcon:
    """The icon ``resources/icons/<name>.svg`` drawn in the theme colour ``role`` (or a ``#rrggbb``)."""
    if not (ICONS / f"{name}.svg").is_file():
        raise FileNotFoundError(f"no icon '{name}' in {ICONS}")
    return QIcon(_SvgIconEngine(name, role))


def app_icon() -> QIcon:
    """The application's icon (its own colours), the same drawing as the desktop entry's and installers'."""
    return QIcon(str(ICONS / "app" / "weightsmith.svg"))
