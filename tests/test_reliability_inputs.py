"""Hostile input never hangs, costs without bound or ends in an internal error (issue 13, engine side).

Each family ends in success or the project's bad-input error (``EngineInputError``, CLI exit 2):
many-tensor checkpoints, huge recipe graphs, YAML alias bombs and deep nesting, malformed recipe JSON,
empty tensors, and hostile values for every declared parameter of every registered method.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from engine.checkpoints.base import Checkpoint
from engine.cli import main
from engine.errors import EngineInputError, RecipeError
from engine.graph import Recipe, materialize, run_recipe, validate
from engine.graph.build import simple_merge_recipe
from engine.graph.mergekit import import_mergekit, import_mergekit_file
from engine.graph.recipe import EdgeIndex
from engine.graph.validate import reference_checkpoint, topological_order
from engine.methods import Requirement, all_methods
from tests.conftest import finetune, make_state_dict
from tests.methods_helpers import merge_one


def recipe_json(nodes: list[dict], edges: list[tuple[str, str, str]]) -> dict:
    return {"format": "weightsmith-recipe", "version": 1, "name": "t", "nodes": nodes,
            "edges": [{"from": f, "to": t, "port": p} for f, t, p in edges]}


# ---- 1. many tensors: per-tensor overhead is constant ---------------------------------------------
def write_many(folder: Path, count: int) -> list[Path]:
    g = torch.Generator().manual_seed(0)
    base = {f"model.layers.{i // 8}.t{i % 8}.weight": torch.randn(4, generator=g) for i in range(count)}
    paths = [folder / f"{stem}.safetensors" for stem in ("base", "e1", "e2")]
    save_file(base, paths[0])
    for p in paths[1:]:
        save_file({n: t + 0.1 * torch.randn(4, generator=g) for n, t in base.items()}, p)
    return paths


@pytest.mark.parametrize("method", ["task_arithmetic", "ties"])
def test_tensor_names_are_scanned_a_constant_number_of_times(tmp_path: Path, monkeypatch, method):
    """Counts every tensor name handed out by a checkpoint's name list during a whole run: a name list
    read once per tensor (the old quadratic ``_resolve``) hands out count² names."""
    count = 1500
    base, *models = write_many(tmp_path, count)
    scanned = [0]
    real = Checkpoint.names.fget

    def counting(self):
        names = real(self)
        scanned[0] += len(names)
        return names

    monkeypatch.setattr(Checkpoint, "names", property(counting))
    result = run_recipe(simple_merge_recipe(method, models, base=base, out=tmp_path / "out"), device="cpu")
    assert result.tensors == count
    assert 0 < scanned[0] <= 20 * count, f"{scanned[0]} names scanned for {count} tensors"


# ---- 2. huge recipes: linear, iterative validation --------------------------------------------------
def chain(n: int, folder: Path | None = None) -> Recipe:
    """Two checkpoints, ``n`` merges each taking the previous one on the base, a Save."""
    path = str(folder / "x.safetensors") if folder else "x.safetensors"
    nodes = [{"id": "base", "type": "checkpoint", "params": {"path": path}},
             {"id": "m0", "type": "checkpoint", "params": {"path": path}}]
    edges = []
    for i in range(1, n + 1):
        nodes.append({"id": f"m{i}", "type": "merge", "params": {"method": "task_arithmetic", "lambda": 0.5}})
        edges += [("base", f"m{i}", "base"), (f"m{i - 1}", f"m{i}", "models")]
    nodes.append({"id": "save", "type": "save", "params": {"path": "out"}})
    edges.append((f"m{n}", "save", "model"))
    return Recipe.from_json(recipe_json(nodes, edges))


def test_a_10000_node_chain_validates_without_recursion(tmp_path: Path):
    save_file({"model.layers.0.w": torch.zeros(2)}, tmp_path / "x.safetensors")
    recipe = chain(10_000, tmp_path)
    assert validate(recipe) == []
    assert validate(recipe, open_files=False) == []
    index = recipe.index()
    assert reference_checkpoint(recipe, "m10000", {}, index=index) == "base"
    assert len(recipe.upstream("save")) == 10_002
    assert topological_order(recipe, index)[-1] == "save"


def test_a_cycle_in_a_long_chain_is_still_reported():
    data = chain(10_000).to_json()
    data["edges"].append({"from": "m9000", "to": "m5000", "port": "models"})
    problems = validate(Recipe.from_json(data), open_files=False)
    assert len(problems) == 1 and "cycle" in problems[0].message
    assert problems[0].node_id in {f"m{i}" for i in range(5000, 9001)}


def test_a_2000_merge_chain_runs_without_recursion(tmp_path: Path):
    save_file({"model.layers.0.w": torch.ones(3), "model.ids": torch.arange(3)}, tmp_path / "x.safetensors")
    out = materialize(chain(2000, tmp_path), "m2000", device="cpu")
    assert torch.allclose(out["model.layers.0.w"], torch.ones(3))  # x + 0.5·(x − x) at every step
    assert out["model.ids"].tolist() == [0, 1, 2]


def test_edge_index_answers_like_the_recipe():
    recipe = chain(5)
    index = EdgeIndex(recipe.edges)
    for nid in recipe.nodes:
        for port in ("base", "models", "model"):
            assert index.inputs(nid, port) == [e.src for e in recipe.edges if e.dst == nid and e.port == port]
    assert recipe.upstream("m3") == ["base", "m2", "m1", "m0"]


# ---- 3. mergekit YAML: bounded expansion, clean errors naming the file and key -------------------
@pytest.fixture
def folders(tmp_path: Path) -> Path:
    for name in ("base", "a"):
        (tmp_path / name).mkdir()
    return tmp_path


def alias_bomb(levels: int = 9) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\nmerge_method: linear\nmodels: [{model: a, parameters: {weight: 1}}]\n"


GOOD = "models: [{model: a, parameters: {weight: 1}}]\n"
YAML_CASES = [
    (alias_bomb(), "alias"),
    ("a: &a [1, *a]\n" + GOOD + "merge_method: linear\n", "alias"),
    ("a: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested"),
    ("a:\n" + "".join("  " * (i + 1) + "-\n" for i in range(2000)), "nested"),
    (GOOD + "merge_method: [linear]\n", r"'merge_method' must be a method name, got list \(line 2\)"),
    (GOOD + "merge_method: {linear: 1}\n", "'merge_method' must be a method name, got dict"),
    (GOOD + "merge_method: linear\nparameters: 5\n", r"'parameters' \(line 3\) must be a mapping.*got int"),
    (GOOD + "merge_method: linear\nparameters: [normalize, {a: 1}]\n", "'parameters'.*must be a mapping.*got list"),
    ("models: [{model: a, parameters: 3}]\nmerge_method: linear\n", "entry 1 of 'models' must be a mapping"),
    ("models: [{model: a, parameters: [1]}]\nmerge_method: linear\n", "entry 1 of 'models' must be a mapping"),
    ("models: [7]\nmerge_method: linear\n", "entry 1 of 'models'"),
    ('models: [{model: "a\\0b"}]\nmerge_method: linear\n', "model path"),
    ("models: [{model: " + "x" * 5000 + "}]\nmerge_method: linear\n", "model"),
    ("1: 2\nzz: 3\n" + GOOD + "merge_method: linear\n", "unknown mergekit config key '1'"),
]


@pytest.mark.parametrize("text, message", YAML_CASES, ids=[f"yaml{i}" for i in range(len(YAML_CASES))])
def test_hostile_mergekit_yaml_gets_a_clean_error_naming_the_file(folders: Path, text: str, message: str):
    config = folders / "config.yml"
    config.write_text(text, encoding="utf-8")
    with pytest.raises(EngineInputError, match=message) as err:
        import_mergekit_file(config)
    assert str(config) in str(err.value)


def test_alias_bomb_is_refused_at_once(folders: Path):
    import time

    start = time.perf_counter()
    with pytest.raises(EngineInputError, match="alias"):
        import_mergekit(alias_bomb(12), folders)
    assert time.perf_counter() - start < 5


def test_non_utf8_yaml_exits_2_naming_the_file(folders: Path, capsys):
    config = folders / "latin1.yml"
    config.write_bytes(GOOD.encode() + "merge_method: lin\xe9ar\n".encode("latin-1"))
    assert main(["import-mergekit", str(config), "-o", str(folders / "r.json")]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and "UTF-8" in err and "Traceback" not in err


def test_a_small_alias_use_still_imports(folders: Path):
    text = ("models: [{model: a, parameters: &w {weight: 0.5}}, {model: base, parameters: *w}]\n"
            "merge_method: linear\n")
    merge = next(n for n in import_mergekit(text, folders)["nodes"] if n["type"] == "merge")
    assert sorted(merge["params"]["weight"].values()) == [0.5, 0.5]


# ---- 4. recipe JSON of hostile structure --------------------------------------------------------
def node(**overrides) -> dict:
    return {"id": "merge", "type": "merge", "params": {"method": "task_arithmetic"}, **overrides}


RECIPE_CASES = [
    ({"nodes": [node(params="lambda=1")]}, "node 'merge': \"params\" must be an object, got str"),
    ({"nodes": [node(params=[["lambda", 1]])]}, "node 'merge': \"params\" must be an object, got list"),
    ({"nodes": [node(ui="left")]}, "node 'merge': \"ui\" must be an object, got str"),
    ({"nodes": [node(ui=[1, 2])]}, "node 'merge': \"ui\" must be an object, got list"),
    ({"nodes": [node(params={"method": "ties", "lambda": json.loads("[" * 500 + "]" * 500)})]},
     "node 'merge': params 'lambda' is nested deeper than"),
    ({"nodes": [node(id=["a"])]}, "id of node #1 must be text"),
    ({"nodes": [5]}, "node #1 must be an object"),
    ({"nodes": {"merge": node()}}, "\"nodes\" must be a list"),
    ({"edges": "a->b"}, "\"edges\" must be a list"),
    ({"edges": [["a", "b", "models"]]}, "edge #1 must be an object"),
    ({"edges": [{"from": {"x": 1}, "to": "b", "port": "models"}]}, "\"from\" of edge #1 must be text"),
    ({"name": ["x"]}, "\"name\" must be text"),
    ({"version": json.loads("[" * 500 + "]" * 500)}, "recipe version list"),
]


@pytest.mark.parametrize("change, message", RECIPE_CASES, ids=[f"recipe{i}" for i in range(len(RECIPE_CASES))])
def test_malformed_recipe_json_names_the_node_and_key(tmp_path: Path, change: dict, message: str, capsys):
    data = {**recipe_json([node()], []), **change}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(EngineInputError) as err:
        Recipe.load(path)
    assert message in str(err.value) and str(path) in str(err.value)
    assert main(["validate", str(path)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_100k_deep_recipe_json_is_a_clean_error(tmp_path: Path, capsys):
    path = tmp_path / "deep.json"
    path.write_text('{"format": "weightsmith-recipe", "version": 1, "nodes": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(EngineInputError, match="too deeply") as err:
        Recipe.load(path)
    assert str(path) in str(err.value)
    assert main(["run", str(path)]) == 2
    assert "Traceback" not in capsys.readouterr().err


# ---- 5. empty tensors through every data-free method ---------------------------------------------
DATA_FREE = [m.name for m in all_methods() if Requirement.DATA_FREE in m.requirements]


def runnable_values(spec) -> dict:
    """Parameters a method needs beyond its defaults to run on two models (SLERP's t)."""
    return {"t": 0.5} if "t" in {p.name for p in spec.params} else {}


@pytest.mark.parametrize("method", DATA_FREE)
@pytest.mark.parametrize("shape", [(0,), (0, 8), (8, 0)], ids=str)
def test_every_data_free_method_merges_empty_tensors(method: str, shape: tuple[int, ...]):
    spec = next(m for m in all_methods() if m.name == method)
    count = max(spec.min_models, min(2, spec.max_models or 2))
    base = torch.zeros(shape)
    out = merge_one(method, base, [torch.zeros(shape) for _ in range(count)], runnable_values(spec))
    assert out.shape == shape


def test_empty_tensors_pass_through_a_whole_dare_merge(tmp_path: Path):
    base = {"model.layers.0.w": torch.randn(4, 4), "model.layers.0.e": torch.zeros(0, 8), "model.r": torch.zeros(8, 0)}
    save_file(base, tmp_path / "base.safetensors")
    for k in (1, 2):
        save_file(finetune(base, k), tmp_path / f"e{k}.safetensors")
    recipe = simple_merge_recipe("dare_ties", [tmp_path / "e1.safetensors", tmp_path / "e2.safetensors"],
                                 base=tmp_path / "base.safetensors")
    out = materialize(recipe, "merge", device="cpu")
    assert out["model.layers.0.e"].shape == (0, 8) and out["model.r"].shape == (8, 0)


# ---- 6. hostile parameter values: success or a bad-input error, nothing else ----------------------
HOSTILE_JSON = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 400, "-" + "9" * 30, "0.5",
                "true", "null", '"x"', '""', '"\\u0000"', "[]", "[[1, 2], 3]", "[1, [2, [3]]]",
                '[{"filter": "(", "value": 1}]', '[{"filter": 5, "value": 1}]', '[{"value": 1}, 2]',
                '{"a": 1}', "-1", "0"]


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hostile")
    base = make_state_dict(0, layers=2, width=4)
    paths = {"base": folder / "base.safetensors"}
    save_file(base, paths["base"])
    for k in (1, 2):
        paths[f"e{k}"] = folder / f"e{k}.safetensors"
        save_file(finetune(base, k), paths[f"e{k}"])
    return paths


