"""The results plots: per-task bars, a normalized-score radar, sweep curves/heatmaps, a Pareto view.

Each plot takes plain data (``Series`` per compared run, a ``SweepResult``) and keeps its artists in
public attributes (``bars``, ``lines``, ``image``, ``points``…) so tests can read what is drawn. Every
task is drawn in its own metric with that metric's direction (``Metric``: perplexity ↓, accuracy ↑):
the bars put the tasks of each metric on their own axes (perplexity on a log axis), mark each task's
best run by the metric's direction, and draw the experts, the base and a pinned run as reference
marks. The live series is updated in place (bar heights, line data) rather than rebuilt, which keeps a
redraw during a slider drag to a few milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.ticker import FuncFormatter

from app.plotting import PERCENT, PlotCanvas, palette, style_axes, style_legend, task_colors
from app.results import records as rec
from engine.live import SweepResult

LOG_METRICS = {"perplexity"}  # drawn on a log axis: they grow exponentially with the loss


class Metric(NamedTuple):
    """A metric as a plot draws it: its name and whether higher is better."""

    name: str
    higher: bool = True

    @property
    def label(self) -> str:
        return rec.metric_label(self.name, self.higher)

    @property
    def fraction(self) -> bool:
        return self.name in rec.FRACTIONS


@dataclass
class Series:
    """One run as a plot draws it: ``values[task]``, optional standard errors; ``reference`` series (the
    base, a pinned run) are drawn as outlines, not filled."""

    label: str
    values: dict[str, float | None]
    color: str
    errors: dict[str, float | None] = field(default_factory=dict)
    live: bool = False
    reference: bool = False


def _nan(v: float | None) -> float:
    return float("nan") if v is None else float(v)


def _holds(current: tuple[float, float], wanted: tuple[float, float], values: list[float], log: bool) -> bool:
    """Whether axis limits ``current`` still show ``values`` and are at most 1.5× as wide as ``wanted``."""
    lo, hi = current
    if any(v < lo or v > hi for v in values):
        return False
    if log:
        return lo > 0 and np.log(hi / lo) <= 1.5 * np.log(wanted[1] / wanted[0])
    return lo <= wanted[0] and hi - lo <= 1.5 * (wanted[1] - wanted[0])  # a linear axis keeps its baseline


PLAIN = FuncFormatter(lambda v, _p: f"{v:g}")  # 200 rather than 2×10² on a log axis
SPARSE = FuncFormatter(lambda v, _p: f"{v:g}" if v > 0 and f"{v:e}"[0] in "235" else "")  # minor ticks: 2, 3, 5 only


def _format_axis(axis, metric: Metric) -> None:
    """Percents for a proportion; plain numbers (major and minor ticks, theme colours) on a log axis."""
    if metric.fraction:
        axis.set_major_formatter(PERCENT)
    elif axis.get_scale() == "log":
        axis.set_major_formatter(PLAIN)
        axis.set_minor_formatter(SPARSE)
        c = palette()
        axis.set_tick_params(which="both", colors=c["muted"], labelcolor=c["muted"], labelsize=8.5)


@dataclass
class _Group:
    """The tasks of one metric and the axes they are drawn on."""

    metric: Metric
    tasks: list[str]
    ax: Any = None
    best: Any = None  # the scatter of best markers


REFERENCE_STYLES = {"experts": ("text", "-", 1.6), "base": ("muted", (0, (2, 2)), 1.6), "pinned": ("warn", "-", 2.6)}


class TaskBarsPlot(PlotCanvas):
    """Grouped bars: one group per task, one bar per run, in each task's metric (one axes per metric);
    the experts, the base and a pinned run as reference marks; a star over each task's best value."""

    def __init__(self, parent=None):
        self.tasks: list[str] = []
        self.series: list[Series] = []
        self.refs: dict[str, dict[str, float]] = {}
        self.metrics: dict[str, Metric] = {}
        self.pinned_label = "pinned"
        self.groups: list[_Group] = []
        self.bars: dict[str, list] = {}
        self.best: dict[str, str] = {}
        self.error_lines: dict[str, list[LineCollection]] = {}
        self.reference_lines: dict[str, list[tuple[LineCollection, list[str]]]] = {}
        self._background = None  # the last full draw without the live artists, for blitting
        super().__init__(parent)
        self.mpl_connect("draw_event", self._on_draw)

    def set_data(self, tasks: list[str], series: list[Series], references: dict[str, dict[str, float]] | None = None,
                 metrics: dict[str, Metric] | None = None, pinned_label: str = "pinned") -> None:
        """``metrics[task]``: the metric its values are in (accuracy ↑ when not given); ``references``:
        per role (``experts``, ``base``, ``pinned``) a value per task, in the same metric."""
        self.tasks, self.series, self.refs = list(tasks), list(series), dict(references or {})
        self.metrics = {t: (metrics or {}).get(t, Metric("accuracy")) for t in self.tasks}
        self.pinned_label = pinned_label
        self.request_redraw()

    def _width(self) -> float:
        return min(0.8 / max(1, len(self.series)), 0.28)

    def _offsets(self) -> np.ndarray:
        return (np.arange(len(self.series)) - (len(self.series) - 1) / 2) * self._width()

    def _candidates(self) -> list[tuple[str, dict[str, float | None]]]:
        """What competes for each task's best mark: the bars and the pinned run."""
        out = [(s.label, s.values) for s in self.series]
        if self.refs.get("pinned"):
            out.append((self.pinned_label, self.refs["pinned"]))
        return out

    def redraw(self) -> None:
        self.bars, self.error_lines, self.reference_lines, self.best, self.groups = {}, {}, {}, {}, []
        if not self.tasks or not self.series:
            self.empty("No results yet — tune a merge node connected to an Evaluate node,\n"
                       "or run the graph.")
            return
        self.figure.clear()
        c = palette()
        order: dict[Metric, list[str]] = {}
        for t in self.tasks:
            order.setdefault(self.metrics[t], []).append(t)
        self.groups = [_Group(m, ts) for m, ts in order.items()]
        axes = self.figure.subplots(1, len(self.groups), squeeze=False,
                                    width_ratios=[len(g.tasks) + 0.6 for g in self.groups])[0]
        width, offsets = self._width(), self._offsets()
        rects: dict[str, dict[str, Any]] = {s.label: {} for s in self.series}
        handles: dict[str, Any] = {}
        for group, ax in zip(self.groups, axes):
            group.ax = ax
            style_axes(ax)
            x = np.arange(len(group.tasks))
            for s, off in zip(self.series, offsets):
                heights = [_nan(s.values.get(t)) for t in group.tasks]
                drawn = ax.bar(x + off, heights, width * 0.92, color=s.color, label=s.label,
                               alpha=0.95 if not s.live else 1.0, edgecolor=c["text"] if s.live else "none",
                               linewidth=0.8 if s.live else 0, zorder=2)
                rects[s.label].update(zip(group.tasks, drawn))
                handles.setdefault(s.label, drawn)
                errs = [_nan(s.errors.get(t)) for t in group.tasks]
                if any(np.isfinite(errs)):
                    segs = [[(xi + off, h - e), (xi + off, h + e)] for xi, h, e in zip(x, heights, errs)]
                    lines = ax.add_collection(LineCollection(segs, colors=c["text"], linewidths=1.0, zorder=3))
                    self.error_lines.setdefault(s.label, []).append(lines)
            half = width * len(self.series) / 2 + 0.04
            for role, (color, ls, lw) in REFERENCE_STYLES.items():
                per = self.refs.get(role, {})
                marked = [t for t in group.tasks if per.get(t) is not None]
                if not marked:
                    continue
                segs = [[(xi - half, per[t]), (xi + half, per[t])] for xi, t in zip(x, group.tasks) if t in marked]
                label = {"experts": "expert", "base": "base"}.get(role, self.pinned_label)
                lines = ax.add_collection(LineCollection(segs, colors=c[color], linestyles=ls, linewidths=lw,
                                                         zorder=4, label=label))
                self.reference_lines.setdefault(role, []).append((lines, marked))
                handles.setdefault(label, lines)
            group.best = ax.scatter([], [], marker="*", s=80, color=c["text"], edgecolors=c["base"],
                                    linewidths=0.6, zorder=5)
            crowded = len(group.tasks) > 6
            ax.set_xticks(x, group.tasks, rotation=30 if crowded else 0, ha="right" if crowded else "center")
            ax.set_xlim(-0.6, len(group.tasks) - 0.4)
            if group.metric.name in LOG_METRICS:
                ax.set_yscale("log")
            _format_axis(ax.yaxis, group.metric)
            ax.set_ylabel(group.metric.label)
        self.bars = {label: [per[t] for t in self.tasks] for label, per in rects.items()}
        self._place_best()
        self._fit_limits()
        if self.best:
            handles["best"] = self.groups[0].best
        legend = self.figure.legend(list(handles.values()), list(handles), loc="outside upper left",
                                    ncol=min(7, len(handles)), frameon=False, fontsize=8.5, handlelength=1.4,
                                    columnspacing=1.2)
        style_legend(legend)
        for artist in self._live_artists():
            artist.set_animated(True)  # drawn over the kept background by ``_on_draw`` and ``update_live``
        self.draw_idle()

    def _live_artists(self) -> list[Any]:
        """What a live update moves: the live series' bars and error bars, the best marks and the
        reference marks (the full split's references replace the quick subset's)."""
        live = next((s.label for s in self.series if s.live), None)
        return [*self.bars.get(live, []), *self.error_lines.get(live, []),
                *(g.best for g in self.groups if g.best is not None),
                *(lines for marks in self.reference_lines.values() for lines, _tasks in marks)]

    def _on_draw(self, _event) -> None:
        """After a full draw (which leaves out the animated live artists): keep the picture as the
        background live updates are blitted over, then draw the live artists on it."""
        self._background = self.copy_from_bbox(self.figure.bbox)
        for artist in self._live_artists():
            self.figure.draw_artist(artist)

    def export(self, path):
        live = self._live_artists()
        for artist in live:
            artist.set_animated(False)  # a saved figure holds every artist
        try:
            return super().export(path)
        finally:
            for artist in live:
                artist.set_animated(True)

    def _place_best(self) -> None:
        """Star each task's best value among the bars and the pinned run (in its metric's direction); no
        star where they all tie."""
        self.best = {}
        candidates = self._candidates()
        if len(candidates) < 2:
            for g in self.groups:
                g.best.set_offsets(np.empty((0, 2)))
            return
        offsets = dict(zip([s.label for s in self.series], self._offsets()))
        for g in self.groups:
            points = []
            for xi, t in enumerate(g.tasks):
                values = [_nan(v.get(t)) for _label, v in candidates]
                i = rec.best(values, g.metric.higher)
                if i is None or len({v for v in values if np.isfinite(v)}) < 2:
                    continue
                label = candidates[i][0]
                self.best[t] = label
                points.append((xi + offsets.get(label, 0.0), values[i]))
            g.best.set_offsets(np.array(points) if points else np.empty((0, 2)))

    def _fit_limits(self, keep: bool = False) -> bool:
        """Each metric's axes spans its values, errors and reference marks; True when a limit changed.
        With ``keep``, limits that still hold every value and are at most half again as wide as needed
        stay (a live update then redraws only the live artists)."""
        changed = False
        for g in self.groups:
            values = [_nan(s.values.get(t)) + (s.errors.get(t) or 0.0) for s in self.series for t in g.tasks]
            values += [v for per in self.refs.values() for t in g.tasks if (v := per.get(t)) is not None]
            finite = [v for v in values if np.isfinite(v)]
            top = max(finite, default=1.0)
            log = g.metric.name in LOG_METRICS
            if log:
                low = min([v for v in finite if v > 0], default=1.0)
                wanted = (low / 1.6, top * 1.6)
            elif g.metric.fraction:
                wanted = (0.0, max(1.04, top * 1.06))
            else:
                wanted = (min(0.0, min(finite, default=0.0) * 1.1), top * 1.1 if top > 0 else 1.0)
            current = g.ax.get_ylim()
            if keep and _holds(current, wanted, [v for v in finite if v > 0] if log else finite, log):
                continue
            if tuple(current) != wanted:
                g.ax.set_ylim(*wanted)
                changed = True
        return changed

    def update_live(self, label: str, values: dict[str, float | None], errors: dict[str, float | None],
                    references: dict[str, dict[str, float]] | None = None) -> bool:
        """Move the bars of series ``label`` (and, given ``references``, the reference marks) in place;
        False when a full ``set_data`` is needed instead (a reference mark appears or goes)."""
        bars = self.bars.get(label)
        if bars is None or self.stale_data:
            return False
        if references is not None and not self._move_references(references):
            return False
        for rect, t in zip(bars, self.tasks):
            rect.set_height(_nan(values.get(t)))
        for s in self.series:
            if s.label == label:
                s.values, s.errors = dict(values), dict(errors)
        by_task = dict(zip(self.tasks, bars))
        for lines, g in zip(self.error_lines.get(label, []), self._groups_with_errors(label)):
            segs = []
            for t in g.tasks:
                rect, h, e = by_task[t], _nan(values.get(t)), _nan(errors.get(t))
                xi = rect.get_x() + rect.get_width() / 2
                segs.append([(xi, h - e), (xi, h + e)])
            lines.set_segments(segs)
        self._place_best()
        if self._fit_limits(keep=True) or self._background is None or not self.isVisible():
            self.draw_idle()
            return True
        self.restore_region(self._background)  # blit: only the live artists are drawn again
        for artist in self._live_artists():
            self.figure.draw_artist(artist)
        self.blit(self.figure.bbox)
        return True

    def _move_references(self, references: dict[str, dict[str, float]]) -> bool:
        """Set the reference marks to ``references``; False when the marked tasks differ from those drawn."""
        drawn = {role: [t for _lines, marked in marks for t in marked] for role, marks in self.reference_lines.items()}
        wanted = {role: [t for t in self.tasks if per.get(t) is not None] for role, per in references.items()}
        if {r: ts for r, ts in drawn.items() if ts} != {r: ts for r, ts in wanted.items() if ts}:
            return False
        for role, marks in self.reference_lines.items():
            for lines, marked in marks:
                lines.set_segments([[(a[0], references[role][t]), (b[0], references[role][t])]
                                    for t, (a, b) in zip(marked, lines.get_segments())])
        self.refs = dict(references)
        return True

    def _groups_with_errors(self, label: str) -> list[_Group]:
        """The groups in which series ``label`` drew error bars (in drawing order)."""
        drawn = {id(lines.axes) for lines in self.error_lines.get(label, [])}
        return [g for g in self.groups if id(g.ax) in drawn]

    def heights(self, label: str) -> list[float]:
        """The drawn bar heights of a series, in task order (for tests and exports)."""
        return [rect.get_height() for rect in self.bars.get(label, [])]

    def reference_values(self, role: str) -> dict[str, float]:
        """The drawn reference marks of ``role`` (``experts``, ``base``, ``pinned``): task → height."""
        out = {}
        for lines, marked in self.reference_lines.get(role, []):
            out.update({t: float(seg[0][1]) for t, seg in zip(marked, lines.get_segments())})
        return out


