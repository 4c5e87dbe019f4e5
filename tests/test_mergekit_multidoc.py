"""mergekit frankenmerges and multi-document configs: mergekit's own examples (passthrough slices,
gradient-slerp written with slices) on local tiny Llamas, per-slice gradients, mergekit-multi documents
naming each other, round trips, and bad configs refused before anything is written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from engine.cli import main
from engine.errors import EngineInputError
from engine.graph import Recipe, run_recipe, validate
from engine.graph.mergekit import export_mergekit, import_mergekit, import_mergekit_file
from test_slices import slerp_by_hand, tiny_llama

ORCA, PLATY = "psmathur/orca_mini_v3_13b", "garage-bAInd/Platypus2-13B"

# mergekit's examples/orcamini-platy-44layer.yml and examples/gradient-slerp.yml, verbatim
ORCAMINI_PLATY_44 = """slices:
  - sources:
    - model: psmathur/orca_mini_v3_13b
      layer_range: [0, 24]
  - sources:
    - model: garage-bAInd/Platypus2-13B
      layer_range: [20, 40]
merge_method: passthrough
dtype: float16
"""
GRADIENT_SLERP = """slices:
  - sources:
      - model: psmathur/orca_mini_v3_13b
        layer_range: [0, 40]
      - model: garage-bAInd/Platypus2-13B
        layer_range: [0, 40]
# or, the equivalent models: syntax:
# models:
#   - model: psmathur/orca_mini_v3_13b
#   - model: garage-bAInd/Platypus2-13B
merge_method: slerp
base_model: psmathur/orca_mini_v3_13b
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5 # fallback for rest of tensors
dtype: float16
"""


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    """A folder holding the examples' two models (40 layers each, tiny) and three 4-layer Llamas a, b, c."""
    root = tmp_path_factory.mktemp("mergekit_zoo")
    tiny_llama(root / ORCA, 0, layers=40)
    tiny_llama(root / PLATY, 1, layers=40)
    for seed, name in enumerate("abc", 2):
        tiny_llama(root / name, seed)
    return root


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def run(recipe_json: dict, zoo: Path, out: Path) -> Path:
    recipe = Recipe.from_json(recipe_json, zoo)
    recipe.nodes["save"].params["path"] = str(out)
    assert validate(recipe) == []
    run_recipe(recipe, device="cpu")
    return out


def with_paths(config: dict, zoo: Path) -> dict:
    """A config with its relative model paths as the absolute ones export writes."""
    text = json.dumps(config)
    for name in (ORCA, PLATY):
        text = text.replace(f'"{name}"', json.dumps(str((zoo / name).resolve())))
    return json.loads(text)


def test_orcamini_platy_44_layers_imports_runs_and_round_trips(zoo, tmp_path):
    recipe = import_mergekit(ORCAMINI_PLATY_44, zoo)
    stack = next(n for n in recipe["nodes"] if n["type"] == "stack")
    assert stack == {"id": "stack", "type": "stack", "params": {"slices": "orca_mini_v3_13b[0:24], Platypus2-13B[20:40]"}}
    out = run(recipe, zoo, tmp_path / "out")
    orca, platy, merged = weights(zoo / ORCA), weights(zoo / PLATY), weights(out)
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 44
    for j, src, i in ((0, orca, 0), (23, orca, 23), (24, platy, 20), (43, platy, 39)):
        name = "self_attn.v_proj.weight"
        assert torch.equal(merged[f"model.layers.{j}.{name}"], src[f"model.layers.{i}.{name}"].half())
    assert torch.equal(merged["model.embed_tokens.weight"], orca["model.embed_tokens.weight"].half())
    assert torch.equal(merged["lm_head.weight"], platy["lm_head.weight"].half())
    exported = export_mergekit(recipe)
    config = yaml.safe_load(exported)
    original = with_paths(yaml.safe_load(ORCAMINI_PLATY_44), zoo)
    assert config["slices"] == original["slices"] and config["merge_method"] == "passthrough"
    assert config["out_dtype"] == "float16"
    assert import_mergekit(exported, zoo) == recipe


