"""mergekit YAML import/export: what maps, what is refused, and that an imported recipe runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from engine.errors import EngineInputError
from engine.graph import Recipe, run_recipe, validate
from engine.graph.mergekit import export_mergekit, import_mergekit
from methods_helpers import llama_like, merge_model, variant


@pytest.fixture
def folders(tmp_path: Path) -> Path:
    for name in ("base", "a", "b", "lora"):
        (tmp_path / name).mkdir()
    return tmp_path


def merge_params(recipe: dict) -> dict:
    return next(n for n in recipe["nodes"] if n["type"] == "merge")["params"]


def test_import_ties_with_per_model_gradients_filters_and_defaults(folders):
    text = """
models:
  - model: base
  - model: a
    parameters: {weight: [0.2, 0.8], density: 0.5}
  - model: b
    parameters:
      weight:
        - filter: self_attn.q_proj
          value: 0.3
merge_method: ties
base_model: base
parameters: {weight: 0.5, lambda: 1.2, int8_mask: true}
dtype: bfloat16
tokenizer_source: base
"""
    recipe = import_mergekit(text, folders)
    params = merge_params(recipe)
    assert params == {"method": "ties", "lambda": 1.2, "normalize": True,
                      "weight": {"a": [0.2, 0.8], "b": [{"filter": r"self_attn\.q_proj", "value": 0.3}, {"value": 0.5}]},
                      "density": {"a": 0.5, "b": 1.0},  # mergekit's density default (1.0), not Weightsmith's 0.2
                      "tie_break": "mergekit"}  # equal magnitudes at the trim cut split as mergekit splits them
    kinds = {n["id"]: n["type"] for n in recipe["nodes"]}
    assert kinds == {"base": "checkpoint", "a": "checkpoint", "b": "checkpoint", "merge": "merge", "save": "save"}
    assert [(e["from"], e["port"]) for e in recipe["edges"] if e["to"] == "merge"] == [
        ("base", "base"), ("a", "models"), ("b", "models")]
    save = next(n for n in recipe["nodes"] if n["type"] == "save")["params"]
    assert save["dtype"] == "bf16" and save["copy_files_from"] == "base"
    assert validate(Recipe.from_json(recipe, folders), open_files=False) == []


def test_import_method_specific_defaults(folders):
    base = "models: [{model: a, parameters: {weight: 1}}]\nbase_model: base\nmerge_method: "
    assert merge_params(import_mergekit(base + "dare_ties", folders))["rescale"] == "l1"
    assert merge_params(import_mergekit(base + "dare_linear\nparameters: {rescale: false}", folders))["rescale"] == "none"
    della = merge_params(import_mergekit(base + "della", folders))
    assert della["epsilon"] == {"a": 0.15} and della["normalize"] is True
    crumbs = merge_params(import_mergekit(base + "breadcrumbs", folders))
    assert crumbs["gamma"] == {"a": 0.01} and crumbs["density"] == {"a": 1.0}
    ta = merge_params(import_mergekit(base + "task_arithmetic\nparameters: {density: 0.3}", folders))
    assert set(ta) == {"method", "lambda", "normalize", "weight"}  # density has no effect there
    slerp = import_mergekit("models: [{model: base}, {model: a}]\nbase_model: base\nmerge_method: slerp\n"
                            "parameters: {t: [0, 0.5, 1]}", folders)
    assert merge_params(slerp) == {"method": "slerp", "t": [0, 0.5, 1]}
    assert [e["from"] for e in slerp["edges"] if e["port"] == "models"] == ["a"]


def test_import_linear_keeps_a_listed_or_given_base_as_an_input(folders):
    recipe = import_mergekit("models: [{model: a}, {model: b}]\nbase_model: base\nmerge_method: linear\n"
                             "parameters: {weight: 1.0}", folders)
    assert [e["from"] for e in recipe["edges"] if e["to"] == "merge"] == ["a", "b", "base"]
    assert merge_params(recipe)["weight"] == {"a": 1.0, "b": 1.0, "base": 1.0}


def test_import_lora_reference_becomes_an_add_node(folders):
    recipe = import_mergekit("models: [{model: a+lora, parameters: {weight: 1}}]\nbase_model: base\n"
                             "merge_method: task_arithmetic", folders)
    add = next(n for n in recipe["nodes"] if n["type"] == "add")
    assert [e["from"] for e in recipe["edges"] if e["to"] == add["id"]] == ["a", "lora"]


@pytest.mark.parametrize("text,message", [
    ("slices: [{sources: [{model: a, layer_range: [0, 2]}, {model: b, layer_range: [0, 2]}]}]\n"
     "merge_method: passthrough", "passthrough copies one model's layers"),  # slices themselves map (test_slices)
    ("models: [{model: a}]\nmerge_method: passthrough", "passthrough"),
    ("models: [{model: a}]\nmerge_method: ram", "ram"),
    ("models: [{model: a, parameters: {weight: 1}}]\nmerge_method: linear\nchat_template: chatml", "chat"),
    ("models: [{model: a, parameters: {weight: 1}}]\nmerge_method: linear\n"
     "tokenizer: {source: base, tokens: {x: {source: a}}}", "tokenizer"),
    ("models: [{model: a}]\nmerge_method: linear", "weight"),
    ("models: [{model: a, parameters: {weight: 1, desnity: 0.5}}]\nbase_model: base\nmerge_method: ties", "desnity"),
    ("models: [{model: a, parameters: {weight: 1}}]\nbase_model: base\nmerge_method: ties\n"
     "parameters: {rescale: true}", "rescale"),
    ("models: [{model: org/model@main, parameters: {weight: 1}}]\nmerge_method: linear", "Hub"),
    ("models: [{model: missing, parameters: {weight: 1}}]\nmerge_method: linear", "not found"),
    ("models: [{model: base}, {model: a}]\nbase_model: base\nmerge_method: slerp", "'t'"),
    ("models: [{model: a, parameters: {weight: 1}}]\nmerge_method: linear\nparameters: {normalize: [true, false]}",
     "per layer"),
    ("[1, 2]", "mapping"),
])
def test_import_refuses_what_does_not_map(folders, text, message):
    with pytest.raises(EngineInputError, match=message):
        import_mergekit(text, folders)


def test_round_trip_import_export_import(folders):
    text = """
