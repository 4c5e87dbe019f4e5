"""What the window opens at start: the project named on the command line, else the most recent one,
else (first start) the demo project, building the demo model zoo first when it is missing."""

from __future__ import annotations

from pathlib import Path

from app.job_dialog import JobProgressDialog
from app.main_window import MainWindow
from app.project import SUFFIX
from app.workers import Job
from engine.zoo import build_zoo

DEMO_RECIPE = "demo.json"


def open_startup_project(window: MainWindow, project: str | None) -> None:
    if project:
        window.open_project(project)
        return
    recent = next((p for p in window.settings.recent_files if p.endswith(SUFFIX) and Path(p).is_file()), None)
    if recent:
        window.open_project(recent)
        return
    open_demo(window)


def open_demo(window: MainWindow, size: str = "default") -> Job | None:
    """Open the demo recipe of the zoo; when the zoo is missing, build it (``size``) and return that job.

    The build's progress dialog can be hidden (the Tasks panel keeps showing the job) while the user
    works. When the build ends the demo opens — unless the user has meanwhile opened or edited a
    project, which is then left alone and the status bar says where the demo is. A cancelled or failed
    build leaves an empty project.
    """
    demo = window.paths.zoo_dir / DEMO_RECIPE
    if demo.is_file():
        window.open_project(demo)
        window.show_demo_hint()
        return None
    out = window.paths.zoo_dir
    job = window.jobs.submit("Build the demo zoo", lambda progress, cancel: build_zoo(
        out, size=size, progress=progress, cancel=cancel), kind="zoo")
    dialog = JobProgressDialog(job, "First start: Weightsmith is building its demo model zoo — a small "
                                    "pre-trained network and one expert per task — once, in a few minutes, "
                                    "with no download. Hide this to look around meanwhile.", window)
    dialog.setWindowTitle("First start")
    dialog.hidden.connect(lambda: window.statusBar().showMessage(
        "Building the demo zoo in the background; the Tasks panel shows its progress", 10_000))

    def on_failed(message: str) -> None:
        window.show_error("The demo zoo could not be built", message)

    def on_end(_state: str) -> None:
        if not job.state.finished:
            return
        untouched = window.project_path is None and not window.modified and not window.recipe.nodes
        if demo.is_file() and untouched:
            window.open_project(demo)
            window.show_demo_hint()
        elif demo.is_file():
            window.statusBar().showMessage(f"The demo zoo is ready: File ▸ Open… {demo}", 30_000)
        else:
            window.statusBar().showMessage("No demo zoo: starting with an empty project", 15_000)

    job.failed.connect(on_failed)
    job.stateChanged.connect(on_end)
    dialog.show()
    return job
