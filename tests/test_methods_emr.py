"""EMR-Merging: hand-computed election, masks and rescalers; the saved parts; per-task evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from engine.checkpoints import open_checkpoint
from engine.errors import EngineInputError
from engine.evaluation import EvaluationService
from engine.evaluation.runner import Evaluator, load_weights
from engine.evaluation.suite import load_suite
from engine.graph import Edge, GraphRun, Node, Recipe, run_recipe
from engine.graph.build import simple_merge_recipe
from engine.methods import MergeInputs, TensorContext, get_method
from engine.methods.emr import PARTS_FILE, SavedParts, pack_mask, unpack_mask
from engine.methods.statistics import run_statistic
from zoo_helpers import reduced_zoo, single_thread

# three task vectors over two tensors, and what EMR gives for them by hand
TAUS = {"a": [[1.0, -2.0, 3.0, 0.0], [2.0, 1.0, -1.0, 0.5], [-1.0, -3.0, 2.0, -0.5]],
        "b": [[1.0, 1.0], [1.0, -1.0], [0.0, 0.0]]}
# a: Σ = [2, -4, 4, 0] → sign [1, -1, 1, 0]; b: Σ = [2, 0] → sign [1, 0]
UNIFIED = {"a": [2.0, -3.0, 3.0, 0.0], "b": [1.0, 0.0]}
MASKS = {"a": [[1, 1, 1, 0], [1, 0, 0, 0], [0, 1, 1, 0]], "b": [[1, 0], [1, 0], [0, 0]]}
# Σ|τ_t| / Σ|m_t ⊙ τ_uni| over both tensors, and over the tensors' means (the authors' code)
RESCALERS = {"model": [(6 + 2) / (8 + 1), (4.5 + 2) / (2 + 1), 6.5 / 6],
             "tensor_means": [(6 / 4 + 2 / 2) / (8 / 4 + 1 / 2), (4.5 / 4 + 2 / 2) / (2 / 4 + 1 / 2),
                              (6.5 / 4) / (6 / 4)]}


def _tensors(base_value: float = 0.5):
    spec = get_method("emr")
    items = []
    for name, taus in TAUS.items():
        base = torch.full((len(taus[0]),), base_value)
        inputs = MergeInputs(base, ["t0", "t1", "t2"], deltas=[torch.tensor(t) for t in taus])
        items.append((inputs, spec.defaults(), TensorContext(name, None, 1, torch.device("cpu"))))
    return spec, items


@pytest.mark.parametrize("rescaler", ["model", "tensor_means"])
def test_election_masks_and_rescalers_by_hand(rescaler):
    spec, items = _tensors()
    for _, params, _ in items:
        params["rescaler"] = rescaler
    stats = run_statistic(spec.statistic(items[0][1]), items)
    for inputs, params, ctx in items:
        ctx.stats = stats
        unified = torch.tensor(UNIFIED[ctx.name])
        assert torch.equal(spec.merge(inputs, params, ctx), inputs.base + unified)
        for t in range(3):
            expected = inputs.base + RESCALERS[rescaler][t] * torch.tensor(MASKS[ctx.name][t]) * unified
            assert torch.allclose(spec.task_parts.model(inputs, params, ctx, t), expected, atol=1e-6)
        parts = spec.task_parts.tensors(inputs, params, ctx)
        assert torch.equal(parts[".emr_tau"], unified)
        for t in range(3):
            assert unpack_mask(parts[f".emr_mask.{t}"], unified.shape).tolist() == [bool(v) for v in MASKS[ctx.name][t]]


def test_one_task_gives_the_expert_back():
    spec = get_method("emr")
    base, tau = torch.randn(5, 3), torch.randn(5, 3)
    inputs = MergeInputs(base, ["t0"], deltas=[tau])
    ctx = TensorContext("w", None, 1, torch.device("cpu"))
    ctx.stats = run_statistic(spec.statistic(spec.defaults()), [(inputs, spec.defaults(), ctx)])
    assert torch.allclose(spec.merge(inputs, spec.defaults(), ctx), base + tau)
    assert torch.allclose(spec.task_parts.model(inputs, spec.defaults(), ctx, 0), base + tau)


@pytest.mark.parametrize("shape", [(1,), (7,), (8,), (3, 5), (2, 2, 4)])
def test_mask_packing_round_trips(shape):
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(len(shape))) > 0.5
    packed = pack_mask(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == -(-mask.numel() // 8)
    assert torch.equal(unpack_mask(packed, shape), mask)
    assert pack_mask(torch.tensor([True, False, False, True, False, False, False, False, True])).tolist() == [9, 1]


def test_saved_output_holds_unified_weights_and_parts(tmp_path: Path):
    names = list(TAUS)
    base = {n: torch.full((len(TAUS[n][0]),), 0.5) for n in names}
    base["count"] = torch.tensor([3], dtype=torch.int64)  # an integer buffer: copied, no parts
    save_file(base, tmp_path / "base.safetensors")
    experts = []
    for t in range(3):
        sd = {n: base[n] + torch.tensor(TAUS[n][t]) for n in names}
        sd["count"] = base["count"]
        experts.append(tmp_path / f"task{t}.safetensors")
        save_file(sd, experts[-1])
    recipe = simple_merge_recipe("emr", experts, base=tmp_path / "base.safetensors", out=tmp_path / "out")
    run_recipe(recipe, device="cpu")
    out = tmp_path / "out"
    plain = load_file(out / "model.safetensors")
    assert set(plain) == {"a", "b", "count"}  # the model file holds only the model: it loads as one
    assert set(open_checkpoint(out).names) == {"a", "b", "count"}
    for n in names:
        assert torch.equal(plain[n], base[n] + torch.tensor(UNIFIED[n]))
    with safe_open(str(out / PARTS_FILE), "pt") as f:
        meta = f.metadata()
        assert set(f.keys()) == {f"{n}.emr_tau" for n in names} | {f"{n}.emr_mask.{t}" for n in names for t in range(3)}
        assert f.get_tensor("a.emr_mask.0").dtype == torch.uint8
    assert [t["name"] for t in json.loads(meta["emr_tasks"])] == ["task0", "task1", "task2"]
    assert json.loads(meta["emr_tasks"])[1]["expert"] == str(experts[1].resolve())
    assert json.loads(meta["emr_rescalers"]) == pytest.approx(RESCALERS["model"])
    assert "weightsmith_version" in meta
    assert PARTS_FILE in (out / "README.md").read_text()  # the model card says what the parts file is
    saved = SavedParts.beside(out)
    for t in range(3):
        state = saved.task_state({n: plain[n] for n in plain}, t)
        for n in names:
            expected = base[n] + RESCALERS["model"][t] * torch.tensor(MASKS[n][t]) * torch.tensor(UNIFIED[n])
            assert torch.allclose(state[n], expected, atol=1e-6)
        assert torch.equal(state["count"], base["count"])


def test_sharded_output_keeps_the_parts_out_of_the_index(tmp_path: Path, tiny_models):
    recipe = simple_merge_recipe("emr", [tiny_models["e1"], tiny_models["e2"]], base=tiny_models["base"],
                                 out=tmp_path / "out", shard_size="2KB")
    run_recipe(recipe, device="cpu")
    out = tmp_path / "out"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert PARTS_FILE not in set(index["weight_map"].values())
    assert set(index["weight_map"]) == set(load_file(tiny_models["base"]))
    assert set(open_checkpoint(out).names) == set(load_file(tiny_models["base"]))


def test_plain_weights_load_in_transformers(tmp_path: Path):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16)
    folders = []
    for seed in range(3):
        torch.manual_seed(seed)
        folders.append(tmp_path / f"m{seed}")
        LlamaForCausalLM(config).save_pretrained(folders[-1])
    recipe = simple_merge_recipe("emr", folders[1:], base=folders[0], out=tmp_path / "out")
    run_recipe(recipe, device="cpu")
    model = LlamaForCausalLM.from_pretrained(tmp_path / "out")
    plain = load_file(tmp_path / "out" / "model.safetensors")
    assert torch.equal(model.model.layers[0].mlp.up_proj.weight, plain["model.layers.0.mlp.up_proj.weight"])
    assert (tmp_path / "out" / PARTS_FILE).is_file()


def _zoo_recipe(method: str, experts: list[str] | None = None) -> Recipe:
    data = json.loads((reduced_zoo() / "demo.json").read_text())
    keep = set(experts) if experts is not None else None
    for node in data["nodes"]:
        if node["id"] == "merge":
            node["params"] = {"method": method}
    if keep is not None:
        data["edges"] = [e for e in data["edges"] if not (e["to"] == "merge" and e["port"] == "models"
                                                            and e["from"] not in keep)]
    return Recipe.from_json(data, reduced_zoo())


def _hand_task_models(tasks) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    """θ0 + τ_uni and every task's θ0 + λ_t m_t ⊙ τ_uni, from the zoo's files by the paper's formulas."""
    names = tasks[0].expected_names()
    base = load_weights(reduced_zoo() / "base.safetensors", names)
    experts = [load_weights(t.expert, names) for t in tasks]
    unified, masks = {}, {}
    for n in names:
        taus = torch.stack([e[n] - base[n] for e in experts])
        sign = taus.sum(0).sign()
        agree = taus * sign > 0
        unified[n] = (taus.abs() * agree).amax(0) * sign
        masks[n] = agree
    models = {}
    for i, t in enumerate(tasks):
        num = sum(float((experts[i][n] - base[n]).abs().sum()) for n in names)
        den = sum(float((unified[n] * masks[n][i]).abs().sum()) for n in names)
        models[t.name] = {n: base[n] + num / den * masks[n][i] * unified[n] for n in names}
    return {n: base[n] + unified[n] for n in names}, models


