"""Start-up time: process start to the first window, to the studio window, and the command line's ``--help``.

    python bench/startup.py [--repeat 5]

Each run is a fresh process (offscreen Qt, its own settings folder) started the way ``python -m app`` starts:
``window_s`` is from spawning the process to the first exposed frame of the first window (the start-up
window, ``app.startup_window``: painted while torch loads on a background thread), ``studio_s`` to
the studio window shown with an (empty) project open, ``cli_help_s`` the wall time of
``weightsmith --help`` and ``cli_inspect_s`` that of ``weightsmith inspect`` on a 60-tensor safetensors file. Prints one JSON object per line with the median over ``--repeat`` runs and the load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys, time
from pathlib import Path
from PySide6.QtWidgets import QApplication
from app.settings import AppPaths, Settings
from app.startup_window import launch
app = QApplication([])
home = Path(sys.argv[1])
project = home / "empty.json"
project.write_text(json.dumps({"format": "weightsmith-recipe", "version": 1, "name": "empty", "nodes": [], "edges": []}))
def studio_shown(window):
    app.processEvents()
    window.repaint()
    print("studio", time.time(), flush=True)
    window.autosave.discard()
    app.quit()
shell = launch(AppPaths(home / "config", home / "data"), Settings(output_dir=str(home / "out")), str(project),
               on_studio=studio_shown)
app.processEvents()
shell.repaint()
print("window", time.time(), flush=True)
app.exec()
"""


def window_seconds() -> dict[str, float]:
    """Seconds from spawning a start to its first window (``window_s``) and to the studio (``studio_s``)."""
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(ROOT)}
        start = time.time()
        out = subprocess.run([sys.executable, "-c", CHILD, home], env=env, capture_output=True, text=True,
                             check=True, cwd=ROOT).stdout
        marks = dict(line.split() for line in out.splitlines() if line.startswith(("window ", "studio ")))
        return {f"{k}_s": float(v) - start for k, v in marks.items()}


def cli_help_seconds() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "engine.cli", "--help"], cwd=ROOT, capture_output=True, check=True)
    return time.perf_counter() - start


def cli_inspect_seconds() -> float:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.safetensors"
        save_file({f"model.layers.{i // 6}.w{i % 6}.weight": np.zeros((64, 64), np.float16) for i in range(60)},
                  str(path))
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "engine.cli", "inspect", str(path)], cwd=ROOT, capture_output=True,
                       check=True)
        return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    starts = [window_seconds() for _ in range(args.repeat)]
    cases = {name: [s[name] for s in starts] for name in ("window_s", "studio_s")}
    cases["cli_help_s"] = [cli_help_seconds() for _ in range(args.repeat)]
    cases["cli_inspect_s"] = [cli_inspect_seconds() for _ in range(args.repeat)]
    for name, runs in cases.items():
        print(json.dumps({"case": name, "median_s": round(statistics.median(runs), 3),
                          "max_s": round(max(runs), 3), "runs": args.repeat, "load": os.getloadavg()}), flush=True)


if __name__ == "__main__":
    main()
