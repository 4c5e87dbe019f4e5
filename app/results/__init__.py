"""The results views: run history, comparison plots, sweeps, export — and their place in the window.

``install(window)`` fills the main window's Results dock, adds the Analysis dock, follows the
selected merge node live and keeps the history in the project (see ``app.results.integration``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PySide6.QtWidgets import QMainWindow

    from app.results.integration import ResultsIntegration


def install(window: "QMainWindow") -> "ResultsIntegration":
    """Attach the results, live-tuning and analysis views to ``window`` (a ``MainWindow``)."""
    from app.results.integration import ResultsIntegration  # imported here: it depends on app.analysis

    return ResultsIntegration(window)


__all__ = ["install"]
