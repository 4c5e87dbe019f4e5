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
from engine.runtime.progress import Progress



# ---- output helpers ---------------------------------------------------------------------------
def human_bytes(n: float) -> str:
    """1536 → '1.5 KB' (decimal units)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def human_count(n: int) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


class TerminalProgress:
    """A one-line progress bar on a terminal's stderr; silent when stderr is not a terminal."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.enabled = stream.isatty()
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
    """A CLI parameter value: JSON when it parses (numbers, lists, true/false), else the plain string."""
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
    from engine.checkpoints import compare, open_checkpoint

    ckpts = [open_checkpoint(p) for p in args.paths]
    reports = []
    for c in ckpts:
        entry = c.summary().to_json()
        if args.tensors or args.json:
            entry["tensors"] = [{"name": i.name, "shape": list(i.shape), "dtype": str(i.dtype).removeprefix("torch."),
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
    from engine.graph import run_recipe

    bar = TerminalProgress()
    try:
        result = run_recipe(recipe, device=args.device, progress=bar, force=args.force)
    finally:
        bar.finish()
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    for nid, path in result.outputs.items():
        print(f"wrote {path} ({result.tensors} tensors, {human_bytes(result.bytes_read)} read in {result.seconds:.2f} s)")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from engine.graph.build import simple_merge_recipe

    params = parse_params(args.param)
    if args.seed is not None:
        params["seed"] = args.seed
    if args.weight and len(args.weight) != len(args.model):
        raise EngineInputError(f"{len(args.weight)} --weight values for {len(args.model)} --model paths")
    recipe = simple_merge_recipe(args.method, [Path(m).resolve() for m in args.model],
                                 base=Path(args.base).resolve() if args.base else None, params=params,
                                 weights=args.weight, out=Path(args.out).resolve(), dtype=args.dtype,
                                 shard_size=args.shard_size)
    return _run(recipe, args)


def cmd_run(args: argparse.Namespace) -> int:
    from engine.graph import Recipe

    recipe = Recipe.load(args.recipe)
    if args.out:
        saves = [n for n in recipe.nodes.values() if n.type == "save"]
        if len(saves) != 1:
            raise EngineInputError(f"--out needs exactly one Save node in the recipe, it has {len(saves)}",
                                   path=args.recipe)
        saves[0].params["path"] = str(Path(args.out).resolve())
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
    from engine.graph.mergekit import import_mergekit

    path = Path(args.config)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise EngineInputError(f"cannot read ({exc.strerror or exc})", path=str(path)) from exc
    recipe = import_mergekit(text, path.resolve().parent)
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

    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``weightsmith`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(levelname)s %(message)s")
    try:
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


if __name__ == "__main__":
    sys.exit(main())
