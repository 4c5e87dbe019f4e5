"""Recipe validation time against the number of nodes, for a deep chain and a wide fan.

``chain``: two checkpoints, then N merges each taking the previous merge on the base, then a Save.
``fan``: a task vector scaled by N Scale nodes that one Add node sums onto the base, then a Save.
Both are validated with their (tiny) checkpoint files opened. Prints one JSON object per line:
``{"shape", "nodes", "edges", "seconds", "problems", "load"}``. Usage::

    python bench/validate_scale.py [--nodes 1000 10000 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.graph import validate  # noqa: E402
from engine.graph.recipe import Recipe  # noqa: E402


def _recipe(name: str, nodes: list[tuple], edges: list[tuple]) -> Recipe:
    """A recipe from (id, type, params) and (from, to, port) tuples, read as a recipe file is."""
    return Recipe.from_json({"format": "weightsmith-recipe", "version": 1, "name": name,
                             "nodes": [{"id": i, "type": t, "params": p} for i, t, p in nodes],
                             "edges": [{"from": f, "to": t, "port": p} for f, t, p in edges]})


def chain_recipe(folder: Path, n: int) -> Recipe:
    """base and model checkpoints, ``n`` chained task-arithmetic merges, a Save."""
    nodes = [("base", "checkpoint", {"path": str(folder / "base.safetensors")}),
             ("m0", "checkpoint", {"path": str(folder / "ft.safetensors")})]
    edges = []
    for i in range(1, n + 1):
        nodes.append((f"m{i}", "merge", {"method": "task_arithmetic", "lambda": 0.5}))
        edges += [("base", f"m{i}", "base"), (f"m{i - 1}", f"m{i}", "models")]
    nodes.append(("save", "save", {"path": str(folder / "out")}))
    edges.append((f"m{n}", "save", "model"))
    return _recipe("chain", nodes, edges)


def fan_recipe(folder: Path, n: int) -> Recipe:
    """One task vector scaled by ``n`` Scale nodes, all summed onto the base by one Add, a Save."""
    nodes = [("base", "checkpoint", {"path": str(folder / "base.safetensors")}),
             ("ft", "checkpoint", {"path": str(folder / "ft.safetensors")}),
             ("tv", "task_vector", {}), ("sum", "add", {})]
    edges = [("ft", "tv", "model"), ("base", "tv", "base"), ("base", "sum", "inputs")]
    for i in range(n):
        nodes.append((f"s{i}", "scale", {"factor": 1.0 / n}))
        edges += [("tv", f"s{i}", "input"), (f"s{i}", "sum", "inputs")]
    nodes.append(("save", "save", {"path": str(folder / "out")}))
    edges.append(("sum", "save", "model"))
    return _recipe("fan", nodes, edges)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000, 10000, 50000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        base = {"model.layers.0.w": torch.zeros(4), "model.layers.1.w": torch.zeros(4)}
        save_file(base, folder / "base.safetensors")
        save_file({k: v + 1 for k, v in base.items()}, folder / "ft.safetensors")
        for n in args.nodes:
            for shape, build in (("chain", chain_recipe), ("fan", fan_recipe)):
                recipe = build(folder, n)
                start = time.perf_counter()
                problems = validate(recipe)
                seconds = time.perf_counter() - start
                print(json.dumps({"shape": shape, "nodes": len(recipe.nodes), "edges": len(recipe.edges),
                                  "seconds": round(seconds, 4), "problems": len(problems),
                                  "load": os.getloadavg()[0]}), flush=True)


if __name__ == "__main__":
    main()
