"""The data-dependent merges (``engine.learn``) on the LM domains demo, as rows for the README's LM table.

    python bench/lm_learn_table.py [--zoo DIR] [--out results.json] [--markdown rows.md] [--steps 200]

The LM demo's counterpart of ``bench/learn_table.py``. Every learner merges the demo's five models
(four full experts and the ``logs`` LoRA adapter) and learns on the ``val`` split of the suite's
text-perplexity tasks — the demo ships no training text, and ``val`` is also where the data-free
rows choose their coefficient — then the merge is scored on ``test`` like ``bench/lm_table.py``'s rows:

- MaTS: each model's Gram matrices of its linear layers' inputs over its own domain's ``val`` text
  (padding left out; ``logs_lora`` on ``logs``), then ``lambda`` × ``iterations`` chosen on ``val``
  from ``MATS_LAMBDAS`` × ``MATS_ITERATIONS`` (the image table's grid);
- Self Positioning: one coefficient per model by SGD on the next-token cross-entropy of a balanced
  probe set (every ``val`` block of each domain), ``--steps`` steps of ``BATCH`` blocks per domain;
- Concrete: a shared mask learned by ``--steps`` steps of next-token entropy minimisation on the
  ``val`` blocks, then ``lambda`` chosen on ``val`` from ``bench/zoo_table.py``'s grid.

The learner and every choice see ``val`` only; ``test`` is reported. Rows are marked ‡; each is
printed (JSON line, stderr) and ``--out``/``--markdown`` rewritten as soon as it is done.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.lm_table import lm_recipe, lm_row, suite_tasks, write  # noqa: E402
from bench.zoo_table import COEFFICIENT_GRID, table_command  # noqa: E402
from engine.evaluation import EvaluationService, load_suite  # noqa: E402
from engine.graph import Recipe  # noqa: E402
from engine.learn import learn_concrete, learn_mats, learn_self_positioning  # noqa: E402

MATS_LAMBDAS = (0.1, 0.3, 0.5, 1.0, 1.5)
MATS_ITERATIONS = (3, 10, 30, 100)
BATCH = 4  # blocks per domain per step (a block is up to 128 tokens)


def scored(runner: EvaluationService, recipe: Recipe, split: str, domains: list[str]) -> dict[str, Any]:
    """The merge's row on ``split`` (``bench/lm_table.py``'s columns)."""
    return lm_row(runner.evaluate(recipe, split=split, models=["merge"])["runs"][0], domains, [])


def best_on_val(runner: EvaluationService, recipe: Recipe, grid: list[dict[str, Any]],
                domains: list[str]) -> tuple[dict[str, Any], float]:
    """The grid point whose merge has the best mean normalized score on ``val``, set on the recipe's merge
    node, and that score."""
    val = {}
    for point in grid:
        recipe.node("merge").params.update(point)
        val[json.dumps(point)] = scored(runner, recipe, "val", domains)["mean_normalized_score"]
    best = max(val, key=val.get)
    recipe.node("merge").params.update(json.loads(best))
    return json.loads(best), val[best]


def main() -> None:
    """Learn every method, score it, print (and optionally write) the rows."""
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--steps", type=int, default=200)
    mine, sys.argv[1:] = extra.parse_known_args()
    args, runner = table_command(__doc__.splitlines()[0])
    domains = suite_tasks(args.zoo, "text-perplexity")
    manifest = json.loads((args.zoo / "lm-zoo.json").read_text(encoding="utf-8"))
    tasks = load_suite(args.zoo / "suite.json", domains)
    lora_tasks = {key: entry["domain"] for key, entry in manifest.get("lora", {}).items()}
    start_recipe = lm_recipe(args.zoo, "task_arithmetic", {"lambda": 0.3}, domains)
    table: dict[str, Any] = {}
    chosen: dict[str, Any] = {}
    result = {"zoo": str(args.zoo), "domains": domains, "lora": manifest.get("lora", {}), "table": table,
              "chosen": chosen, "skipped": {}, "steps": mine.steps}
    with tempfile.TemporaryDirectory() as tmp:
        learners = {
            "mats": lambda: learn_mats(start_recipe, "merge", tasks, Path(tmp) / "grams.safetensors", split="val",
                                       task_map=lora_tasks, device=args.device),
            "self_positioning": lambda: learn_self_positioning(start_recipe, "merge", tasks, split="val",
                                                               steps=mine.steps, batch_size=BATCH,
                                                               device=args.device),
            "concrete": lambda: learn_concrete(start_recipe, "merge", tasks, Path(tmp) / "mask.safetensors",
                                               split="val", steps=mine.steps, batch_size=BATCH, device=args.device),
        }
        grids = {
            "mats": [{"lambda": lam, "iterations": it} for lam in MATS_LAMBDAS for it in MATS_ITERATIONS],
            "concrete": [{"lambda": lam} for lam in COEFFICIENT_GRID],
        }
        for name, learn in learners.items():
            began = time.perf_counter()
            learned = learn()
            recipe = learned.recipe
            params, val = best_on_val(runner, recipe, grids[name], domains) if name in grids else ({}, None)
            table[name] = scored(runner, recipe, "test", domains)
            chosen[name] = {"params": params, "val_mean_normalized_score": val, "learned": True,
                            "seconds": round(time.perf_counter() - began, 1),
                            "info": {k: v for k, v in learned.info.items() if k != "layers"}}
            line = {"method": name, **chosen[name], "test": table[name]}
            print(json.dumps(line, default=str), file=sys.stderr, flush=True)
            write(args, result)
    print(json.dumps(write(args, result), default=str))


if __name__ == "__main__":
    main()
