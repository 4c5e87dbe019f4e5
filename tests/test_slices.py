"""Layer stacks (frankenmerges): passthrough slices of real tiny Llamas saved and reloaded in transformers,
merged slices with per-slice gradients checked by hand, and bad slices refused before anything is written."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.errors import EngineInputError, RecipeError
from engine.graph import GraphRun, Recipe, all_node_kinds, node_kind, run_recipe, validate
from engine.graph.recipe import Edge, Node
from engine.graph.stacking import is_embedding, parse_slices, restack_config

LAYERS = 4


def tiny_llama(folder: Path, seed: int, layers: int = LAYERS) -> Path:
    """A LlamaForCausalLM (4 layers unless told, hidden 16, untied head) saved as safetensors with its config."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=layers,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # norms start at ones in every model: make them differ so their origin shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def llamas(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("llamas")
    return {name: tiny_llama(root / name, seed) for name, seed in (("a", 0), ("b", 1))}


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def stack_recipe(llamas, out: Path, slices: str, **stack_params) -> Recipe:
    r = Recipe("stack")
    for name, path in llamas.items():
        r.add_node(Node(name, "checkpoint", {"path": str(path)}))
    r.add_node(Node("stack", "stack", {"slices": slices, **stack_params}))
    r.add_node(Node("save", "save", {"path": str(out)}))
    for name in {s.input for s in parse_slices(slices)}:
        r.add_edge(Edge(name, "stack", "models"))
    r.add_edge(Edge("stack", "save", "model"))
    return r


def layer(i: int, rest: str) -> str:
    return f"model.layers.{i}.{rest}"


