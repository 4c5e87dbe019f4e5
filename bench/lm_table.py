"""Every registered merge method on the LM domains demo: coefficient chosen on val, perplexity reported on test.

    python bench/lm_table.py [--zoo DIR] [--out results.json] [--markdown table.md] [--choice] [--grid 0.3,0.6,1.0]
                             [--methods NAME ...]

The zoo is the LM demo (``weightsmith zoo build --lm``; docs/zoo.md), whose ``demo.json`` merges four
full experts (python, prose, data, c) and the ``logs`` LoRA adapter onto the base. Its Evaluate node
is restricted to the suite's ``text-perplexity`` tasks (``--choice`` adds the ``multiple-choice``
ones of the full-expert domains, reported as one mean-accuracy column; the generation tasks are left out as slow). For each
data-free method that merges any number of models, the merge is scored on ``val`` over
``bench/zoo_table.py``'s coefficient grid (``lambda``, or ``alpha`` for the Iso methods; ``--grid``
keeps only the listed values, for a shorter run), the value
with the best mean normalized score (expert perplexity / merged perplexity, over the domains that
have a full expert) is kept, and that merge is scored on ``test``. ``logs`` has no full expert, so
its perplexity is reported but not normalized. Methods that need data or merge at most two models
are listed as skipped, as in the image table; per-task methods (``task`` parameter) get †. Each
method's row is printed (JSON line, stderr) and ``--out``/``--markdown`` rewritten as soon as it is
done, so a cut-short run still leaves the rows it finished. The learned rows come from
``bench/lm_learn_table.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.zoo_table import grid_for, skip_reason, table_command  # noqa: E402
from engine.evaluation import EvaluationService  # noqa: E402
from engine.graph import Recipe  # noqa: E402
from engine.methods import all_methods  # noqa: E402


def lm_recipe(zoo: Path, method: str, params: dict[str, Any], tasks: list[str]) -> Recipe:
    """The demo recipe with its merge node set to ``method``/``params`` and its Evaluate node limited to
    ``tasks``."""
    data = json.loads((zoo / "demo.json").read_text(encoding="utf-8"))
    for node in data["nodes"]:
        if node["id"] == "merge":
            node["params"] = {"method": method, **params}
        if node["type"] == "evaluate":
            node["params"]["tasks"] = tasks
    return Recipe.from_json(data, zoo)


def suite_tasks(zoo: Path, kind: str) -> list[str]:
    """Names of the demo suite's tasks of one kind."""
    recipe = json.loads((zoo / "demo.json").read_text(encoding="utf-8"))
    suite = next(n["params"]["suite"] for n in recipe["nodes"] if n["type"] == "evaluate")
    return [t["name"] for t in json.loads((zoo / suite).read_text(encoding="utf-8"))["tasks"] if t["kind"] == kind]


def lm_row(run: dict[str, Any], domains: list[str], choice: list[str]) -> dict[str, Any]:
    """Per-domain perplexity, the mean normalized score over domains with an expert, and the mean
    multiple-choice accuracy (if scored) of one run."""
    tasks = run["tasks"]
    norm = [tasks[d]["normalized_score"] for d in domains if tasks.get(d, {}).get("normalized_score") is not None]
    out = {"perplexity": {d: tasks[d]["perplexity"] if d in tasks else None for d in domains},
           "normalized_score": {d: tasks.get(d, {}).get("normalized_score") for d in domains},
           "mean_normalized_score": sum(norm) / len(norm) if norm else None}
    if choice:
        out["choice_accuracy"] = sum(tasks[c]["accuracy"] for c in choice) / len(choice)
    return out


def score(runner: EvaluationService, zoo: Path, spec, params: dict[str, Any], split: str, tasks: list[str],
          domains: list[str], choice: list[str], expertless: set[str]) -> dict[str, Any]:
    """The merge's row; a per-task method's domain i is scored on the model it builds with ``task=i``
    (i counts the merged models in the recipe's order, which is the suite's domain order). A method whose
    output carries one model per task (EMR) is scored by the service, which gives each task the model of
    its expert: the LoRA domain's task names no expert, so it is left out (no perplexity) for them."""
    if spec.task_parts is not None:
        tasks = [t for t in tasks if t not in expertless]

    def run(p):
        return runner.evaluate(lm_recipe(zoo, spec.name, p, tasks), split=split, models=["merge"])["runs"][0]
    if "task" not in {p.name for p in spec.params}:
        return lm_row(run(params), domains, choice)
    merged = {"tasks": {}}
    for i, d in enumerate(domains):
        own = run({**params, "task": i})["tasks"]
        merged["tasks"].update({t: v for t, v in own.items() if t == d or t == f"{d}-choice"})
    return lm_row(merged, domains, choice)


