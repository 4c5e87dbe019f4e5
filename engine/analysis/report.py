"""``analyze``: every task-vector statistic of a merge node from one streaming pass.

The thresholds the views draw follow the node: its ``density`` (TIES's trim, per model: the first
model's value when they differ) and ``gamma`` (Model Breadcrumbs' outlier cut) when it sets them, else
the papers' defaults (TIES density 0.2; Breadcrumbs keeps 90 % after dropping the top 1 %).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

from engine.analysis.accumulate import run
from engine.analysis.source import task_vectors
from engine.analysis.sparsity import (MagnitudeHistogram, MagnitudeHistograms, MaskOverlap, MaskOverlapTable,
                                      SignConflicts, SignConflictTable)
from engine.analysis.vectors import CosineMatrix, Cosines, LayerNorms, LayerNormTable, Spectra, SpectrumTable
from engine.graph import Recipe
from engine.runtime import CancelToken
from engine.runtime.progress import ProgressCallback

TIES_DENSITY, BAND_DENSITY, GAMMA, TALL_LAMBDA = 0.2, 0.9, 0.01, 0.4


@dataclass
class AnalysisReport:
    """All analyses of one merge node; ``keys`` name the task vectors (the node's inputs, in order)."""

    node_id: str
    keys: list[str]
    cosines: Cosines
    conflicts: SignConflictTable
    magnitudes: MagnitudeHistogram
    overlap: MaskOverlapTable
    norms: LayerNormTable
    spectra: SpectrumTable


def _scalar(value: Any, default: float) -> float:
    if isinstance(value, Mapping):
        value = next(iter(value.values()), default)
    if isinstance(value, (list, tuple)):
        value = value[0] if value and not isinstance(value[0], Mapping) else default
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def analyze(recipe: Recipe, node_id: str, *, tall_lambda: float = TALL_LAMBDA, device: str | torch.device = "cpu",
            progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> AnalysisReport:
    """Stream the node's task vectors (and merged update) once through every analysis."""
    params = recipe.node(node_id).params
    density = _scalar(params.get("density"), TIES_DENSITY)
    gamma = _scalar(params.get("gamma"), GAMMA)
    band = _scalar(params.get("density"), BAND_DENSITY) if "gamma" in params else BAND_DENSITY
    analyses = [CosineMatrix(), SignConflicts(density), MagnitudeHistograms(density, band, gamma),
                MaskOverlap(tall_lambda), LayerNorms(), Spectra()]
    source = task_vectors(recipe, node_id, device=device, with_merged=True, progress=progress, cancel=cancel)
    results = run(source, analyses, cancel)
    return AnalysisReport(node_id, recipe.inputs(node_id, "models"), *results)
