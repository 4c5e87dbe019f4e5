"""Task-vector statistics for the analysis views: plain functions and one-pass accumulators, no Qt.

Sources stream a merge node's task vectors tensor by tensor (``task_vectors``) or wrap in-memory state
dicts (``from_state_dicts``); ``run(source, [analyses…])`` feeds them all in one pass. Each analysis
returns numpy data ready to plot. ``analyze`` is the convenience entry point the GUI uses.
"""

from __future__ import annotations

from engine.analysis.accumulate import Analysis, run
from engine.analysis.coefficients import CoefficientMatrix, coefficient_matrix
from engine.analysis.report import AnalysisReport, analyze
from engine.analysis.source import TensorDeltas, from_state_dicts, layer_label, task_vectors
from engine.analysis.sparsity import (MagnitudeHistogram, MagnitudeHistograms, MaskOverlap, MaskOverlapTable,
                                      SignConflicts, SignConflictTable)
from engine.analysis.vectors import Cosines, CosineMatrix, LayerNorms, LayerNormTable, Spectra, SpectrumTable

__all__ = [
    "Analysis", "run", "AnalysisReport", "analyze", "CoefficientMatrix", "coefficient_matrix", "TensorDeltas",
    "from_state_dicts", "layer_label",
    "task_vectors", "MagnitudeHistogram", "MagnitudeHistograms", "MaskOverlap", "MaskOverlapTable", "SignConflicts",
    "SignConflictTable", "Cosines", "CosineMatrix", "LayerNorms", "LayerNormTable", "Spectra", "SpectrumTable",
]
