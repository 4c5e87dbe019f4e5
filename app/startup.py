"""What the window opens at start: the project named on the command line, else the most recent one,
else (first start) the image demo project, building its zoo first when it is missing (``app.demos``)."""

from __future__ import annotations

from pathlib import Path

from app.demos import open_demo
from app.main_window import MainWindow
from app.project import SUFFIX


def open_startup_project(window: MainWindow, project: str | None) -> None:
    if project:
        window.open_project(project)
        return
    recent = next((p for p in window.settings.recent_files if p.endswith(SUFFIX) and Path(p).is_file()), None)
    if recent:
        window.open_project(recent)
        return
    open_demo(window)