def test_each_task_is_scored_on_its_own_model_and_beats_the_unified_one(tmp_path: Path):
    tasks = load_suite(reduced_zoo())
    with single_thread():
        runs = EvaluationService(device="cpu").evaluate(_zoo_recipe("emr"), models=["merge"], split="val")["runs"]
        unified, models = _hand_task_models(tasks)
        evaluator = Evaluator(tasks, device="cpu")
        plain = evaluator.scores(unified, split="val")
    run = runs[0]
    assert run["task_models"] == {t.name: t.name for t in tasks}
    with GraphRun(_zoo_recipe("emr"), device="cpu") as graph:  # the weights each task was scored with
        for i in (0, 5):
            graph.task_views["merge"] = i
            state = graph.materialize("merge")
            for n, expected in models[tasks[i].name].items():
                assert torch.allclose(state[n], expected, atol=1e-6), (tasks[i].name, n)
    for t in tasks:
        own = evaluator.scores(models[t.name], split="val", tasks=[t])[t.name]
        assert run["tasks"][t.name]["accuracy"] == pytest.approx(own.accuracy, abs=1e-9)
    per_task = sum(run["tasks"][t.name]["accuracy"] for t in tasks) / len(tasks)
    assert per_task > sum(plain[t.name].accuracy for t in tasks) / len(tasks) + 0.05