models:
  - model: a
    parameters:
      weight: [{filter: mlp, value: [0.1, 0.9]}, {value: 0.4}]
      density: 0.7
      gamma: 0.02
  - model: b
    parameters: {weight: 1.0}
base_model: base
merge_method: breadcrumbs_ties
parameters: {density: 0.6, lambda: 0.9, normalize: true, rescale: true}
out_dtype: float16
"""
    first = import_mergekit(text, folders)
    exported = export_mergekit(first)
    config = yaml.safe_load(exported)
    assert config["merge_method"] == "breadcrumbs_ties" and config["out_dtype"] == "float16"
    assert config["parameters"] == {"lambda": 0.9, "normalize": True, "rescale": True}
    assert config["models"][0]["parameters"]["weight"] == [{"filter": "mlp", "value": [0.1, 0.9]}, {"value": 0.4}]
    assert config["models"][1]["parameters"] == {"weight": 1.0, "density": 0.6, "gamma": 0.01}
    assert import_mergekit(exported, folders) == first


def test_export_writes_weightsmith_defaults_explicitly(folders):
    recipe = import_mergekit("models: [{model: a, parameters: {weight: 1}}]\nbase_model: base\nmerge_method: ties",
                             folders)
    params = merge_params(recipe)
    params.pop("density")  # now Weightsmith's own default (0.2) applies
    config = yaml.safe_load(export_mergekit(recipe))
    assert config["models"][0]["parameters"]["density"] == 0.2
    slerp = import_mergekit("models: [{model: base}, {model: a}]\nbase_model: base\nmerge_method: slerp\n"
                            "parameters: {t: 0.3}", folders)
    assert [m["model"] for m in yaml.safe_load(export_mergekit(slerp))["models"]] == [
        str((folders / "base").resolve()), str((folders / "a").resolve())]


@pytest.mark.parametrize("change,message", [
    ({"scope": "model"}, "scope"), ({"rescale": "inverse"}, "inverse"), ({"method": "pcb"}, "pcb"),
    ({"weight": {"a": [{"filter": "layers\\.[0-3]\\.", "value": 1.0}, {"value": 0.5}]}}, "regular expression"),
])
def test_export_refuses_what_does_not_map(folders, change, message):
    recipe = import_mergekit("models: [{model: a, parameters: {weight: 1}}]\nbase_model: base\n"
                             "merge_method: dare_ties", folders)
    merge_params(recipe).update(change)
    with pytest.raises(EngineInputError, match=message):
        export_mergekit(recipe)


def test_export_refuses_graphs_beyond_one_merge(folders):
    recipe = import_mergekit("models: [{model: a, parameters: {weight: 1}}]\nbase_model: base\n"
                             "merge_method: ties", folders)
    recipe["nodes"].append({"id": "m2", "type": "merge", "params": {"method": "linear"}})
    with pytest.raises(EngineInputError, match="exactly one merge"):
        export_mergekit(recipe)
    recipe["nodes"][-1] = {"id": "s", "type": "scale", "params": {"factor": 2}}
    with pytest.raises(EngineInputError, match="scale"):
        export_mergekit(recipe)


def test_imported_recipe_runs_like_the_method(tmp_path):
    base = llama_like(0, layers=2)
    experts = {"a": variant(base, 1), "b": variant(base, 2)}
    save_file(base, str(tmp_path / "base.safetensors"))
    for name, sd in experts.items():
        save_file(sd, str(tmp_path / f"{name}.safetensors"))
    text = """
models:
  - model: a.safetensors
    parameters: {weight: 1.0, density: [0.3, 0.8]}
  - model: b.safetensors
    parameters: {weight: 0.6, density: 0.5}
base_model: base.safetensors
merge_method: ties
parameters: {lambda: 1.1}
dtype: float32
"""
    recipe = Recipe.from_json(import_mergekit(text, tmp_path), tmp_path)
    result = run_recipe(recipe, device="cpu")
    written = load_file(str(next(result.outputs["save"].glob("*.safetensors"))))
    expected = merge_model("ties", base, [experts["a"], experts["b"]],
                           {"weight": [1.0, 0.6], "density": [[0.3, 0.8], 0.5], "lambda": 1.1})
    for name, t in expected.items():
        assert torch.allclose(written[name], t, atol=1e-6), name
