"""``weightsmith``: the headless twin of the GUI — inspect, merge, run recipes, list methods.

Exit codes: 0 success, 2 bad input (one readable paragraph on stderr naming the file/tensor, no
traceback), 1 internal error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from engine import __version__
from engine.errors import Cancelled, EngineInputError
from engine.runtime.formatting import human_bytes, human_count
from engine.runtime.progress import Progress


# ---- output helpers ---------------------------------------------------------------------------
class TerminalProgress:
    """A one-line progress bar on a terminal's stderr; silent when stderr is not a terminal."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr  # looked up per bar: sys.stderr may be replaced after import
        self.enabled = self.stream.isatty()
        self._phase = None

    def __call__(self, p: Progress) -> None:
        if not self.enabled:
            return
        if self._phase is not None and p.phase != self._phase:
            self.stream.write("\n")
        self._phase = p.phase
        width = 28
        filled = int(width * p.fraction)
        rate = f" {human_bytes(p.bytes_done / p.elapsed_s)}/s" if p.bytes_done and p.elapsed_s > 0 else ""
        eta = f" ETA {p.eta_s:4.0f}s" if p.eta_s is not None else ""
        self.stream.write(f"\r{p.phase:<12} [{'#' * filled}{'.' * (width - filled)}] {p.fraction:6.1%} "
                          f"{p.done}/{p.total}{rate}{eta}   ")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled and self._phase is not None:
            self.stream.write("\n")
            self.stream.flush()