def test_a_saved_emr_model_is_scored_per_task_too(tmp_path: Path):
    recipe = _zoo_recipe("emr")
    recipe.add_node(Node("save", "save", {"path": str(tmp_path / "emr-out")}))
    recipe.add_edge(Edge("merge", "save", "model"))
    with single_thread():
        run_recipe(recipe, device="cpu", outputs=["save"])
        recipe.add_node(Node("saved", "checkpoint", {"path": str(tmp_path / "emr-out")}))
        recipe.add_edge(Edge("saved", "evaluate", "models"))
        runs = {r["name"]: r for r in EvaluationService(device="cpu").evaluate(
            recipe, models=["merge", "saved"], split="val")["runs"]}
    assert runs["saved"]["task_models"] == runs["merge"]["task_models"]
    for name, row in runs["merge"]["tasks"].items():
        assert runs["saved"]["tasks"][name]["accuracy"] == pytest.approx(row["accuracy"], abs=0.01)


def test_a_task_without_its_model_is_an_input_error():
    recipe = _zoo_recipe("emr", ["digits", "letters"])
    with single_thread(), pytest.raises(EngineInputError, match="task 'fonts' cannot be given one"):
        EvaluationService(device="cpu").evaluate(recipe, models=["merge"], split="val", quick=1)