def test_gradient_slerp_with_slices_matches_the_models_syntax_and_the_hand_computed_slerp(zoo, tmp_path):
    recipe = import_mergekit(GRADIENT_SLERP, zoo)
    kinds = {n["id"]: n["type"] for n in recipe["nodes"]}
    assert kinds == {"orca_mini_v3_13b": "checkpoint", "Platypus2-13B": "checkpoint", "merge_orca_mini_v3_13b": "stack",
                     "merge_Platypus2-13B": "stack", "merge": "merge", "save": "save"}
    assert [(e["from"], e["port"]) for e in recipe["edges"] if e["to"] == "merge"] == [
        ("merge_orca_mini_v3_13b", "base"), ("merge_Platypus2-13B", "models")]
    merged = weights(run(recipe, zoo, tmp_path / "slices"))
    equivalent = GRADIENT_SLERP.replace(GRADIENT_SLERP.split("merge_method")[0],
                                        f"models:\n  - model: {ORCA}\n  - model: {PLATY}\n")
    plain = weights(run(import_mergekit(equivalent, zoo), zoo, tmp_path / "models"))
    assert merged.keys() == plain.keys() and all(torch.equal(merged[n], plain[n]) for n in merged)
    orca, platy = weights(zoo / ORCA), weights(zoo / PLATY)
    # layer 13 of 40 sits at depth 13/39: self_attn reads its gradient at 4/3 of the way → 0.5·2/3 + 0.3·1/3
    q = "model.layers.13.self_attn.q_proj.weight"
    torch.testing.assert_close(merged[q].float(), slerp_by_hand(0.5 * 2 / 3 + 0.3 / 3, orca[q], platy[q]),
                               atol=2e-3, rtol=2e-3)
    up = "model.layers.13.mlp.up_proj.weight"
    torch.testing.assert_close(merged[up].float(), slerp_by_hand(0.5 * 2 / 3 + 0.7 / 3, orca[up], platy[up]),
                               atol=2e-3, rtol=2e-3)
    config = yaml.safe_load(export_mergekit(recipe))
    original = with_paths(yaml.safe_load(GRADIENT_SLERP), zoo)
    assert config["slices"] == original["slices"] and config["base_model"] == original["base_model"]
    assert config["parameters"] == original["parameters"] and config["merge_method"] == "slerp"
    assert import_mergekit(export_mergekit(recipe), zoo) == recipe


PER_SLICE = """
slices:
  - sources:
      - {model: a, layer_range: [0, 2]}
      - {model: b, layer_range: [1, 3]}
  - sources:
      - {model: a, layer_range: [2, 4]}
      - {model: b, layer_range: [2, 4]}
    parameters: {t: 0.25}
merge_method: slerp
base_model: a
parameters: {t: [0, 1]}
"""


def test_each_slice_takes_its_own_gradient_and_parameters(zoo, tmp_path):
    recipe = import_mergekit(PER_SLICE, zoo)
    stack = next(n for n in recipe["nodes"] if n["id"] == "stack")
    assert stack["params"] == {"slices": "merge_1[0:2], merge_2[0:2]"}
    merged = weights(run(recipe, zoo, tmp_path / "out"))
    a, b = weights(zoo / "a"), weights(zoo / "b")
    q = "self_attn.q_proj.weight"
    # slice 1: t runs 0 → 1 over its two layers (a's 0–1 with b's 1–2); slice 2: t = 0.25 throughout
    torch.testing.assert_close(merged[f"model.layers.0.{q}"], a[f"model.layers.0.{q}"])
    torch.testing.assert_close(merged[f"model.layers.1.{q}"], b[f"model.layers.2.{q}"])
    for j in (2, 3):
        torch.testing.assert_close(merged[f"model.layers.{j}.{q}"],
                                   slerp_by_hand(0.25, a[f"model.layers.{j}.{q}"], b[f"model.layers.{j}.{q}"]),
                                   atol=1e-6, rtol=1e-5)
    # as in mergekit, the embeddings come from the first slice at t = 0 (a's), the LM head from the last (t = 0.25)
    torch.testing.assert_close(merged["model.embed_tokens.weight"], a["model.embed_tokens.weight"])
    torch.testing.assert_close(merged["lm_head.weight"], slerp_by_hand(0.25, a["lm_head.weight"], b["lm_head.weight"]),
                               atol=1e-6, rtol=1e-5)
    config = yaml.safe_load(export_mergekit(recipe))
    assert [s.get("parameters") for s in config["slices"]] == [{"t": [0, 1]}, {"t": 0.25}]
    assert [[src["layer_range"] for src in s["sources"]] for s in config["slices"]] == [[[0, 2], [1, 3]], [[2, 4], [2, 4]]]
    assert import_mergekit(export_mergekit(recipe), zoo) == recipe


# depth up-scaling with the repeated layers' output projections zeroed (a common passthrough config)
SCALED = """
slices:
  - sources:
      - model: a
        layer_range: [0, 3]
  - sources:
      - model: a
        layer_range: [1, 4]
        parameters:
          scale:
            - filter: o_proj
              value: 0.0
            - filter: down_proj
              value: 0.0
            - value: 1.0
merge_method: passthrough
"""