def parse_value(text: str) -> Any:
    """A CLI parameter value: JSON when it parses (numbers, lists, true/false), else the plain string.

    ``True``/``False`` in any letter case are booleans too (Python's and YAML's spelling).
    """
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_params(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise EngineInputError(f"--param expects KEY=VALUE, got '{item}'")
        key, value = item.split("=", 1)
        out[key.strip()] = parse_value(value.strip())
    return out


# ---- commands ---------------------------------------------------------------------------------
def cmd_inspect(args: argparse.Namespace) -> int:
    from engine.checkpoints.open import open_checkpoint  # no torch for headers: inspect starts fast

    ckpts = [open_checkpoint(p) for p in args.paths]
    if len(ckpts) > 1:
        from engine.checkpoints.compat import compare
    reports = []
    for c in ckpts:
        entry = c.summary().to_json()
        if args.tensors or args.json:
            entry["tensors"] = [{"name": i.name, "shape": list(i.shape), "dtype": i.dtype_name,
                                 "layer": i.layer} for i in (c.info(n) for n in c.names)]
        if len(ckpts) > 1 and c is not ckpts[0]:
            entry["compatibility"] = compare(ckpts[0], c).to_json()
        reports.append(entry)
    if args.json:
        print(json.dumps(reports if len(reports) > 1 else reports[0], indent=2))
        return 0
    for entry in reports:
        print(f"{entry['path']}\n  format {entry['format']} ({entry['kind']}), {entry['num_tensors']} tensors, "
              f"{human_count(entry['num_params'])} params, {human_bytes(entry['num_bytes'])}, "
              f"dtypes {entry['dtypes']}, {entry['num_layers']} layers"
              + (f", architecture {entry['architecture']}" if entry["architecture"] else ""))
        for note in entry["notes"]:
            print(f"  note: {note}")
        if "compatibility" in entry:
            comp = entry["compatibility"]
            print("  compatible with the first" if comp["compatible"] else f"  NOT compatible: {comp['reason']}")
        for t in entry.get("tensors", []):
            print(f"    {t['name']:<60} {str(t['shape']):<20} {t['dtype']}")
    return 0


def _run(recipe, args: argparse.Namespace) -> int:
    """Run every output of the recipe (Save and Evaluate nodes) once."""
    from engine.evaluation import EvaluationService
    from engine.graph import RunOptions, run_recipe

    bar = TerminalProgress()
    try:
        result = run_recipe(recipe, device=args.device, progress=bar, scorer=EvaluationService(device=args.device),
                            options=RunOptions(force=args.force))
    finally:
        bar.finish()
    _print_runs(result.evaluations)
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    for nid, path in result.outputs.items():
        print(f"wrote {path} ({result.tensors} tensors, {human_bytes(result.bytes_read)} read in {result.seconds:.2f} s)")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from engine.graph.build import simple_merge_recipe
    from engine.methods import get_method

    spec = get_method(args.method)
    params = parse_params(args.param)
    if args.seed is not None:
        if any(p.name == "seed" for p in spec.params):
            params["seed"] = args.seed
        else:
            print(f"note: {spec.label} draws no random numbers; --seed has no effect", file=sys.stderr)
    models, base = list(args.model), args.base
    if base is None and spec.needs_base and spec.max_models is not None and len(models) == spec.max_models + 1:
        base, models = models[0], models[1:]
        print(f"note: {spec.label} needs a base; taking the first --model ({base}) as the base, as mergekit does",
              file=sys.stderr)
    if args.weight and len(args.weight) != len(models):
        raise EngineInputError(f"{len(args.weight)} --weight values for {len(models)} models")
    recipe = simple_merge_recipe(args.method, [Path(m).resolve() for m in models],
                                 base=Path(base).resolve() if base else None, params=params,
                                 weights=args.weight, out=Path(args.out).resolve(), dtype=args.dtype,
                                 shard_size=args.shard_size)
    return _run(recipe, args)


def cmd_extract_lora(args: argparse.Namespace) -> int:
    from engine.checkpoints import open_checkpoint
    from engine.checkpoints.lora_extract import extract_lora
    from engine.runtime import resolve_device

    result = extract_lora(open_checkpoint(args.model), open_checkpoint(args.base), args.out, args.rank,
                          embeddings=args.embeddings, device=resolve_device(args.device), force=args.force)
    errors = sorted(result.relative_error.values())
    print(f"wrote {result.path}: rank {result.rank} on {len(result.modules)} weights; relative error of the "
          f"approximation median {errors[len(errors) // 2]:.3f}, max {errors[-1]:.3f}")
    if result.left_out:
        print(f"note: {len(result.left_out)} changed tensor(s) a LoRA cannot hold were left out, e.g. "
              f"'{result.left_out[0]}'", file=sys.stderr)
    return 0


def cmd_merge_lora(args: argparse.Namespace) -> int:
    from engine.checkpoints import open_checkpoint
    from engine.lora_merge import merge_lora
    from engine.runtime import resolve_device

    params = parse_params(args.param)
    if args.density is not None:
        params["density"] = args.density
    base = open_checkpoint(args.base) if args.base else None
    try:
        result = merge_lora(args.adapters, args.out, method=args.method, weights=args.weight, rank=args.rank,
                            params=params, combine=args.combine, base=base, seed=args.seed,
                            device=resolve_device(args.device), force=args.force)
    finally:
        if base is not None:
            base.close()
    ranks = sorted(set(result.ranks.values()))
    errors = sorted(result.relative_error.values())
    print(f"wrote {result.path}: {result.method} of {len(args.adapters)} adapters, rank "
          f"{'/'.join(map(str, ranks))} on {len(result.ranks)} weights; relative error of the truncation median "
          f"{errors[len(errors) // 2]:.3f}, max {errors[-1]:.3f}")
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from engine.graph import Recipe, nodes_of
    from engine.graph.node_kinds import SAVE

    recipe = Recipe.load(args.recipe)
    if args.out:
        saves = nodes_of(recipe, SAVE)
        if len(saves) != 1:
            raise EngineInputError(f"--out needs exactly one Save node in the recipe, it has {len(saves)}",
                                   path=args.recipe)
        recipe.nodes[saves[0]].params["path"] = str(Path(args.out).resolve())
    return _run(recipe, args)


def cmd_validate(args: argparse.Namespace) -> int:
    from engine.graph import Recipe, validate

    problems = validate(Recipe.load(args.recipe))
    for p in problems:
        print(f"[{p.node_id}] {p.message}" if p.node_id else p.message)
    if problems:
        return 2
    print("recipe is valid")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from engine.methods import all_methods

    methods = all_methods()
    if args.json:
        print(json.dumps([m.to_json() for m in methods], indent=2))
        return 0
    for m in methods:
        reqs = ", ".join(sorted(r.value for r in m.requirements))
        print(f"{m.name:<22} {m.label} [{reqs}]\n    {m.summary}")
        for p in m.params:
            rng = f" [{p.min}, {p.max}]" if p.min is not None or p.max is not None else ""
            choices = f" one of {', '.join(p.choices)}" if p.choices else ""
            flags = "".join((" per-model" if p.per_model else "", " per-layer" if p.layerwise else ""))
            print(f"      {p.name:<14} {p.type}{rng}{choices} = {p.default!r}{flags} — {p.help}")
    return 0


def cmd_import_mergekit(args: argparse.Namespace) -> int:
    from engine.graph.mergekit import import_mergekit_file

    recipe = import_mergekit_file(args.config)
    Path(args.output).write_text(json.dumps(recipe, indent=2), encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


def cmd_export_mergekit(args: argparse.Namespace) -> int:
    from engine.graph import Recipe
    from engine.graph.mergekit import export_mergekit

    text = export_mergekit(Recipe.load(args.recipe).to_json())
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    else:
        print(text, end="")
    return 0


# ---- evaluation, sweeps and the demo zoo (engine.evaluation, engine.zoo) ----------------------------
def _print_runs(runs: list[dict[str, Any]]) -> None:
    """A compact table: one row per evaluated model, each task's primary metric (its name and direction in
    the second header row: accuracy, perplexity, …), then the averages."""
    if not runs:
        return
    tasks = list(runs[0]["tasks"])
    primary = {t: runs[0]["tasks"][t].get("primary", "accuracy") for t in tasks}
    width = max(8, *(len(r["name"]) for r in runs))
    print(f"{'model':<{width}} " + " ".join(f"{t[:9]:>9}" for t in tasks) + "   avg acc  avg norm")
    arrows = {t: "↑" if runs[0]["tasks"][t].get("metrics", {}).get(primary[t], {}).get("higher_is_better", True)
              else "↓" for t in tasks}
    print(f"{'':<{width}} " + " ".join(f"{primary[t][:8] + arrows[t]:>9}" for t in tasks))
    for r in runs:
        cells = " ".join(f"{r['tasks'][t].get(primary[t], float('nan')):9.3f}" for t in tasks)
        norm = r["average"].get("normalized_accuracy")
        print(f"{r['name']:<{width}} {cells} {r['average'].get('accuracy', float('nan')):9.3f} "
              + (f"{norm:9.3f}" if norm is not None else f"{'-':>9}"))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from engine.evaluation import evaluate_recipe, write_results
    from engine.graph import Recipe

    recipe = Recipe.load(args.recipe)
    bar = TerminalProgress()
    try:
        result = evaluate_recipe(recipe, nodes=args.node, device=args.device, split=args.split,
                                 quick=args.quick, progress=bar)
    finally:
        bar.finish()
    _print_runs(result["runs"])
    if args.out:
        print(f"wrote {write_results(result, args.out)}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from engine.evaluation.sweep import parse_sweep_param, sweep, write_results
    from engine.graph import Recipe

    recipe = Recipe.load(args.recipe)
    axes = [parse_sweep_param(p) for p in args.param]
    bar = TerminalProgress()
    try:
        result = sweep(recipe, axes, nodes=args.node, device=args.device, split=args.split, quick=args.quick,
                       progress=bar)
    finally:
        bar.finish()
    for point in result["points"]:
        values = ", ".join(f"{k}={v:g}" for k, v in point["values"].items())
        for run in point["runs"]:
            avg = run["average"]
            norm = avg.get("normalized_accuracy")
            print(f"{values}  {run['name']}: accuracy {avg.get('accuracy', float('nan')):.4f}"
                  + (f", normalized {norm:.4f}" if norm is not None else ""))
    for path in (args.out, args.csv):
        if path:
            print(f"wrote {write_results(result, path)}")
    return 0


def cmd_zoo_build_lm(args: argparse.Namespace) -> int:
    from engine.zoo.lm import build_lm_zoo

    bar = TerminalProgress()
    start = time.perf_counter()
    try:
        manifest = build_lm_zoo(args.dir, size=args.size, seed=args.seed, progress=bar)
    finally:
        bar.finish()
    info = json.loads(manifest.read_text(encoding="utf-8"))
    ppl = info["build"]["perplexity"]["models"]
    print(f"built the LM zoo in {time.perf_counter() - start:.0f} s: {manifest.parent}")
    print(f"{'domain':<10} {'base':>8} {'expert':>8}   (test perplexity; expert)")
    for name, expert in {**info["experts"], **info["lora"]}.items():
        domain = expert["domain"]
        print(f"{domain:<10} {ppl['base'][domain]['test']:8.2f} {ppl[name][domain]['test']:8.2f}   {name}")
    print(f"demo recipe: {manifest.parent / 'demo.json'}")
    return 0


def cmd_zoo_build(args: argparse.Namespace) -> int:
    from engine.zoo import build_zoo

    if args.lm:
        return cmd_zoo_build_lm(args)
    bar = TerminalProgress()
    start = time.perf_counter()
    try:
        manifest = build_zoo(args.dir, size=args.size, seed=args.seed, progress=bar)
    finally:
        bar.finish()
    scores = json.loads(manifest.read_text(encoding="utf-8"))["build"]["scores"]
    print(f"built the zoo in {time.perf_counter() - start:.0f} s: {manifest.parent}")
    print(f"{'task':<12} {'base':>6} {'expert':>7}   (test accuracy)")
    for task, s in scores.items():
        print(f"{task:<12} {s['base']['test']:6.3f} {s['expert']['test']:7.3f}")
    print(f"demo recipe: {manifest.parent / 'demo.json'}")
    return 0


def add_evaluation_commands(sub: argparse._SubParsersAction) -> None:
    """The ``evaluate``, ``sweep`` and ``zoo build`` commands."""
    def add_eval_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N or mps")
        p.add_argument("--split", choices=("test", "val", "train"), help="override the Evaluate nodes' split")
        p.add_argument("--quick", type=int, metavar="N", help="score only the first N batches of each task")
        p.add_argument("--node", action="append", help="only this Evaluate node (repeat; default: all)")

    p = sub.add_parser("evaluate", help="score the models feeding a recipe's Evaluate nodes")
    p.add_argument("recipe")
    p.add_argument("--out", help="write the results as JSON")
    add_eval_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("sweep", help="evaluate a recipe over a 1-D or 2-D grid of parameter values")
    p.add_argument("recipe")
    p.add_argument("--param", action="append", required=True, metavar="NODE.PARAM=START:STOP:STEPS",
                   help="a swept parameter, e.g. merge.lambda=0:1:11 (give one or two)")
    p.add_argument("--out", help="write the results as JSON")
    p.add_argument("--csv", help="write the results as CSV (one row per point, model and task)")
    add_eval_options(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("zoo", help="the demo model zoo")
    zoo = p.add_subparsers(dest="zoo_command", required=True)
    p = zoo.add_parser("build", help="build the demo zoo locally (no download; about 2 minutes on 2 cores)")
    p.add_argument("--dir", help="where to build it (default: the user data folder's zoo)")
    p.add_argument("--size", choices=("default", "reduced"), default="default", help="reduced: seconds, for tests")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lm", action="store_true",
                   help="build the LM domains demo instead (a small Llama, domain experts, a LoRA; under 3 minutes "
                        "on 2 cores; default folder: the user data folder's lm-zoo)")
    p.set_defaults(func=cmd_zoo_build)



# ---- learned merges: Fisher, RegMean, MaTS, AdaMerging, aTLAS, Self Positioning, Concrete (engine.learn) ----
LEARN_OPTIONS = {
    "fisher": ("split", "examples", "labels", "task_map"),
    "regmean": ("split", "examples", "alpha", "task_map"),
    "adamerging": ("mode", "steps", "lr", "split", "batch_size"),
    "atlas": ("objective", "steps", "lr", "split", "shots", "batch_size"),
    "mats": ("split", "examples", "alpha", "init", "lam", "iterations", "task_map"),
    "self-positioning": ("steps", "lr", "split", "examples", "mu", "batch_size"),
    "concrete": ("steps", "lr", "split", "lam", "temperature", "batch_size"),
}
WRITES_STATISTICS = ("fisher", "regmean", "mats", "concrete")
LEARN_ALL_OPTIONS = {option for options in LEARN_OPTIONS.values() for option in options}


def _learn_suite(recipe, args: argparse.Namespace) -> Path:
    """The --suite manifest, or the suite of the recipe's first Evaluate node."""
    if args.suite:
        return Path(args.suite)
    from engine.graph import nodes_of
    from engine.graph.node_kinds import EVALUATE

    for nid in nodes_of(recipe, EVALUATE):
        if recipe.nodes[nid].params.get("suite"):
            return recipe.resolve_path(recipe.nodes[nid].params["suite"])
    raise EngineInputError("name the tasks to learn on with --suite (the recipe has no Evaluate node with a suite)")


def cmd_learn(args: argparse.Namespace) -> int:
    from engine.evaluation import load_suite
    from engine.evaluation.service import task_names
    from engine.graph import Recipe
    from engine.learn import (learn_adamerging, learn_atlas, learn_concrete, learn_fisher, learn_mats,
                              learn_regmean, learn_self_positioning, save_recipe)

    recipe = Recipe.load(args.recipe)
    tasks = load_suite(_learn_suite(recipe, args), task_names(args.tasks))
    label = args.method + (f"-{args.mode}" if args.method == "adamerging" and args.mode else "")
    out = Path(args.output) if args.output else Path(args.recipe).with_name(f"{Path(args.recipe).stem}.{label}.json")
    options = {k: v for k, v in vars(args).items() if k in LEARN_ALL_OPTIONS and v is not None}
    if args.task:
        if any("=" not in item for item in args.task):
            raise EngineInputError("--task expects MODEL_NODE=TASK_NAME")
        options["task_map"] = dict(item.split("=", 1) for item in args.task)
    wrong = sorted(set(options) - set(LEARN_OPTIONS[args.method]))
    if wrong:
        shown = {"task_map": "task", "lam": "lambda"}
        flags = ", ".join("--" + shown.get(w, w).replace("_", "-") for w in wrong)
        raise EngineInputError(f"{flags} does not apply to {args.method}")
    common = {"seed": args.seed, "device": args.device}
    bar = TerminalProgress()
    try:
        learner = {"fisher": learn_fisher, "regmean": learn_regmean, "mats": learn_mats, "concrete": learn_concrete,
                   "adamerging": learn_adamerging, "atlas": learn_atlas,
                   "self-positioning": learn_self_positioning}[args.method]
        if args.method in WRITES_STATISTICS:
            stats = out.with_name(f"{out.stem}.stats.safetensors")
            result = learner(recipe, args.node, tasks, stats, progress=bar, **common, **options)
        else:
            result = learner(recipe, args.node, tasks, progress=bar, **common, **options)
    finally:
        bar.finish()
    if result.history:
        print(f"loss {result.history[0]['loss']:.4f} at step 1, {result.history[-1]['loss']:.4f} at step "
              f"{len(result.history)}")
    for key in ("initial_entropy", "final_entropy", "initial_loss", "final_loss"):
        if key in result.info:
            print(f"{key.replace('_', ' ')} {result.info[key]:.4f}")
    if result.coefficients:
        count = sum(len(row) for row in result.coefficients.values())
        print(f"learned {count} coefficients; mean per model: " + ", ".join(
            f"{k} {sum(row.values()) / len(row):.3f}" for k, row in result.coefficients.items()))
    if result.statistics is not None:
        print(f"wrote statistics {result.statistics}")
    print(f"wrote {save_recipe(result.recipe, out)} (run it with `weightsmith run` or `weightsmith evaluate`)")
    return 0


def add_learn_commands(sub: argparse._SubParsersAction) -> None:
    """The ``learn`` command: data-dependent merges whose result is a recipe reproducible without data."""
    p = sub.add_parser("learn", help="learn a data-dependent merge (Fisher, RegMean, MaTS, AdaMerging, aTLAS, "
                                     "Self Positioning, Concrete masks) into a recipe")
    p.add_argument("method", choices=tuple(LEARN_OPTIONS))
    p.add_argument("recipe")
    p.add_argument("--node", help="the merge node to learn (default: the recipe's only merge node)")
    p.add_argument("--suite", help="task suite manifest (default: the suite of the recipe's Evaluate node)")
    p.add_argument("--tasks", help="comma-separated task names (default: every task of the suite)")
    p.add_argument("--task", action="append", metavar="MODEL=TASK",
                   help="the task a model input was fine-tuned on (fisher, regmean, mats; default: by name or "
                        "expert file)")
    p.add_argument("-o", "--output", help="learned recipe to write (default: RECIPE.METHOD.json beside the recipe); "
                                          "fisher, regmean, mats and concrete also write OUTPUT.stats.safetensors")
    p.add_argument("--mode", choices=("task", "layer"), help="adamerging: a coefficient per task, or per task and layer")
    p.add_argument("--objective", choices=("cross_entropy", "entropy"), help="atlas: few-shot labels or entropy")
    p.add_argument("--steps", type=int,
                   help="optimisation steps (adamerging 500, atlas 300, self-positioning and concrete 200)")
    p.add_argument("--lr", type=float,
                   help="learning rate (adamerging 1e-3, atlas 1e-2, self-positioning 1e-2, concrete 1e-3)")
    p.add_argument("--batch-size", dest="batch_size", type=int, help="examples per task per step")
    p.add_argument("--split", help="data split to learn on (fisher/regmean/mats/self-positioning train, "
                                   "adamerging/concrete unlabeled)")
    p.add_argument("--examples", type=int,
                   help="fisher/regmean/mats: examples per task (256); self-positioning: probe examples per task (64)")
    p.add_argument("--labels", choices=("data", "model"), help="fisher: the split's labels, or drawn from the model")
    p.add_argument("--shots", type=int, help="atlas: labelled examples per class (16)")
    p.add_argument("--alpha", type=float, help="regmean (0.6), mats (1.0): off-diagonal scale of the Gram matrices")
    p.add_argument("--init", choices=("task_arithmetic", "average", "base"), help="mats: where the solve starts")
    p.add_argument("--lambda", dest="lam", type=float,
                   help="mats: task-arithmetic scale of the start (0.3); concrete: task-arithmetic scale (0.3)")
    p.add_argument("--iterations", type=int, help="mats: conjugate-gradient steps per layer (100)")
    p.add_argument("--mu", type=float, help="self-positioning: weight of the L1 penalty on the coefficients (0.05)")
    p.add_argument("--temperature", type=float, help="concrete: temperature of the relaxed Bernoulli mask (0.5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N or mps")
    p.set_defaults(func=cmd_learn)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="weightsmith", description="Merge, evaluate and inspect model checkpoints.")
    parser.add_argument("--version", action="version", version=f"weightsmith {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="show a checkpoint's format, size, dtypes, layers and tensors")
    p.add_argument("paths", nargs="+", help="files or folders; later ones are checked against the first")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--tensors", action="store_true", help="list every tensor")
    p.set_defaults(func=cmd_inspect)

    def add_run_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N or mps")
        p.add_argument("--force", action="store_true", help="replace an existing output folder")

    p = sub.add_parser("merge", help="merge models with one method (the quick form of a recipe)")
    p.add_argument("--method", required=True, help="a method name from `weightsmith methods`")
    p.add_argument("--base", help="the base (pre-trained) model")
    p.add_argument("--model", action="append", required=True, help="a model to merge (repeat)")
    p.add_argument("--weight", action="append", type=float, help="per-model weight, in --model order (repeat)")
    p.add_argument("--param", action="append", default=[], help="method parameter KEY=VALUE (JSON values)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--dtype", default="auto", help="output dtype: auto, fp16, bf16 or fp32")
    p.add_argument("--shard-size", default="5GB", help="largest output shard (e.g. 2GB)")
    p.add_argument("--seed", type=int, help="seed for random methods")
    add_run_options(p)
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("run", help="run a recipe file, writing its Save nodes")
    p.add_argument("recipe")
    p.add_argument("--out", help="output folder (replaces the path of the recipe's single Save node)")
    add_run_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check a recipe and list every problem")
    p.add_argument("recipe")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("methods", help="list the merge methods with their parameters")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("import-mergekit", help="convert a mergekit YAML config into a recipe")
    p.add_argument("config")
    p.add_argument("-o", "--output", required=True, help="recipe JSON to write")
    p.set_defaults(func=cmd_import_mergekit)

    p = sub.add_parser("export-mergekit", help="convert a recipe into a mergekit YAML config")
    p.add_argument("recipe")
    p.add_argument("-o", "--output", help="YAML file to write (default: print)")
    p.set_defaults(func=cmd_export_mergekit)

    p = sub.add_parser("extract-lora", help="extract a LoRA adapter (PEFT format) of a model against its base")
    p.add_argument("model")
    p.add_argument("--base", required=True, help="the base model the adapter applies to")
    p.add_argument("--rank", type=int, required=True, help="LoRA rank r (alpha = r)")
    p.add_argument("-o", "--out", required=True, help="adapter folder to write")
    p.add_argument("--embeddings", action="store_true", help="also extract embedding and LM-head matrices")
    p.add_argument("--device", default="auto")
    p.add_argument("--force", action="store_true", help="replace an earlier Weightsmith output")
    p.set_defaults(func=cmd_extract_lora)

    p = sub.add_parser("merge-lora", help="merge LoRA adapters (PEFT format) of one base into one adapter")
    p.add_argument("adapters", nargs="+", help="adapter folders (adapter_config.json + adapter_model.safetensors)")
    p.add_argument("-o", "--out", required=True, help="adapter folder to write")
    p.add_argument("--method", default="svd", choices=("cat", "svd", "ties_svd", "dare_linear_svd", "dare_ties_svd",
                                                       "magnitude_prune_svd", "knots"),
                   help="cat: exact, rank = sum of ranks; *_svd: PEFT's combination, then truncated SVD; "
                        "knots: KnOTS (default svd)")
    p.add_argument("--weight", action="append", type=float, help="per-adapter weight, in adapter order (repeat)")
    p.add_argument("--rank", type=int, help="output rank (svd methods, knots; default: the largest input rank)")
    p.add_argument("--density", type=float, help="fraction kept by TIES / DARE / magnitude pruning")
    p.add_argument("--combine", default="ties", choices=("ties", "task_arithmetic", "dare_ties", "dare_linear"),
                   help="knots: how the aligned coefficients are merged (default ties)")
    p.add_argument("--param", action="append", default=[], help="other parameter of the combination KEY=VALUE "
                                                                 "(e.g. lambda=0.5, normalize=false)")
    p.add_argument("--base", help="check every adapted weight against this base model's shapes")
    p.add_argument("--seed", type=int, default=0, help="seed of the DARE draws")
    p.add_argument("--device", default="auto")
    p.add_argument("--force", action="store_true", help="replace an earlier Weightsmith output")
    p.set_defaults(func=cmd_merge_lora)

    add_evaluation_commands(sub)
    add_learn_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``weightsmith`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)  # --help and usage errors end here, before torch is imported

    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(levelname)s %(message)s")
    previous_policy = None
    try:
        if args.func in (cmd_evaluate, cmd_sweep, cmd_learn):  # they may run plugin tasks the user named
            from engine.evaluation import trust

            previous_policy = trust.set_policy(trust.announce_and_trust)
        if args.func in (cmd_run, cmd_evaluate, cmd_sweep, cmd_learn):  # they load task suites
            import engine.zoo  # noqa: F401  (registers the demo zoo's task kind, one task source among others)
        return args.func(args)
    except EngineInputError as exc:
        print(f"weightsmith: error: {exc}", file=sys.stderr)
        return 2
    except (Cancelled, KeyboardInterrupt):
        print("weightsmith: interrupted; no output was left behind", file=sys.stderr)
        return 130
    except Exception:  # an internal error: show the traceback for the bug report
        import traceback

        traceback.print_exc()
        print("weightsmith: internal error (the traceback above helps a bug report)", file=sys.stderr)
        return 1
    finally:
        if previous_policy is not None:
            from engine.evaluation import trust

            trust.set_policy(previous_policy)


if __name__ == "__main__":
    sys.exit(main())
