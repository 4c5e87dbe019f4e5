"""Plots of the task-vector analyses (``engine.analysis``): one canvas per view, data in, artists kept.

Each canvas takes the engine's result object in ``set_data`` and keeps the artists a test (or an
export) reads: ``image`` for matrices, ``bars`` for bar charts, ``lines`` for curves.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.ticker import FuncFormatter, PercentFormatter

from app.plotting import PERCENT, PlotCanvas, palette, style_axes, style_legend, task_colors
from engine.analysis import (CoefficientMatrix, Cosines, LayerNormTable, MagnitudeHistogram, MaskOverlapTable,
                             SignConflictTable, SpectrumTable)


def _annotate(ax, data: np.ndarray, fmt: str, threshold: float) -> None:
    """Write each cell's value, dark on light cells and light on dark ones."""
    for (i, j), v in np.ndenumerate(data):
        if np.isfinite(v):
            ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=7.5,
                    color="#111111" if v > threshold else "#f4f4f4")


class _Canvas(PlotCanvas):
    placeholder = "Select a merge node with a base and press Analyze."

    def __init__(self, parent=None):
        self.data = None
        super().__init__(parent)

    def set_data(self, data) -> None:
        self.data = data
        self.request_redraw()

    def redraw(self) -> None:
        if self.data is None:
            self.empty(self.placeholder)
            return
        self.figure.clear()
        self.draw_data()
        self.draw_idle()

    def draw_data(self) -> None:
        raise NotImplementedError


class CosinePlot(_Canvas):
    """Cosine similarity of every pair of task vectors, as an annotated matrix."""

    def __init__(self, parent=None):
        self.keys: list[str] = []
        self.image = None
        super().__init__(parent)

    def set_data(self, data: Cosines | None, keys: list[str] | None = None) -> None:
        self.keys = list(keys or [])
        super().set_data(data)

    def draw_data(self) -> None:
        c = palette()
        ax = self.figure.add_subplot()
        style_axes(ax, grid_axis=None)
        m = self.data.matrix.copy()
        off = m[~np.eye(len(m), dtype=bool)]
        span = max(0.05, float(np.abs(off).max()) * 1.1) if off.size else 1.0
        shown = m.copy()
        np.fill_diagonal(shown, np.nan)
        self.image = ax.imshow(shown, cmap="RdBu_r", vmin=-span, vmax=span, aspect="auto")
        ax.set_xticks(range(len(self.keys)), self.keys, rotation=30 if len(self.keys) > 5 else 0,
                      ha="right" if len(self.keys) > 5 else "center")
        ax.set_yticks(range(len(self.keys)), self.keys)
        size = 8 if len(m) <= 8 else 6.5 if len(m) <= 14 else 0
        for (i, j), v in np.ndenumerate(m if size else np.zeros((0, 0))):
            ax.text(j, i, "1" if i == j else f"{v:.2f}", ha="center", va="center", fontsize=size,
                    color=c["muted"] if i == j else ("#f4f4f4" if abs(v) > 0.6 * span else "#111111"))
        ax.set_title("cosine similarity of task vectors (0 = orthogonal)", fontsize=9, color=c["text"])
        bar = self.figure.colorbar(self.image, ax=ax, fraction=0.046, pad=0.03)
        bar.ax.tick_params(colors=c["muted"], labelsize=8)
        bar.outline.set_edgecolor(c["border"])


class SignConflictPlot(_Canvas):
    """Per layer, the share of entries whose task vectors disagree in sign, before and after the TIES trim."""

    def __init__(self, parent=None):
        self.bars: dict[str, object] = {}
        super().__init__(parent)

    def draw_data(self) -> None:
        c = palette()
        d: SignConflictTable = self.data
        ax = self.figure.add_subplot()
        style_axes(ax)
        x = np.arange(len(d.layers))
        self.bars = {
            "raw": ax.bar(x - 0.2, d.raw, 0.38, color=c["err"], alpha=0.85, label="all entries"),
            "trimmed": ax.bar(x + 0.2, d.trimmed, 0.38, color=c["accent"],
                              label=f"after TIES trim (top {d.density:.0%} kept)"),
        }
        ax.set_xticks(x, d.layers)
        ax.set_xlabel("layer")
        ax.set_ylabel("entries with a sign conflict")
        ax.yaxis.set_major_formatter(PERCENT)
        ax.set_ylim(0, max(0.05, float(np.nanmax(np.concatenate([d.raw, d.trimmed])) * 1.15)) if len(x) else 1)
        style_legend(ax.legend(loc="lower left", bbox_to_anchor=(0, 1.01), ncol=2, frameon=False, fontsize=8.5,
                               borderaxespad=0))