def test_passthrough_frankenmerge_reloads_in_transformers_with_each_layer_from_its_source(llamas, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    out = tmp_path / "franken"
    recipe = stack_recipe(llamas, out, "a[0:3], b[1:4]")
    assert validate(recipe) == []
    with GraphRun(recipe, device="cpu") as run:
        result = run.run()
    a, b, merged = weights(llamas["a"]), weights(llamas["b"]), weights(out)
    assert AutoConfig.from_pretrained(out).num_hidden_layers == 6
    origin = [("a", 0), ("a", 1), ("a", 2), ("b", 1), ("b", 2), ("b", 3)]
    per_layer = [n.removeprefix("model.layers.0.") for n in a if n.startswith("model.layers.0.")]
    assert len(per_layer) == 9
    for j, (src, i) in enumerate(origin):
        for rest in per_layer:
            got, want = merged[f"model.layers.{j}.{rest}"], {"a": a, "b": b}[src][f"model.layers.{i}.{rest}"]
            assert got.dtype == want.dtype and torch.equal(got.view(torch.uint8), want.view(torch.uint8))
    # mergekit's rule: the embeddings come from the first slice's model, the final norm and LM head from the last's
    assert torch.equal(merged["model.embed_tokens.weight"], a["model.embed_tokens.weight"])
    assert torch.equal(merged["model.norm.weight"], b["model.norm.weight"])
    assert torch.equal(merged["lm_head.weight"], b["lm_head.weight"])
    assert set(merged) == {*(f"model.layers.{j}.{r}" for j in range(6) for r in per_layer),
                           "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}
    # streamed: each output tensor was read once, from its one source
    assert result.bytes_read == sum(t.numel() * t.element_size() for t in merged.values())
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert len(model.model.layers) == 6
    assert torch.equal(model.model.layers[4].mlp.up_proj.weight, b["model.layers.2.mlp.up_proj.weight"])
    with torch.no_grad():
        logits = model(torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, 64) and torch.isfinite(logits).all()


def test_non_layer_from_and_repeated_layers(llamas, tmp_path):
    out = tmp_path / "out"
    recipe = stack_recipe(llamas, out, "a[0:2], b[3:4], a[0:2]", non_layer_from="a")  # overlaps are allowed
    run_recipe(recipe, device="cpu")
    a, b, merged = weights(llamas["a"]), weights(llamas["b"]), weights(out)
    q = "self_attn.q_proj.weight"
    assert torch.equal(merged[layer(3, q)], a[layer(0, q)])
    assert torch.equal(merged[layer(4, q)], a[layer(1, q)])
    assert torch.equal(merged[layer(2, q)], b[layer(3, q)])
    for name in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
        assert torch.equal(merged[name], a[name])
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 5


def slerp_by_hand(t: float, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    """Shoemake's slerp of the raw tensors, the angle from the normalised ones (mergekit's formula)."""
    a, b = v0.double().flatten(), v1.double().flatten()
    theta = math.acos(float((a / a.norm()) @ (b / b.norm())))
    return ((math.sin((1 - t) * theta) * v0.double() + math.sin(t * theta) * v1.double()) / math.sin(theta)).float()


def test_merged_slices_take_their_gradient_over_the_slice_as_mergekit_does(llamas, tmp_path):
    """mergekit's gradient-slerp written with slices: layers 1–3 of a and b slerped with t: [0, 1], which
    runs over the slice's 3 layers (t = 0, 0.5, 1), then stacked after layer 0 of a."""
    r = Recipe("gradient slerp with slices")
    for name, path in llamas.items():
        r.add_node(Node(name, "checkpoint", {"path": str(path)}))
    r.add_node(Node("sa", "stack", {"slices": "a[1:4]"}))
    r.add_node(Node("sb", "stack", {"slices": "b[1:4]"}))
    r.add_node(Node("m", "merge", {"method": "slerp", "t": [0, 1]}))
    r.add_node(Node("out", "stack", {"slices": "a[0:1], m[0:3]"}))
    r.add_node(Node("save", "save", {"path": str(tmp_path / "out")}))
    for e in (Edge("a", "sa", "models"), Edge("b", "sb", "models"), Edge("sa", "m", "base"), Edge("sb", "m", "models"),
              Edge("a", "out", "models"), Edge("m", "out", "models"), Edge("out", "save", "model")):
        r.add_edge(e)
    assert validate(r) == []
    run_recipe(r, device="cpu")
    a, b, merged = weights(llamas["a"]), weights(llamas["b"]), weights(tmp_path / "out")
    q = "self_attn.q_proj.weight"
    assert torch.equal(merged[layer(0, q)], a[layer(0, q)])
    assert torch.equal(merged[layer(1, q)], a[layer(1, q)])  # t = 0: the base's layer 1
    torch.testing.assert_close(merged[layer(2, q)], slerp_by_hand(0.5, a[layer(2, q)], b[layer(2, q)]),
                               atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(merged[layer(3, q)], b[layer(3, q)], atol=1e-6, rtol=1e-6)  # t = 1
    # outside the layers t = 0 (mergekit's reading): the LM head is the base's, from the last slice (m)
    torch.testing.assert_close(merged["lm_head.weight"], a["lm_head.weight"])
    assert json.loads((tmp_path / "out" / "config.json").read_text())["num_hidden_layers"] == 4


def test_a_node_asked_for_two_layers_at_once_keeps_both(llamas, tmp_path):
    """Two stacks of the same merge feed one average: the merge computes two different layers for one
    output name, and each keeps its own buffer."""
    r = Recipe("two names")
    for name, path in llamas.items():
        r.add_node(Node(name, "checkpoint", {"path": str(path)}))
    r.add_node(Node("m", "merge", {"method": "linear", "weight": 1.0}))
    r.add_node(Node("low", "stack", {"slices": "m[0:2]"}))
    r.add_node(Node("high", "stack", {"slices": "m[2:4]"}))
    r.add_node(Node("avg", "merge", {"method": "linear", "weight": 1.0}))
    r.add_node(Node("save", "save", {"path": str(tmp_path / "out")}))
    for e in (Edge("a", "m", "models"), Edge("b", "m", "models"), Edge("m", "low", "models"), Edge("m", "high", "models"),
              Edge("low", "avg", "models"), Edge("high", "avg", "models"), Edge("avg", "save", "model")):
        r.add_edge(e)
    assert validate(r) == []
    run_recipe(r, device="cpu")
    a, b, merged = weights(llamas["a"]), weights(llamas["b"]), weights(tmp_path / "out")
    q = "self_attn.q_proj.weight"
    for j in range(2):
        want = (a[layer(j, q)] + b[layer(j, q)] + a[layer(j + 2, q)] + b[layer(j + 2, q)]) / 4
        torch.testing.assert_close(merged[layer(j, q)], want)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["num_hidden_layers"] == 2


@pytest.mark.parametrize("slices,message", [
    ("a[0:3], b[2:6]", "slice 2 b[2:6] asks for layers 2–5, but 'b' has layers 0–3"),
    ("a[2:2]", "slice 1 a[2:2] is empty"),
    ("a[3:1]", "slice 1 a[3:1] is empty"),
    ("a[0:2] b[0:2]", "slice 1 'a[0:2] b[0:2]' is not NODE[START:END]"),
    ("a[0:2], b[0:1], c[0:1]", "slice 3 c[0:1] takes layers from 'c', which is not connected"),
    ("", "no slices set"),
])
def test_bad_slices_are_refused_naming_the_slice_and_nothing_is_written(llamas, tmp_path, slices, message):
    out = tmp_path / "out"
    recipe = stack_recipe(llamas, out, "a[0:1], b[0:1]")
    recipe.nodes["stack"].params["slices"] = slices
    problems = validate(recipe)
    assert any(p.node_id == "stack" and message in p.message for p in problems), problems
    with pytest.raises(RecipeError, match=re.escape(message)):
        run_recipe(recipe, device="cpu")
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_slices_must_name_connected_inputs_and_layers_must_fit(llamas, tmp_path):
    recipe = stack_recipe(llamas, tmp_path / "out", "a[0:2]")
    recipe.nodes["stack"].params["slices"] = "a[0:2], c[0:1]"
    recipe.add_edge(Edge("b", "stack", "models"))
    messages = [p.message for p in validate(recipe, open_files=False) if p.node_id == "stack"]
    assert any("slice 2 c[0:1] takes layers from 'c', which is not connected" in m for m in messages)
    assert any("'b' is connected but no slice takes layers from it" in m for m in messages)
    # a layer of another width does not fit
    from transformers import LlamaConfig, LlamaForCausalLM

    wide = tmp_path / "wide"
    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(wide)
    r = stack_recipe({"a": llamas["a"], "w": wide}, tmp_path / "out2", "a[0:2], w[0:1]")
    problems = validate(r)
    assert any(p.node_id == "stack" and "slice 2 w[0:1]" in p.message and "do not fit" in p.message for p in problems)
    with pytest.raises(RecipeError):
        run_recipe(r, device="cpu")
    assert not (tmp_path / "out2").exists()


def test_restack_config_sets_the_count_and_reorders_per_layer_lists():
    config = {"num_hidden_layers": 4, "layer_types": ["s", "f", "s", "f"], "hidden_size": 8}
    assert restack_config(config, [0, 1, 1, 3, 2], "config.json") == []
    assert config == {"num_hidden_layers": 5, "layer_types": ["s", "f", "f", "f", "s"], "hidden_size": 8}
    gpt2 = {"n_layer": 12}
    restack_config(gpt2, [0, 1], "c")
    assert gpt2 == {"n_layer": 2}
    assert "no layer count" in restack_config({"hidden_size": 8}, [0], "c")[0]


def test_parse_slices():
    assert [(s.input, s.start, s.end) for s in parse_slices(" a[0:24],first-merge[20 : 40] ")] == [
        ("a", 0, 24), ("first-merge", 20, 40)]
    with pytest.raises(EngineInputError, match="starts before layer 0"):
        parse_slices("a[-1:2]")
    with pytest.raises(EngineInputError, match="must be text"):
        parse_slices([["a", 0, 2]])


def test_embeddings_sit_before_the_layers_and_heads_after():
    before = ["model.embed_tokens.weight", "gpt_neox.embed_in.weight", "transformer.wte.weight", "transformer.wpe.weight"]
    after = ["lm_head.weight", "model.norm.weight", "embed_out.weight", "transformer.ln_f.weight"]
    assert all(map(is_embedding, before)) and not any(map(is_embedding, after))


def test_the_stack_kind_is_in_the_palette(qtbot):
    from app.graph.palette import palette_entries

    kind = node_kind("stack")
    assert kind in all_node_kinds() and kind.renames and kind.output == "model"
    assert any(e.node_type == "stack" and e.label == "Layer stack" for e in palette_entries())


def test_the_inspector_edits_a_stacks_slices_as_text(qtbot):
    from app.document import Document
    from app.inspector.fields import TextField
    from app.inspector.panel import InspectorPanel

    recipe = Recipe("t")
    for nid in ("a", "b"):
        recipe.add_node(Node(nid, "checkpoint", {"path": f"{nid}.safetensors"}))
    recipe.add_node(Node("s", "stack", {"slices": "a[0:2]"}))
    recipe.add_edge(Edge("a", "s", "models"))
    recipe.add_edge(Edge("b", "s", "models"))
    panel = InspectorPanel(Document(recipe), layers_of=lambda _path: 4)
    qtbot.addWidget(panel)
    panel.show_node("s")
    field = panel.fields["slices"]
    assert isinstance(field, TextField) and field.line.text() == "a[0:2]"
    field.line.setText("a[0:2], b[1:3]")
    field.line.editingFinished.emit()
    assert recipe.nodes["s"].params["slices"] == "a[0:2], b[1:3]"
    assert validate(recipe, open_files=False) == []


def test_a_merge_after_a_stack_gets_the_stacks_depth_for_its_layer_gradients(qtbot):
    """The inspector's per-layer editors of a merge over single-slice stacks count the slice's layers."""
    from app.document import Document
    from app.inspector.panel import InspectorPanel

    recipe = Recipe("t")
    for nid in ("a", "b"):
        recipe.add_node(Node(nid, "checkpoint", {"path": f"{nid}.safetensors"}))
        recipe.add_node(Node(f"s{nid}", "stack", {"slices": f"{nid}[2:5]"}))
        recipe.add_edge(Edge(nid, f"s{nid}", "models"))
    recipe.add_node(Node("merge", "merge", {"method": "slerp", "t": [0.0, 1.0]}))
    recipe.add_edge(Edge("sa", "merge", "base"))
    recipe.add_edge(Edge("sb", "merge", "models"))
    panel = InspectorPanel(Document(recipe), layers_of=lambda _path: 40)
    qtbot.addWidget(panel)
    panel.show_node("merge")
    assert panel.fields["t"].num_layers() == 3  # layers 2, 3 and 4 of each model, not the checkpoints' 40
