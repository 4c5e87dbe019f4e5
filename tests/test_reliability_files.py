"""Nothing lost on disk: --force replaces only our outputs, commits re-check, swaps recover, crashes leave no junk,
fp16 overflow is refused by name."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.checkpoints import CheckpointWriter
from engine.checkpoints.publish import LOCK, tidy
from engine.cli import main
from engine.errors import EngineInputError

PLAN = [("w", (2,), torch.float32)]


def _write(out: Path, value: float, **kwargs) -> Path:
    with CheckpointWriter(out, PLAN, **kwargs) as w:
        w.write("w", torch.full((2,), value))
        return w.commit()


def _merge_args(tiny_models, out: Path) -> list[str]:
    return ["merge", "--method", "linear", "--model", str(tiny_models["e1"]), "--model", str(tiny_models["e2"]),
            "--out", str(out), "--force"]


@pytest.mark.parametrize("where", ["inputs_folder", "parent_of_inputs", "home"])
def test_force_never_replaces_a_folder_holding_inputs_or_home(where, tmp_path, tiny_models, monkeypatch, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "diary.txt").write_text("mine too")
    out = {"inputs_folder": tmp_path, "parent_of_inputs": tmp_path.parent, "home": tmp_path / "home"}[where]
    assert main(_merge_args(tiny_models, out)) == 2
    err = capsys.readouterr().err
    assert "refusing to replace" in err and "Traceback" not in err
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "home" / "diary.txt").exists()
    assert tiny_models["e1"].exists()


def test_force_refuses_a_folder_holding_the_recipe(tmp_path, tiny_models, capsys):
    from engine.graph.build import simple_merge_recipe

    project = tmp_path / "project"
    project.mkdir()
    recipe = simple_merge_recipe("linear", [tiny_models["e1"], tiny_models["e2"]], out=".")
    recipe.save(project / "recipe.json")
    assert main(["run", str(project / "recipe.json"), "--force"]) == 2
    assert "refusing to replace" in capsys.readouterr().err
    assert (project / "recipe.json").is_file()


def test_a_folder_created_at_the_output_during_the_merge_is_never_replaced(tmp_path):
    out = tmp_path / "o"
    with CheckpointWriter(out, PLAN) as w:
        w.write("w", torch.ones(2))
        out.mkdir()  # someone else creates the folder while the merge runs
        (out / "theirs.txt").write_text("not ours")
        with pytest.raises(EngineInputError, match="created by something else") as info:
            w.commit()
    assert [p.name for p in out.iterdir()] == ["theirs.txt"]
    kept = Path(str(info.value).split("kept at '")[1].split("'")[0])
    assert load_file(str(kept / "model.safetensors"))["w"].tolist() == [1.0, 1.0]


def test_two_merges_to_one_new_path_do_not_silently_replace_each_other(tmp_path):
    out = tmp_path / "o"
    first = CheckpointWriter(out, PLAN)
    second = CheckpointWriter(out, PLAN)  # both started while the path was free
    first.write("w", torch.ones(2))
    second.write("w", torch.zeros(2))
    first.commit()
    with pytest.raises(EngineInputError, match="created by something else"):
        second.commit()
    assert load_file(str(out / "model.safetensors"))["w"].tolist() == [1.0, 1.0]


def _interrupted_swap(tmp_path: Path, *, new_ready: bool) -> Path:
    """The state a kill leaves between the forced swap's renames (journal written, old moved aside)."""
    out = _write(tmp_path / "o", 1.0)
    new = _write(tmp_path / "n", 2.0)
    os.rename(out, tmp_path / ".o.old-deadbeef")
    if new_ready:
        os.rename(new, tmp_path / ".o.tmp-deadbeef")
        (tmp_path / ".o.tmp-deadbeef" / LOCK).write_text("12345\n")  # a lock nobody holds any more
    journal = {"target": "o", "new": ".o.tmp-deadbeef", "old": ".o.old-deadbeef"}
    (tmp_path / ".o.swap.json").write_text(json.dumps(journal))
    return out


@pytest.mark.parametrize("new_ready, value", [(True, 2.0), (False, 1.0)])
def test_an_interrupted_forced_swap_is_finished_or_rolled_back_by_the_next_writer(tmp_path, new_ready, value):
    out = _interrupted_swap(tmp_path, new_ready=new_ready)
    assert not out.exists()
    writer = CheckpointWriter(tmp_path / "other", PLAN)
    writer.abort()
    assert writer.notes and ("finished replacing" in writer.notes[0] or "restored" in writer.notes[0])
    assert load_file(str(out / "model.safetensors"))["w"].tolist() == [value, value]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("new_ready, value", [(True, 2.0), (False, 1.0)])
