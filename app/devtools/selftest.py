"""``weightsmith-gui --self-test``: prove an installed (or bundled) Weightsmith works, in a few seconds.

Offscreen and in a throw-away folder, it

1. opens the main window (theme, icons and style sheet found: the bundle's resources are complete)
   and measures when it was shown, counted from the start of the process where the OS tells;
2. writes a base and two tiny "fine-tuned" checkpoints, merges them with TIES through the recipe
   executor (``engine.graph.run_recipe``, device ``auto``) and compares every merged tensor with a
   hand computation of TIES (trim to the top-``density`` magnitudes, elect the sign of the sum,
   average the agreeing entries);
3. evaluates base, experts and merge with the evaluation engine on two tiny in-memory linear tasks
   whose answers are known: the base (all-zero weights) scores exactly 0.5, each expert 1.0 on its own
   task, the merge 1.0 on both, and every accuracy and loss equals a direct computation;
4. draws a few images of every demo-zoo task (scikit-learn's digits, matplotlib's fonts), the data
   the first-run zoo build needs.

Each step prints one line; the exit code is 0 only when every check passed. Torch is imported only
after the window is shown, so the start-up figure is the real one.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

import engine

DENSITY = 0.5
LAMBDA = 1.0
TOLERANCE = 1e-5
WIDTH = 4
SAMPLES = 64
TASK_AXES = {"sign-x0": 0, "sign-x1": 1}  # task name → the input coordinate whose sign is the label
EXPERTS = {"expert_a": "sign-x0", "expert_b": "sign-x1"}

Output = Callable[[str], None]

log = logging.getLogger(__name__)


class SelfTestFailure(Exception):
    """A check did not give the expected result."""


def process_age_s() -> float | None:
    """Seconds since this process started (Linux /proc, 10 ms resolution); None where unknown."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            start_ticks = int(f.read().rpartition(")")[2].split()[19])
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SelfTestFailure(message)


# ---------------------------------------------------------------- 1. the window


def open_window(workdir: Path, started: float) -> str:
    """Show the main window with settings in ``workdir``; return how long start-up took."""
    from PySide6.QtWidgets import QApplication

    from app import theme
    from app.main_window import MainWindow
    from app.settings import AppPaths, Settings

    app = QApplication.instance() or QApplication(sys.argv[:1])
    theme.apply_theme(app, "dark")
    check(bool(app.styleSheet()), "the style sheet is empty (resources/style.qss not found)")
    check(not theme.app_icon().isNull(), f"the app icon is missing from {theme.ICONS}")
    window = MainWindow(AppPaths(workdir / "config", workdir / "data"), Settings())
    window.show()
    app.processEvents()
    age = process_age_s()
    shown = age if age is not None else time.perf_counter() - started
    try:
        check(window.isVisible() and window.width() > 0, "the main window did not show")
        check(bool(window.menuBar().actions()), "the main window has no menus")
    finally:
        window.close()
        window.deleteLater()
        app.processEvents()
    since = "the process started" if age is not None else "the self-test started"
    return f"main window shown {shown:.2f} s after {since} (platform '{app.platformName()}')"


# ---------------------------------------------------------------- 2. the TIES merge