class MagnitudePlot(_Canvas):
    """Histograms of log10|τ| per task, with the TIES cut and the Breadcrumbs band drawn on them."""

    def __init__(self, parent=None):
        self.keys: list[str] = []
        self.task: str = ""
        self.lines: dict[str, object] = {}
        self.cuts: dict[str, float] = {}
        super().__init__(parent)

    def set_data(self, data: MagnitudeHistogram | None, keys: list[str] | None = None, task: str = "") -> None:
        self.keys, self.task = list(keys or []), task
        super().set_data(data)

    def draw_data(self) -> None:
        c = palette()
        d: MagnitudeHistogram = self.data
        ax = self.figure.add_subplot()
        style_axes(ax, grid_axis="both")
        self.lines, self.cuts = {}, {}
        mass = d.counts.sum(0)
        if mass.sum() == 0:
            ax.text(0.5, 0.5, "all task vectors are zero", transform=ax.transAxes, ha="center", color=c["muted"])
            return
        cum = np.cumsum(mass) / mass.sum()  # show the bins holding 99.9 % of the entries
        lo = max(0, int(np.searchsorted(cum, 0.0005)) - 2)
        hi = min(len(d.edges) - 1, int(np.searchsorted(cum, 0.9995)) + 3)
        centres = 10 ** ((d.edges[lo:hi] + d.edges[lo + 1:hi + 1]) / 2)
        colors = task_colors(self.keys)
        chosen = [self.task] if self.task in self.keys else self.keys
        for k in chosen:
            i = self.keys.index(k)
            share = d.counts[i, lo:hi] / max(1.0, d.counts[i].sum() + d.zeros[i])
            (self.lines[k],) = ax.plot(centres, share, drawstyle="steps-mid", color=colors[k], linewidth=1.3, label=k)
        idx = [self.keys.index(k) for k in chosen]
        self.cuts = {"ties": float(np.mean(d.ties_cut[idx])), "band_low": float(np.mean(d.band_low[idx])),
                     "band_high": float(np.mean(d.band_high[idx]))}
        ax.axvspan(self.cuts["band_low"], self.cuts["band_high"], color=c["ok"], alpha=0.10,
                   label=f"Breadcrumbs keeps ({d.band_density:.0%} after the top {d.gamma:.0%})")
        ax.axvline(self.cuts["ties"], color=c["err"], linewidth=1.6, linestyle=(0, (5, 3)),
                   label=f"TIES keeps the top {d.density:.0%} (right of the line)")
        ax.set_xscale("log")
        ax.set_xlabel("|τ| (magnitude of the task-vector entry)")
        ax.set_ylabel("share of entries")
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=1))
        style_legend(ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7.5, frameon=False))


class MaskOverlapPlot(_Canvas):
    """TALL masks: how many tasks use each weight; 0 = catastrophic, 1 = selfish."""

    def __init__(self, parent=None):
        self.bars = None
        super().__init__(parent)

    def draw_data(self) -> None:
        c = palette()
        d: MaskOverlapTable = self.data
        ax = self.figure.add_subplot()
        style_axes(ax)
        total = max(1, int(d.counts.sum()))
        share = d.counts / total
        colors = [c["err"], c["warn"]] + [c["accent"]] * max(0, len(share) - 2)
        self.bars = ax.bar(np.arange(len(share)), share, 0.72, color=colors[:len(share)])
        for k, v in enumerate(share):
            ax.text(k, v, f"{v:.1%}", ha="center", va="bottom", fontsize=7.5, color=c["muted"])
        ax.set_xticks(range(len(share)))
        ax.set_xlabel("number of tasks whose TALL mask keeps the weight")
        ax.set_ylabel("share of weights")
        ax.yaxis.set_major_formatter(PERCENT)
        ax.set_title(f"λ = {d.lam:g} · catastrophic (0 tasks) {d.catastrophic / total:.1%} · "
                     f"selfish (1 task) {d.selfish / total:.1%}", fontsize=9, color=c["text"])


