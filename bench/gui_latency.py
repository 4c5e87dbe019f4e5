"""What the user waits for: from an inspector slider move to the results plot redrawn with that value's scores.

    python bench/gui_latency.py [--zoo DIR] [--lm-zoo DIR] [--steps 20] [--threads 2] [--method tsv_m]

Drives the real main window offscreen: opens a demo recipe (its merge node set to ``--method``, with
defaults, when given), selects its merge node, waits for live tuning, then moves the inspector's scale
slider (λ, or TSV-M's and Iso's α) and, for TIES, its density slider one step at a time as a user
would, pausing between moves. Each move is timed from the slider's new value on the UI thread to the
results panel's redraw of the quick frame carrying that value (its ``latencyChanged``, emitted after the
canvas has drawn the new bars). Prints one JSON line per case: median and p95 in ms, the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from PySide6.QtWidgets import QApplication, QMessageBox  # noqa: E402


def wait_until(app: QApplication, done, timeout: float) -> bool:
    """Process events until ``done()`` holds or ``timeout`` seconds pass."""
    end = time.perf_counter() + timeout
    while not done():
        if time.perf_counter() > end:
            return False
        app.processEvents()
        time.sleep(0.001)
    return True


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def drag_case(app: QApplication, window: Any, name: str, param: str, steps: int, pause_s: float) -> dict[str, Any]:
    """Move ``param``'s slider ``steps`` times, one position apart, each after the previous one was drawn."""
    merge = window.document.live.node_id
    field = window.inspector.fields[param]
    field = field.rows[""] if hasattr(field, "rows") else field  # a per-model parameter's shared row
    slider = field.scalar.slider
    panel = window.results_panel
    drawn: list[float] = []
    panel.latencyChanged.connect(lambda _ms: drawn.append(time.perf_counter()))
    times = []
    direction = 1 if slider.value() + steps * 2 <= slider.maximum() else -1
    for _ in range(steps):
        wait_until(app, lambda: window.document.live.loop.idle(0.0), 10)
        target = slider.value() + 2 * direction
        seen = len(drawn)
        start = time.perf_counter()
        slider.setValue(target)
        value = window.document.recipe.nodes[merge].params[param]

        def shown() -> bool:
            live = panel.model.live or {}
            return len(drawn) > seen and live.get("params", {}).get(param) == value

        if not wait_until(app, shown, 30):
            raise SystemExit(f"{name}: the plot never showed {param} = {value}")
        times.append(drawn[-1] - start)
        end = time.perf_counter() + pause_s
        wait_until(app, lambda: time.perf_counter() > end, pause_s + 1)
    return {"case": name, "median_ms": round(statistics.median(times) * 1e3, 1),
            "p95_ms": round(percentile(times, 0.95) * 1e3, 1), "n": len(times)}


def with_method(path: Path, method: str, folder: Path) -> Path:
    """A copy of the recipe at ``path``, saved in ``folder``, whose merge node is ``method`` with its defaults."""
    from engine.graph import Recipe

    recipe = Recipe.load(path)
    merge = next(nid for nid, n in recipe.nodes.items() if n.kind.method_param)
    recipe.set_params(merge, {"method": method})
    out = folder / f"{path.parent.name}-{method}.json"
    recipe.save(out)
    return out


def main() -> None:
    from app.main_window import MainWindow
    from app.settings import AppPaths, Settings
    from engine.zoo import default_zoo_dir
    from engine.zoo.lm import default_lm_zoo_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zoo", type=Path, default=None, help="image demo zoo (default: the user data folder's)")
    parser.add_argument("--lm-zoo", type=Path, default=None, help="LM demo (default: the user data folder's, if built)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between moves (the full split is not waited for)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--method", help="merge method to set on the demos' merge node (default: the demos' own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    demos = [("image demo", (args.zoo or default_zoo_dir()) / "demo.json"),
             ("LM demo", (args.lm_zoo or default_lm_zoo_dir()) / "demo.json")]
    app = QApplication([])
    QMessageBox.question = staticmethod(lambda *a, **k: QMessageBox.Discard)
    with tempfile.TemporaryDirectory() as home:
        for label, recipe in demos:
            if not recipe.is_file():
                print(json.dumps({"case": label, "skipped": f"no {recipe}"}), flush=True)
                continue
            if args.method:
                recipe = with_method(recipe, args.method, Path(home))
            window = MainWindow(AppPaths(Path(home) / "config", Path(home) / "data"),
                                Settings(output_dir=str(Path(home) / "out")))
            window.resize(1600, 1000)
            window.show()
            window.open_project(recipe)
            merge = next(nid for nid, n in window.document.recipe.nodes.items() if n.kind.method_param)
            window.scene.select_node(merge)
            if not wait_until(app, lambda: window.document.live.loop is not None
                              and window.document.live.loop.idle(0.0), 120):
                live = window.document.live
                raise SystemExit(f"{label}: live tuning did not start ({live.state}: {live.message})")
            method = window.document.recipe.nodes[merge].params.get("method")
            subset = window.document.live.session.evaluator.subset or {}
            common = {"threads": torch.get_num_threads(), "load": round(os.getloadavg()[0], 2), "method": method,
                      "quick_examples": sum(subset.values())}  # the quick subset sized to the live time budget
            for param in ("lambda", "alpha", "density"):
                if param in window.inspector.fields:
                    row = drag_case(app, window, f"{label}: {param} slider → redrawn plot", param, args.steps,
                                    args.pause)
                    print(json.dumps({**row, **common}), flush=True)
            window.document.shutdown(30_000)
            window.close()


if __name__ == "__main__":
    main()