class RadarPlot(PlotCanvas):
    """Normalized score (against each task's expert, higher is better) per task on a radar; the experts
    are the unit circle."""

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
                              linestyle="--" if s.reference else "-")
            if not s.reference:
                ax.fill(xs, ys, color=s.color, alpha=0.12)
            self.lines[s.label] = line
        style_legend(ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=8))
        self.draw_idle()

    def update_live(self, label: str, values: dict[str, float | None]) -> bool:
        """Move the line of series ``label`` in place; False when a full ``set_data`` is needed instead."""
        line = self.lines.get(label)
        if line is None or self.stale_data:
            return False
        line.set_data(*self._closed(values))
        for s in self.series:
            if s.label == label:
                s.values = dict(values)  # a rebuild (the canvas shown again) draws the same
        self.draw_idle()
        return True


class SweepPlot(PlotCanvas):
    """A sweep: curves over one parameter, or a heatmap over two, of one series — the average normalized
    score or a task's primary metric — with its best point by the metric's direction."""

    def __init__(self, parent=None):
        self.result: SweepResult | None = None
        self.series = rec.AVERAGE
        self.lines: dict[str, object] = {}
        self.image = None
        self.best_point: tuple[tuple[int, ...], float] | None = None
        super().__init__(parent)

    def set_data(self, result: SweepResult | None, series: str = rec.AVERAGE) -> None:
        """Show ``result``'s ``series``: ``average`` (the mean normalized score) or a task's name."""
        self.result, self.series = result, series
        self.best_point = rec.best_point(result, series) if result is not None else None
        self.request_redraw()

    def shown_metric(self) -> Metric:
        """The metric of the series shown."""
        return Metric(*rec.sweep_metric(self.result, self.series))

    def grid(self) -> np.ndarray:
        """The values of the series shown over the grid (the heatmap of a 2-D sweep)."""
        return rec.sweep_grid(self.result, self.series)

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
        """The chosen series in bold over the tasks that share its metric (the normalized scores of every
        task for the average), the best point marked."""
        c = palette()
        style_axes(ax, grid_axis="both")
        r, metric = self.result, self.shown_metric()
        axis = r.axes[0]
        xs = np.array(axis.values)
        colors = task_colors(r.tasks)
        same = [t for t in r.tasks if self.series == rec.AVERAGE or r.primary_of(t) == metric.name]
        for t in same:
            grid = rec.sweep_grid(r, t, metric.name)
            if np.isfinite(grid).any():
                (self.lines[t],) = ax.plot(xs, grid, color=colors[t], linewidth=2.6 if t == self.series else 1.3,
                                           marker="o", markersize=2.8, label=t, alpha=1.0 if t == self.series else 0.8)
        if self.series == rec.AVERAGE:
            (self.lines[rec.AVERAGE],) = ax.plot(xs, self.grid(), color=c["text"], linewidth=2.6, label="average")
        if self.best_point is not None:
            (i,), value = self.best_point
            ax.axvline(xs[i], color=c["accent"], linewidth=1.0, linestyle=(0, (3, 3)))
            right = i > (len(xs) - 1) / 2  # the note on the side of the line with room for it
            ax.annotate(f"best {axis.path} = {xs[i]:g} ({rec.format_value(metric.name, value)})", (xs[i], 1.0),
                        xycoords=("data", "axes fraction"), xytext=(-4 if right else 4, -12),
                        textcoords="offset points", ha="right" if right else "left", color=c["accent"], fontsize=8)
        if metric.name in LOG_METRICS:
            ax.set_yscale("log")
        ax.set_xlabel(axis.path)
        ax.set_ylabel(metric.label)
        _format_axis(ax.yaxis, metric)
        style_legend(ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8))

    def _heatmap(self, ax) -> None:
        """The series over the 2-D grid; the colour scale runs from worse to better (reversed for a
        lower-is-better metric), a star on the best point."""
        c = palette()
        style_axes(ax, grid_axis=None)
        r, metric = self.result, self.shown_metric()
        ya, xa = r.axes
        data = self.grid()
        self.image = ax.imshow(data, origin="lower", aspect="auto", cmap="viridis" if metric.higher else "viridis_r",
                               extent=(-0.5, len(xa.values) - 0.5, -0.5, len(ya.values) - 0.5))
        step = lambda n: max(1, n // 8)  # noqa: E731
        ax.set_xticks(range(0, len(xa.values), step(len(xa.values))),
                      [f"{v:g}" for v in xa.values[::step(len(xa.values))]])
        ax.set_yticks(range(0, len(ya.values), step(len(ya.values))),
                      [f"{v:g}" for v in ya.values[::step(len(ya.values))]])
        ax.set_xlabel(xa.path)
        ax.set_ylabel(ya.path)
        if self.best_point is not None:
            (i, j), value = self.best_point
            ax.plot([j], [i], marker="*", markersize=13, color="white", markeredgecolor="black")
            scope = "" if r.full else " (quick subset)"
            ax.set_title(f"{self.series} {metric.label}{scope} · best {rec.format_value(metric.name, value)} at "
                         f"{ya.path}={ya.values[i]:g}, {xa.path}={xa.values[j]:g}", fontsize=9, color=c["text"])
        bar = self.figure.colorbar(self.image, ax=ax, format=PERCENT if metric.fraction else None, fraction=0.05,
                                   pad=0.02)
        bar.set_label(metric.label, color=c["muted"], fontsize=8)
        bar.ax.tick_params(colors=c["muted"], labelsize=8)
        bar.outline.set_edgecolor(c["border"])


class ParetoPlot(PlotCanvas):
    """Task X's primary metric against task Y's for every run (and sweep point); the non-dominated front
    (by each metric's direction) joined."""

    def __init__(self, parent=None):
        self.task_x = self.task_y = ""
        self.metric_x = self.metric_y = Metric("accuracy")
        self.points: list[Series] = []
        self.trail: list[tuple[float, float]] = []
        self.refs: dict[str, dict[str, float]] = {}
        self.trail_is_path = True
        self.scatter = None
        self.front_line = None
        super().__init__(parent, width=4.6, height=3.4)

    def set_data(self, task_x: str, task_y: str, points: list[Series],
                 references: dict[str, dict[str, float]] | None = None, trail: list[tuple[float, float]] | None = None,
                 trail_is_path: bool = True, metrics: tuple[Metric, Metric] | None = None) -> None:
        """``trail``: sweep points, joined in order when ``trail_is_path`` (a 1-D sweep), else scattered;
        ``metrics``: the metrics of the two tasks (accuracy ↑ when not given)."""
        self.task_x, self.task_y, self.points, self.trail_is_path = task_x, task_y, list(points), trail_is_path
        self.refs, self.trail = dict(references or {}), list(trail or [])
        self.metric_x, self.metric_y = metrics or (Metric("accuracy"), Metric("accuracy"))
        self.request_redraw()

    def _directions(self) -> tuple[bool, bool]:
        return self.metric_x.higher, self.metric_y.higher

    def _run_points(self) -> list[tuple[float, float]]:
        xy = [(s.values.get(self.task_x), s.values.get(self.task_y)) for s in self.points]
        return [(float(x), float(y)) for x, y in xy if x is not None and y is not None]

    def front(self) -> list[tuple[float, float]]:
        """The non-dominated (x, y) points among runs and sweep points, by increasing x."""
        return pareto_front(self._run_points() + list(self.trail), self._directions())

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
            (self.front_line,) = ax.plot(fx, fy, color=c["accent"], linewidth=1.6, label="Pareto front", zorder=3)
        xy = [(s.values.get(self.task_x), s.values.get(self.task_y)) for s in self.points]
        keep = [(s, p) for s, p in zip(self.points, xy) if None not in p]
        if keep:
            self.scatter = ax.scatter([p[0] for _, p in keep], [p[1] for _, p in keep], s=42,
                                      c=[s.color for s, _ in keep], edgecolors=c["text"], linewidths=0.6, zorder=4)
            on_front = set(pareto_front(self._run_points(), self._directions()))
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
        ax.set_xlabel(f"{self.task_x} {self.metric_x.label}")
        ax.set_ylabel(f"{self.task_y} {self.metric_y.label}")
        _format_axis(ax.xaxis, self.metric_x)
        _format_axis(ax.yaxis, self.metric_y)
        style_legend(ax.legend(loc="best", fontsize=8, frameon=True))
        self.draw_idle()


def pareto_front(points: list[tuple[float, float]],
                 higher: tuple[bool, bool] = (True, True)) -> list[tuple[float, float]]:
    """The points no other point beats on both coordinates (each better in its direction ``higher``),
    by increasing x."""
    sx, sy = (1.0 if h else -1.0 for h in higher)
    out, best_y = [], -np.inf
    for x, y in sorted(set(points), key=lambda p: (-sx * p[0], -sy * p[1])):
        if sy * y > best_y:
            out.append((x, y))
            best_y = sy * y
    return sorted(out)
