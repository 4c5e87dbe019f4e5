"""Task sources a user declares: the task-kind registry, a suite manifest with every kind loading and scoring
through load_suite and the Evaluator (checked against the models run directly), manifest and data
errors naming file and line, the zoo registering itself, and `weightsmith evaluate` on an LM suite."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")

from engine.cli import main  # noqa: E402
from engine.errors import EngineInputError  # noqa: E402
from engine.evaluation import Evaluator, load_suite, trust  # noqa: E402
from engine.evaluation.metrics import Scores  # noqa: E402
from engine.evaluation.task_kinds import TaskKind, TaskParam, register_task_kind, task_kind, task_kinds  # noqa: E402
from hf_helpers import (causal_lm, clip_model, image_folder, sequence_classifier, vit_classifier,  # noqa: E402
                        weights, write_jsonl)

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = textwrap.dedent("""
    import torch
    from torch import nn

    METRIC_NAME = "squared_error"
    HIGHER_IS_BETTER = False

    def build_model(state_dict):
        net = nn.Linear(2, 2)
        net.load_state_dict(state_dict)
        return net

    def data(split):
        return torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])

    def metric(outputs, labels):
        return float(((outputs.argmax(-1) - labels).float() ** 2).mean() + 0.5)
""")


@pytest.fixture(autouse=True)
def _run_named_plugins():
    previous = trust.set_policy(trust.announce_and_trust)
    yield
    trust.set_policy(previous)


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    """A folder with one model of every kind, data for every kind, and ``suite.json`` naming them."""
    root = tmp_path_factory.mktemp("suite")
    causal_lm(root / "lm")
    sequence_classifier(root / "classifier")
    vit_classifier(root / "vit")
    clip_model(root / "clip")
    image_folder(root / "images")
    (root / "python.txt").write_text("def add(x, y): return x + y\nprint('hello world')\n", encoding="utf-8")
    (root / "prose.txt").write_text("the cat sat on the mat and the dog ran in the park\n", encoding="utf-8")
    write_jsonl(root / "choice.jsonl", [{"question": "the cat sat on the", "choices": ["mat", "sea"], "answer": 0},
                                        {"question": "blue sky over the", "choices": ["sea", "cat"], "answer": "sea"}])
    write_jsonl(root / "generate.jsonl", [{"prompt": "the cat", "reference": "sat"}])
    (root / "reviews.csv").write_text("text,label\nthe cat sat,positive\nthe dog ran in the park,0\n"
                                      "red apples,negative\n", encoding="utf-8")
    (root / "task.py").write_text(PLUGIN, encoding="utf-8")
    manifest = {
        "format": "weightsmith-suite", "version": 1, "name": "every-kind", "base": "lm",
        "defaults": {"block_size": 8, "max_length": 16},
        "tasks": [
            {"name": "python", "kind": "text-perplexity", "data": "python.txt"},
            {"name": "prose", "kind": "text-perplexity", "data": {"test": "prose.txt", "val": "python.txt"},
             "description": "English"},
            {"name": "choice", "kind": "multiple-choice", "data": "choice.jsonl", "delimiter": " "},
            {"name": "complete", "kind": "generation", "data": "generate.jsonl", "max_new_tokens": 4},
            {"name": "reviews", "kind": "text-classification", "model": "classifier", "data": "reviews.csv"},
            {"name": "colours", "kind": "image-classification", "model": "vit", "data": "images"},
            {"name": "zero-shot", "kind": "image-classification", "model": "clip", "data": "images",
             "image_size": 8, "template": "a {} thing"},
            {"kind": "plugin", "file": "task.py"},
        ]}
    (root / "suite.json").write_text(json.dumps(manifest), encoding="utf-8")
    return root


# ---------------------------------------------------------------- the registry


def test_registry_lists_every_kind_with_a_parameter_schema():
    import engine.zoo  # noqa: F401  (registers zoo-mlp)

    names = [k.name for k in task_kinds()]
    assert {"text-perplexity", "multiple-choice", "generation", "text-classification", "image-classification",
            "plugin", "zoo-mlp"} <= set(names)
    described = task_kind("text-perplexity").to_json()
    params = {p["name"]: p for p in described["params"]}
    assert params["data"]["required"] and params["data"]["per_split"] and params["block_size"]["type"] == "int"
    assert described["metrics"][0] == "perplexity"
    assert task_kind("generation").param("stop").to_json()["multiple"] is True
    with pytest.raises(EngineInputError, match="unknown task kind 'nope'.*text-perplexity"):
        task_kind("nope")


class ConstantTask:
    """A task of the test's own kind: every model scores ``value``."""

    splits = ("test",)
    classes = ()
    expert = None
    num_classes = 0

    def __init__(self, name: str, value: float):
        self.name, self.value = name, value

    def data(self, split):
        from engine.evaluation.tasks import Split

        return Split(torch.zeros(3, 1), torch.zeros(3, dtype=torch.long))

    def build_model(self, state_dict, device="cpu"):
        return lambda x: x

    def accumulator(self):
        value = self.value

        class Constant:
            def add(self, outputs, labels):
                pass

            def result(self):
                return Scores(3, value)

        return Constant()

    def fingerprint(self):
        return f"constant:{self.name}:{self.value}"


