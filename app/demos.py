"""The two demo projects the studio ships as builders, not downloads: the image-classification zoo and
the language-model domains (LM) zoo. ``open_demo`` opens one, building its zoo first when it is missing.

The image demo opens on first start; its hint offers the LM demo (File ▸ Open Demo holds both).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from app.job_dialog import JobProgressDialog
from app.workers import Job
from engine.zoo import build_zoo
from engine.zoo.lm import build_lm_zoo

if TYPE_CHECKING:
    from app.main_window import MainWindow

DEMO_RECIPE = "demo.json"


@dataclass(frozen=True)
class Demo:
    """One demo: its name in menus, its zoo folder (an ``AppPaths`` property), how it is built, what the
    first-build dialog says and what its hint suggests trying."""

    key: str
    title: str
    folder_attr: str
    job_title: str
    dialog_text: str
    hint: str

    def folder(self, window: "MainWindow") -> Path:
        return getattr(window.paths, self.folder_attr)

    def builder(self) -> Callable[..., Path]:
        """The zoo builder (looked up when called, so that a test may stand in a quick one)."""
        return build_zoo if self.key == "image" else build_lm_zoo


IMAGE = Demo("image", "&Image Classification Demo", "zoo_dir", "Build the demo zoo",
             "First start: Weightsmith is building its demo model zoo — a small pre-trained network and one "
             "expert per task — once, in a few minutes, with no download. Hide this to look around meanwhile.",
             "Move λ or density in the Inspector and watch every task's score in Results")
LM = Demo("lm", "&Language-Model Demo (LM Domains)", "lm_zoo_dir", "Build the LM demo zoo",
          "Weightsmith is building the language-model demo — a small Llama with its own tokenizer, four domain "
          "experts and a LoRA expert, trained here from Python's own text — once, in about three minutes, "
          "with no download. Hide this to keep working meanwhile.",
          "Move λ or density in the Inspector and watch each domain's perplexity in Results; the Generation "
          "tab shows each model's completions")
DEMOS = (IMAGE, LM)


def open_demo(window: "MainWindow", demo: Demo = IMAGE, size: str = "default") -> Job | None:
    """Open ``demo``'s recipe; when its zoo is missing, build it (``size``) and return that job.

    The build's progress dialog can be hidden (the Tasks panel keeps showing the job) while the user
    works. When the build ends the demo opens — unless the user has meanwhile opened or edited a
    project, which is then left alone and the status bar says where the demo is. A cancelled or failed
    build leaves the project as it was.
    """
    out = demo.folder(window)
    recipe = out / DEMO_RECIPE
    if recipe.is_file():
        if window.maybe_save():
            window.open_project(recipe)
            window.show_demo_hint(demo)
        return None
    before = (window.project_path, window.recipe.to_json())
    job = window.jobs.submit(demo.job_title, lambda progress, cancel: demo.builder()(
        out, size=size, progress=progress, cancel=cancel), kind="zoo")
    dialog = JobProgressDialog(job, demo.dialog_text, window)
    dialog.setWindowTitle(demo.title.replace("&", ""))
    dialog.hidden.connect(lambda: window.statusBar().showMessage(
        "Building the demo in the background; the Tasks panel shows its progress", 10_000))

    def on_failed(message: str) -> None:
        window.show_error("The demo could not be built", message)

    def on_end(_state: str) -> None:
        if not job.state.finished:
            return
        untouched = (window.project_path, window.recipe.to_json()) == before and not window.modified
        if recipe.is_file() and untouched:
            window.open_project(recipe)
            window.show_demo_hint(demo)
        elif recipe.is_file():
            window.statusBar().showMessage(f"The demo is ready: File ▸ Open… {recipe}", 30_000)
        elif not window.recipe.nodes:
            window.statusBar().showMessage("No demo zoo: starting with an empty project", 15_000)

    job.failed.connect(on_failed)
    job.stateChanged.connect(on_end)
    dialog.show()
    return job
