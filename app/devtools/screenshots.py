"""``python -m app.devtools.screenshots [OUT_DIR]`` (``make screenshots``): refresh the README's screenshots.

1. ``main-window.png`` (1600×1000) and ``main-window-1280x720.png``: the window on the demo project (the
   demo zoo is built first if it is missing);
2. ``ties-inspector.png``: the Inspector of a TIES merge with per-model weights and a per-layer λ;
3. ``run-in-progress.png``: the window while that merge runs.

2 and 3 use three Llama-shaped checkpoints (about 150 MB each, written to a temporary folder) so the
merge runs long enough to be caught half-way. Each shot is a separate ``python -m app --screenshot``
with its own settings folder, so the user's settings and recent files are left alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from app.settings import AppPaths
from engine.graph import Edge, Node, Recipe
from engine.zoo import build_zoo

ROOT = Path(__file__).resolve().parents[2]
LAYERS, WIDTH, FFN, VOCAB = 24, 512, 1408, 8000


def llama_like(folder: Path, seed: int, base: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Write a Hugging Face-style folder (model.safetensors + config.json); returns its tensors."""
    g = torch.Generator().manual_seed(seed)

    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.02

    if base is None:
        sd = {"model.embed_tokens.weight": draw(VOCAB, WIDTH)}
        for i in range(LAYERS):
            p = f"model.layers.{i}."
            for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                sd[f"{p}self_attn.{name}.weight"] = draw(WIDTH, WIDTH)
            sd[f"{p}mlp.gate_proj.weight"] = draw(FFN, WIDTH)
            sd[f"{p}mlp.up_proj.weight"] = draw(FFN, WIDTH)
            sd[f"{p}mlp.down_proj.weight"] = draw(WIDTH, FFN)
            sd[f"{p}input_layernorm.weight"] = torch.ones(WIDTH)
            sd[f"{p}post_attention_layernorm.weight"] = torch.ones(WIDTH)
        sd["model.norm.weight"] = torch.ones(WIDTH)
        sd["lm_head.weight"] = draw(VOCAB, WIDTH)
    else:
        sd = {n: t + 0.1 * draw(*t.shape) for n, t in base.items()}
    folder.mkdir(parents=True, exist_ok=True)
    save_file({n: t.to(torch.bfloat16) for n, t in sd.items()}, folder / "model.safetensors")
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": WIDTH,
              "intermediate_size": FFN, "num_hidden_layers": LAYERS, "vocab_size": VOCAB}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return sd


def ties_project(work: Path) -> Path:
    """base + two fine-tunes → TIES → Save, as a recipe file in ``work``."""
    base = llama_like(work / "llama-base", 0)
    llama_like(work / "llama-chat", 1, base)
    llama_like(work / "llama-code", 2, base)
    recipe = Recipe("llama-ties")
    layout = {"base": (0, 0), "chat": (0, 150), "code": (0, 300), "ties": (300, 120), "save": (600, 120)}
    for nid, folder in (("base", "llama-base"), ("chat", "llama-chat"), ("code", "llama-code")):
        recipe.add_node(Node(nid, "checkpoint", {"path": str(work / folder)}, {"pos": list(layout[nid])}))
    recipe.add_node(Node("ties", "merge", {"method": "ties", "weight": {"chat": 1.0, "code": 0.7},
                                           "density": 0.35, "lambda": [0.7, 1.0, 1.1]}, {"pos": list(layout["ties"])}))
    recipe.add_node(Node("save", "save", {"path": str(work / "out" / "llama-chat-code"), "dtype": "bf16"},
                         {"pos": list(layout["save"])}))
    for e in (Edge("base", "ties", "base"), Edge("chat", "ties", "models"), Edge("code", "ties", "models"),
              Edge("ties", "save", "model")):
        recipe.add_edge(e)
    path = work / "llama-ties.json"
    recipe.save(path)
    return path


def shoot(out: Path, project: Path, home: Path, *extra: str) -> None:
    env = {**os.environ, "WEIGHTSMITH_HOME": str(home)}
    cmd = [sys.executable, "-m", "app", "--screenshot", str(out), "--project", str(project), *extra]
    print("+", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, timeout=1200)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out_dir = Path(args[0] if args else ROOT / "docs" / "screenshots")
    out_dir.mkdir(parents=True, exist_ok=True)
    zoo = AppPaths.default().zoo_dir
    if not (zoo / "demo.json").is_file():
        print(f"building the demo zoo in {zoo} (once, a few minutes)…", flush=True)
        build_zoo(zoo)
    with tempfile.TemporaryDirectory(prefix="weightsmith-shots-") as tmp:
        work = Path(tmp)
        shoot(out_dir / "main-window.png", zoo / "demo.json", work / "home1", "--select", "merge")
        shoot(out_dir / "main-window-1280x720.png", zoo / "demo.json", work / "home1s", "--select", "merge",
              "--window-size", "1280x720")
        project = ties_project(work)
        shoot(out_dir / "ties-inspector.png", project, work / "home2", "--select", "ties", "--capture", "inspector")
        shoot(out_dir / "run-in-progress.png", project, work / "home3", "--select", "ties", "--run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
