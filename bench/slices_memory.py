"""Peak memory of a passthrough frankenmerge: a layer stack over N models, streamed to disk.

A stack copies tensors (renamed) from its inputs one at a time, so the anonymous memory it needs should
not grow with the models' count or size. Writes N Llama-shaped fp16 models (``bench.synthetic``, cached),
then runs ``weightsmith run`` on a recipe stacking every model's layers in turn (an N×-deep model) in a
fresh child process whose /proc status is sampled every 5 ms. ``peak_anon_mb`` is RssAnon (memory the
process allocated; mapped input pages are file pages, not counted), ``baseline_anon_mb`` the same for a
child that only imports the engine. Prints one JSON object per line. Usage::

    python bench/slices_memory.py [--params-m 200] [--models 4] [--cache /tmp/ws-bench-slices]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.merge_throughput import timed_child  # noqa: E402
from bench.synthetic import make_models  # noqa: E402


def stack_recipe(models: list[Path], layers: int, out: Path) -> dict:
    """A recipe stacking all ``layers`` layers of each model in turn, saved as fp16."""
    ids = [f"m{k}" for k in range(len(models))]
    nodes = [{"id": nid, "type": "checkpoint", "params": {"path": str(p)}} for nid, p in zip(ids, models)]
    nodes.append({"id": "stack", "type": "stack", "params": {"slices": ", ".join(f"{nid}[0:{layers}]" for nid in ids)}})
    nodes.append({"id": "save", "type": "save", "params": {"path": str(out), "dtype": "fp16"}})
    edges = [{"from": nid, "to": "stack", "port": "models"} for nid in ids]
    edges.append({"from": "stack", "to": "save", "port": "model"})
    return {"format": "weightsmith-recipe", "version": 1, "name": "bench stack", "nodes": nodes, "edges": edges}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params-m", type=float, default=200.0, help="parameters of each model, in millions")
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "ws-bench-slices")
    args = parser.parse_args()
    base, fts = make_models(args.cache / f"{args.params_m:g}m", args.params_m, args.models - 1)
    models = [base, *fts]
    layers = json.loads((base / "config.json").read_text())["num_hidden_layers"]
    input_bytes = sum((p / "model.safetensors").stat().st_size for p in models)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    baseline = timed_child([sys.executable, "-c", "import engine.cli, engine.graph.executor"], env=env)
    with tempfile.TemporaryDirectory(dir=args.cache) as tmp:
        recipe, out = Path(tmp) / "stack.json", Path(tmp) / "out"
        recipe.write_text(json.dumps(stack_recipe(models, layers, out)), encoding="utf-8")
        run = timed_child([sys.executable, "-m", "engine.cli", "run", str(recipe), "--device", "cpu"], env=env)
        out_bytes = sum(f.stat().st_size for f in out.glob("*.safetensors"))
        config = json.loads((out / "config.json").read_text())
    print(json.dumps({
        "case": "passthrough_stack", "models": len(models), "params_m": args.params_m,
        "input_gb": round(input_bytes / 1e9, 3), "output_gb": round(out_bytes / 1e9, 3),
        "output_layers": config["num_hidden_layers"], "wall_s": round(run["wall_s"], 2),
        "peak_anon_mb": round(run["peak_anon_mb"], 1), "baseline_anon_mb": round(baseline["peak_anon_mb"], 1),
        "peak_rss_mb": round(run["peak_rss_mb"], 1), "load": round(os.getloadavg()[0], 2),
    }), flush=True)


if __name__ == "__main__":
    main()
