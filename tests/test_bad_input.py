"""Bad input: each case gets a clear error naming the file/tensor, and nothing is lost."""

from __future__ import annotations

import errno
import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from engine.checkpoints import CheckpointWriter, open_checkpoint
from engine.errors import Cancelled, CheckpointError, EngineInputError, RecipeError
from engine.graph import run_recipe, validate
from engine.graph.build import simple_merge_recipe
from engine.runtime import CancelToken
from tests.conftest import finetune, make_state_dict


def test_truncated_safetensors_names_the_file(tmp_path: Path):
    save_file(make_state_dict(0), tmp_path / "m.safetensors")
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "m.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError) as err:
        open_checkpoint(tmp_path / "m.safetensors")
    assert str(tmp_path / "m.safetensors") in str(err.value)


@pytest.mark.parametrize("payload", [
    b"\x00" * 3,                                                   # shorter than the length field
    (10**15).to_bytes(8, "little") + b"{}",                       # oversized header length
    (20).to_bytes(8, "little") + b"this is not json!!!!",         # garbage header
])
def test_garbage_headers_are_refused(tmp_path: Path, payload: bytes):
    (tmp_path / "bad.safetensors").write_bytes(payload)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        open_checkpoint(tmp_path / "bad.safetensors")


class _Exploit:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path: Path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.bin", "wb") as f:
        pickle.dump({"w": _Exploit(str(marker))}, f)
    with pytest.raises(CheckpointError, match="refused to load") as err:
        open_checkpoint(tmp_path / "evil.bin")
    assert "evil.bin" in str(err.value)
    assert not marker.exists()
    # the same for the zip format torch.save writes
    torch.save({"w": torch.ones(2), "evil": _Exploit(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused to load"):
        open_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_shape_mismatch_and_missing_tensor_are_reported_with_node_and_tensor(tmp_path: Path):
    base = make_state_dict(0)
    save_file(base, tmp_path / "base.safetensors")
    bad = finetune(base, 1)
    bad["model.layers.1.mlp.up_proj.weight"] = torch.zeros(4, 4)
    del bad["model.norm.weight"]
    save_file(bad, tmp_path / "bad.safetensors")
    recipe = simple_merge_recipe("task_arithmetic", [tmp_path / "bad.safetensors"], base=tmp_path / "base.safetensors",
                                 out=tmp_path / "out")
    problems = validate(recipe)
    text = " ".join(p.message for p in problems)
    assert {p.node_id for p in problems} == {"merge"}
    assert "model.layers.1.mlp.up_proj.weight" in text and "model.norm.weight" in text
    with pytest.raises(RecipeError):
        run_recipe(recipe)
    assert not (tmp_path / "out").exists()


def test_dtype_mix_merges_in_fp32(tmp_path: Path):
    base = make_state_dict(0)
    e1, e2 = finetune(base, 1), finetune(base, 2)
    save_file({k: v.half() if v.is_floating_point() else v for k, v in base.items()}, tmp_path / "b.safetensors")
    save_file({k: v.bfloat16() if v.is_floating_point() else v for k, v in e1.items()}, tmp_path / "e1.safetensors")
    save_file(e2, tmp_path / "e2.safetensors")
    recipe = simple_merge_recipe("linear", [tmp_path / "b.safetensors", tmp_path / "e1.safetensors",
                                            tmp_path / "e2.safetensors"], out=tmp_path / "o", dtype="fp32")
    run_recipe(recipe)
    out = open_checkpoint(tmp_path / "o")
    name = "model.layers.0.self_attn.q_proj.weight"
    expected = (base[name].half().float() + e1[name].bfloat16().float() + e2[name]) / 3
    assert out.info(name).dtype == torch.float32
    assert torch.allclose(out.get(name), expected, atol=1e-6)


def test_nan_input_warns_with_tensor_name(tmp_path: Path, tiny_models):
    bad = finetune(make_state_dict(0), 5)
    bad["model.layers.2.mlp.up_proj.weight"][0, 0] = float("nan")
    save_file(bad, tmp_path / "nan.safetensors")
    recipe = simple_merge_recipe("task_arithmetic", [tiny_models["e1"], tmp_path / "nan.safetensors"],
                                 base=tiny_models["base"], out=tmp_path / "o")
    result = run_recipe(recipe)
    assert len(result.warnings) == 1
    assert "model.layers.2.mlp.up_proj.weight" in result.warnings[0] and "nan.safetensors" in result.warnings[0]
    # a whole-model TIES reads every tensor in two statistic passes and the merge: still one warning
    recipe = simple_merge_recipe("ties", [tiny_models["e1"], tmp_path / "nan.safetensors"], base=tiny_models["base"],
                                 params={"scope": "model"}, out=tmp_path / "o2")
    assert len(run_recipe(recipe).warnings) == 1


def test_full_disk_mid_write_leaves_nothing(tmp_path: Path, tiny_models, monkeypatch):
    calls = {"n": 0}
    real_write = CheckpointWriter.write

    def failing_write(self, name, tensor):
        calls["n"] += 1
        if calls["n"] == 4:
            raise CheckpointError(f"writing tensor '{name}' failed ({os.strerror(errno.ENOSPC)})",
                                  path=str(self.tmp_dir), tensor=name)
        return real_write(self, name, tensor)

    monkeypatch.setattr(CheckpointWriter, "write", failing_write)
    recipe = simple_merge_recipe("task_arithmetic", [tiny_models["e1"], tiny_models["e2"]], base=tiny_models["base"],
                                 out=tmp_path / "out")
    before = set(os.listdir(tmp_path))
    with pytest.raises(CheckpointError, match="No space left"):
        run_recipe(recipe)
    assert set(os.listdir(tmp_path)) == before


def test_real_oserror_in_writer_is_reported_and_cleaned(tmp_path: Path):
    w = CheckpointWriter(tmp_path / "o", [("a", (4,), torch.float32), ("b", (4,), torch.float32)])
    w._files[0].close()  # the next write fails inside the OS layer
    with pytest.raises((CheckpointError, ValueError)):
        with w:
            w.write("a", torch.ones(4))
    assert list(tmp_path.iterdir()) == []


def test_cancel_mid_merge_leaves_clean_state(tmp_path: Path, tiny_models, monkeypatch):
    token = CancelToken()
    written = []
    real_write = CheckpointWriter.write

    def write_then_cancel(self, name, tensor):
        real_write(self, name, tensor)
        written.append(name)
        if len(written) == 2:
            token.cancel()  # as a user pressing Cancel while the merge streams

    monkeypatch.setattr(CheckpointWriter, "write", write_then_cancel)
    recipe = simple_merge_recipe("task_arithmetic", [tiny_models["e1"], tiny_models["e2"]], base=tiny_models["base"],
                                 out=tmp_path / "out")
    before = set(os.listdir(tmp_path))
    with pytest.raises(Cancelled):
        run_recipe(recipe, cancel=token)
    assert len(written) == 2
    assert set(os.listdir(tmp_path)) == before


def test_recipe_errors_name_the_node(tmp_path: Path, tiny_models):
    recipe = simple_merge_recipe("no_such_method", [tiny_models["e1"]], base=tiny_models["base"], out=tmp_path / "o")
    problems = validate(recipe)
    assert any(p.node_id == "merge" and "no_such_method" in p.message for p in problems)
    recipe = simple_merge_recipe("task_arithmetic", [tiny_models["e1"]], base=tiny_models["base"],
                                 params={"lambda": 99.0}, out=tmp_path / "o")
    assert any(p.node_id == "merge" and "lambda" in p.message and "maximum" in p.message for p in validate(recipe))
    recipe = simple_merge_recipe("task_arithmetic", [tiny_models["e1"]], out=tmp_path / "o")
    assert any("needs a base" in p.message for p in validate(recipe))


def test_malformed_recipe_file(tmp_path: Path):
    from engine.graph import Recipe
    (tmp_path / "r.json").write_text("{not json")
    with pytest.raises(EngineInputError, match="not valid JSON") as err:
        Recipe.load(tmp_path / "r.json")
    assert "r.json" in str(err.value)
    (tmp_path / "r.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(EngineInputError, match="not a Weightsmith recipe"):
        Recipe.load(tmp_path / "r.json")
