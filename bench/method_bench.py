"""Per-tensor timing of every merge method on Llama-shaped synthetic tensors.

Prints one JSON object per line:
``{"case", "method", "device", "median_ms", "p95_ms", "elements", "models", "threads", "vs_task_arithmetic",
"vs_svd"}``. On a matrix case the run also times one ``torch.linalg.svd`` of a task vector (method
``"torch.linalg.svd"``) and ``vs_svd`` gives each method's median over it: the yardstick for the SVD
family (TSV-M, CART, Iso-C/CTS, LoRE).

The inputs imitate a Llama-7B layer (``--size full``: 4096×4096 attention, 11008×4096 MLP, a 4096 norm;
``--size small`` divides every side by 4): an fp16 base and fine-tuned variants with a dense small and a
sparse larger perturbation, converted to fp32 as the executor does before a method runs. Runs of the
methods are interleaved so that a busy machine slows them alike; each method's whole-model statistics
(if any) are gathered once outside the timing. Usage::

    python bench/method_bench.py [--size full|small] [--models 3] [--repeat 5] [--threads N]
                                 [--methods ties dare_ties ...] [--cases attn_q_proj ...] [--include-slow]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.methods import MergeInputs, Requirement, TensorContext, all_methods, get_method  # noqa: E402
from engine.methods.schedule import resolve_params  # noqa: E402
from engine.methods.statistics import run_statistic  # noqa: E402

CASES = {"attn_q_proj": (4096, 4096), "mlp_up_proj": (11008, 4096), "input_layernorm": (4096,)}
SETTINGS = {"metagpt": {"scope": "tensor"}, "slerp": {"t": 0.4}}
SLOW_ON_CPU = {"iso_c", "iso_cts"}  # one SVD per model of an 11008×4096 matrix: minutes on a laptop CPU
SVD = "torch.linalg.svd"


def one_svd(base: torch.Tensor, models: list[torch.Tensor]) -> None:
    """The yardstick: one thin SVD of the first task vector."""
    torch.linalg.svd(models[0] - base, full_matrices=False)


def synthetic(shape: tuple[int, ...], models: int, seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """An fp16 base and ``models`` fine-tuned variants (dense 1e-3 noise plus 1% entries moved by 1e-2)."""
    g = torch.Generator().manual_seed(seed)
    base = (0.02 * torch.randn(shape, generator=g)).half()
    out = []
    for _ in range(models):
        dense = 1e-3 * torch.randn(shape, generator=g)
        sparse = 1e-2 * torch.randn(shape, generator=g) * (torch.rand(shape, generator=g) < 0.01)
        out.append((base.float() + dense + sparse).half())
    return base, out


def inputs_for(spec, base: torch.Tensor, models: list[torch.Tensor]) -> MergeInputs:
    n = len(models)
    if spec.max_models is not None:
        n = min(n, spec.max_models)
    n = max(n, spec.min_models)
    keys = [f"m{i}" for i in range(n)]
    return MergeInputs(base if spec.needs_base or spec.name == "nuslerp" else None, keys, models=models[:n])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=("full", "small"), default="full")
    ap.add_argument("--models", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--methods", nargs="*", help="registry names (default: every data-free method)")
    ap.add_argument("--cases", nargs="*", choices=sorted(CASES), help="tensor shapes to time (default: all)")
    ap.add_argument("--devices", nargs="*", help="default: cpu, and cuda when available")
    ap.add_argument("--include-slow", action="store_true", help=f"also time {sorted(SLOW_ON_CPU)} on the CPU")
    ap.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.methods or [m.name for m in all_methods() if m.requirements == {Requirement.DATA_FREE}]
    if "task_arithmetic" not in names:
        names.insert(0, "task_arithmetic")
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    div = 4 if args.size == "small" else 1
    for case, shape in CASES.items():
        if args.cases and case not in args.cases:
            continue
        shape = tuple(max(1, s // div) for s in shape)
        base16, models16 = synthetic(shape, args.models, seed=len(case))
        for device in devices:
            dev = torch.device(device)
            base = base16.to(dev).float()
            models = [m.to(dev).float() for m in models16]
            methods = [n for n in names if device != "cpu" or args.include_slow or n not in SLOW_ON_CPU]
            timings = {n: [] for n in methods}
            prepared = {}
            for n in methods:
                spec = get_method(n)
                values = SETTINGS.get(n, {})
                inputs = inputs_for(spec, base, models)
                params = resolve_params(spec.params, values, inputs.keys, case, 0, 32)
                ctx = TensorContext(case, 0, 32, dev, 0)
                stat = spec.statistic({**spec.defaults(), **values}) if spec.statistic else None
                if stat is not None:
                    ctx.stats = run_statistic(stat, [(inputs, params, ctx)])
                prepared[n] = (spec, inputs.keys, params, ctx)
            if len(shape) == 2:
                timings[SVD] = []
            for rep in range(args.repeat + 1):
                for n in timings:
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                    if n == SVD:
                        start = time.perf_counter()
                        one_svd(base, models)
                    else:
                        spec, keys, params, ctx = prepared[n]
                        inputs = inputs_for(spec, base, models)
                        start = time.perf_counter()
                        spec.merge(inputs, params, ctx)
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                    if rep:  # the first round warms up
                        timings[n].append((time.perf_counter() - start) * 1000)
            ta = statistics.median(timings["task_arithmetic"])
            svd = statistics.median(timings[SVD]) if SVD in timings else None
            for n, ts in timings.items():
                ts = sorted(ts)
                median = statistics.median(ts)
                print(json.dumps({
                    "case": case, "method": n, "device": device, "median_ms": round(median, 2),
                    "p95_ms": round(ts[min(len(ts) - 1, int(0.95 * len(ts)))], 2), "elements": base.numel(),
                    "models": len(prepared[n][1]) if n in prepared else 1, "threads": torch.get_num_threads(),
                    "vs_task_arithmetic": round(median / ta, 2),
                    "vs_svd": round(median / svd, 2) if svd else None,
                }), flush=True)


if __name__ == "__main__":
    main()