def main() -> None:
    """Run the table and print (and optionally write) it."""
    extra = argparse.ArgumentParser(add_help=False)  # this table's flags; the shared ones are zoo_table's
    extra.add_argument("--choice", action="store_true")
    extra.add_argument("--grid", type=lambda v: {float(x) for x in v.split(",")})
    mine, sys.argv[1:] = extra.parse_known_args()
    choice_flag = mine.choice
    args, runner = table_command(__doc__.splitlines()[0])
    domains = suite_tasks(args.zoo, "text-perplexity")
    manifest = json.loads((args.zoo / "lm-zoo.json").read_text(encoding="utf-8"))
    choice = [c for c in suite_tasks(args.zoo, "multiple-choice")
              if c.removesuffix("-choice") in manifest["experts"]] if choice_flag else []
    tasks = domains + choice
    expertless = {d for d in domains if d not in manifest["experts"]}
    n_models = len([n for n in json.loads((args.zoo / "demo.json").read_text())["edges"]
                    if n["to"] == "merge" and n["port"] == "models"])

    start = time.perf_counter()
    refs = {r["name"]: r for r in runner.evaluate(lm_recipe(args.zoo, "task_arithmetic", {}, tasks),
                                                  split="test")["runs"]}
    # The LoRA adapter is a delta, which an Evaluate node does not take: its own-domain perplexity is the
    # build's figure (docs/zoo.md: the same blocks as the suite's task), and it has no choice accuracy.
    lora_ppl = {v["domain"]: manifest["build"]["perplexity"]["models"][k][v["domain"]]["test"]
                for k, v in manifest.get("lora", {}).items()}
    individual = {"perplexity": {d: refs[d]["tasks"][d]["perplexity"] if d in refs else lora_ppl[d]
                                 for d in domains},
                  "normalized_score": {d: (1.0 if d in refs else None) for d in domains},
                  "mean_normalized_score": 1.0}
    if choice:
        own = [refs[c.removesuffix("-choice")]["tasks"][c]["accuracy"] for c in choice]
        individual["choice_accuracy"] = sum(own) / len(own)
    table: dict[str, Any] = {"pre-trained": lm_row(refs["base"], domains, choice), "individual": individual}
    chosen: dict[str, Any] = {"reference": {"seconds": round(time.perf_counter() - start, 1)}}
    skipped: dict[str, str] = {}
    result = {"zoo": str(args.zoo), "domains": domains, "lora": manifest.get("lora", {}), "table": table,
              "chosen": chosen, "skipped": skipped, "grid": sorted(mine.grid) if mine.grid else "zoo_table"}
    for spec in all_methods():
        if args.methods and spec.name not in args.methods:
            continue
        reason = skip_reason(spec, n_models, "demo")
        if reason:
            skipped[spec.name] = reason
            continue
        start = time.perf_counter()
        val = {}
        for params in [g for g in grid_for(spec) if not mine.grid or not g or set(g.values()) <= mine.grid]:
            val[json.dumps(params)] = score(runner, args.zoo, spec, params, "val", tasks, domains,
                                            choice, expertless)["mean_normalized_score"]
        best = max(val, key=val.get)
        table[spec.name] = score(runner, args.zoo, spec, json.loads(best), "test", tasks, domains, choice,
                                 expertless)
        chosen[spec.name] = {"params": json.loads(best), "val_mean_normalized_score": val[best],
                             "per_task": "task" in {p.name for p in spec.params} or spec.task_parts is not None,
                             "seconds": round(time.perf_counter() - start, 1)}
        line = {"method": spec.name, **chosen[spec.name], "test": table[spec.name]}
        print(json.dumps(line), file=sys.stderr, flush=True)
        write(args, result)
    print(json.dumps(write(args, result)))


def write(args: argparse.Namespace, result: dict[str, Any]) -> dict[str, Any]:
    """Write the result so far to ``--out`` and ``--markdown`` (if given); returns it."""
    if args.out:
        args.out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    if args.markdown:
        args.markdown.write_text(markdown(result), encoding="utf-8")
    return result


def markdown(result: dict[str, Any]) -> str:
    """One table: test perplexity per domain, the mean normalized score (%) and, if scored, the mean
    multiple-choice accuracy (%), with the chosen coefficients."""
    domains = result["domains"]
    lora = {v.get("domain") for v in result["lora"].values()}
    choice = any("choice_accuracy" in r for r in result["table"].values())
    heads = [d + (" (LoRA)" if d in lora else "") for d in domains]
    out = ["**Test perplexity (lower is better) and mean normalized score (expert ÷ merged, %)**", "",
           "| method | " + " | ".join(heads) + " | **norm. avg** |" + (" choice acc. |" if choice else ""),
           "|---|" + "---:|" * (len(domains) + 1 + choice)]
    for name, r in result["table"].items():
        c = result["chosen"].get(name, {})
        params = c.get("params")
        label = name + (f" ({', '.join(f'{k} {v}' for k, v in params.items())})" if params else "")
        label += " †" if c.get("per_task") else " ‡" if c.get("learned") else ""
        cells = " | ".join("—" if r["perplexity"][d] is None else f"{r['perplexity'][d]:.1f}" for d in domains)
        extra = f" {100 * r['choice_accuracy']:.1f} |" if choice else ""
        out.append(f"| {label} | {cells} | **{100 * r['mean_normalized_score']:.1f}** |{extra}")
    out.append("")
    if any(c.get("per_task") for c in result["chosen"].values()):
        out.append("† one model per domain (the method rebuilds each expert's model), not a single merge; "
                   "— : the per-task models of EMR are matched to tasks by expert, and the LoRA domain's task has none.")
    if lora:
        out.append("The LoRA domain has no full expert: its perplexity is shown (individual = the LoRA adapter "
                   "on the base, the build's figure) but it is left out of the normalized average"
                   + (" and out of the choice-accuracy column (full-expert domains only)" if choice else "") + ".")
    if result["skipped"]:
        out.append("\nNot in the table: " + "; ".join(f"{k} ({v})" for k, v in result["skipped"].items()) + ".")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