def test_inspecting_the_missing_output_of_an_interrupted_swap_recovers_it_and_says_so(tmp_path, new_ready, value,
                                                                                      capsys):
    out = _interrupted_swap(tmp_path, new_ready=new_ready)
    assert main(["inspect", str(out)]) == 0
    note = "note: finished replacing 'o'" if new_ready else "note: restored 'o'"
    assert note in capsys.readouterr().out
    assert load_file(str(out / "model.safetensors"))["w"].tolist() == [value, value]
    assert not (tmp_path / ".o.swap.json").exists()


@pytest.mark.parametrize("hostile", ["../victim", "/VICTIM", ".o.old-deadbeef/../../victim", "victim"])
def test_a_planted_swap_journal_never_moves_or_deletes_anything_else(tmp_path, hostile):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    folder = tmp_path / "downloads"
    folder.mkdir()
    _write(folder / "o", 1.0)
    path = hostile.replace("/VICTIM", str(victim))
    for journal in ({"target": "o", "new": ".o.tmp-deadbeef", "old": path},
                    {"target": "o", "new": path, "old": ".o.old-deadbeef"},
                    {"target": "../victim", "new": ".o.tmp-deadbeef", "old": ".o.old-deadbeef"}):
        (folder / ".o.swap.json").write_text(json.dumps(journal))
        CheckpointWriter(folder / "other", PLAN).abort()
        assert (victim / "keep.txt").read_text() == "mine"
        assert load_file(str(folder / "o" / "model.safetensors"))["w"].tolist() == [1.0, 1.0]


def test_tidy_removes_only_our_temporaries(tmp_path):
    old = time.time() - 2 * 86400
    theirs = [tmp_path / ".notes.tmp-mine", tmp_path / ".cache.tmp-deadbeef"]  # not our name / no weights of ours
    for folder in theirs:
        folder.mkdir()
        (folder / "data.txt").write_text("mine")
        os.utime(folder, (old, old))
    legacy = tmp_path / ".o.tmp-0badc0de"  # an old version's leftover: our name, our shard, no lock, a day old
    legacy.mkdir()
    (legacy / "model.safetensors").write_bytes(b"partial")
    os.utime(legacy, (old, old))
    notes = tidy(tmp_path)
    assert notes == ["removed '.o.tmp-0badc0de', left by a merge that did not finish"]
    assert all((folder / "data.txt").read_text() == "mine" for folder in theirs)


_HOLD = """
import sys, time, torch
from engine.checkpoints import CheckpointWriter
w = CheckpointWriter(sys.argv[1], [("w", (1 << 20,), torch.float32)])
w.write("w", torch.ones(1 << 20))
print("writing", flush=True)
time.sleep(60)
"""


def test_a_killed_merge_leaves_a_temporary_that_the_next_writer_removes(tmp_path):
    out = tmp_path / "o"
    child = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parents[1])
    try:
        assert child.stdout.readline().strip() == "writing"
        temporaries = [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
        assert len(temporaries) == 1
        assert tidy(tmp_path) == [] and temporaries[0].exists()  # the owner is alive: left alone
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    notes = tidy(tmp_path)
    assert notes and "did not finish" in notes[0]
    assert list(tmp_path.iterdir()) == []


def test_fp16_overflow_is_refused_by_tensor_and_nothing_is_written(tmp_path):
    out = tmp_path / "o"
    plan = [("big", (3,), torch.float16), ("fine", (3,), torch.float16)]
    with CheckpointWriter(out, plan) as w:
        w.write("big", torch.tensor([1.0, 70000.0, -2.0]))
        w.write("fine", torch.tensor([1.0, 65000.0, -2.0]))
        with pytest.raises(EngineInputError, match=r"overflow fp16.*'big'.*bf16"):
            w.commit()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dtype, value, wider", [(torch.float16, 65520.0, "bf16 or fp32"),
                                                  (torch.bfloat16, 3.397e38, "fp32")])
def test_a_cast_that_overflows_any_output_dtype_is_refused(tmp_path, dtype, value, wider):
    with CheckpointWriter(tmp_path / "o", [("w", (2,), dtype)]) as w:
        w.write("w", torch.tensor([value, 1.0]))
        with pytest.raises(EngineInputError, match=f"1 tensor\\(s\\) overflow .*'w'.*save as {wider}"):
            w.commit()
    assert list(tmp_path.iterdir()) == []