def outcome(recipe: Recipe) -> str:
    """'ok' or 'refused' (bad input); any other exception propagates."""
    try:
        materialize(recipe, "merge", device="cpu")
    except EngineInputError:
        return "refused"
    return "ok"


METHOD_PARAMS = [(m.name, p.name) for m in all_methods() for p in m.params]


@pytest.mark.parametrize("method, param", METHOD_PARAMS, ids=[f"{m}.{p}" for m, p in METHOD_PARAMS])
def test_hostile_parameter_values_end_in_success_or_bad_input(tiny_files, method: str, param: str):
    spec = next(m for m in all_methods() if m.name == method)
    count = max(spec.min_models, min(2, spec.max_models or 2))
    models = [tiny_files[f"e{k}"] for k in range(1, count + 1)]
    failures = []
    for text in HOSTILE_JSON:
        value = json.loads(text)
        recipe = simple_merge_recipe(method, models, base=tiny_files["base"],
                                     params={**runnable_values(spec), param: value})
        recipe = Recipe.from_json(recipe.to_json())
        try:
            result = outcome(recipe)
        except Exception as exc:  # noqa: BLE001 (what the test looks for)
            failures.append(f"{text[:40]}: {type(exc).__name__}: {exc}"[:300])
            continue
        if result == "ok" and isinstance(value, float) and not math.isfinite(value):
            failures.append(f"{text}: a non-finite value was accepted")
    assert not failures, "\n".join(failures)


