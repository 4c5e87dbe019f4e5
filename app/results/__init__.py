"""The results views: run history, comparison plots, sweeps, export (``ResultsPanel``, built on a ``Document``)."""

from app.results.panel import ResultsPanel

__all__ = ["ResultsPanel"]
