"""Every registered merge method on the demo zoo: coefficient chosen on val, accuracy reported on test.

    python bench/zoo_table.py [--zoo DIR] [--out results.json] [--markdown table.md] [--methods NAME ...]

For each data-free method that merges any number of models, the merge of all experts is scored on the
validation split over a small grid of its global coefficient (``lambda``, or ``alpha`` for the Iso
methods; the defaults for methods with neither), the best grid value by average validation accuracy
is kept, and that merge is scored on the test split. Every other parameter keeps its default.
A method with a ``task`` parameter (TALL-mask reconstruction) builds one model per task, and each
task is scored on its own reconstruction, as its paper does. Methods that need data, or that merge
at most two models (SLERP), are listed as skipped. Prints one JSON object; ``--markdown`` also
writes raw and normalized tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine.evaluation import EvaluationService  # noqa: E402
from engine.evaluation.runner import EvalCache  # noqa: E402
from engine.graph import Recipe  # noqa: E402
from engine.methods import Requirement, all_methods  # noqa: E402
from engine.zoo import default_zoo_dir  # noqa: E402

COEFFICIENT_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.3, 1.6, 2.0, 2.5, 3.0)
COEFFICIENTS = ("lambda", "alpha")


def method_recipe(zoo: Path, method: str, params: dict[str, Any]) -> Recipe:
    """The zoo's demo recipe with its merge node set to ``method`` and ``params``."""
    data = json.loads((zoo / "demo.json").read_text(encoding="utf-8"))
    for node in data["nodes"]:
        if node["id"] == "merge":
            node["params"] = {"method": method, **params}
    return Recipe.from_json(data, zoo)


def grid_for(spec) -> list[dict[str, Any]]:
    """Settings to try: the method's global coefficient over ``COEFFICIENT_GRID`` within its bounds."""
    names = {p.name: p for p in spec.params}
    coefficient = next((c for c in COEFFICIENTS if c in names), None)
    if coefficient is None:
        return [{}]
    p = names[coefficient]
    return [{coefficient: v} for v in COEFFICIENT_GRID
            if (p.min is None or v >= p.min) and (p.max is None or v <= p.max)]


def score(runner: EvaluationService, zoo: Path, spec, params: dict[str, Any], split: str,
          tasks: list[str]) -> dict[str, Any]:
    """The merge's run; for per-task methods, task i's row comes from the model built with ``task=i``."""
    if "task" not in {p.name for p in spec.params}:
        return merge_run(runner, method_recipe(zoo, spec.name, params), split)
    rows = {t: merge_run(runner, method_recipe(zoo, spec.name, {**params, "task": i}), split)["tasks"][t]
            for i, t in enumerate(tasks)}
    return {"tasks": rows, "average": {k: sum(r[k] for r in rows.values()) / len(rows)
                                       for k in ("accuracy", "normalized_accuracy")}}


def merge_run(runner: EvaluationService, recipe: Recipe, split: str) -> dict[str, Any]:
    """The run of the recipe's ``merge`` node on ``split``."""
    return runner.evaluate(recipe, split=split, models=["merge"])["runs"][0]


def skip_reason(spec, n_models: int, holder: str) -> str | None:
    """Why a method has no row in a data-free table of ``n_models`` models (None: it has one)."""
    if spec.requirements != frozenset({Requirement.DATA_FREE}):
        return "needs " + ", ".join(sorted(r.value for r in spec.requirements))
    if spec.max_models is not None and spec.max_models < n_models:
        return f"merges at most {spec.max_models} model(s), the {holder} has {n_models}"
    return None