def test_passthrough_scale_multiplies_the_filtered_tensors(zoo, tmp_path):
    recipe = import_mergekit(SCALED, zoo)
    scale = next(n for n in recipe["nodes"] if n["id"] == "scale_2")
    assert scale["params"] == {"method": "linear", "normalize": False, "weight": {"scale_2_a": [
        {"filter": "o_proj", "value": 0.0}, {"filter": "down_proj", "value": 0.0}, {"value": 1.0}]}}
    assert next(n for n in recipe["nodes"] if n["id"] == "stack")["params"] == {"slices": "a[0:3], scale_2[0:3]"}
    merged, a = weights(run(recipe, zoo, tmp_path / "out")), weights(zoo / "a")
    for j, i in ((2, 2), (3, 1), (5, 3)):
        for part in ("self_attn.q_proj.weight", "mlp.up_proj.weight", "input_layernorm.weight"):
            assert torch.equal(merged[f"model.layers.{j}.{part}"], a[f"model.layers.{i}.{part}"])
        for part in ("self_attn.o_proj.weight", "mlp.down_proj.weight"):
            expected = a[f"model.layers.{i}.{part}"] * (0.0 if j >= 3 else 1.0)
            assert torch.equal(merged[f"model.layers.{j}.{part}"], expected)
    assert torch.equal(merged["lm_head.weight"], a["lm_head.weight"])
    config = yaml.safe_load(export_mergekit(recipe))
    assert config["slices"][1]["sources"][0]["parameters"] == yaml.safe_load(SCALED)["slices"][1]["sources"][0]["parameters"]
    assert import_mergekit(export_mergekit(recipe), zoo) == recipe


# mergekit's docs/multimerge.md example, on local models (dare_ties → ties: the same graph, no random drop)
MULTI = """
name: first-merge
merge_method: linear
models:
  - model: a
  - model: b
parameters:
  weight: 0.5
---
name: second-merge
merge_method: slerp
base_model: first-merge  # Reference previous merge
models:
  - model: c
parameters:
  t: 0.5
---
# Final merge (no name)
merge_method: task_arithmetic
base_model: a
models:
  - model: second-merge
    parameters:
      weight: 0.5
  - model: c
    parameters:
      weight: 0.3
"""


def test_multi_document_config_is_one_recipe_with_intermediate_nodes(zoo, tmp_path):
    recipe = import_mergekit(MULTI, zoo)
    kinds = {n["id"]: n["type"] for n in recipe["nodes"]}
    assert kinds == {"a": "checkpoint", "b": "checkpoint", "first-merge": "merge", "c": "checkpoint",
                     "second-merge": "merge", "merge": "merge", "save": "save"}
    assert [(e["from"], e["port"]) for e in recipe["edges"] if e["to"] == "second-merge"] == [
        ("first-merge", "base"), ("c", "models")]
    merged = weights(run(recipe, zoo, tmp_path / "out"))
    a, b, c = weights(zoo / "a"), weights(zoo / "b"), weights(zoo / "c")
    q = "model.layers.1.self_attn.q_proj.weight"
    first = (a[q] + b[q]) / 2
    second = slerp_by_hand(0.5, first, c[q])
    torch.testing.assert_close(merged[q], a[q] + 0.5 * (second - a[q]) + 0.3 * (c[q] - a[q]), atol=1e-6, rtol=1e-5)
    exported = export_mergekit(recipe)
    documents = list(yaml.safe_load_all(exported))
    assert [d.get("name") for d in documents] == ["first-merge", "second-merge", None]
    assert documents[1]["base_model"] == "first-merge" and documents[2]["models"][0]["model"] == "second-merge"
    assert import_mergekit(exported, zoo) == recipe
    # the documents may come in any order: they are sorted by what they name
    shuffled = "\n---\n".join(reversed(MULTI.split("---")))
    assert import_mergekit(shuffled, zoo) == recipe


def test_slices_of_an_intermediate_merge_and_several_outputs(zoo, tmp_path):
    text = """
name: avg
merge_method: linear
models: [{model: a, parameters: {weight: 1}}, {model: b, parameters: {weight: 1}}]
---
name: tall
slices:
  - sources: [{model: avg, layer_range: [0, 3]}]
  - sources: [{model: c, layer_range: [1, 4]}]
merge_method: passthrough
"""
    recipe = import_mergekit(text, zoo)
    saves = {n["id"]: n["params"]["path"] for n in recipe["nodes"] if n["type"] == "save"}
    assert saves == {"save": "tall"}
    r = Recipe.from_json(recipe, zoo)
    r.nodes["save"].params["path"] = str(tmp_path / "tall")
    run_recipe(r, device="cpu")
    merged, a, b, c = weights(tmp_path / "tall"), weights(zoo / "a"), weights(zoo / "b"), weights(zoo / "c")
    q = "self_attn.q_proj.weight"
    torch.testing.assert_close(merged[f"model.layers.2.{q}"], (a[f"model.layers.2.{q}"] + b[f"model.layers.2.{q}"]) / 2)
    assert torch.equal(merged[f"model.layers.3.{q}"], c[f"model.layers.1.{q}"])
    assert json.loads((tmp_path / "tall" / "config.json").read_text())["num_hidden_layers"] == 6
    exported = export_mergekit(recipe)  # the final document is written unnamed (mergekit-multi's --out-path)
    assert [d.get("name") for d in yaml.safe_load_all(exported)] == ["avg", None]
    assert export_mergekit(import_mergekit(exported, zoo)) == exported
    # a range the intermediate does not have is found by validation, naming the stack
    bad = import_mergekit(text.replace("[0, 3]", "[2, 7]"), zoo)
    problems = validate(Recipe.from_json(bad, zoo))
    assert any(p.node_id == "tall" and "avg[2:7] asks for layers 2–6, but 'avg' has layers 0–3" in p.message
               for p in problems)


