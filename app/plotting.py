"""Plotting shared by every plot of the app: Matplotlib on the QtAgg backend, in the app's theme.

``PlotCanvas`` is a figure canvas widget whose colours follow ``app.theme`` (it restyles on
``restyle()``, which the panels call after a theme switch) and whose ``export(path)`` writes PNG or SVG
at print resolution. ``series_color`` and ``task_colors`` are the palettes every plot shares, so a
task or a run has the same colour in the bars, the radar and the sweep curves; ``style_axes``,
``style_legend`` and the ``PERCENT`` axis formatter dress axes alike. The results plots
(``app.results``) and the analysis plots (``app.analysis``) both build on this module and never on
each other.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("QtAgg")

from matplotlib.axes import Axes  # noqa: E402
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import PercentFormatter  # noqa: E402
from PySide6.QtWidgets import QSizePolicy, QWidget  # noqa: E402

from app import theme  # noqa: E402

# qualitative palettes readable on both the dark and the light background
TASK_COLORS = ("#4e9af1", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7",
               "#9c755f", "#bab0ac")
SERIES_COLORS = ("#5b8cff", "#f2a541", "#3fbf8f", "#e8657a", "#a98bf0", "#4cc3d9", "#d4b84a", "#c77dba")
PERCENT = PercentFormatter(xmax=1.0, decimals=0)  # 0–1 values as whole percents on an axis


def task_colors(tasks: list[str]) -> dict[str, str]:
    """Each task's colour, by its place in ``tasks``."""
    return {t: TASK_COLORS[i % len(TASK_COLORS)] for i, t in enumerate(tasks)}


def series_color(i: int) -> str:
    """The colour of the ``i``-th compared run."""
    return SERIES_COLORS[i % len(SERIES_COLORS)]


def palette() -> dict[str, str]:
    """The current theme's named colours as hex strings."""
    return theme.PALETTES[theme.current_theme()]


def style_axes(ax: Axes, *, grid_axis: str | None = "y") -> None:
    """Theme colours, light grid, no top/right spines."""
    c = palette()
    ax.set_facecolor(c["base"])
    for side, spine in ax.spines.items():
        spine.set_visible(side in ("left", "bottom"))
        spine.set_color(c["border"])
    ax.tick_params(colors=c["muted"], labelcolor=c["muted"], labelsize=8.5, length=3)
    ax.xaxis.label.set_color(c["text"])
    ax.yaxis.label.set_color(c["text"])
    ax.title.set_color(c["text"])
    if grid_axis:
        ax.grid(True, axis=grid_axis, color=c["grid"], linewidth=0.8)
        ax.set_axisbelow(True)


def style_legend(legend) -> None:
    """Theme colours for a legend's frame and text (None: nothing to do)."""
    if legend is None:
        return
    c = palette()
    frame = legend.get_frame()
    frame.set_facecolor(c["raised"])
    frame.set_edgecolor(c["border"])
    for text in legend.get_texts():
        text.set_color(c["text"])


class PlotCanvas(FigureCanvasQTAgg):
    """A themed figure widget. Subclasses draw in ``redraw()`` and keep their data to redraw on restyle."""

    def __init__(self, parent: QWidget | None = None, *, width: float = 6.0, height: float = 3.4):
        self.figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
        self.stale_data = False
        super().__init__(self.figure)
        self.setParent(parent)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.setMinimumSize(260, 200)
        self.restyle()

    def restyle(self) -> None:
        """Apply the current theme and redraw (when shown)."""
        c = palette()
        self.figure.set_facecolor(c["panel"])
        self.request_redraw()

    def request_redraw(self) -> None:
        """Redraw now if the canvas is visible, else when it is next shown (hidden tabs cost nothing)."""
        if self.isVisible():
            self.stale_data = False
            self.redraw()
        else:
            self.stale_data = True

    def ensure_drawn(self) -> None:
        """Build the figure from the current data if a redraw is pending (e.g. before exporting)."""
        if self.stale_data:
            self.stale_data = False
            self.redraw()

    def showEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().showEvent(event)
        self.ensure_drawn()

    def redraw(self) -> None:
        """Rebuild the figure from the canvas's data (subclasses)."""
        self.draw_idle()

    def draw_idle(self) -> None:
        """Draw at the next idle moment; a hidden canvas draws nothing and is rebuilt when next shown."""
        if not self.isVisible():
            self.stale_data = True
            return
        self._draw_wanted = True
        super().draw_idle()

    def draw(self) -> None:
        self._draw_wanted = False
        super().draw()

    def flush(self) -> None:
        """Draw now if a draw is pending, so the widget shows the current figure when this returns."""
        if getattr(self, "_draw_wanted", False):
            self.draw()

    def empty(self, message: str) -> Axes:
        """Clear the figure and show ``message`` in its middle; returns the (hidden) axes."""
        self.figure.clear()
        ax = self.figure.add_subplot()
        ax.set_axis_off()
        ax.text(0.5, 0.5, message, ha="center", va="center", color=palette()["muted"], fontsize=10,
                transform=ax.transAxes, wrap=True)
        self.draw_idle()
        return ax

    def export(self, path: str | Path) -> Path:
        """Save the figure as PNG (200 dpi) or SVG, by the file's suffix."""
        path = Path(path)
        fmt = path.suffix.lower().lstrip(".") or "png"
        if fmt not in ("png", "svg"):
            raise ValueError(f"export as PNG or SVG, not '{fmt}'")
        self.ensure_drawn()
        self.figure.savefig(path, format=fmt, dpi=200, facecolor=self.figure.get_facecolor())
        return path
