"""Merge throughput: seconds, input GB/s, peak RSS and peak anonymous memory per method.

    python bench/merge_throughput.py --params-m 200 --models 3 --methods task_arithmetic ties
    python bench/merge_throughput.py ... --mergekit /path/to/venv   # the same merges with mergekit

Each merge runs in a fresh child process whose /proc status is sampled every 5 ms: ``peak_rss_mb`` counts
file pages mapped from the inputs, ``peak_anon_mb`` (RssAnon) only memory the process allocated. Prints
one JSON object per line. The page cache is warmed before timing (set --cold to skip).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.synthetic import make_models  # noqa: E402

MERGEKIT_NAMES = {"task_arithmetic": "task_arithmetic", "ties": "ties", "linear": "linear", "dare_linear": "dare_linear",
                  "dare_ties": "dare_ties", "breadcrumbs": "breadcrumbs", "model_stock": "model_stock"}
PARAMS = {"task_arithmetic": {"lambda": 1.0}, "ties": {"density": 0.5, "lambda": 1.0}, "linear": {},
          "dare_linear": {"density": 0.5, "lambda": 1.0}, "dare_ties": {"density": 0.5, "lambda": 1.0},
          "breadcrumbs": {"density": 0.9, "gamma": 0.01, "lambda": 1.0}, "model_stock": {}}


def sample_memory(pid: int, peaks: dict[str, int], stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key in ("VmRSS", "RssAnon"):
                        peaks[key] = max(peaks.get(key, 0), int(value.split()[0]))
        except (FileNotFoundError, ProcessLookupError):
            return
        time.sleep(0.005)


def timed_child(cmd: list[str], env: dict[str, str] | None = None) -> dict:
    peaks: dict[str, int] = {}
    stop = threading.Event()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    t = threading.Thread(target=sample_memory, args=(proc.pid, peaks, stop), daemon=True)
    t.start()
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    stop.set()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}):\n{err[-3000:]}")
    return {"wall_s": seconds, "peak_rss_mb": peaks.get("VmRSS", 0) / 1024, "peak_anon_mb": peaks.get("RssAnon", 0) / 1024,
            "stdout": out}


def weightsmith_cmd(method: str, base: Path, models: list[Path], out: Path, device: str) -> list[str]:
    cmd = [sys.executable, "-m", "engine.cli", "merge", "--method", method, "--base", str(base), "--out", str(out),
           "--device", device, "--dtype", "fp16", "--force"]
    for m in models:
        cmd += ["--model", str(m)]
    for k, v in PARAMS.get(method, {}).items():
        cmd += ["--param", f"{k}={json.dumps(v)}"]
    if method in ("dare_linear", "dare_ties"):
        cmd += ["--seed", "0"]
    return cmd


def mergekit_cmd(venv: Path, method: str, base: Path, models: list[Path], out: Path, device: str, work: Path) -> list[str]:
    params = dict(PARAMS.get(method, {}))
    lam = params.pop("lambda", None)
    if "density" in params and method == "breadcrumbs":
        params = {"density": params["density"], "gamma": params["gamma"]}
    cfg = ["merge_method: " + MERGEKIT_NAMES[method], f"base_model: {base}", "dtype: float16", "models:"]
    if method == "linear":
        cfg += [f"  - model: {m}\n    parameters:\n      weight: 1.0" for m in [base, *models]]
    else:
        for m in models:
            lines = [f"  - model: {m}", "    parameters:", "      weight: 1.0"]
            lines += [f"      {k}: {v}" for k, v in params.items()]
            cfg.append("\n".join(lines))
    if lam is not None and method != "linear":
        cfg += ["parameters:", f"  lambda: {lam}"]
    path = work / f"{method}.yml"
    path.write_text("\n".join(cfg) + "\n")
    cmd = [str(venv / "bin" / "mergekit-yaml"), str(path), str(out), "--lazy-unpickle", "--allow-crimes"]
    if device.startswith("cuda"):
        cmd.append("--cuda")
    return cmd


def warm(paths: list[Path]) -> None:
    for p in paths:
        for f in p.glob("*.safetensors"):
            with open(f, "rb") as fh:
                while fh.read(64 << 20):
                    pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params-m", type=float, default=200, help="millions of parameters per model")
    ap.add_argument("--models", type=int, default=3, help="fine-tuned models (plus one base)")
    ap.add_argument("--methods", nargs="+", default=["task_arithmetic", "ties"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dir", default=str(Path(tempfile.gettempdir()) / "weightsmith-bench"))
    ap.add_argument("--mergekit", help="a venv with mergekit installed: run the same merges with it too")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--cold", action="store_true", help="do not warm the page cache first")
    args = ap.parse_args()

    folder = Path(args.dir) / f"llama-{args.params_m:g}m-x{args.models}"
    base, models = make_models(folder, args.params_m, args.models)
    input_bytes = sum(f.stat().st_size for p in [base, *models] for f in p.glob("*.safetensors"))
    out = Path(args.dir) / "out"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    for method in args.methods:
        engines = [("weightsmith", weightsmith_cmd(method, base, models, out, args.device))]
        if args.mergekit:
            engines.append(("mergekit", mergekit_cmd(Path(args.mergekit), method, base, models, out, args.device, Path(args.dir))))
        for engine_name, cmd in engines:
            for _ in range(args.repeat):
                if not args.cold:
                    warm([base, *models])
                shutil.rmtree(out, ignore_errors=True)
                r = timed_child(cmd, env)
                print(json.dumps({
                    "case": f"{args.models + 1}x{args.params_m:g}M fp16", "engine": engine_name, "method": method,
                    "device": args.device, "seconds": round(r["wall_s"], 2),
                    "input_gb": round(input_bytes / 1e9, 3), "gb_per_s": round(input_bytes / 1e9 / r["wall_s"], 3),
                    "peak_rss_mb": round(r["peak_rss_mb"]), "peak_anon_mb": round(r["peak_anon_mb"]),
                }), flush=True)
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
