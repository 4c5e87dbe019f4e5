"""The data-dependent merges (``engine.learn``) on the demo zoo, as rows for the README's method table.

    python bench/learn_table.py [--zoo DIR] [--out results.json] [--markdown rows.md]

Every learner merges all experts of the zoo's demo recipe, learning on the zoo's data with its
defaults: Fisher (256 training examples per task, the split's labels), RegMean (256 training
examples per task; ``alpha`` chosen by average validation accuracy from ``ALPHAS``), AdaMerging
task-wise and layer-wise (500 steps on the ``unlabeled`` split), aTLAS (16 labelled training examples
per class). Task arithmetic at λ = 0.3, AdaMerging's starting point, is scored beside them. Test
accuracy is reported, as in ``bench/zoo_table.py``; prints one JSON object.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.zoo_table import markdown, merge_run, method_recipe, row, table_command  # noqa: E402
from engine.evaluation import load_suite  # noqa: E402
from engine.learn import learn_adamerging, learn_atlas, learn_fisher, learn_regmean  # noqa: E402

ALPHAS = (0.1, 0.3, 0.6, 0.9, 1.0)


def main() -> None:
    """Learn every method, score it, print (and optionally write) the rows."""
    args, runner = table_command(__doc__.splitlines()[0])
    tasks = load_suite(args.zoo / "zoo.json")
    start_recipe = method_recipe(args.zoo, "task_arithmetic", {"lambda": 0.3})
    table: dict[str, Any] = {"task_arithmetic (lambda 0.3)": row(merge_run(runner, start_recipe, "test"))}
    seconds: dict[str, float] = {}
    learned: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        learners = {
            "fisher": lambda: learn_fisher(start_recipe, "merge", tasks, Path(tmp) / "fisher.safetensors",
                                           device=args.device),
            "regmean": lambda: learn_regmean(start_recipe, "merge", tasks, Path(tmp) / "regmean.safetensors",
                                             device=args.device),
            "adamerging (task-wise)": lambda: learn_adamerging(start_recipe, "merge", tasks, mode="task",
                                                               device=args.device),
            "adamerging (layer-wise)": lambda: learn_adamerging(start_recipe, "merge", tasks, mode="layer",
                                                                device=args.device),
            "atlas": lambda: learn_atlas(start_recipe, "merge", tasks, device=args.device),
        }
        for name, learn in learners.items():
            began = time.perf_counter()
            result = learn()
            seconds[name] = round(time.perf_counter() - began, 1)
            recipe = result.recipe
            label = name
            if name == "regmean":
                val = {}
                for alpha in ALPHAS:
                    recipe.node("merge").params["alpha"] = alpha
                    val[alpha] = merge_run(runner, recipe, "val")["average"]["accuracy"]
                best = max(val, key=val.get)
                recipe.node("merge").params["alpha"] = best
                label = f"regmean (alpha {best})"
            table[label] = row(merge_run(runner, recipe, "test"))
            learned[label] = {"coefficients": result.coefficients, "info": result.info}
            print(f"{label}: test {table[label]['average']['accuracy']:.4f} ({seconds[name]} s)", file=sys.stderr)
    result = {"zoo": str(args.zoo), "tasks": [t.name for t in tasks], "table": table, "seconds": seconds,
              "learned": learned}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
    if args.markdown:
        args.markdown.write_text(markdown({**result, "chosen": {}, "skipped": {}}), encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "learned"}))


if __name__ == "__main__":
    main()
