"""Per-tensor overhead of the executor: merges of checkpoints holding many tiny tensors.

Mixture-of-experts LLMs have 18k–90k tensors; what the executor spends per tensor name besides the
arithmetic must stay constant. Each run merges a base and two experts of N 8-element tensors (spread
over N/16 numbered layers) and writes the result. Prints one JSON object per line:
``{"tensors", "method", "seconds", "per_tensor_us", "load"}``. Usage::

    python bench/many_tensors.py [--counts 5000 20000 50000] [--methods task_arithmetic ties]
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

from engine.graph import run_recipe  # noqa: E402
from engine.graph.build import simple_merge_recipe  # noqa: E402


def write_models(folder: Path, count: int) -> tuple[Path, list[Path]]:
    """A base and two experts of ``count`` tiny fp32 tensors named like a layered model."""
    g = torch.Generator().manual_seed(0)
    names = [f"model.layers.{i // 16}.block_{i % 16}.weight" for i in range(count)]
    base = {n: torch.randn(8, generator=g) for n in names}
    paths = [folder / f"{stem}.safetensors" for stem in ("base", "e1", "e2")]
    save_file(base, paths[0])
    for p in paths[1:]:
        save_file({n: t + 0.1 * torch.randn(8, generator=g) for n, t in base.items()}, p)
    return paths[0], paths[1:]


def time_merge(folder: Path, base: Path, models: list[Path], method: str) -> float:
    """Seconds to validate, run and write one merge on the CPU."""
    out = folder / f"out-{method}"
    recipe = simple_merge_recipe(method, models, base=base, out=out)
    start = time.perf_counter()
    run_recipe(recipe, device="cpu", force=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[5000, 20000, 50000])
    parser.add_argument("--methods", nargs="+", default=["task_arithmetic", "ties"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    for count in args.counts:
        with tempfile.TemporaryDirectory() as tmp:
            base, models = write_models(Path(tmp), count)
            for method in args.methods:
                seconds = time_merge(Path(tmp), base, models, method)
                print(json.dumps({"tensors": count, "method": method, "seconds": round(seconds, 3),
                                  "per_tensor_us": round(1e6 * seconds / count, 1),
                                  "load": os.getloadavg()[0]}), flush=True)


if __name__ == "__main__":
    main()
