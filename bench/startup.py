"""Start-up time: process start to the first exposed frame of the main window, and the command line's ``--help``.

    python bench/startup.py [--repeat 5]

Each run is a fresh process (offscreen Qt, its own settings folder): ``window_s`` is from spawning the
process to the main window's first expose (shown, painted once), ``cli_help_s`` the wall time of
``weightsmith --help``. Prints one JSON object per line with the median over ``--repeat`` runs and the load.
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

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import sys, time
from PySide6.QtWidgets import QApplication
app = QApplication([])
from app.main_window import MainWindow
from app.settings import AppPaths, Settings
from pathlib import Path
home = Path(sys.argv[1])
window = MainWindow(AppPaths(home / "config", home / "data"), Settings(output_dir=str(home / "out")))
window.show()
app.processEvents()
window.repaint()
print(time.time(), flush=True)
window.autosave.discard()
"""


def window_seconds() -> float:
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(ROOT)}
        start = time.time()
        out = subprocess.run([sys.executable, "-c", CHILD, home], env=env, capture_output=True, text=True,
                             check=True, cwd=ROOT).stdout
        return float(out.split()[-1]) - start


def cli_help_seconds() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "engine.cli", "--help"], cwd=ROOT, capture_output=True, check=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    for name, measure in (("window_s", window_seconds), ("cli_help_s", cli_help_seconds)):
        runs = [measure() for _ in range(args.repeat)]
        print(json.dumps({"case": name, "median_s": round(statistics.median(runs), 3),
                          "max_s": round(max(runs), 3), "runs": args.repeat, "load": os.getloadavg()}), flush=True)


if __name__ == "__main__":
    main()