def table_command(description: str) -> tuple[argparse.Namespace, EvaluationService]:
    """The table scripts' command line (``--zoo``, ``--device``, ``--out``, ``--markdown``, ``--methods``:
    only these registry names get rows), parsed, and the evaluation service they score with (one CPU
    thread, one cache)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--zoo", type=Path, default=default_zoo_dir())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--methods", nargs="+", help="registry names to run (default: every data-free method)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    return args, EvaluationService(device=args.device, cache=EvalCache())


def row(run: dict[str, Any]) -> dict[str, Any]:
    """A table row: per-task and average accuracy and normalized accuracy of one run."""
    return {"tasks": {t: {"accuracy": v["accuracy"], "normalized_accuracy": v["normalized_accuracy"]}
                      for t, v in run["tasks"].items()},
            "average": {k: run["average"][k] for k in ("accuracy", "normalized_accuracy")}}


def main() -> None:
    """Run the table and print (and optionally write) it."""
    args, runner = table_command(__doc__.splitlines()[0])
    n_models = len(json.loads((args.zoo / "zoo.json").read_text())["tasks"])

    refs = {r["name"]: r for r in runner.evaluate(method_recipe(args.zoo, "task_arithmetic", {}), split="test")["runs"]}
    tasks = list(refs["base"]["tasks"])
    table: dict[str, Any] = {
        "pre-trained": row(refs["base"]),
        "individual": {"tasks": {t: {"accuracy": refs[t]["tasks"][t]["accuracy"], "normalized_accuracy": 1.0}
                                 for t in tasks},
                       "average": {"accuracy": sum(refs[t]["tasks"][t]["accuracy"] for t in tasks) / len(tasks),
                                   "normalized_accuracy": 1.0}},
    }
    chosen, skipped = {}, {}
    for spec in all_methods():
        if args.methods and spec.name not in args.methods:
            continue
        reason = skip_reason(spec, n_models, "zoo")
        if reason:
            skipped[spec.name] = reason
            continue
        start = time.perf_counter()
        val = {}
        for params in grid_for(spec):
            val[json.dumps(params)] = score(runner, args.zoo, spec, params, "val", tasks)["average"]["accuracy"]
        best = max(val, key=val.get)
        test = score(runner, args.zoo, spec, json.loads(best), "test", tasks)
        table[spec.name] = row(test)
        chosen[spec.name] = {"params": json.loads(best), "val_accuracy": val[best],
                             "per_task": "task" in {p.name for p in spec.params},
                             "seconds": round(time.perf_counter() - start, 1)}
        print(f"{spec.name}: {best} val {val[best]:.4f} test {test['average']['accuracy']:.4f}", file=sys.stderr)
    result = {"zoo": str(args.zoo), "tasks": tasks, "table": table, "chosen": chosen, "skipped": skipped}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    if args.markdown:
        args.markdown.write_text(markdown(result), encoding="utf-8")
    print(json.dumps(result))


def markdown(result: dict[str, Any]) -> str:
    """Two tables (test accuracy %, normalized accuracy %) with the chosen coefficients."""
    tasks = result["tasks"]
    out = []
    for metric, title in (("accuracy", "Test accuracy (%)"), ("normalized_accuracy", "Normalized accuracy (%)")):
        out += [f"**{title}**", "", "| method | " + " | ".join(tasks) + " | **avg** |",
                "|---|" + "---:|" * (len(tasks) + 1)]
        for name, r in result["table"].items():
            chosen = result["chosen"].get(name, {})
            params = chosen.get("params")
            label = name + (f" ({', '.join(f'{k} {v}' for k, v in params.items())})" if params else "")
            label += " †" if chosen.get("per_task") else ""
            cells = " | ".join(f"{100 * r['tasks'][t][metric]:.1f}" for t in tasks)
            out.append(f"| {label} | {cells} | **{100 * r['average'][metric]:.1f}** |")
        out.append("")
    if any(c.get("per_task") for c in result["chosen"].values()):
        out.append("† one model per task (the method reconstructs each task's model), not a single merge.")
    if result["skipped"]:
        out.append("\nNot in the table: " + "; ".join(f"{k} ({v})" for k, v in result["skipped"].items()) + ".")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
