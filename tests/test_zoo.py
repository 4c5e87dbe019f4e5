"""The demo zoo: a reduced build (seconds) — layout, determinism, experts beat the base, cancellation."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.errors import Cancelled
from engine.graph import Recipe, validate
from engine.runtime import CancelToken
from engine.zoo import build_zoo, default_zoo_dir
from engine.zoo import datasets
from zoo_helpers import reduced_zoo, single_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


def _all_tensors(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(folder.rglob("*.safetensors")):
        for k, v in load_file(str(f)).items():
            out[f"{f.relative_to(folder)}:{k}"] = v
    return out


def test_reduced_zoo_layout():
    zoo = reduced_zoo()
    manifest = json.loads((zoo / "zoo.json").read_text())
    names = [t["name"] for t in manifest["tasks"]]
    assert len(names) >= 6 and len(set(names)) == len(names)
    base = load_file(str(zoo / "base.safetensors"))
    assert all(k.startswith("backbone.") for k in base)
    layers = {k.split(".")[2] for k in base if k.startswith("backbone.layers.")}
    assert len(layers) >= 4
    for t in manifest["tasks"]:
        expert = load_file(str(zoo / t["expert"]))
        assert set(expert) == set(base), "experts hold the backbone only; heads live apart"
        assert not torch.equal(expert["backbone.layers.0.fc1.weight"], base["backbone.layers.0.fc1.weight"])
        head = load_file(str(zoo / t["head"]))
        assert set(head) == {"head.weight", "head.scale"}
        assert head["head.weight"].shape[0] == len(t["classes"])
        data = load_file(str(zoo / t["data"]))
        for split in ("train", "val", "test"):
            assert data[f"{split}.inputs"].dtype == torch.uint8
            assert data[f"{split}.labels"].max() < len(t["classes"])
        assert "unlabeled.inputs" in data and "unlabeled.labels" not in data


def test_demo_recipe_is_valid_and_wires_every_expert():
    zoo = reduced_zoo()
    recipe = Recipe.load(zoo / "demo.json")
    assert validate(recipe) == []
    tasks = [t["name"] for t in json.loads((zoo / "zoo.json").read_text())["tasks"]]
    assert recipe.inputs("merge", "models") == tasks
    assert recipe.inputs("evaluate", "models") == ["merge", "base", *tasks]


def test_build_is_deterministic_for_a_seed(tmp_path):
    again = build_zoo(tmp_path / "again", size="reduced", seed=0).parent
    first, second = _all_tensors(reduced_zoo()), _all_tensors(again)
    assert first.keys() == second.keys()
    different = [k for k in first if not torch.equal(first[k], second[k])]
    assert different == []


def test_another_seed_gives_another_zoo():
    a = load_file(str(reduced_zoo(0) / "base.safetensors"))
    b = load_file(str(reduced_zoo(1) / "base.safetensors"))
    assert not torch.equal(a["backbone.embed.weight"], b["backbone.embed.weight"])


def test_experts_beat_the_base_on_their_own_task():
    scores = json.loads((reduced_zoo() / "zoo.json").read_text())["build"]["scores"]
    for task, s in scores.items():
        assert s["expert"]["val"] >= s["base"]["val"], task
    mean = lambda role: sum(s[role]["val"] for s in scores.values()) / len(scores)  # noqa: E731
    assert mean("expert") > mean("base") + 0.1


def test_progress_and_cancel_leave_the_old_zoo(tmp_path):
    target = tmp_path / "zoo"
    target.mkdir()
    (target / "keep.txt").write_text("old zoo")
    token, reports = CancelToken(), []

    def progress(p):
        reports.append(p)
        if p.done > 30:
            token.cancel()

    with pytest.raises(Cancelled):
        build_zoo(target, size="reduced", progress=progress, cancel=token)
    assert (target / "keep.txt").read_text() == "old zoo"
    assert [p.name for p in tmp_path.iterdir()] == ["zoo"]
    assert reports and all(r.total == reports[0].total for r in reports)
    assert [r.done for r in reports] == sorted(r.done for r in reports)


def test_default_location_is_the_user_data_folder():
    from platformdirs import user_data_dir

    assert default_zoo_dir() == Path(user_data_dir("weightsmith")) / "zoo"


@pytest.mark.parametrize("name", list(datasets.TASKS))
def test_each_task_draws_balanced_images_in_range(name):
    spec = datasets.TASKS[name]
    x, y = datasets.generate(spec, 2 * len(spec.classes), "val", seed=3, fonts=datasets.FontChoice(1, False))
    assert x.shape == (2 * len(spec.classes), 16, 16) and x.dtype == torch.float32
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    assert torch.bincount(y, minlength=len(spec.classes)).tolist() == [2] * len(spec.classes)
    again, _ = datasets.generate(spec, 2 * len(spec.classes), "val", seed=3, fonts=datasets.FontChoice(1, False))
    assert torch.equal(x, again)


@pytest.mark.slow
def test_full_zoo_builds_within_budget_and_merging_is_non_trivial(tmp_path):
    """The default zoo: ≤ 5 minutes, every expert well above the base, averaging loses part of it."""
    from engine.evaluation import Evaluator, load_suite
    from engine.evaluation.runner import load_weights

    start = time.perf_counter()
    manifest = build_zoo(tmp_path / "zoo")
    assert time.perf_counter() - start < 300
    scores = json.loads(manifest.read_text())["build"]["scores"]
    for task, s in scores.items():
        assert s["expert"]["test"] > s["base"]["test"] + 0.05, task
    tasks = load_suite(manifest)
    names = tasks[0].expected_names()
    experts = [load_weights(t.expert, names) for t in tasks]
    average = {k: sum(e[k] for e in experts) / len(experts) for k in names}
    merged = Evaluator(tasks, device="cpu").scores(average)
    expert_mean = sum(s["expert"]["test"] for s in scores.values()) / len(scores)
    assert sum(s.accuracy for s in merged.values()) / len(merged) < expert_mean - 0.1
