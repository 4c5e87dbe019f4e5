"""The results plots: per-task bars, a normalized-accuracy radar, sweep curves/heatmaps, a Pareto view.

Each plot takes plain data (``Series`` per compared run, a ``SweepResult``) and keeps its artists in
public attributes (``bars``, ``lines``, ``image``, ``points``…) so tests can read what is drawn. The
live series is updated in place (bar heights, line data) rather than rebuilt, which keeps a redraw
during a slider drag to a few milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.ticker import FuncFormatter

from app.plotting import PERCENT, PlotCanvas, palette, style_axes, style_legend, task_colors
from engine.live import SweepResult


@dataclass
class Series:
    """One run as a plot draws it: ``values[task]`` (0–1) and optional standard errors."""

    label: str
    values: dict[str, float | None]
    color: str
    errors: dict[str, float | None] = field(default_factory=dict)
    live: bool = False


def _nan(v: float | None) -> float:
    return float("nan") if v is None else float(v)


class TaskBarsPlot(PlotCanvas):
    """Grouped bars: one group per task, one bar per run; the experts and the base as reference marks."""

    def __init__(self, parent=None):
        self.tasks: list[str] = []
        self.series: list[Series] = []
        self.refs: dict[str, dict[str, float]] = {}
        self.metric_label = "accuracy"
        self.bars: dict[str, object] = {}
        self.error_lines: dict[str, LineCollection] = {}
        self.reference_lines: dict[str, LineCollection] = {}
        super().__init__(parent)

    def set_data(self, tasks: list[str], series: list[Series], references: dict[str, dict[str, float]] | None = None,
                 metric_label: str = "accuracy") -> None:
        self.tasks, self.series, self.refs = list(tasks), list(series), dict(references or {})
        self.metric_label = metric_label
        self.request_redraw()

    def _geometry(self) -> tuple[np.ndarray, float]:
        n = max(1, len(self.series))
        width = min(0.8 / n, 0.28)
        return np.arange(len(self.tasks)), width

    def redraw(self) -> None:
        self.bars, self.error_lines, self.reference_lines = {}, {}, {}
        if not self.tasks or not self.series:
            self.empty("No results yet — tune a merge node connected to an Evaluate node,\n"
                       "or run the graph.")
            return
        self.figure.clear()
        c = palette()
        ax = self.figure.add_subplot()
        style_axes(ax)
        x, width = self._geometry()
        offsets = (np.arange(len(self.series)) - (len(self.series) - 1) / 2) * width
        for s, off in zip(self.series, offsets):
            heights = [_nan(s.values.get(t)) for t in self.tasks]
            self.bars[s.label] = ax.bar(x + off, heights, width * 0.92, color=s.color, label=s.label,
                                        alpha=0.95 if not s.live else 1.0, edgecolor=c["text"] if s.live else "none",
                                        linewidth=0.8 if s.live else 0, zorder=2)
            errs = [_nan(s.errors.get(t)) for t in self.tasks]
            if any(np.isfinite(errs)):
                segs = [[(xi + off, h - e), (xi + off, h + e)] for xi, h, e in zip(x, heights, errs)]
                self.error_lines[s.label] = ax.add_collection(LineCollection(segs, colors=c["text"], linewidths=1.0,
                                                                             zorder=3))
        half = width * len(self.series) / 2 + 0.04
        styles = {"experts": (c["text"], "-", "expert"), "base": (c["muted"], (0, (2, 2)), "base")}
        for role, (color, ls, label) in styles.items():
            per = self.refs.get(role, {})
            segs = [[(xi - half, per[t]), (xi + half, per[t])] for xi, t in zip(x, self.tasks)
                    if per.get(t) is not None]
            if segs:
                self.reference_lines[role] = ax.add_collection(LineCollection(
                    segs, colors=color, linestyles=ls, linewidths=1.6, zorder=4, label=label))
        crowded = len(self.tasks) > 8
        ax.set_xticks(x, self.tasks, rotation=30 if crowded else 0, ha="right" if crowded else "center")
        ax.set_xlim(-0.6, len(self.tasks) - 0.4)
        ax.set_ylim(0, 1.04)
        ax.yaxis.set_major_formatter(PERCENT)
        ax.set_ylabel(self.metric_label)
        style_legend(ax.legend(loc="lower left", bbox_to_anchor=(0, 1.01), ncol=min(6, len(self.series) + 2),
                               frameon=False, fontsize=8.5, handlelength=1.4, columnspacing=1.2, borderaxespad=0))
        self.draw_idle()

    def update_live(self, label: str, values: dict[str, float | None], errors: dict[str, float | None]) -> bool:
        """Move the bars of series ``label`` in place; False when a full ``set_data`` is needed instead."""
        bars = self.bars.get(label)
        if bars is None or self.stale_data:
            return False
        x, width = self._geometry()
        heights = [_nan(values.get(t)) for t in self.tasks]
        for rect, h in zip(bars, heights):
            rect.set_height(h)
        for s in self.series:
            if s.label == label:
                s.values, s.errors = dict(values), dict(errors)
        lines = self.error_lines.get(label)
        if lines is not None:
            xs = [rect.get_x() + rect.get_width() / 2 for rect in bars]
            errs = [_nan(errors.get(t)) for t in self.tasks]
            lines.set_segments([[(xi, h - e), (xi, h + e)] for xi, h, e in zip(xs, heights, errs)])
        self.draw_idle()
        return True

    def heights(self, label: str) -> list[float]:
        """The drawn bar heights of a series (for tests and exports)."""
        return [rect.get_height() for rect in self.bars.get(label, [])]


class RadarPlot(PlotCanvas):
    """Normalized accuracy (merged / expert) per task on a radar; the experts are the unit circle."""

    def __init__(self, parent=None):
        self.tasks: list[str] = []
        self.series: list[Series] = []
        self.lines: dict[str, object] = {}
        super().__init__(parent, width=4.2, height=3.4)

    def set_data(self, tasks: list[str], series: list[Series]) -> None:
        self.tasks, self.series = list(tasks), list(series)
        self.request_redraw()

    def _angles(self) -> np.ndarray:
        return np.linspace(0, 2 * np.pi, len(self.tasks), endpoint=False)

    def _closed(self, values: dict[str, float | None]) -> tuple[np.ndarray, np.ndarray]:
        a = self._angles()
        r = np.array([_nan(values.get(t)) for t in self.tasks])
        return np.append(a, a[0]), np.append(r, r[0])

    def redraw(self) -> None:
        self.lines = {}
        if len(self.tasks) < 3 or not self.series:
            self.empty("The radar needs results on three or more tasks\nwith their experts.")
            return
        self.figure.clear()
        c = palette()
        ax = self.figure.add_subplot(projection="polar")
        ax.set_facecolor(c["base"])
        ax.set_theta_offset(np.pi / 2)
        ax.set_theta_direction(-1)
        ax.set_xticks(self._angles(), self.tasks, color=c["text"], fontsize=8.5)
        peak = max([1.05] + [v for s in self.series for v in s.values.values() if v is not None and np.isfinite(v)])
        ax.set_ylim(0, min(peak * 1.05, 1.5))
        ax.set_yticks([0.25, 0.5, 0.75, 1.0])
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:.0%}"))
        ax.tick_params(axis="y", labelcolor=c["muted"], labelsize=7.5)
        ax.grid(color=c["grid"], linewidth=0.8)
        ax.spines["polar"].set_color(c["border"])
        a = np.linspace(0, 2 * np.pi, 200)
        ax.plot(a, np.ones_like(a), color=c["text"], linewidth=1.2, linestyle=(0, (4, 3)), label="experts")
        for s in self.series:
            xs, ys = self._closed(s.values)
            (line,) = ax.plot(xs, ys, color=s.color, linewidth=2.0 if s.live else 1.5, label=s.label,
                              linestyle="--" if s.label == "base" else "-")
            if s.label != "base":
                ax.fill(xs, ys, color=s.color, alpha=0.12)
            self.lines[s.label] = line
        style_legend(ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=8))
        self.draw_idle()

    def update_live(self, label: str, values: dict[str, float | None]) -> bool:
        line = self.lines.get(label)
        if line is None or self.stale_data:
            return False
        line.set_data(*self._closed(values))
        self.draw_idle()
        return True


class SweepPlot(PlotCanvas):
    """A sweep: per-task curves over one parameter, or a heatmap over two (one task or the average)."""

    def __init__(self, parent=None):
        self.result: SweepResult | None = None
        self.metric_name = "accuracy"
        self.task = "average"
        self.lines: dict[str, object] = {}
        self.image = None
        super().__init__(parent)

    def set_data(self, result: SweepResult | None, metric: str = "accuracy", task: str = "average") -> None:
        self.result, self.metric_name, self.task = result, metric, task
        self.request_redraw()

    def grid(self) -> np.ndarray:
        """The values drawn as the heatmap (2-D) for the chosen task or the average."""
        r = self.result
        return r.average[self.metric_name] if self.task == "average" else r.grids[self.metric_name][self.task]

    def redraw(self) -> None:
        self.lines, self.image = {}, None
        if self.result is None:
            self.empty("No sweep yet — choose “Sweep…” (or “Sweep this parameter”\n"
                       "in the Inspector) to run one.")
            return
        self.figure.clear()
        ax = self.figure.add_subplot()
        if len(self.result.axes) == 1:
            self._curves(ax)
        else:
            self._heatmap(ax)
        self.draw_idle()

    def _curves(self, ax) -> None:
        c = palette()
        style_axes(ax, grid_axis="both")
        r = self.result
        axis = r.axes[0]
        xs = np.array(axis.values)
        colors = task_colors(r.tasks)
        for t in r.tasks:
            (self.lines[t],) = ax.plot(xs, r.grids[self.metric_name][t], color=colors[t], linewidth=1.4, marker="o",
                                       markersize=2.8, label=t)
        if self.metric_name in r.average:
            (self.lines["average"],) = ax.plot(xs, r.average[self.metric_name], color=c["text"], linewidth=2.6,
                                               label="average")
            average = r.average[self.metric_name]
            if np.isfinite(average).any():
                best = int(np.nanargmax(average))
                ax.axvline(xs[best], color=c["accent"], linewidth=1.0, linestyle=(0, (3, 3)))
                ax.annotate(f"best {axis.path} = {xs[best]:g}", (xs[best], 1.0), xycoords=("data", "axes fraction"),
                            xytext=(4, -12), textcoords="offset points", color=c["accent"], fontsize=8)
        ax.set_xlabel(axis.path)
        ax.set_ylabel(self.metric_name.replace("_", " "))
        ax.yaxis.set_major_formatter(PERCENT)
        style_legend(ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8))

    def _heatmap(self, ax) -> None:
        c = palette()
        style_axes(ax, grid_axis=None)
        r = self.result
        ya, xa = r.axes
        data = self.grid()
        self.image = ax.imshow(data, origin="lower", aspect="auto", cmap="viridis",
                               extent=(-0.5, len(xa.values) - 0.5, -0.5, len(ya.values) - 0.5))
        step = lambda n: max(1, n // 8)  # noqa: E731
        ax.set_xticks(range(0, len(xa.values), step(len(xa.values))),
                      [f"{v:g}" for v in xa.values[::step(len(xa.values))]])
        ax.set_yticks(range(0, len(ya.values), step(len(ya.values))),
                      [f"{v:g}" for v in ya.values[::step(len(ya.values))]])
        ax.set_xlabel(xa.path)
        ax.set_ylabel(ya.path)
        if np.isfinite(data).any():
            i, j = np.unravel_index(int(np.nanargmax(data)), data.shape)
            ax.plot([j], [i], marker="*", markersize=13, color="white", markeredgecolor="black")
            scope = "" if r.full else " (quick subset)"
            ax.set_title(f"{self.task} {self.metric_name.replace('_', ' ')}{scope} · best {data[i, j]:.1%} at "
                         f"{ya.path}={ya.values[i]:g}, {xa.path}={xa.values[j]:g}", fontsize=9, color=c["text"])
        bar = self.figure.colorbar(self.image, ax=ax, format=PERCENT, fraction=0.05, pad=0.02)
        bar.ax.tick_params(colors=c["muted"], labelsize=8)
        bar.outline.set_edgecolor(c["border"])


class ParetoPlot(PlotCanvas):
    """Accuracy on task X against task Y for every run (and sweep point); the non-dominated front joined."""

    def __init__(self, parent=None):
        self.task_x = self.task_y = ""
        self.points: list[Series] = []
        self.trail: list[tuple[float, float]] = []
        self.refs: dict[str, dict[str, float]] = {}
        self.trail_is_path = True
        self.scatter = None
        self.front_line = None
        super().__init__(parent, width=4.6, height=3.4)

    def set_data(self, task_x: str, task_y: str, points: list[Series],
                 references: dict[str, dict[str, float]] | None = None, trail: list[tuple[float, float]] | None = None,
                 trail_is_path: bool = True) -> None:
        """``trail``: sweep points, joined in order when ``trail_is_path`` (a 1-D sweep), else scattered."""
        self.task_x, self.task_y, self.points, self.trail_is_path = task_x, task_y, list(points), trail_is_path
        self.refs, self.trail = dict(references or {}), list(trail or [])
        self.request_redraw()

    def _run_points(self) -> list[tuple[float, float]]:
        xy = [(s.values.get(self.task_x), s.values.get(self.task_y)) for s in self.points]
        return [(float(x), float(y)) for x, y in xy if x is not None and y is not None]

    def front(self) -> list[tuple[float, float]]:
        """The non-dominated (x, y) points among runs and sweep points, by increasing x."""
        return pareto_front(self._run_points() + list(self.trail))

    def redraw(self) -> None:
        self.scatter = self.front_line = None
        if not self.task_x or not self.task_y or not (self.points or self.trail):
            self.empty("Pick two tasks to see their trade-off across runs and sweeps.")
            return
        self.figure.clear()
        c = palette()
        ax = self.figure.add_subplot()
        style_axes(ax, grid_axis="both")
        if self.trail:
            tx, ty = zip(*self.trail)
            ax.plot(tx, ty, color=c["muted"], linewidth=1.0 if self.trail_is_path else 0, marker="o",
                    markersize=2.5 if self.trail_is_path else 3.2, alpha=0.8, label="sweep points")
        front = self.front()
        if len(front) > 1:
            fx, fy = zip(*front)
            (self.front_line,) = ax.plot(fx, fy, color=c["accent"], linewidth=1.6, drawstyle="steps-post",
                                         label="Pareto front", zorder=3)
        xy = [(s.values.get(self.task_x), s.values.get(self.task_y)) for s in self.points]
        keep = [(s, p) for s, p in zip(self.points, xy) if None not in p]
        if keep:
            self.scatter = ax.scatter([p[0] for _, p in keep], [p[1] for _, p in keep], s=42,
                                      c=[s.color for s, _ in keep], edgecolors=c["text"], linewidths=0.6, zorder=4)
            on_front = set(pareto_front(self._run_points()))
            for s, (x, y) in keep:  # name the runs no other run beats; the others are in the history
                if (float(x), float(y)) in on_front:
                    ax.annotate(s.label, (x, y), xytext=(5, 4), textcoords="offset points", fontsize=7.5,
                                color=c["text"])
        ex, ey = (self.refs.get("experts", {}).get(self.task_x), self.refs.get("experts", {}).get(self.task_y))
        if ex is not None:
            ax.axvline(ex, color=c["text"], linewidth=1.0, linestyle=(0, (4, 3)), label="expert")
        if ey is not None:
            ax.axhline(ey, color=c["text"], linewidth=1.0, linestyle=(0, (4, 3)))
        bx, by = (self.refs.get("base", {}).get(self.task_x), self.refs.get("base", {}).get(self.task_y))
        if bx is not None and by is not None:
            ax.scatter([bx], [by], marker="D", s=36, color=c["muted"], label="base", zorder=4)
        ax.set_xlabel(f"{self.task_x} accuracy")
        ax.set_ylabel(f"{self.task_y} accuracy")
        ax.xaxis.set_major_formatter(PERCENT)
        ax.yaxis.set_major_formatter(PERCENT)
        style_legend(ax.legend(loc="best", fontsize=8, frameon=True))
        self.draw_idle()


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both coordinates (higher is better), by increasing x."""
    out, best_y = [], -np.inf
    for x, y in sorted(set(points), key=lambda p: (-p[0], -p[1])):
        if y > best_y:
            out.append((x, y))
            best_y = y
    return sorted(out)