class LayerNormPlot(_Canvas):
    """‖τt‖ per layer for every task (and the merged update) as a heatmap."""

    def __init__(self, parent=None):
        self.keys: list[str] = []
        self.image = None
        super().__init__(parent)

    def set_data(self, data: LayerNormTable | None, keys: list[str] | None = None) -> None:
        self.keys = list(keys or [])
        super().set_data(data)

    def matrix(self) -> tuple[np.ndarray, list[str]]:
        d: LayerNormTable = self.data
        rows = list(self.keys)
        m = d.tasks
        if d.merged is not None:
            m = np.vstack([m, d.merged[None, :]])
            rows.append("merged update")
        return m, rows

    def draw_data(self) -> None:
        c = palette()
        d: LayerNormTable = self.data
        ax = self.figure.add_subplot()
        style_axes(ax, grid_axis=None)
        m, rows = self.matrix()
        self.image = ax.imshow(m, aspect="auto", cmap="magma")
        _annotate(ax, m, ".2f", float(np.nanmax(m)) * 0.6 if m.size else 0)
        ax.set_xticks(range(len(d.layers)), d.layers)
        ax.set_yticks(range(len(rows)), rows)
        ax.set_xlabel("layer")
        if d.merged is not None:
            ax.axhline(len(rows) - 1.5, color=c["panel"], linewidth=3)
        bar = self.figure.colorbar(self.image, ax=ax, fraction=0.046, pad=0.02)
        bar.set_label("L2 norm", color=c["muted"], fontsize=8)
        bar.ax.tick_params(colors=c["muted"], labelsize=8)
        bar.outline.set_edgecolor(c["border"])


class SpectrumPlot(_Canvas):
    """Normalised singular values of Στt for each 2-D weight, coloured by depth."""

    def __init__(self, parent=None):
        self.lines: dict[str, object] = {}
        self.kind = ""
        super().__init__(parent)

    def set_data(self, data: SpectrumTable | None, kind: str = "") -> None:
        self.kind = kind
        super().set_data(data)

    def draw_data(self) -> None:
        c = palette()
        d: SpectrumTable = self.data
        ax = self.figure.add_subplot()
        style_axes(ax, grid_axis="both")
        self.lines = {}
        names = [n for n in d.values if not self.kind or tensor_kind(n) == self.kind]
        depths = [d.layers[n] for n in names if d.layers[n] is not None]
        top = max(depths) if depths else 0
        cmap = colormaps["viridis"]
        for n in names:
            layer = d.layers[n]
            color = cmap(0.1 + 0.8 * layer / max(1, top)) if layer is not None else c["muted"]
            sv = d.values[n]
            (self.lines[n],) = ax.plot(np.arange(1, len(sv) + 1), np.maximum(sv, 1e-6), color=color, linewidth=1.2)
        ax.set_yscale("log")
        ax.set_xscale("log")
        ax.set_xlabel("singular value index")
        ax.set_ylabel("σ / σ₁ of Σ task vectors")
        ax.set_title(f"{len(names)} weight matrices · colour = depth (light = deeper)", fontsize=9, color=c["text"])
        if d.skipped:
            ax.text(0.99, 0.02, f"{len(d.skipped)} large matrices skipped", transform=ax.transAxes, ha="right",
                    fontsize=7.5, color=c["muted"])


class CoefficientPlot(_Canvas):
    """Per-model, per-layer coefficients (learned AdaMerging λ, schedules) as an annotated heatmap."""

    placeholder = "This merge node has no per-model or per-layer coefficients to show."

    def __init__(self, parent=None):
        self.image = None
        super().__init__(parent)

    def draw_data(self) -> None:
        c = palette()
        d: CoefficientMatrix = self.data
        ax = self.figure.add_subplot()
        style_axes(ax, grid_axis=None)
        span = float(np.nanmax(np.abs(d.values))) if d.values.size else 1.0
        signed = bool((d.values < 0).any())
        lo = -span if signed else 0.0
        self.image = ax.imshow(d.values, aspect="auto", cmap="PuOr_r" if signed else "viridis", vmin=lo,
                               vmax=span or 1.0)
        for (i, j), v in np.ndenumerate(d.values):
            light = abs(v) > 0.6 * span if signed else v < 0.6 * span
            ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=7.5, color="#f4f4f4" if light else "#111111")
        ax.set_xticks(range(d.values.shape[1]))
        ax.set_yticks(range(len(d.rows)), d.rows)
        ax.set_xlabel("layer")
        ax.set_title(f"'{d.param}' as the merge applies it at each layer", fontsize=9, color=c["text"])
        bar = self.figure.colorbar(self.image, ax=ax, fraction=0.046, pad=0.02,
                                   format=FuncFormatter(lambda v, _p: f"{v:.2g}"))
        bar.ax.tick_params(colors=c["muted"], labelsize=8)
        bar.outline.set_edgecolor(c["border"])


def tensor_kind(name: str) -> str:
    """``backbone.layers.3.fc1.weight`` → ``fc1.weight`` (the part after the layer number)."""
    parts = name.split(".")
    for i, p in enumerate(parts):
        if p.isdigit():
            return ".".join(parts[i + 1:])
    return name
