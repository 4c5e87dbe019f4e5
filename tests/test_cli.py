"""The headless twin: commands, exit codes and messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from engine.cli import main


def test_merge_quick_form_writes_the_model(tmp_path: Path, tiny_models, capsys):
    rc = main(["merge", "--method", "task_arithmetic", "--base", str(tiny_models["base"]),
               "--model", str(tiny_models["e1"]), "--model", str(tiny_models["e2"]), "--weight", "1", "--weight", "0.5",
               "--param", "lambda=0.5", "--out", str(tmp_path / "o"), "--dtype", "fp16", "--device", "cpu"])
    assert rc == 0
    assert "wrote" in capsys.readouterr().out
    base, e1, e2 = (load_file(str(tiny_models[k])) for k in ("base", "e1", "e2"))
    out = load_file(str(tmp_path / "o" / "model.safetensors"))
    n = "model.layers.0.mlp.up_proj.weight"
    expected = base[n] + 0.5 * ((e1[n] - base[n]) + 0.5 * (e2[n] - base[n]))
    assert out[n].dtype == torch.float16 and torch.allclose(out[n].float(), expected, atol=2e-3)


def test_existing_output_needs_force(tmp_path: Path, tiny_models, capsys):
    args = ["merge", "--method", "linear", "--model", str(tiny_models["e1"]), "--model", str(tiny_models["e2"]),
            "--out", str(tmp_path / "o")]
    assert main(args) == 0
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "Traceback" not in err
    assert main(args + ["--force"]) == 0  # our own earlier output may be replaced


def test_bad_input_exit_code_2_names_the_file(tmp_path: Path, capsys):
    (tmp_path / "bad.safetensors").write_bytes(b"garbage!garbage!")
    assert main(["inspect", str(tmp_path / "bad.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "bad.safetensors" in err and "Traceback" not in err and err.count("\n") == 1


def test_inspect_json_lists_tensors_and_compatibility(tiny_models, capsys):
    assert main(["inspect", str(tiny_models["base"]), str(tiny_models["e1"]), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data[0]["num_layers"] == 3 and data[1]["compatibility"]["compatible"] is True
    assert any(t["name"] == "model.norm.weight" for t in data[0]["tensors"])


def test_inspect_reads_headers_without_torch_and_the_reader_still_reads_tensors(tmp_path: Path):
    """``weightsmith inspect`` of checkpoints (and their comparison) never imports torch (it starts in a
    fraction of a second);
    a reader opened that way imports it on the first tensor read and returns the stored values."""
    from safetensors.torch import save_file

    values = {"a.weight": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3), "b": torch.ones(4, dtype=torch.float16),
              "ids": torch.arange(3)}
    save_file(values, tmp_path / "m.safetensors")
    save_file({**values, "b": values["b"].float()}, tmp_path / "other.safetensors")
    code = f"""
import contextlib, io, json, sys
from engine.cli import main
with contextlib.redirect_stdout(io.StringIO()) as both:
    assert main(["inspect", "--json", {str(tmp_path / "m.safetensors")!r}, {str(tmp_path / "other.safetensors")!r}]) == 0
assert json.loads(both.getvalue())[1]["compatibility"]["dtype_differs"] == ["b"]
assert main(["inspect", "--json", {str(tmp_path / "m.safetensors")!r}]) == 0
assert "torch" not in sys.modules, "inspect imported torch"
from engine.checkpoints.open import open_checkpoint
ckpt = open_checkpoint({str(tmp_path / "m.safetensors")!r})
assert "torch" not in sys.modules and ckpt.info("a.weight").nbytes == 12 and ckpt.info("b").is_floating_point
assert not ckpt.info("ids").is_floating_point
print(json.dumps(ckpt.get("a.weight").float().tolist()))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    read = done.stdout.strip().splitlines()[-1]
    assert json.loads(read) == [[0, 1, 2], [3, 4, 5]]
    data = json.loads(done.stdout[: done.stdout.rindex("\n[")])
    assert data["dtypes"] == {"bf16": 1, "fp16": 1, "int64": 1} and data["num_bytes"] == 12 + 8 + 24
    assert {t["name"]: t["dtype"] for t in data["tensors"]} == {"a.weight": "bfloat16", "b": "float16", "ids": "int64"}