def tiny_checkpoints(folder: Path) -> dict[str, Path]:
    """A zero base and two experts: expert_a ≈ identity on x0, expert_b on x1, plus small noise."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(7)
    base = {"features.weight": torch.zeros(WIDTH, WIDTH), "features.bias": torch.zeros(WIDTH)}
    paths = {"base": folder / "base.safetensors"}
    save_file(base, paths["base"])
    for name, task in EXPERTS.items():
        weight = 0.04 * torch.rand(WIDTH, WIDTH, generator=g) - 0.02
        weight[TASK_AXES[task], TASK_AXES[task]] = 1.0
        paths[name] = folder / f"{name}.safetensors"
        save_file({"features.weight": weight, "features.bias": 0.04 * torch.rand(WIDTH, generator=g) - 0.02},
                  paths[name])
    return paths


def hand_ties(base, experts: list, density: float, lam: float):
    """TIES for one tensor written out plainly: sort-based trim, sign of the sum, mean of agreeing entries."""
    import torch

    trimmed = []
    for expert in experts:
        tau = expert - base
        k = max(1, int(density * tau.numel()))
        threshold = tau.abs().flatten().sort(descending=True).values[k - 1]
        trimmed.append(torch.where(tau.abs() >= threshold, tau, torch.zeros_like(tau)))
    sign = torch.where(sum(trimmed) >= 0, 1.0, -1.0)
    agreeing = [torch.where(t * sign > 0, t, torch.zeros_like(t)) for t in trimmed]
    count = sum((a != 0).float() for a in agreeing).clamp(min=1)
    return base + lam * sum(agreeing) / count


def load_state(path: Path) -> dict:
    from engine.checkpoints import open_checkpoint

    with open_checkpoint(path) as ckpt:
        return {name: ckpt.get(name) for name in ckpt.names}


def merge_step(workdir: Path, state: dict) -> str:
    """Run the TIES recipe and compare it with ``hand_ties``; keeps the models in ``state``."""
    from engine.graph import run_recipe
    from engine.graph.build import simple_merge_recipe
    from engine.runtime import resolve_device

    paths = tiny_checkpoints(workdir)
    recipe = simple_merge_recipe("ties", [paths[e] for e in EXPERTS], base=paths["base"],
                                 params={"density": DENSITY, "lambda": LAMBDA}, out=workdir / "merged")
    result = run_recipe(recipe, device="auto")
    merged = load_state(result.outputs["save"])
    models = {name: load_state(p) for name, p in paths.items()}
    check(set(merged) == set(models["base"]), f"the merge wrote tensors {sorted(merged)}")
    worst = 0.0
    for name, tensor in merged.items():
        expected = hand_ties(models["base"][name], [models[e][name] for e in EXPERTS], DENSITY, LAMBDA)
        worst = max(worst, float((tensor.float() - expected).abs().max()))
    check(worst <= TOLERANCE, f"TIES differs from the hand computation by {worst:.3g}")
    state.update(models, merged=merged, paths=paths)
    return (f"TIES (density {DENSITY}) of {len(EXPERTS)} checkpoints on a base, {len(merged)} tensors on "
            f"{resolve_device('auto')}: max |error| {worst:.1e} against the hand computation")


# ---------------------------------------------------------------- 3. evaluation


def tiny_tasks(paths: dict[str, Path]) -> list:
    """Two balanced binary tasks on 4-d inputs: the label is whether coordinate 0 (or 1) is negative.

    The network is ``head(features(x))`` with ``features`` merged and a fixed head reading one
    coordinate; inputs keep |x_axis| ≥ 0.5 so the experts' small noise never flips a prediction.
    """
    from collections import OrderedDict

    import torch
    from torch import nn

    from engine.evaluation import ClassifierTask, Split

    g = torch.Generator().manual_seed(11)
    x = torch.rand(SAMPLES, WIDTH, generator=g) * 2 - 1
    signs = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]]).repeat(SAMPLES // 4, 1)
    x[:, :2] = signs * (0.5 + 0.5 * torch.rand(SAMPLES, 2, generator=g))
    tasks = []
    for task, axis in TASK_AXES.items():
        head = torch.zeros(2, WIDTH)
        head[0, axis], head[1, axis] = 1.0, -1.0
        split = Split(x, (x[:, axis] < 0).long())
        tasks.append(ClassifierTask(
            name=task, classes=("positive", "negative"),
            make_module=lambda: nn.Sequential(OrderedDict(features=nn.Linear(WIDTH, WIDTH),
                                                          head=nn.Linear(WIDTH, 2, bias=False))),
            fixed={"head.weight": head}, load_data=lambda s=split: {"val": s, "test": s}, identity="self-test",
            expert=next(paths[e] for e, t in EXPERTS.items() if t == task)))
    return tasks


def direct_scores(task, state: dict) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of ``state`` on ``task`` computed without the evaluation engine."""
    import torch.nn.functional as F

    split = task.data("test")
    logits = (split.inputs @ state["features.weight"].T + state["features.bias"]) @ task.fixed["head.weight"].T
    return float((logits.argmax(-1) == split.labels).float().mean()), float(F.cross_entropy(logits, split.labels))


