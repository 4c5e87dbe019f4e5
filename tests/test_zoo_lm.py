"""The LM domains demo: a reduced build (seconds), built once per module — HF folders, LoRA, data, recipe."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("transformers")

from engine.cli import main  # noqa: E402
from engine.checkpoints import open_checkpoint  # noqa: E402
from engine.errors import Cancelled  # noqa: E402
from engine.runtime import CancelToken  # noqa: E402
from engine.zoo.lm import build_lm_zoo, default_lm_zoo_dir  # noqa: E402
from engine.zoo.lm.train import perplexity, token_stream  # noqa: E402
from zoo_helpers import reduced_lm_zoo  # noqa: E402


@pytest.fixture(scope="module")
def lm_zoo() -> Path:
    """A reduced LM zoo, seed 0, built once for the test session (read only)."""
    return reduced_lm_zoo()


def _manifest(zoo: Path) -> dict:
    return json.loads((zoo / "lm-zoo.json").read_text(encoding="utf-8"))


def _models(zoo: Path) -> list[Path]:
    m = _manifest(zoo)
    return [zoo / m["base"], *(zoo / e["path"] for e in m["experts"].values())]


def _all_tensors(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(folder.rglob("*.safetensors")):
        for k, v in load_file(str(f)).items():
            out[f"{f.relative_to(folder)}:{k}"] = v
    return out


def test_manifest_lists_a_base_three_experts_a_lora_and_data(lm_zoo):
    m = _manifest(lm_zoo)
    assert m["format"] == "weightsmith-lm-zoo" and m["architecture"]["model_type"] == "llama"
    assert len(m["experts"]) >= 3
    assert {"python", "prose", "data"} <= set(m["experts"])
    (lora,) = m["lora"].values()
    assert (lm_zoo / lora["path"] / "adapter_config.json").is_file()
    for domain, info in m["domains"].items():
        for kind in ("text", "multiple_choice", "generation"):
            assert set(info["data"][kind]) == {"val", "test"}, (domain, kind)
            for path in info["data"][kind].values():
                assert (lm_zoo / path).is_file(), path
    assert m["build"]["seed"] == 0 and m["build"]["seconds"] > 0


def test_every_model_reloads_in_transformers_and_generates(lm_zoo):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for folder in _models(lm_zoo):
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            assert (folder / name).is_file(), folder / name
        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder)
        assert model.config.model_type == "llama"
        prompt = tok("def main(", return_tensors="pt")
        out = model.generate(**prompt, max_new_tokens=6, do_sample=False)
        assert out.shape[1] == prompt["input_ids"].shape[1] + 6
        assert tok.decode(out[0]).startswith("def main(")


def test_checkpoints_are_sharded_with_a_valid_index(lm_zoo):
    for folder in _models(lm_zoo):
        index = json.loads((folder / "model.safetensors.index.json").read_text())
        shards = sorted(set(index["weight_map"].values()))
        assert len(shards) > 1, folder
        held = {}
        for shard in shards:
            held.update({k: shard for k in load_file(str(folder / shard))})
        assert held == index["weight_map"]
        assert sorted(p.name for p in folder.glob("*.safetensors")) == shards


def test_lora_adapter_reads_as_a_delta_on_q_and_v(lm_zoo):
    (lora,) = _manifest(lm_zoo)["lora"].values()
    folder = lm_zoo / lora["path"]
    raw = load_file(str(folder / "adapter_model.safetensors"))
    assert all(k.startswith("base_model.model.model.layers.") and k.endswith((".lora_A.weight", ".lora_B.weight"))
               for k in raw)
    base = open_checkpoint(lm_zoo / "base")
    adapter = open_checkpoint(folder)
    assert adapter.kind == "delta" and adapter.notes == []
    assert adapter.names and all(n.endswith(("q_proj.weight", "v_proj.weight")) for n in adapter.names)
    for name in adapter.names:
        assert adapter.info(name).shape == base.info(name).shape
    name = adapter.names[0]
    module = name[: -len(".weight")]
    a, b = raw[f"base_model.model.{module}.lora_A.weight"], raw[f"base_model.model.{module}.lora_B.weight"]
    cfg = json.loads((folder / "adapter_config.json").read_text())
    assert torch.allclose(adapter.get(name), (b @ a) * cfg["lora_alpha"] / cfg["r"], atol=1e-6)
    assert float(adapter.get(name).abs().max()) > 0


def test_experts_beat_the_base_on_their_own_domain(lm_zoo):
    m = _manifest(lm_zoo)
    ppl = m["build"]["perplexity"]["models"]
    for name, info in {**m["experts"], **m["lora"]}.items():
        for split in ("val", "test"):
            assert ppl[name][info["domain"]][split] < ppl["base"][info["domain"]][split], (name, split)
    for name in m["experts"]:
        assert ppl[name][name]["val"] < 0.85 * ppl["base"][name]["val"], name


def test_build_perplexity_matches_a_plain_loop_on_the_saved_files(lm_zoo):
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    m = _manifest(lm_zoo)
    text = (lm_zoo / m["domains"]["python"]["data"]["text"]["val"]).read_text(encoding="utf-8")
    stream = token_stream(Tokenizer.from_file(str(lm_zoo / "base" / "tokenizer.json")), [text])
    model = AutoModelForCausalLM.from_pretrained(lm_zoo / m["experts"]["python"]["path"])
    figure = m["build"]["perplexity"]
    assert perplexity(model, stream, figure["block"], figure["blocks"]) == pytest.approx(
        figure["models"]["python"]["python"]["val"], rel=1e-3)


def test_data_files_parse_with_the_declared_fields(lm_zoo):
    m = _manifest(lm_zoo)
    for domain, info in m["domains"].items():
        for split in ("val", "test"):
            assert len((lm_zoo / info["data"]["text"][split]).read_text(encoding="utf-8")) > 1000
            rows = [json.loads(line) for line in (lm_zoo / info["data"]["multiple_choice"][split]).open(encoding="utf-8")]
            assert len(rows) >= 10, (domain, split)
            for row in rows:
                assert set(row) == {"question", "choices", "answer"}
                assert len(row["choices"]) == 4 == len(set(row["choices"]))
                assert 0 <= row["answer"] < 4 and row["question"].endswith("\n")
            rows = [json.loads(line) for line in (lm_zoo / info["data"]["generation"][split]).open(encoding="utf-8")]
            assert len(rows) >= 5, (domain, split)
            for row in rows:
                assert set(row) == {"prompt", "reference"}
                assert row["reference"].strip() and "\n" not in row["reference"]


def test_the_evaluation_suite_reproduces_the_build_figures(lm_zoo):
    from engine.evaluation import Evaluator, load_suite
    from engine.evaluation.runner import load_weights

    m = _manifest(lm_zoo)
    domains = list(m["domains"])
    tasks = {t.name: t for t in load_suite(lm_zoo / m["suite"])}
    assert set(tasks) == {f"{d}{end}" for d in domains for end in ("", "-choice", "-complete")}
    assert tasks["python"].expert == (lm_zoo / "experts" / "python").resolve() and tasks["logs"].expert is None
    expert = tasks["python"]
    state = load_weights(lm_zoo / m["experts"]["python"]["path"], expert.expected_names())
    scores = Evaluator([tasks[d] for d in domains], device="cpu").scores(state, split="val")
    for d in domains:  # the same blocks as the build's own perplexity loop
        assert scores[d].extra["perplexity"] == pytest.approx(m["build"]["perplexity"]["models"]["python"][d]["val"],
                                                              rel=1e-3), d
    recipe = json.loads((lm_zoo / "demo.json").read_text())
    evaluate = next(n for n in recipe["nodes"] if n["type"] == "evaluate")
    assert evaluate["params"]["suite"] == "suite.json"
    assert [e["from"] for e in recipe["edges"] if e["to"] == evaluate["id"]] == ["merge", "base", *m["experts"]]


def test_held_out_text_is_not_in_the_training_text():
    from engine.zoo.lm import corpus

    train = "".join(corpus.take("python", "train", 0, 40_000))
    for split in ("val", "test"):
        held = corpus.take("python", split, 0, 6_000)
        lines = [line for doc in held for line in doc.splitlines() if len(line.strip()) > 50]
        assert lines and sum(line in train for line in lines) < 0.2 * len(lines)


def test_cli_build_is_deterministic_for_a_seed(lm_zoo, tmp_path, capsys):
    again = tmp_path / "again"
    assert main(["zoo", "build", "--lm", "--size", "reduced", "--seed", "0", "--dir", str(again)]) == 0
    assert "built the LM zoo" in capsys.readouterr().out
    first, second = _all_tensors(lm_zoo), _all_tensors(again)
    assert first.keys() == second.keys()
    assert [k for k in first if not torch.equal(first[k], second[k])] == []
    for path in sorted(p.relative_to(lm_zoo) for p in lm_zoo.rglob("*") if p.suffix in (".json", ".jsonl", ".txt")):
        if path.name != "lm-zoo.json":  # holds the build time
            assert (lm_zoo / path).read_bytes() == (again / path).read_bytes(), path


def test_demo_recipe_validates_and_runs(lm_zoo, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    recipe = json.loads((lm_zoo / "demo.json").read_text())
    m = _manifest(lm_zoo)
    merge_inputs = [e["from"] for e in recipe["edges"] if e["to"] == "merge" and e["port"] == "models"]
    assert merge_inputs == [*m["experts"], *m["lora"]]
    assert main(["validate", str(lm_zoo / "demo.json")]) == 0
    assert main(["run", str(lm_zoo / "demo.json"), "--out", str(tmp_path / "merged"), "--device", "cpu"]) == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert merged.config.model_type == "llama"
    assert (tmp_path / "merged" / "tokenizer.json").is_file()


def test_progress_and_cancel_leave_the_old_zoo(tmp_path):
    target = tmp_path / "lm-zoo"
    target.mkdir()
    (target / "keep.txt").write_text("old zoo")
    token, reports = CancelToken(), []

    def progress(p):
        reports.append(p)
        if p.done > 12:
            token.cancel()

    with pytest.raises(Cancelled):
        build_lm_zoo(target, size="reduced", progress=progress, cancel=token)
    assert (target / "keep.txt").read_text() == "old zoo"
    assert [p.name for p in tmp_path.iterdir()] == ["lm-zoo"]
    assert reports and all(r.total == reports[0].total for r in reports)
    assert [r.done for r in reports] == sorted(r.done for r in reports)


def test_default_location_is_beside_the_image_zoo():
    from engine.zoo import default_zoo_dir

    assert default_lm_zoo_dir() == default_zoo_dir().parent / "lm-zoo"


@pytest.mark.slow
def test_default_size_builds_within_three_minutes_on_two_cores(tmp_path):
    start = time.perf_counter()
    manifest = build_lm_zoo(tmp_path / "lm-zoo", size="default", seed=0)
    seconds = time.perf_counter() - start
    m = json.loads(manifest.read_text())
    assert 1_000_000 < m["architecture"]["parameters"] < 10_000_000
    ppl = m["build"]["perplexity"]["models"]
    for name, info in {**m["experts"], **m["lora"]}.items():
        assert ppl[name][info["domain"]]["test"] < ppl["base"][info["domain"]]["test"], name
    assert seconds < 200, f"{seconds:.0f} s"  # 3 minutes plus slack for a shared machine