def test_run_recipe_with_out_override_and_validate(tmp_path: Path, tiny_models, capsys):
    from engine.graph.build import simple_merge_recipe

    recipe = simple_merge_recipe("task_arithmetic", [tiny_models["e1"]], base=tiny_models["base"], out=tmp_path / "x")
    recipe.save(tmp_path / "r.json")
    assert main(["validate", str(tmp_path / "r.json")]) == 0
    assert main(["run", str(tmp_path / "r.json"), "--out", str(tmp_path / "y")]) == 0
    assert (tmp_path / "y" / "model.safetensors").is_file() and not (tmp_path / "x").exists()
    recipe.nodes["merge"].params["lambda"] = "big"
    recipe.save(tmp_path / "bad.json")
    capsys.readouterr()
    assert main(["validate", str(tmp_path / "bad.json")]) == 2
    assert "[merge]" in capsys.readouterr().out


def test_methods_json_lists_schemas(capsys):
    assert main(["methods", "--json"]) == 0
    methods = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert {"linear", "task_arithmetic"} <= set(methods)
    ta = {p["name"]: p for p in methods["task_arithmetic"]["params"]}
    assert ta["lambda"]["layerwise"] and ta["weight"]["per_model"]
    assert methods["task_arithmetic"]["requirements"] == ["data-free"]


def test_console_script_runs_as_a_process(tiny_models):
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "inspect", str(tiny_models["base"])],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "3 layers" in proc.stdout


def test_engine_never_imports_qt():
    """Import every engine module with PySide6 blocked: nothing in engine/ may need a screen."""
    code = (
        "import sys, importlib, pkgutil\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('PySide6', 'PyQt5', 'PyQt6', 'shiboken6'):\n"
        "            raise ImportError('Qt is blocked in engine/')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import engine\n"
        "for m in pkgutil.walk_packages(engine.__path__, 'engine.'):\n"
        "    importlib.import_module(m.name)\n"
        "assert not any(k.startswith(('PySide6', 'PyQt')) for k in sys.modules)\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("ok")


def test_merge_seed_on_a_deterministic_method_is_a_note_not_an_error(tmp_path: Path, tiny_models, capsys):
    rc = main(["merge", "--method", "ties", "--base", str(tiny_models["base"]), "--model", str(tiny_models["e1"]),
               "--seed", "7", "--param", "normalize=True", "--out", str(tmp_path / "o")])
    assert rc == 0
    assert "--seed has no effect" in capsys.readouterr().err
    rc = main(["merge", "--method", "dare_ties", "--base", str(tiny_models["base"]), "--model", str(tiny_models["e1"]),
               "--seed", "7", "--param", "normalize=FALSE", "--out", str(tmp_path / "d")])
    assert rc == 0 and "no effect" not in capsys.readouterr().err


def test_slerp_without_base_takes_the_first_model_as_mergekit_does(tmp_path: Path, tiny_models, capsys):
    rc = main(["merge", "--method", "slerp", "--model", str(tiny_models["base"]), "--model", str(tiny_models["e1"]),
               "--param", "t=0.0", "--out", str(tmp_path / "o"), "--dtype", "fp32"])
    assert rc == 0
    assert "taking the first --model" in capsys.readouterr().err
    base, out = load_file(str(tiny_models["base"])), load_file(str(tmp_path / "o" / "model.safetensors"))
    assert all(torch.allclose(out[n], base[n]) for n in base)  # t = 0 is the base end


def test_help_starts_without_importing_torch():
    code = ("import sys\nfrom engine.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    assert out.strip().splitlines()[-1] == "False"
