"""Analysis views of task vectors (cosines, sign conflicts, magnitudes, masks, norms, spectra, coefficients)."""

from app.analysis.panel import AnalysisPanel

__all__ = ["AnalysisPanel"]
