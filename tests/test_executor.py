"""The streaming executor: graph semantics per tensor, outputs on disk, metadata, memory-free helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from engine.checkpoints import open_checkpoint
from engine.graph import Edge, GraphRun, Node, Recipe, materialize, run_recipe, validate
from engine.graph.build import simple_merge_recipe
from tests.methods_helpers import merge_one


def load(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def test_task_arithmetic_matches_hand_computation(tmp_path: Path, tiny_models):
    recipe = simple_merge_recipe("task_arithmetic", [tiny_models["e1"], tiny_models["e2"], tiny_models["e3"]],
                                 base=tiny_models["base"], params={"lambda": 0.4}, weights=[1.0, -0.5, 2.0],
                                 out=tmp_path / "out")
    result = run_recipe(recipe)
    base, e = load(tiny_models["base"]), [load(tiny_models[f"e{k}"]) for k in (1, 2, 3)]
    out = load(tmp_path / "out" / "model.safetensors")
    for name, b in base.items():
        if b.is_floating_point():
            expected = b + 0.4 * (1.0 * (e[0][name] - b) - 0.5 * (e[1][name] - b) + 2.0 * (e[2][name] - b))
            assert torch.allclose(out[name], expected, atol=1e-6), name
        else:
            assert torch.equal(out[name], b)  # integer buffers are copied from the base
    assert result.tensors == len(base) and result.outputs == {"save": (tmp_path / "out").resolve()}


def test_saved_model_carries_recipe_config_and_card(tmp_path: Path, tiny_models):
    (tiny_models["base"].parent / "config.json").write_text(json.dumps({"architectures": ["Tiny"]}))
    (tiny_models["base"].parent / "tokenizer.json").write_text("{}")
    recipe = simple_merge_recipe("linear", [tiny_models["e1"], tiny_models["e2"]], base=tiny_models["base"],
                                 out=tmp_path / "out", dtype="bf16")
    recipe.nodes["merge"].params["method"] = "linear"
    recipe.edges = [e for e in recipe.edges if e.port != "base"]
    recipe.nodes["save"].params["copy_files_from"] = "base"
    run_recipe(recipe)
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "config.json", "tokenizer.json", "README.md",
                                              ".weightsmith-output.json"}  # the marker: a folder --force may replace
    with safe_open(str(out / "model.safetensors"), "pt") as h:
        meta = h.metadata()
        assert h.get_tensor("model.norm.weight").dtype == torch.bfloat16
    assert meta["format"] == "pt"
    embedded = Recipe.from_json(json.loads(meta["weightsmith_recipe"]))
    assert [e.to_json() for e in embedded.edges] == [e.to_json() for e in recipe.edges]
    for nid, node in recipe.nodes.items():  # what the user set, plus every default made explicit
        assert embedded.nodes[nid].params == {**embedded.nodes[nid].params, **node.params}
    assert embedded.nodes["merge"].params["normalize"] is True  # linear's default, not set by the user
    assert "linear" in (out / "README.md").read_text()


def test_graph_of_task_vectors_scale_and_add(tmp_path: Path, tiny_models):
    """Analogy τ = τ1 + (τ2 − τ3), scaled by 0.5, added onto the base, through explicit nodes."""
    r = Recipe("analogy")
    for k, p in tiny_models.items():
        r.add_node(Node(k, "checkpoint", {"path": str(p)}))
    for k in ("e1", "e2", "e3"):
        r.add_node(Node(f"tv{k}", "task_vector"))
        r.add_edge(Edge(k, f"tv{k}", "model"))
        r.add_edge(Edge("base", f"tv{k}", "base"))
    r.add_node(Node("neg3", "scale", {"factor": -1.0}))
    r.add_edge(Edge("tve3", "neg3", "input"))
    r.add_node(Node("sum", "add"))
    for src in ("tve1", "tve2", "neg3"):
        r.add_edge(Edge(src, "sum", "inputs"))
    r.add_node(Node("half", "scale", {"factor": 0.5}))
    r.add_edge(Edge("sum", "half", "input"))
    r.add_node(Node("out", "add"))
    r.add_edge(Edge("base", "out", "inputs"))
    r.add_edge(Edge("half", "out", "inputs"))
    r.add_node(Node("save", "save", {"path": str(tmp_path / "o")}))
    r.add_edge(Edge("out", "save", "model"))
    assert validate(r) == []
    run_recipe(r)
    base, e = load(tiny_models["base"]), {k: load(tiny_models[k]) for k in ("e1", "e2", "e3")}
    out = load(tmp_path / "o" / "model.safetensors")
    n = "model.layers.1.mlp.up_proj.weight"
    expected = base[n] + 0.5 * ((e["e1"][n] - base[n]) + (e["e2"][n] - base[n]) - (e["e3"][n] - base[n]))
    assert torch.allclose(out[n], expected, atol=1e-6)


def test_lora_delta_feeds_a_merge(tmp_path: Path, tiny_models):
    folder = tmp_path / "lora"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"r": 2, "lora_alpha": 2}))
    a, b = torch.randn(2, 8), torch.randn(8, 2)
    save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": a,
               "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": b}, folder / "adapter_model.safetensors")
    recipe = simple_merge_recipe("task_arithmetic", [folder], base=tiny_models["base"], params={"lambda": 1.0},
                                 out=tmp_path / "o")
    assert validate(recipe) == []
    run_recipe(recipe)
    base, out = load(tiny_models["base"]), load(tmp_path / "o" / "model.safetensors")
    n = "model.layers.0.self_attn.q_proj.weight"
    assert torch.allclose(out[n], base[n] + b @ a, atol=1e-5)
    assert torch.equal(out["model.layers.1.mlp.up_proj.weight"], base["model.layers.1.mlp.up_proj.weight"])


def test_layer_schedule_reaches_the_method(tmp_path: Path, tiny_models):
    """A gradient [0, 1] on λ: layer 0 keeps the base, the last layer is fully the expert."""
    recipe = simple_merge_recipe("task_arithmetic", [tiny_models["e1"]], base=tiny_models["base"],
                                 params={"lambda": [0.0, 1.0]}, out=tmp_path / "o")
    run_recipe(recipe)
    base, e1, out = load(tiny_models["base"]), load(tiny_models["e1"]), load(tmp_path / "o" / "model.safetensors")
    n0, n1, n2 = (f"model.layers.{i}.mlp.up_proj.weight" for i in range(3))
    assert torch.allclose(out[n0], base[n0])
    assert torch.allclose(out[n1], base[n1] + 0.5 * (e1[n1] - base[n1]), atol=1e-6)
    assert torch.allclose(out[n2], e1[n2], atol=1e-6)


def test_materialize_returns_fp32_state_dict(tiny_models):
    recipe = simple_merge_recipe("linear", [tiny_models["e1"], tiny_models["e2"]])
    sd = materialize(recipe, "merge", device="cpu")
    e1, e2 = load(tiny_models["e1"]), load(tiny_models["e2"])
    assert set(sd) == set(e1)
    n = "model.embed_tokens.weight"
    assert sd[n].dtype == torch.float32 and torch.allclose(sd[n], (e1[n] + e2[n]) / 2)


def test_sharded_output_with_small_shard_size(tmp_path: Path, tiny_models):
    recipe = simple_merge_recipe("linear", [tiny_models["e1"], tiny_models["e2"]], out=tmp_path / "o", shard_size="1KB")
    run_recipe(recipe)
    index = json.loads((tmp_path / "o" / "model.safetensors.index.json").read_text())
    ckpt = open_checkpoint(tmp_path / "o")
    assert len(set(index["weight_map"].values())) > 2 and set(ckpt.names) == set(load(tiny_models["e1"]))


def test_recipe_json_round_trip_and_relative_paths(tmp_path: Path, tiny_models):
    recipe = simple_merge_recipe("task_arithmetic", [Path("e1.safetensors")], base=Path("base.safetensors"),
                                 out=Path("merged"))
    path = tiny_models["base"].parent / "r.json"
    recipe.save(path)
    loaded = Recipe.load(path)
    assert loaded.to_json() == recipe.to_json()
    assert validate(loaded) == []
    run_recipe(loaded)
    assert (tiny_models["base"].parent / "merged" / "model.safetensors").is_file()


def test_recipe_edits_notify_and_undo_by_restore():
    r = Recipe()
    events = []
    r.subscribe(lambda ev, d: events.append(ev))
    r.add_node(Node("a", "checkpoint", {"path": "x"}))
    r.add_node(Node("m", "merge", {"method": "linear"}))
    r.add_edge(Edge("a", "m", "models"))
    snapshot = r.to_json()
    node, index, edges = r.remove_node("a")
    assert "a" not in r.nodes and r.edges == []
    r.restore_node(node, index, edges)
    assert r.to_json() == snapshot
    assert events[:3] == ["node_added", "node_added", "edge_added"] and "node_removed" in events


def test_cycle_is_reported():
    r = Recipe()
    r.add_node(Node("s1", "scale"))
    r.add_node(Node("s2", "scale"))
    r.add_edge(Edge("s1", "s2", "input"))
    r.add_edge(Edge("s2", "s1", "input"))
    problems = validate(r, open_files=False)
    assert problems and "cycle" in problems[0].message


def test_peak_memory_is_one_tensor_per_model(tmp_path: Path):
    """The executor never holds more than the current and the prefetched tensor of each input."""
    base = {f"layers.{i}.w": torch.randn(64, 64) for i in range(12)}
    save_file(base, tmp_path / "b.safetensors")
    for k in range(3):
        save_file({n: t + 0.01 * k for n, t in base.items()}, tmp_path / f"m{k}.safetensors")
    recipe = simple_merge_recipe("task_arithmetic", [tmp_path / f"m{k}.safetensors" for k in range(3)],
                                 base=tmp_path / "b.safetensors", out=tmp_path / "o")
    live_max = 0
    with GraphRun(recipe) as run:
        real = run._receive

        def watch(name, futures):
            nonlocal live_max
            real(name, futures)
            live_max = max(live_max, len(run._loaded))

        run._receive = watch
        run.save_all()
    assert live_max == 4  # base + 3 models for the current name only


def test_path_parameters_are_resolved_against_the_recipe_folder(tmp_path: Path, tiny_models):
    """A method's ``path`` parameter written relative in a recipe reaches the method as that file."""
    from engine.methods import MethodSpec, Param, register
    from engine.methods.registry import _METHODS

    seen = []

    def probe(inputs, params, ctx):
        """Records the path it receives and returns the first model unchanged (test only)."""
        seen.append(params["table"])
        return inputs.models[0]

    register(MethodSpec("path_probe", "Path probe", "test", "records its path parameter",
                        (Param("table", "path", "", "a file"),), probe, needs_base=False))
    try:
        (tmp_path / "stats.bin").write_bytes(b"x")
        recipe = simple_merge_recipe("path_probe", [tiny_models["e1"]], params={"table": "stats.bin"})
        recipe.base_dir = tmp_path
        materialize(recipe, "merge", device="cpu")
        assert seen and all(Path(p) == tmp_path / "stats.bin" for p in seen)
    finally:
        del _METHODS["path_probe"]