@pytest.mark.parametrize("text,message", [
    ("name: x\nmerge_method: linear\nmodels: [{model: y, parameters: {weight: 1}}]\n---\n"
     "name: y\nmerge_method: linear\nmodels: [{model: x, parameters: {weight: 1}}]\n---\n"
     "merge_method: linear\nmodels: [{model: x, parameters: {weight: 1}}]",
     "the documents name each other in a cycle: 'x' → 'y' → 'x'"),
    ("merge_method: linear\nmodels: [{model: second-merge, parameters: {weight: 1}}]\n---\n"
     "name: first-merge\nmerge_method: linear\nmodels: [{model: a, parameters: {weight: 1}}]",
     "model 'second-merge' not found"),
    ("name: m\nmerge_method: linear\nmodels: [{model: a, parameters: {weight: 1}}]\n---\n"
     "name: m\nmerge_method: linear\nmodels: [{model: b, parameters: {weight: 1}}]", "documents 1 and 2 are both named 'm'"),
    ("merge_method: linear\nmodels: [{model: a, parameters: {weight: 1}}]\n---\n"
     "merge_method: linear\nmodels: [{model: b, parameters: {weight: 1}}]", "documents 1 and 2 both have no 'name'"),
    ("slices:\n  - sources:\n    - model: a\n      layer_range: [0, 2]\n  - sources:\n    - model: b\n"
     "      layer_range: [2, 6]\nmerge_method: passthrough",
     "source 1 of slice 2 (line 6): layer_range [2, 6] asks for layers 2–5, but 'b' has 4 layers (0–3)"),
    ("slices:\n  - sources:\n    - {model: a, layer_range: [2, 2]}\nmerge_method: passthrough", "is empty"),
    ("slices:\n  - sources:\n    - {model: a, layer_range: [0, 2]}\n    - {model: b, layer_range: [0, 3]}\n"
     "merge_method: slerp\nbase_model: a\nparameters: {t: 0.5}", "different numbers of layers"),
    ("slices:\n  - sources:\n    - {model: a, layer_range: [0, 2]}\n    - {model: b, layer_range: [0, 2]}\n"
     "merge_method: slerp\nbase_model: c\nparameters: {t: 0.5}", "the base model 'c' is not one of its sources"),
    ("slices:\n  - sources:\n    - {model: a, layer_range: [0, 2], parameters: {weight: 0.5}}\n"
     "merge_method: passthrough", "'weight' in parameters of source 1 of slice 1 (line 2) is not a parameter of "
     "mergekit's passthrough"),
    ("slices:\n  - sources:\n    - {model: a, layer_range: [0, 2]}\n    residual_weight: 0.5\n"
     "merge_method: passthrough", "'residual_weight' in slice 1 (line 2) does not map"),
])
def test_bad_configs_are_refused_and_nothing_is_written(zoo, tmp_path, text, message):
    with pytest.raises(EngineInputError, match=re.escape(message)):
        import_mergekit(text, zoo)
    config = zoo / "bad.yml"
    config.write_text(text, encoding="utf-8")
    assert main(["import-mergekit", str(config), "-o", str(tmp_path / "r.json")]) == 2
    assert not (tmp_path / "r.json").exists()


def test_cli_imports_the_examples_that_used_to_exit_2(zoo, tmp_path):
    for name, text in (("44.yml", ORCAMINI_PLATY_44), ("slerp.yml", GRADIENT_SLERP), ("multi.yml", MULTI)):
        (zoo / name).write_text(text, encoding="utf-8")
        assert main(["import-mergekit", str(zoo / name), "-o", str(tmp_path / f"{name}.json")]) == 0
        assert json.loads((tmp_path / f"{name}.json").read_text()) == import_mergekit_file(zoo / name)
        recipe = tmp_path / f"{name}.json"
        assert main(["export-mergekit", str(recipe), "-o", str(tmp_path / f"{name}.out.yml")]) == 0