def test_a_registered_kind_is_declared_in_a_manifest_like_the_built_in_ones(tmp_path):
    register_task_kind(TaskKind("test-constant", "Constant", "every model scores the declared value",
                                params=(TaskParam("value", "float", None, "the score", required=True, min=0, max=1),),
                                build=lambda entry: [ConstantTask(entry.name, entry.values["value"])]))
    path = tmp_path / "suite.json"
    path.write_text(json.dumps({"format": "weightsmith-suite", "version": 1, "tasks": [
        {"name": "half", "kind": "test-constant", "value": 0.5}]}))
    (task,) = load_suite(path)
    assert Evaluator([task], device="cpu").scores({})["half"].accuracy == 0.5


@pytest.mark.parametrize("entry, message", [
    ({"name": "x", "kind": "nope"}, "task entry 1: unknown task kind 'nope'"),
    ({"name": "x", "kind": "text-perplexity"}, "task 'x' \\(text-perplexity\\): 'data' is required"),
    ({"name": "x", "kind": "text-perplexity", "data": "a.txt", "blok_size": 3}, "unknown field\\(s\\) 'blok_size'"),
    ({"name": "x", "kind": "text-perplexity", "data": "a.txt", "block_size": "big"}, "'block_size' must be a number"),
    ({"name": "x", "kind": "text-perplexity", "data": "a.txt", "block_size": 1}, "below its minimum"),
    ({"name": "x", "kind": "generation", "data": "a.jsonl", "match": "fuzzy"}, "'match' must be one of"),
    ({"name": "x", "kind": "multiple-choice", "data": {"tset": "a.jsonl"}}, "'data' maps split names"),
    ({"kind": "text-perplexity", "data": "a.txt"}, "task entry 1 \\(text-perplexity\\) needs a \"name\""),
    ({"name": "x", "kind": "plugin", "file": "p.py"}, "takes its tasks' names from its source"),
    ({"name": "x", "kind": "text-perplexity", "data": "a.txt", "model": "nowhere"}, "no config.json"),
    ({"name": "x", "kind": "multiple-choice", "data": "a.jsonl"}, "names no model"),
])
def test_bad_manifest_entries_name_the_manifest_and_the_task(tmp_path, entry, message):
    path = tmp_path / "suite.json"
    path.write_text(json.dumps({"format": "weightsmith-suite", "version": 1, "tasks": [entry]}))
    with pytest.raises(EngineInputError, match=message) as info:
        load_suite(path)
    assert str(tmp_path) in str(info.value)


