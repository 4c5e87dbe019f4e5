"""``scrollable``: a panel in a frameless scroll area, so that docks shrink instead of growing the window."""

from __future__ import annotations

from PySide6.QtWidgets import QFrame, QScrollArea, QWidget


def scrollable(widget: QWidget) -> QScrollArea:
    """``widget`` in a frameless, resizing scroll area: a dock holding it can shrink below the content's
    minimum size (the window fits 1280×720) and scrolls instead of pushing the window larger."""
    area = QScrollArea(frameShape=QFrame.NoFrame, widgetResizable=True)
    area.setWidget(widget)
    area.setMinimumSize(80, 60)
    return area