NODE_CASES = [
    ("save", "path", 5), ("save", "path", "out\0dir"), ("save", "shard_size", "."), ("save", "shard_size", "1.2.3GB"),
    ("save", "shard_size", "1" * 400 + "GB"), ("save", "shard_size", -5), ("save", "shard_size", [1]),
    ("save", "dtype", ["fp16"]), ("save", "copy_files_from", ["base"]), ("base", "path", 7),
    ("base", "path", "base\0.safetensors"), ("merge", "method", ["ties"]), ("merge", "method", {"a": 1}),
]


@pytest.mark.parametrize("node_id, key, value", NODE_CASES,
                         ids=[f"{n}.{k}{i}" for i, (n, k, _) in enumerate(NODE_CASES)])
def test_hostile_node_settings_are_reported_by_node(tiny_files, tmp_path: Path, node_id: str, key: str, value):
    recipe = simple_merge_recipe("task_arithmetic", [tiny_files["e1"]], base=tiny_files["base"], out=tmp_path / "out")
    recipe.nodes[node_id].params[key] = value
    problems = validate(recipe)
    assert problems and {p.node_id for p in problems} == {node_id}
    with pytest.raises(RecipeError):
        run_recipe(recipe, device="cpu")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [
    ["--shard-size", "."], ["--shard-size", "1.2.3GB"], ["--param", "seed=NaN"], ["--param", "seed=1e400"],
    ["--param", "lambda=[[1, 2], 3]"], ["--param", "density=[[[0.5], 1], 0.2]"],
    ["--param", 'density=[{"filter": "(", "value": 0.5}]'],
], ids=str)
def test_hostile_cli_merge_options_exit_2(tiny_files, tmp_path: Path, capsys, args: list[str]):
    rc = main(["merge", "--method", "dare_ties", "--base", str(tiny_files["base"]), "--model", str(tiny_files["e1"]),
               "--model", str(tiny_files["e2"]), "--out", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
