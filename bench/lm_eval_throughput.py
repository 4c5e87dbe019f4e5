"""Evaluation throughput of the text-perplexity task against a plain ``transformers`` loop.

    python bench/lm_eval_throughput.py [--lm-zoo DIR] [--repeat 3] [--threads 2]

Both score the same model (the LM demo's base) on the same token blocks of every domain's test text:
Weightsmith through ``Evaluator`` (the task's reader, batching and metrics), the plain loop through
``AutoModelForCausalLM.from_pretrained`` and a cross-entropy over the same labels. Prints one JSON line per
side with tokens per second (best of ``--repeat`` passes that alternate between the sides, after a
warm-up pass each) and, last, the ratio and the
loss difference.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.checkpoints import open_checkpoint  # noqa: E402
from engine.evaluation import Evaluator, load_suite  # noqa: E402
from engine.evaluation.lm_tasks import IGNORE_INDEX, TextPerplexityTask  # noqa: E402


def weightsmith_side(tasks: list[TextPerplexityTask], base: Path) -> Callable[[], tuple[float, int]]:
    """One pass of the task's own scoring: returns (summed loss, tokens scored)."""
    with open_checkpoint(base) as ckpt:
        state = {n: ckpt.get(n, dtype=torch.float32) for n in ckpt.names}
    evaluator = Evaluator(tasks, device="cpu", batch_size=64)

    def run() -> tuple[float, int]:
        scores = evaluator.scores(state, split="test")
        return sum(s.loss * s.n for s in scores.values()), sum(s.n for s in scores.values())
    return run


def plain_side(tasks: list[TextPerplexityTask], base: Path) -> Callable[[], tuple[float, int]]:
    """One pass of the same blocks through a plain transformers loop: (summed loss, tokens)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    blocks = [task.data("test") for task in tasks]

    def run() -> tuple[float, int]:
        total, count = 0.0, 0
        with torch.inference_mode():
            for split in blocks:
                for i in range(0, len(split.labels), 64):
                    ids, mask = split.inputs[i:i + 64, 0], split.inputs[i:i + 64, 1]
                    labels = split.labels[i:i + 64]
                    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
                    targets = labels[:, 1:]  # position i predicts token i + 1
                    keep = targets != IGNORE_INDEX
                    total += torch.nn.functional.cross_entropy(logits[keep], targets[keep], reduction="sum").item()
                    count += int(keep.sum())
        return total, count
    return run


def best_of(sides: dict[str, Callable[[], tuple[float, int]]], repeat: int) -> dict[str, tuple[float, float, int]]:
    """Each side's best seconds over ``repeat`` passes, its mean loss and tokens; the passes alternate
    between the sides (after one warm-up pass each), so load from elsewhere falls on both alike."""
    results = {name: run() for name, run in sides.items()}  # warm-up: texts read and tokenised, kernels warm
    best = dict.fromkeys(sides, float("inf"))
    for _ in range(repeat):
        for name, run in sides.items():
            start = time.perf_counter()
            results[name] = run()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: (best[name], total / tokens, tokens) for name, (total, tokens) in results.items()}


def main() -> None:
    from engine.zoo.lm import default_lm_zoo_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lm-zoo", type=Path, default=None, help="LM demo folder (default: the user data folder's)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    zoo = args.lm_zoo or default_lm_zoo_dir()
    if not (zoo / "suite.json").is_file():
        sys.exit(f"no LM demo in {zoo}: build it with `weightsmith zoo build --lm`")
    tasks = [t for t in load_suite(zoo / "suite.json") if isinstance(t, TextPerplexityTask)]
    base = zoo / "base"
    common = {"threads": torch.get_num_threads(), "load": round(os.getloadavg()[0], 2), "tasks": len(tasks)}
    timed = best_of({"ours": weightsmith_side(tasks, base), "plain": plain_side(tasks, base)}, args.repeat)
    ours, plain = timed["ours"], timed["plain"]
    for name, (seconds, loss, tokens) in (("weightsmith text-perplexity", ours), ("plain transformers loop", plain)):
        print(json.dumps({"case": name, "tokens": tokens, "seconds": round(seconds, 3),
                          "tokens_per_s": round(tokens / seconds), "loss": round(loss, 6), **common}))
    print(json.dumps({"case": "ratio", "throughput_ratio": round((ours[2] / ours[0]) / (plain[2] / plain[0]), 3),
                      "loss_difference": abs(ours[1] - plain[1]), **common}))


if __name__ == "__main__":
    main()