def test_non_finite_inputs_and_the_largest_finite_fp16_are_not_called_an_overflow(tmp_path):
    plan = [("inf", (3,), torch.float16), ("edge", (2,), torch.float16)]
    with CheckpointWriter(tmp_path / "o", plan) as w:
        w.write("inf", torch.tensor([float("inf"), float("nan"), 1.0]))  # already non-finite: the reader warns
        w.write("edge", torch.tensor([65519.0, -65519.0]))  # rounds to ±65504, not to inf
        out = w.commit()
    saved = load_file(str(out / "model.safetensors"))
    assert saved["edge"].tolist() == [65504.0, -65504.0] and saved["inf"][0].item() == float("inf")


def test_cli_task_arithmetic_overflowing_fp16_exits_2_and_bf16_works(tmp_path, capsys):
    base = {"layer.weight": torch.full((4, 4), 60000.0, dtype=torch.float16)}
    tuned = {"layer.weight": torch.full((4, 4), 64000.0, dtype=torch.float16)}
    save_file(base, str(tmp_path / "base.safetensors"))
    save_file(tuned, str(tmp_path / "tuned.safetensors"))
    args = ["merge", "--method", "task_arithmetic", "--base", str(tmp_path / "base.safetensors"),
            "--model", str(tmp_path / "tuned.safetensors"), "--param", "lambda=2"]
    assert main(args + ["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "'layer.weight'" in err and "overflow" in err and not (tmp_path / "o").exists()
    assert main(args + ["--out", str(tmp_path / "b"), "--dtype", "bf16"]) == 0
    assert load_file(str(tmp_path / "b" / "model.safetensors"))["layer.weight"].float().min() > 65000


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", ["fifo_file", "fifo_in_folder", "dev_null", "long_path"])
def test_inspect_refuses_fifos_devices_and_absurd_paths_without_hanging(case, tmp_path, capsys):
    if case == "fifo_file":
        target = tmp_path / "m.safetensors"
        os.mkfifo(target)
    elif case == "fifo_in_folder":
        target = tmp_path / "model"
        target.mkdir()
        (target / "config.json").write_text("{}")
        os.mkfifo(target / "model.safetensors")
    elif case == "dev_null":
        target = Path("/dev/null")
    else:
        target = tmp_path / ("x" * 5000)
    assert main(["inspect", str(target)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert ("regular file" in err) or ("cannot access" in err and len(err) < 1000)


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_fp8_checkpoints_merge_upcast_and_save_as_bf16(dtype, tmp_path):
    base = {"w": torch.tensor([1.0, 2.0, -4.0, 0.5]).to(dtype)}
    tuned = {"w": torch.tensor([2.0, 2.0, -2.0, 1.0]).to(dtype)}
    save_file(base, str(tmp_path / "base.safetensors"))
    save_file(tuned, str(tmp_path / "tuned.safetensors"))
    assert main(["merge", "--method", "task_arithmetic", "--base", str(tmp_path / "base.safetensors"),
                 "--model", str(tmp_path / "tuned.safetensors"), "--param", "lambda=0.5",
                 "--out", str(tmp_path / "o")]) == 0
    out = load_file(str(tmp_path / "o" / "model.safetensors"))["w"]
    assert out.dtype == torch.bfloat16 and out.float().tolist() == [1.5, 2.0, -3.0, 0.75]


def test_fp8_with_scale_tensors_is_refused_by_name(tmp_path, capsys):
    sd = {"w": torch.ones(4).to(torch.float8_e4m3fn), "w_scale_inv": torch.ones(1)}
    save_file(sd, str(tmp_path / "q.safetensors"))
    assert main(["merge", "--method", "linear", "--model", str(tmp_path / "q.safetensors"),
                 "--model", str(tmp_path / "q.safetensors"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "'w_scale_inv'" in err and "dequantise" in err and not (tmp_path / "o").exists()


def test_zero_stride_pt_tensor_is_refused_by_logical_size_before_allocating(tmp_path, capsys):
    huge = torch.zeros(1).expand(1 << 40)  # 4.4 TB of float32 claimed by one stored element
    torch.save({"w": huge, "ok": torch.ones(2)}, str(tmp_path / "bomb.pt"))
    assert main(["inspect", str(tmp_path / "bomb.pt")]) == 2
    err = capsys.readouterr().err
    assert "'w'" in err and "refusing to allocate" in err
