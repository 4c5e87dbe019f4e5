"""The start-up splash: the logo and version on screen a moment after launch, while torch loads.

Building the main window needs the engine, and the engine needs torch, whose import is most of the
start-up time (2–3 s on a laptop CPU). The splash is painted before that import, so a double-click
answers at once; ``finish(window)`` removes it when the window is shown.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QRect, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPixmap
from PySide6.QtWidgets import QApplication, QSplashScreen

import engine

LOGO = Path(__file__).resolve().parent.parent / "resources" / "icons" / "app" / "weightsmith-128.png"
WIDTH, HEIGHT = 360, 240


def card(background: str, text: str, muted: str) -> QPixmap:
    """The splash picture: logo, name, version and a 'Starting…' line on the theme's window colour."""
    pixmap = QPixmap(WIDTH, HEIGHT)
    pixmap.fill(QColor(background))
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    painter.drawPixmap(QRect((WIDTH - 96) // 2, 28, 96, 96), QPixmap(str(LOGO)))
    title = QFont(painter.font())
    title.setPointSizeF(title.pointSizeF() * 1.6)
    title.setBold(True)
    painter.setFont(title)
    painter.setPen(QColor(text))
    painter.drawText(QRect(0, 136, WIDTH, 36), Qt.AlignmentFlag.AlignCenter, "Weightsmith")
    painter.setFont(QFont(painter.font().family()))
    painter.setPen(QColor(muted))
    painter.drawText(QRect(0, 176, WIDTH, 40), Qt.AlignmentFlag.AlignCenter,
                     f"version {engine.__version__}\nStarting the merge engine…")
    painter.end()
    return pixmap


def show_splash(palette: dict[str, str]) -> QSplashScreen:
    """Show the splash in a theme's colours (``app.theme.PALETTES[name]``) and paint it right away."""
    splash = QSplashScreen(card(palette["window"], palette["text"], palette["muted"]))
    splash.show()
    QApplication.processEvents()
    return splash
