"""Live tuning latency: from a parameter change to updated per-task proxy metrics.

    python bench/live_latency.py                      # the demo zoo (built by `weightsmith zoo build`)
    python bench/live_latency.py --zoo DIR --threads 1 --synthetic-m 100

Zoo cases replay a scripted drag (``--steps`` values) on a ``LiveSession`` of the demo recipe's merge:
each step is ``update(params)`` then the quick-subset evaluation of every task, timed together
(``median_ms``/``p95_ms``; ``update_ms``/``eval_ms`` split them). Cases: task arithmetic λ; TIES λ
only, then density; layer-wise coefficients (a λ gradient whose middle anchor moves); and the same λ
drag through the ``LiveLoop`` with slider events every 16 ms (``loop`` cases: submit → result, with
coalescing; ``dropped`` counts values skipped). The LM cases (``--lm-zoo``, or the built LM demo) drag
λ on the LM demo's merge, scored on per-domain perplexity and then on every task, each with a quick
subset sized to ``--budget-ms`` of scoring. The synthetic cases time only the weight update for a
λ move on a ~``--synthetic-m`` M-parameter Llama-shaped model (base + 3 fine-tunes), on the CPU and on
CUDA when available. Prints one JSON object per line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.synthetic import make_models  # noqa: E402
from engine.graph import Recipe  # noqa: E402
from engine.live import LiveLoop, LiveSession  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(case: str, totals: list[float], **extra: Any) -> dict[str, Any]:
    return {"case": case, "median_ms": round(statistics.median(totals) * 1e3, 2),
            "p95_ms": round(percentile(totals, 0.95) * 1e3, 2), "n": len(totals), **extra}


def drag(lo: float, hi: float, steps: int) -> list[float]:
    """A slider dragged from ``lo`` to ``hi`` in ``steps`` distinct values (no score is ever cached)."""
    return [round(lo + (hi - lo) * i / max(1, steps - 1), 5) for i in range(steps)]


def timed_drag(session: LiveSession, points: list[dict[str, Any]], evaluate: bool = True) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"total": [], "update": [], "eval": []}
    for params in points:
        start = time.perf_counter()
        stats = session.update(params)
        mid = time.perf_counter()
        if evaluate:
            session.evaluate(full=False)
        end = time.perf_counter()
        out["total"].append(end - start)
        out["update"].append(stats.seconds if not evaluate else mid - start)
        out["eval"].append(end - mid)
    return out


def drag_case(case: str, session: LiveSession, base: dict[str, Any], vary: Callable[[float], dict[str, Any]],
              values: list[float], warm: dict[str, Any]) -> dict[str, Any]:
    session.update({**base, **warm})
    session.evaluate(full=False)
    session.references(full=False)
    t = timed_drag(session, [{**base, **vary(v)} for v in values])
    return summary(case, t["total"], update_ms=round(statistics.median(t["update"]) * 1e3, 3),
                   eval_ms=round(statistics.median(t["eval"]) * 1e3, 2),
                   examples=sum(session.evaluator.examples(False).values()))


def loop_case(case: str, session: LiveSession, base: dict[str, Any], values: list[float], interval_s: float) -> dict:
    """Slider events every ``interval_s`` through the coalescing loop: submit → quick result."""
    latencies: list[float] = []
    done = threading.Event()
    last = {}

    def listen(event) -> None:
        if event.kind == "quick":
            latencies.append(event.latency_s)
            if event.seq == last.get("seq"):
                done.set()

    loop = LiveLoop(session, listen, settle_s=10.0)
    try:
        for v in values:
            last["seq"] = loop.submit({**base, "lambda": v})
            time.sleep(interval_s)
        done.wait(30)
    finally:
        loop.close()
    return summary(case, latencies, submitted=loop.submitted, dropped=loop.dropped,
                   event_interval_ms=round(interval_s * 1e3, 1))


def zoo_cases(zoo: Path, steps: int) -> list[dict[str, Any]]:
    """Each case on a fresh session (cold score cache), with distinct values: every step really scores."""
    recipe = Recipe.load(zoo / "demo.json")
    fresh = lambda: LiveSession(recipe, "merge", device="cpu")  # noqa: E731
    lam = drag(0.1, 1.0, steps)
    ta = {"method": "task_arithmetic"}
    ties = {"method": "ties", "density": 0.2}
    session = fresh()
    layers = session.resident.num_layers
    out = [drag_case("zoo task_arithmetic lambda", session, ta, lambda v: {"lambda": v}, lam, {"lambda": 0.3})]
    session = fresh()
    out.append(drag_case("zoo ties lambda", session, ties, lambda v: {"lambda": v}, lam, {"lambda": 0.5}))
    out.append(drag_case("zoo ties density", session, {"method": "ties", "lambda": 0.8}, lambda v: {"density": v},
                         drag(0.05, 0.6, steps), {"density": 0.2}))
    session = fresh()
    out.append(drag_case(f"zoo layer-wise coefficients ({layers} layers)", session, ta,
                         lambda v: {"lambda": [0.2, v, 0.6]}, lam, {"lambda": [0.2, 0.4, 0.6]}))
    session = fresh()
    session.update({**ta, "lambda": 0.3})
    session.evaluate(full=False)
    session.references(full=False)
    out.append(loop_case("zoo task_arithmetic lambda via loop (16 ms events)", session, ta, lam, 0.016))
    return out


def lm_cases(zoo: Path, steps: int, budget_s: float) -> list[dict[str, Any]]:
    """The LM demo's merge: a λ drag scored on per-domain perplexity (the quick subset sized to ``budget_s``),
    then on every task of its suite (perplexity, multiple choice, generation)."""
    from engine.evaluation.lm_tasks import TextPerplexityTask
    from engine.graph import nodes_of
    from engine.graph.node_kinds import MERGE
    from engine.live.evaluation import tasks_for

    recipe = Recipe.load(zoo / "demo.json")
    merge = nodes_of(recipe, MERGE)[0]
    base = dict(recipe.nodes[merge].params)
    tasks = tasks_for(recipe, merge)
    lam = drag(0.1, 1.0, steps)
    out = []
    for label, chosen in (("per-domain perplexity", [t for t in tasks if isinstance(t, TextPerplexityTask)]),
                          ("every task", tasks)):
        session = LiveSession(recipe, merge, device="cpu", tasks=chosen, quick_budget_s=budget_s)
        out.append(drag_case(f"lm {base['method']} lambda, {label} (quick subset sized to {budget_s * 1e3:.0f} ms)",
                             session, base, lambda v: {"lambda": v}, lam, {"lambda": 0.5}))
        session.close()
    return out


def synthetic_cases(params_m: float, steps: int, devices: list[str]) -> list[dict[str, Any]]:
    folder = Path(tempfile.gettempdir()) / "weightsmith-bench" / f"llama-{params_m:g}m-x3"
    base, models = make_models(folder, params_m, 3)
    nodes = [{"id": "base", "type": "checkpoint", "params": {"path": str(base)}}]
    nodes += [{"id": f"m{k}", "type": "checkpoint", "params": {"path": str(p)}} for k, p in enumerate(models)]
    edges = [{"from": "base", "to": "merge", "port": "base"}] + [
        {"from": f"m{k}", "to": "merge", "port": "models"} for k in range(len(models))]
    out = []
    for method in ("task_arithmetic", "ties"):
        nodes_m = nodes + [{"id": "merge", "type": "merge", "params": {"method": method}}]
        recipe = Recipe.from_json({"format": "weightsmith-recipe", "version": 1, "nodes": nodes_m, "edges": edges})
        for device in devices:
            start = time.perf_counter()
            session = LiveSession(recipe, "merge", tasks=(), device=device)
            opened = time.perf_counter() - start
            session.update({"method": method, "lambda": 0.3})
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times = []
            for v in drag(0.1, 1.0, steps):
                t0 = time.perf_counter()
                session.update({"method": method, "lambda": v})
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            numel = session.resident.numel
            out.append(summary(f"synthetic {numel / 1e6:.0f}M {method} lambda weight update ({device})", times,
                               params=numel, models=len(models), resident_mb=round(session.required_bytes / 1e6),
                               open_s=round(opened, 2)))
            session.close()
            del session
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
    return out


def main() -> None:
    from engine.zoo import default_zoo_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zoo", type=Path, default=None, help="zoo folder (default: the user data folder's zoo)")
    parser.add_argument("--steps", type=int, default=40, help="values per scripted drag")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--synthetic-m", type=float, default=100.0, help="synthetic model size in M params (0: skip)")
    parser.add_argument("--no-zoo", action="store_true", help="skip the image zoo cases")
    parser.add_argument("--lm-zoo", type=Path, default=None,
                        help="LM demo folder (`weightsmith zoo build --lm`; default: the user data folder's, if built)")
    parser.add_argument("--budget-ms", type=float, default=60.0, help="time budget of the LM cases' quick subset")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    common = {"threads": torch.get_num_threads(), "torch": torch.__version__}
    rows = []
    if not args.no_zoo:
        zoo = args.zoo or default_zoo_dir()
        if not (zoo / "demo.json").is_file():
            sys.exit(f"no demo zoo in {zoo}: build it with `weightsmith zoo build` (or pass --zoo)")
        rows += zoo_cases(zoo, args.steps)
    from engine.zoo.lm import default_lm_zoo_dir

    lm_zoo = args.lm_zoo or default_lm_zoo_dir()
    if (lm_zoo / "demo.json").is_file():
        rows += lm_cases(lm_zoo, args.steps, args.budget_ms / 1e3)
    elif args.lm_zoo:
        sys.exit(f"no LM demo in {lm_zoo}: build it with `weightsmith zoo build --lm`")
    if args.synthetic_m > 0:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        rows += synthetic_cases(args.synthetic_m, args.steps, devices)
    for row in rows:
        print(json.dumps({**row, **common}), flush=True)


if __name__ == "__main__":
    main()
