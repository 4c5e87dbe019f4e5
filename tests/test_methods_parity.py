"""Parity with mergekit 0.1.5 (opt in: ``pytest -m parity``).

Builds a throwaway venv with ``mergekit==0.1.5`` (and the CPU ``torch==2.13.0``) in a temporary folder
— or uses the interpreter named by ``WEIGHTSMITH_MERGEKIT_PYTHON`` — writes a tiny Llama-shaped base and
three experts, runs ``mergekit-yaml`` on a config, imports the same config as a Weightsmith recipe, runs
it through the executor and compares every tensor (float32, tight tolerance).

Deliberate differences (documented in the methods): mergekit's DARE/DELLA draw from torch's global
generator, so they are compared with randomness off (density 1); its SLERP computes the angle in float32
where Weightsmith uses float64 (differences ~1e-7).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.graph import Recipe, run_recipe
from engine.graph.mergekit import import_mergekit

pytestmark = pytest.mark.parity

H, I, L, V = 16, 32, 3, 32


def _llama_names() -> dict[str, tuple[int, ...]]:
    out = {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,), "lm_head.weight": (V, H)}
    for i in range(L):
        p = f"model.layers.{i}."
        for n in "qkvo":
            out[p + f"self_attn.{n}_proj.weight"] = (H, H)
        out[p + "mlp.gate_proj.weight"] = (I, H)
        out[p + "mlp.up_proj.weight"] = (I, H)
        out[p + "mlp.down_proj.weight"] = (H, I)
        out[p + "input_layernorm.weight"] = (H,)
        out[p + "post_attention_layernorm.weight"] = (H,)
    return out


@pytest.fixture(scope="module")
def mergekit_python(tmp_path_factory) -> Path:
    given = os.environ.get("WEIGHTSMITH_MERGEKIT_PYTHON")
    if given:
        return Path(given)
    venv = tmp_path_factory.mktemp("mergekit") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "torch==2.13.0", "mergekit==0.1.5"], check=True,
                   timeout=1800)
    return python


def _write_models(root: Path, rounding: torch.dtype) -> Path:
    """A base and three experts, values rounded through ``rounding`` (bf16 makes magnitudes tie), stored fp32."""
    g = torch.Generator().manual_seed(0)
    base = {n: torch.randn(s, generator=g).to(rounding).float() for n, s in _llama_names().items()}
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H,
              "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": 2, "num_key_value_heads": 2,
              "vocab_size": V, "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "tie_word_embeddings": False}
    experts = {"base": base}
    for i in range(3):
        experts[f"e{i}"] = {n: (t + 0.1 * torch.randn(t.shape, generator=g)).to(rounding).float()
                            for n, t in base.items()}
    for name, sd in experts.items():
        (root / name).mkdir()
        save_file(sd, str(root / name / "model.safetensors"))
        (root / name / "config.json").write_text(json.dumps(config))
    return root


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return _write_models(tmp_path_factory.mktemp("models"), torch.float32)


@pytest.fixture(scope="module")
def tied_models(tmp_path_factory) -> Path:
    return _write_models(tmp_path_factory.mktemp("tied"), torch.bfloat16)


CASES = {
    "linear": "models:\n  - {model: e0, parameters: {weight: 1.0}}\n  - {model: e1, parameters: {weight: 0.3}}\n"
              "  - {model: e2, parameters: {weight: [0.2, 1.0]}}\nmerge_method: linear\n",
    "slerp": "models: [{model: base}, {model: e0}]\nbase_model: base\nmerge_method: slerp\n"
             "parameters:\n  t:\n    - {filter: self_attn, value: [0.1, 0.9]}\n    - {value: 0.6}\n",
    "nuslerp": "models:\n  - {model: e0, parameters: {weight: 1.0}}\n  - {model: e1, parameters: {weight: 0.4}}\n"
               "base_model: base\nmerge_method: nuslerp\n",
    "task_arithmetic": "models:\n  - {model: e0, parameters: {weight: 1.0}}\n  - {model: e1, parameters: {weight: -0.4}}\n"
                       "base_model: base\nmerge_method: task_arithmetic\nparameters: {lambda: 0.8}\n",
    "ties": "models:\n  - {model: e0, parameters: {weight: 1.0, density: [0.3, 0.7]}}\n"
            "  - {model: e1, parameters: {weight: 0.5, density: 0.5}}\n  - {model: e2, parameters: {weight: 0.8}}\n"
            "base_model: base\nmerge_method: ties\nparameters: {lambda: 1.1, density: 0.4}\n",
    "breadcrumbs": "models:\n  - {model: e0, parameters: {weight: 1.0, density: 0.8, gamma: 0.05}}\n"
                   "  - {model: e1, parameters: {weight: 0.7, density: 0.6, gamma: 0.1}}\n"
                   "base_model: base\nmerge_method: breadcrumbs\n",
    "breadcrumbs_ties": "models:\n  - {model: e0, parameters: {weight: 1.0}}\n  - {model: e1, parameters: {weight: 1.0}}\n"
                        "  - {model: e2, parameters: {weight: 1.0}}\nbase_model: base\nmerge_method: breadcrumbs_ties\n"
                        "parameters: {density: 0.7, gamma: 0.02, normalize: true}\n",
    "model_stock": "models: [{model: e0}, {model: e1}, {model: e2}]\nbase_model: base\nmerge_method: model_stock\n",
    "della": "models:\n  - {model: e0, parameters: {weight: 1.0}}\n  - {model: e1, parameters: {weight: 0.6}}\n"
             "base_model: base\nmerge_method: della\nparameters: {density: 1.0, lambda: 0.9}\n",
    "dare_ties": "models:\n  - {model: e0, parameters: {weight: 1.0}}\n  - {model: e1, parameters: {weight: 0.6}}\n"
                 "base_model: base\nmerge_method: dare_ties\nparameters: {density: 1.0}\n",
    "sce": "models: [{model: e0}, {model: e1}, {model: e2}]\nbase_model: base\nmerge_method: sce\n"
           "parameters: {select_topk: 0.5}\n",
    "karcher": "models: [{model: e0}, {model: e1}, {model: e2}]\nmerge_method: karcher\n",
    "multislerp": "models:\n  - {model: e0, parameters: {weight: 1.0}}\n  - {model: e1, parameters: {weight: 0.5}}\n"
                  "  - {model: e2, parameters: {weight: 0.25}}\nbase_model: base\nmerge_method: multislerp\n",
    "nearswap": "models: [{model: base}, {model: e0}]\nbase_model: base\nmerge_method: nearswap\n"
                "parameters: {t: 0.05}\n",
    "arcee_fusion": "models: [{model: base}, {model: e0}]\nbase_model: base\nmerge_method: arcee_fusion\n",
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_mergekit(case, mergekit_python, models, tmp_path):
    _compare(CASES[case], mergekit_python, models, tmp_path)


TIED_CASES = {
    "breadcrumbs": "models:\n  - {model: e0, parameters: {weight: 1.0}}\n  - {model: e1, parameters: {weight: 0.7}}\n"
                   "base_model: base\nmerge_method: breadcrumbs\nparameters: {density: 0.6, gamma: 0.05}\n",
    "breadcrumbs_ties": "models: [{model: e0, parameters: {weight: 1.0}}, {model: e1, parameters: {weight: 1.0}}]\n"
                        "base_model: base\nmerge_method: breadcrumbs_ties\nparameters: {density: 0.5, gamma: 0.1}\n",
    "ties": "models: [{model: e0, parameters: {weight: 1.0}}, {model: e1, parameters: {weight: 0.5}}]\n"
            "base_model: base\nmerge_method: ties\nparameters: {density: 0.3}\n",
}


@pytest.mark.parametrize("case", list(TIED_CASES))
def test_matches_mergekit_when_magnitudes_tie(case, mergekit_python, tied_models, tmp_path):
    """bf16-valued weights: many task-vector entries share a magnitude at the cuts."""
    _compare(TIED_CASES[case], mergekit_python, tied_models, tmp_path)


def _compare(config: str, mergekit_python: Path, models: Path, tmp_path: Path) -> None:
    text = config + "dtype: float32\n"
    (tmp_path / "config.yml").write_text(text)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([str(mergekit_python.parent / "mergekit-yaml"), str(tmp_path / "config.yml"),
                          str(tmp_path / "mk"), "--no-copy-tokenizer", "--no-write-model-card", "--quiet"],
                         cwd=models, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    theirs = {}
    for shard in (tmp_path / "mk").glob("*.safetensors"):
        theirs.update(load_file(str(shard)))
    recipe = import_mergekit(text, models)
    recipe["nodes"][-1]["params"]["path"] = str(tmp_path / "ws")
    result = run_recipe(Recipe.from_json(recipe, models), device="cpu")
    ours = {}
    for shard in result.outputs["save"].glob("*.safetensors"):
        ours.update(load_file(str(shard)))
    assert set(ours) == set(theirs)
    for name in theirs:
        assert torch.allclose(ours[name], theirs[name], atol=2e-6, rtol=1e-5), (
            name, (ours[name] - theirs[name]).abs().max().item())