def test_output_config_dtype_and_resolved_recipe_with_versions(tmp_path):
    import transformers

    config = transformers.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    torch.manual_seed(0)
    for name in ("base", "tuned"):
        transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / name)
    recipe = simple_merge_recipe("ties", [tmp_path / "tuned"], base=tmp_path / "base", out=tmp_path / "out",
                                 dtype="bf16", params={"lambda": 0.5})
    run_recipe(recipe)
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["torch_dtype"] == "bfloat16"
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out", torch_dtype="auto")
    assert model.dtype == torch.bfloat16
    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as h:
        meta = h.metadata()
    merge = next(n for n in json.loads(meta["weightsmith_recipe"])["nodes"] if n["type"] == "merge")
    assert merge["params"]["lambda"] == 0.5 and merge["params"]["density"] == 0.2  # the default, made explicit
    assert merge["params"]["tie_break"] == "keep_all"
    assert json.loads(meta["weightsmith_versions"])["torch"] == torch.__version__


def test_a_chunked_inputs_method_gets_fp16_models_as_stored_and_merges_as_from_fp32(tmp_path: Path):
    """Model Stock declares ``chunked_inputs``: it receives the stored fp16 tensors (no fp32 copy per
    model) and converts chunk by chunk, with the same result as merging the fp32 values."""
    g = torch.Generator().manual_seed(3)
    base = {"layers.0.w": torch.randn(300, 700, generator=g).half(), "norm": torch.randn(700, generator=g).half()}
    models = [{n: (t.float() + 0.05 * torch.randn(t.shape, generator=g)).half() for n, t in base.items()}
              for _ in range(3)]
    save_file(base, tmp_path / "b.safetensors")
    for k, m in enumerate(models):
        save_file(m, tmp_path / f"m{k}.safetensors")
    recipe = simple_merge_recipe("model_stock", [tmp_path / f"m{k}.safetensors" for k in range(3)],
                                 base=tmp_path / "b.safetensors", params={"filter_wise": True}, out=tmp_path / "o")
    seen = []
    with GraphRun(recipe) as run:
        real = run.merge_inputs

        def watch(node_id, name):
            inputs, params, ctx = real(node_id, name)
            seen.append({inputs.base.dtype, *(m.dtype for m in inputs.models)})
            return inputs, params, ctx

        run.merge_inputs = watch
        run.save_all()
    assert seen and all(dtypes == {torch.float16} for dtypes in seen)
    merged = load_file(str(next((tmp_path / "o").glob("*.safetensors"))))
    for name, b in base.items():
        expected = merge_one("model_stock", b.float(), [m[name].float() for m in models], {"filter_wise": True})
        assert torch.allclose(merged[name].float(), expected.to(merged[name].dtype).float(), atol=1e-3, rtol=0)