def test_duplicate_names_and_a_name_filter(suite, tmp_path):
    data = json.loads((suite / "suite.json").read_text())
    data["tasks"].append(dict(data["tasks"][0]))
    dup = tmp_path / "dup.json"
    dup.write_text(json.dumps({**data, "base": str(suite / "lm")}))
    with pytest.raises(EngineInputError, match="two tasks are named 'python'"):
        load_suite(dup)
    assert [t.name for t in load_suite(suite / "suite.json", ["prose", "python"])] == ["prose", "python"]
    with pytest.raises(EngineInputError, match="unknown task\\(s\\) nope; the suite has python, prose"):
        load_suite(suite / "suite.json", ["nope"])


def test_the_zoo_registers_its_kind_when_imported(tmp_path):
    manifest = tmp_path / "zoo.json"
    manifest.write_text(json.dumps({"format": "weightsmith-suite", "version": 1,
                                    "architecture": {"kind": "zoo-mlp", "side": 4, "width": 8, "hidden": 8, "depth": 1},
                                    "tasks": [{"name": "t", "classes": ["a", "b"], "head": "h.safetensors",
                                               "data": "d.safetensors"}]}))
    script = textwrap.dedent(f"""
        from engine.errors import EngineInputError
        from engine.evaluation import load_suite
        for step in ("before", "after"):
            try:
                load_suite({str(manifest)!r})
            except EngineInputError as exc:
                print(step, exc)
            import engine.zoo
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120).stdout
    assert "before" in out and "unknown task kind 'zoo-mlp'" in out.split("after")[0]
    assert "task head file is missing" in out.split("after")[1]


# ---------------------------------------------------------------- every kind, scored


def test_every_kind_loads_and_scores_as_the_model_does(suite):
    from transformers import (AutoModelForCausalLM, AutoTokenizer, CLIPModel, LlamaForSequenceClassification,
                              ViTForImageClassification, ViTImageProcessor)
    from PIL import Image

    tasks = {t.name: t for t in load_suite(suite / "suite.json")}
    assert list(tasks) == ["python", "prose", "choice", "complete", "reviews", "colours", "zero-shot", "task"]
    lm_state = weights(suite / "lm")
    ev = Evaluator([tasks[n] for n in ("python", "prose", "choice", "complete")], device="cpu")
    lm_scores = ev.scores(lm_state)
    model, tok = AutoModelForCausalLM.from_pretrained(suite / "lm").eval(), AutoTokenizer.from_pretrained(suite / "lm")
    ids = tok((suite / "prose.txt").read_text())["input_ids"]
    with torch.no_grad():
        nll = sum(-float(F.log_softmax(model(input_ids=torch.tensor([ids[s:s + 8]])).logits[0, i - 1], -1)[ids[s + i]])
                  for s in range(0, len(ids), 8) for i in range(1, len(ids[s:s + 8])))
    count = sum(len(ids[s:s + 8]) - 1 for s in range(0, len(ids), 8) if len(ids[s:s + 8]) > 1)
    assert lm_scores["prose"].extra["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-5)
    assert tasks["prose"].splits == ("test", "val", "unlabeled") and tasks["prose"].description == "English"
    assert lm_scores["choice"].n == 2 and lm_scores["complete"].n == 1 and len(lm_scores["complete"].outputs) == 1

    reviews = Evaluator([tasks["reviews"]], device="cpu").scores(weights(suite / "classifier"))["reviews"]
    classifier = LlamaForSequenceClassification.from_pretrained(suite / "classifier").eval()
    with torch.no_grad():
        logits = torch.cat([classifier(**tok(t, return_tensors="pt")).logits for t in
                            ("the cat sat", "the dog ran in the park", "red apples")])
    labels = torch.tensor([1, 0, 0])
    assert reviews.accuracy == pytest.approx(float((logits.argmax(-1) == labels).float().mean()))
    assert reviews.loss == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-4)

    images = sorted((suite / "images").rglob("*.png"))
    image_labels = torch.tensor([0 if p.parent.name == "blue" else 1 for p in images])
    pixels = ViTImageProcessor.from_pretrained(suite / "vit")(images=[Image.open(p).convert("RGB") for p in images],
                                                             return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        vit_logits = ViTForImageClassification.from_pretrained(suite / "vit").eval()(pixel_values=pixels).logits
    colours = Evaluator([tasks["colours"]], device="cpu").scores(weights(suite / "vit"))["colours"]
    assert colours.n == 6 and colours.loss == pytest.approx(float(F.cross_entropy(vit_logits, image_labels)), rel=1e-4)

    clip = CLIPModel.from_pretrained(suite / "clip").eval()
    def declared_preprocessing(path):  # the manifest's image_size 8 with the default mean and std 0.5
        small = Image.open(path).convert("RGB").resize((8, 8), Image.Resampling.BILINEAR)
        x = torch.frombuffer(bytearray(small.tobytes()), dtype=torch.uint8).view(8, 8, 3).permute(2, 0, 1)
        return (x.float() / 255 - 0.5) / 0.5

    declared = torch.stack([declared_preprocessing(p) for p in images])
    prompts = tok(["a blue thing", "a red thing"], return_tensors="pt", padding=True)
    with torch.no_grad():
        clip_logits = clip(pixel_values=declared, **prompts).logits_per_image
    zero_shot = Evaluator([tasks["zero-shot"]], device="cpu").scores(weights(suite / "clip"))["zero-shot"]
    assert tasks["zero-shot"].classes == ("blue", "red")
    assert zero_shot.loss == pytest.approx(float(F.cross_entropy(clip_logits, image_labels)), rel=1e-4)

    plugin = Evaluator([tasks["task"]], device="cpu").scores({"weight": torch.eye(2), "bias": torch.zeros(2)})["task"]
    assert plugin.primary == "squared_error" and plugin.extra["squared_error"] == 0.5 and plugin.accuracy == 1.0
    assert plugin.to_json()["metrics"]["squared_error"] == {"value": 0.5, "higher_is_better": False}


# ---------------------------------------------------------------- data and model errors of the other kinds


def _manifest(folder: Path, *tasks: dict, base: str | None = None) -> Path:
    path = folder / "suite.json"
    path.write_text(json.dumps({"format": "weightsmith-suite", "version": 1, **({"base": base} if base else {}),
                                "tasks": list(tasks)}))
    return path


def test_image_errors_name_the_file(suite, tmp_path):
    images = image_folder(tmp_path / "images")
    (images / "red" / "1.png").write_bytes(b"not a png at all")
    manifest = _manifest(tmp_path, {"name": "c", "kind": "image-classification", "model": str(suite / "vit"),
                                    "data": "images"})
    with pytest.raises(EngineInputError, match="the image does not decode") as info:
        load_suite(manifest)[0].data("test")
    assert str(images / "red" / "1.png") in str(info.value)
    (images / "green").mkdir()
    with pytest.raises(EngineInputError, match="the class folder 'green' holds no images") as info:
        load_suite(manifest)[0].data("test")
    assert str(images / "green") in str(info.value)
    (images / "list.csv").write_text("path,label\nred/0.png,red\nred/9.png,red\n")
    csv_manifest = _manifest(tmp_path, {"name": "c", "kind": "image-classification", "model": str(suite / "vit"),
                                        "data": "images/list.csv"})
    with pytest.raises(EngineInputError, match="list.csv: line 3: image file not found"):
        load_suite(csv_manifest)[0].data("test")
    vit_bare = vit_classifier(tmp_path / "bare", processor=False)
    with pytest.raises(EngineInputError, match="no image processor.*declare 'image_size'"):
        load_suite(_manifest(tmp_path, {"name": "c", "kind": "image-classification", "model": str(vit_bare),
                                        "data": "images"}))


def test_a_base_lm_given_to_text_classification_names_its_config(suite, tmp_path):
    manifest = _manifest(tmp_path, {"name": "r", "kind": "text-classification", "data": str(suite / "reviews.csv")},
                         base=str(suite / "lm"))
    with pytest.raises(EngineInputError, match="needs a sequence-classification model.*LlamaForCausalLM") as info:
        load_suite(manifest)
    assert str(suite / "lm" / "config.json") in str(info.value)


def test_a_long_text_to_classify_is_cut_and_noted(suite, tmp_path):
    (tmp_path / "long.csv").write_text("text,label\n" + " ".join(["the cat sat on the mat"] * 20) + ",1\n")
    manifest = _manifest(tmp_path, {"name": "r", "kind": "text-classification", "model": str(suite / "classifier"),
                                    "data": "long.csv", "max_length": 10})
    (task,) = load_suite(manifest)
    assert task.data("test").inputs.shape == (1, 10)
    s = Evaluator([task], device="cpu").scores(weights(suite / "classifier"))["r"]
    assert s.notes == (f"{tmp_path / 'long.csv'}: 1 text(s) longer than 10 tokens were cut (line 2)",)


def test_a_plugin_without_a_metric_and_with_other_outputs_names_the_file(tmp_path):
    plugin = tmp_path / "regression.py"
    plugin.write_text(PLUGIN.replace("def metric(", "def unused(").replace("nn.Linear(2, 2)", "nn.Linear(2, 1)")
                      .replace("return net", "return nn.Sequential(net, nn.Flatten(0))"))
    (task,) = load_suite(_manifest(tmp_path, {"kind": "plugin", "file": "regression.py"}))
    state = {"weight": torch.ones(1, 2), "bias": torch.zeros(1)}
    message = r"defines no metric\(\).*returned \(2,\), not \[batch, classes\]"
    with pytest.raises(EngineInputError, match=message) as info:
        Evaluator([task], device="cpu").scores(state)
    assert str(plugin) in str(info.value)


# ---------------------------------------------------------------- the CLI


def test_weightsmith_evaluate_gives_per_domain_perplexity_in_strict_json(suite, tmp_path, capsys):
    causal_lm(tmp_path / "expert", seed=1)
    recipe = {"format": "weightsmith-recipe", "version": 1, "name": "lm",
              "nodes": [{"id": "base", "type": "checkpoint", "params": {"path": str(suite / "lm")}},
                        {"id": "expert", "type": "checkpoint", "params": {"path": str(tmp_path / "expert")}},
                        {"id": "merge", "type": "merge", "params": {"method": "linear"}},
                        {"id": "evaluate", "type": "evaluate", "params": {"suite": str(suite / "suite.json"),
                                                                          "tasks": ["python", "prose"]}}],
              "edges": [{"from": "base", "to": "merge", "port": "models"},
                        {"from": "expert", "to": "merge", "port": "models"},
                        *({"from": m, "to": "evaluate", "port": "models"} for m in ("merge", "base"))]}
    (tmp_path / "recipe.json").write_text(json.dumps(recipe))
    out = tmp_path / "results.json"
    assert main(["evaluate", str(tmp_path / "recipe.json"), "--out", str(out), "--device", "cpu"]) == 0
    assert "perplexi↓" in capsys.readouterr().out

    def no_constants(name):
        raise AssertionError(f"results hold {name}")

    result = json.loads(out.read_text(), parse_constant=no_constants)
    runs = {r["name"]: r for r in result["runs"]}
    domains = load_suite(suite / "suite.json", ["python", "prose"])
    direct = Evaluator(domains, device="cpu").scores(weights(suite / "lm"))
    for domain in ("python", "prose"):
        row = runs["base"]["tasks"][domain]
        assert row["perplexity"] == pytest.approx(direct[domain].extra["perplexity"], rel=1e-6)
        assert row["metrics"]["perplexity"]["higher_is_better"] is False and row["primary"] == "perplexity"
        assert runs["merge"]["tasks"][domain]["perplexity"] > 1
    assert runs["base"]["average"]["perplexity"] == pytest.approx(
        (direct["python"].extra["perplexity"] + direct["prose"].extra["perplexity"]) / 2)