def evaluation_step(state: dict) -> str:
    """Score base, experts and merge with ``Evaluator`` and check them against known and direct values."""
    from engine.evaluation import Evaluator

    tasks = tiny_tasks(state["paths"])
    evaluator = Evaluator(tasks, device="auto", batch_size=16)
    expected_acc = {"base": {t: 0.5 for t in TASK_AXES}, "merged": {t: 1.0 for t in TASK_AXES}}
    for expert, task in EXPERTS.items():
        expected_acc[expert] = {task: 1.0}
    summary = []
    for model, known in expected_acc.items():
        weights = state[model]
        scores = evaluator.scores(weights)
        for task in tasks:
            got = scores[task.name]
            accuracy, loss = direct_scores(task, {k: v.cpu().float() for k, v in weights.items()})
            check(abs(got.accuracy - accuracy) < 1e-9 and abs(got.loss - loss) <= TOLERANCE * max(1.0, loss),
                  f"{model} on {task.name}: the engine says accuracy {got.accuracy}, loss {got.loss}; "
                  f"computed directly {accuracy}, {loss}")
            if task.name in known:
                check(got.accuracy == known[task.name],
                      f"{model} on {task.name}: accuracy {got.accuracy}, expected {known[task.name]}")
        summary.append(f"{model} " + "/".join(f"{scores[t].accuracy:.2f}" for t in TASK_AXES))
    report = evaluator.report(state["merged"])
    normalized = [row["normalized_accuracy"] for row in report["tasks"].values()]
    check(normalized == [1.0] * len(tasks), f"normalized accuracy of the merge {normalized}, expected 1.0 each")
    return f"accuracy on {'/'.join(TASK_AXES)}: {', '.join(summary)}; losses match; normalized 1.00"


# ---------------------------------------------------------------- 4. zoo data


def zoo_data_step() -> str:
    """Draw one image of each class of every zoo task (and the pre-training corpus) with the full font set."""
    from engine.zoo import datasets

    specs = [*datasets.TASKS.values(), datasets.PRETRAIN]
    for spec in specs:
        n = len(spec.classes)
        images, labels = datasets.generate(spec, n, "test", 0, datasets.FontChoice())
        check(tuple(images.shape) == (n, 16, 16) and bool((images.amax(dim=(1, 2)) > 0).all()),
              f"zoo task '{spec.name}' drew blank images")
        check(int(labels.max()) < len(spec.classes), f"zoo task '{spec.name}' gave a label out of range")
    return f"{len(specs)} demo-zoo tasks draw images (scikit-learn digits, matplotlib fonts)"


# ---------------------------------------------------------------- driver


def run_self_test(workdir: Path, out: Output = print) -> bool:
    """Run every step in ``workdir`` (which must exist), printing a line each; True when all passed."""
    started = time.perf_counter()
    state: dict = {}
    steps = [("window", lambda: open_window(workdir, started)), ("merge", lambda: merge_step(workdir, state)),
             ("evaluation", lambda: evaluation_step(state)), ("zoo data", zoo_data_step)]
    out(f"Weightsmith {engine.__version__} self-test")
    for name, step in steps:
        try:
            detail = step()
        except Exception as exc:  # every failure is reported as a failed step, with its cause
            reason = str(exc) if isinstance(exc, SelfTestFailure) else traceback.format_exc().rstrip()
            out(f"  {name:<11} FAILED  {reason}")
            out(f"self-test FAILED after {time.perf_counter() - started:.1f} s")
            return False
        out(f"  {name:<11} ok  {detail}")
    out(f"self-test passed in {time.perf_counter() - started:.1f} s")
    return True


def main() -> int:
    """Entry point of ``--self-test``: offscreen, in a temporary folder; exit code 0 when all passed.

    Lines go to stdout and to the log (a Windows bundle has no console to print to).
    """
    os.environ["QT_QPA_PLATFORM"] = "offscreen"

    def out(line: str) -> None:
        print(line, flush=True)
        log.info(line)

    with tempfile.TemporaryDirectory(prefix="weightsmith-selftest-") as tmp:
        return 0 if run_self_test(Path(tmp), out) else 1
