"""Tasks an Evaluate node declares itself: detect_task on every file shape with each kind of model, previews
as the readers parse them, inline entries scored through EvaluationService (alone, with a suite, filtered),
and bad entries reported by validation with file and line, without loading a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")

import engine.evaluation.hf as hf  # noqa: E402
from engine.errors import EngineInputError  # noqa: E402
from engine.evaluation import EvaluationService, Evaluator  # noqa: E402
from engine.evaluation.service import node_tasks  # noqa: E402
from engine.evaluation.suite import load_tasks  # noqa: E402
from engine.evaluation.task_detection import CLIP_MEAN, CLIP_STD, detect_task, preview_task  # noqa: E402
from engine.graph import Recipe, validate  # noqa: E402
from engine.graph.node_kinds import EVALUATE  # noqa: E402
from hf_helpers import (CONTEXT, causal_lm, clip_model, image_folder, sequence_classifier, vit_classifier,  # noqa: E402
                        weights, write_jsonl)

CHOICES = [{"question": "the cat sat on the", "choices": ["mat", "sea"], "answer": 0},
           {"question": "blue sky over the", "choices": ["sea", "cat"], "answer": "sea"},
           {"question": "red apples and green", "choices": ["pears", "dog"], "answer": 0}]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Models of every kind and data files of every shape, in one folder."""
    root = tmp_path_factory.mktemp("tasks")
    causal_lm(root / "lm")
    sequence_classifier(root / "classifier")
    vit_classifier(root / "vit")
    clip_model(root / "clip")
    image_folder(root / "images")
    data = root / "data"
    data.mkdir()
    (data / "prose.txt").write_text("the cat sat on the mat\n\nthe dog ran in the park\n", encoding="utf-8")
    (data / "notes.md").write_text("# notes\nred apples and green pears\n", encoding="utf-8")
    (data / "code.py").write_text("def add(x, y): return x + y\nprint('hello world')\n", encoding="utf-8")
    (data / "domain").mkdir()
    (data / "domain" / "a.txt").write_text("one two three four five\n", encoding="utf-8")
    write_jsonl(data / "trivia.jsonl", CHOICES)
    write_jsonl(data / "complete.jsonl", [{"prompt": "the cat", "reference": "sat"},
                                          {"prompt": "the dog", "reference": ["ran", "sat"]}])
    write_jsonl(data / "qa.jsonl", [{"question": "one two", "answer": "three"}])
    (data / "reviews.csv").write_text("text,label\nthe cat sat,positive\nthe dog ran in the park,0\n", encoding="utf-8")
    write_jsonl(data / "sentences.jsonl", [{"sentence": "a good day", "label": "positive"}])
    (data / "pictures.csv").write_text("image,label\n../images/red/0.png,red\n../images/blue/1.png,blue\n",
                                       encoding="utf-8")
    return root


# ---------------------------------------------------------------- detect_task


@pytest.mark.parametrize("file, model, expected", [
    ("data/prose.txt", "lm", {"name": "prose", "kind": "text-perplexity", "block_size": CONTEXT}),
    ("data/notes.md", "lm", {"name": "notes", "kind": "text-perplexity"}),
    ("data/code.py", "lm", {"name": "code", "kind": "text-perplexity"}),
    ("data/domain", "lm", {"name": "domain", "kind": "text-perplexity"}),
    ("data/trivia.jsonl", "lm", {"name": "trivia", "kind": "multiple-choice", "delimiter": " "}),
    ("data/complete.jsonl", "lm", {"name": "complete", "kind": "generation", "max_new_tokens": CONTEXT // 2}),
    ("data/qa.jsonl", "lm", {"kind": "generation", "prompt_field": "question", "reference_field": "answer"}),
    ("data/reviews.csv", "classifier", {"name": "reviews", "kind": "text-classification", "max_length": CONTEXT}),
    ("data/sentences.jsonl", "classifier", {"kind": "text-classification", "text_field": "sentence"}),
    ("images", "vit", {"name": "images", "kind": "image-classification"}),
    ("data/pictures.csv", "vit", {"kind": "image-classification", "image_field": "image"}),
    ("images", "clip", {"kind": "image-classification", "image_size": 8, "mean": CLIP_MEAN, "std": CLIP_STD}),
])
def test_detect_task_on_every_file_shape(root, file, model, expected):
    entry = detect_task(root / file, root / model, relative_to=root)
    assert entry["data"] == file and entry["model"] == model
    assert {k: entry[k] for k in expected} == expected
    if model == "vit":  # the folder has an image processor: no declared preprocessing
        assert "image_size" not in entry
    # the entry is a valid manifest entry: it loads (tokenizer, config; data stays lazy) and previews
    [task] = load_tasks(None, [entry], root)
    assert task.name == entry["name"]
    assert preview_task(entry, root, 2)


def test_a_checkpoint_file_stands_for_its_folder_and_names_stay_unique(root, tmp_path):
    weights_file = next((root / "lm").glob("*.safetensors"))
    entry = detect_task(root / "data" / "trivia.jsonl", weights_file, taken=["trivia", "trivia-2"])
    assert entry["name"] == "trivia-3"
    assert entry["model"] == str((root / "lm").resolve()) and Path(entry["data"]).is_absolute()
    outside = write_jsonl(tmp_path / "elsewhere.jsonl", CHOICES)
    assert detect_task(outside, root / "lm", relative_to=root)["data"] == str(outside.resolve())


@pytest.mark.parametrize("file, model, message", [
    ("data/reviews.csv", "lm", r"labelled texts \(text classification\) need a sequence classifier.*causal language"),
    ("data/trivia.jsonl", "classifier", "multiple-choice questions need a causal language model"),
    ("images", "lm", "labelled images need an image classifier .* or a CLIP model"),
    ("data/nope.jsonl", "lm", "data file not found"),
    ("data/odd.bin", "lm", "cannot tell which task a '.bin' file is"),
    ("data/fields.jsonl", "lm", r"cannot tell the task from the fields of line 1 \(id, body\)"),
    ("data/empty.jsonl", "lm", "the data file holds no examples"),
    ("data/trivia.jsonl", "data", "not a Hugging Face model folder"),
])
def test_files_that_make_no_task_are_errors_naming_the_file(root, file, model, message):
    (root / "data" / "odd.bin").write_bytes(b"\0\1")
    write_jsonl(root / "data" / "fields.jsonl", [{"id": 1, "body": "x"}])
    (root / "data" / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(EngineInputError, match=message) as info:
        detect_task(root / file, root / model)
    assert info.value.path is not None and Path(info.value.path).name in str(info.value)


def test_a_model_folder_without_a_tokenizer_is_named(root, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((root / "lm" / "config.json").read_text())
    with pytest.raises(EngineInputError, match="no tokenizer files") as info:
        detect_task(root / "data" / "prose.txt", bare)
    assert info.value.path == str(bare.resolve())


# ---------------------------------------------------------------- previews


def test_preview_gives_the_first_examples_as_the_readers_parse_them(root):
    trivia = detect_task(root / "data" / "trivia.jsonl", root / "lm", relative_to=root)
    assert preview_task(trivia, root, 2) == [
        {"file": str(root / "data" / "trivia.jsonl"), "line": 1, "question": "the cat sat on the",
         "choices": ["mat", "sea"], "answer": "mat"},
        {"file": str(root / "data" / "trivia.jsonl"), "line": 2, "question": "blue sky over the",
         "choices": ["sea", "cat"], "answer": "sea"}]
    prose = preview_task(detect_task(root / "data" / "prose.txt", root / "lm"), root, 5)
    assert [(e["line"], e["text"]) for e in prose] == [(1, "the cat sat on the mat"), (3, "the dog ran in the park")]
    complete = preview_task(detect_task(root / "data" / "complete.jsonl", root / "lm"), root)
    assert complete[1]["reference"] == ["ran", "sat"]
    reviews = preview_task(detect_task(root / "data" / "reviews.csv", root / "classifier"), root)
    assert [(e["line"], e["label"]) for e in reviews] == [(2, "positive"), (3, "negative")]  # index 0 named
    images = preview_task(detect_task(root / "images", root / "vit"), root, 4)
    assert [Path(e["file"]).parent.name for e in images] == ["blue", "blue", "blue", "red"]


@pytest.mark.parametrize("rows, message", [
    ([CHOICES[0], {"question": "x", "choices": ["a"], "answer": 0}], "line 2: a choice list needs at least two"),
    ([CHOICES[0], {"question": "x", "choices": ["a", "b"], "answer": 5}], r"line 2: answer index 5 is outside 0…1"),
    ([CHOICES[0], {"choices": ["a", "b"], "answer": 0}], "line 2 has no 'question' field"),
])
def test_preview_errors_name_file_and_line(root, tmp_path, rows, message):
    bad = write_jsonl(tmp_path / "bad.jsonl", rows)
    entry = {"name": "bad", "kind": "multiple-choice", "data": str(bad), "model": str(root / "lm")}
    with pytest.raises(EngineInputError, match=message) as info:
        preview_task(entry, tmp_path)
    assert info.value.path == str(bad)


# ---------------------------------------------------------------- an Evaluate node's own tasks


def _recipe(root: Path, entries: list, **params) -> Recipe:
    return Recipe.from_json({
        "format": "weightsmith-recipe", "version": 1, "name": "inline",
        "nodes": [{"id": "lm", "type": "checkpoint", "params": {"path": "lm"}},
                  {"id": "evaluate", "type": "evaluate", "params": {"task_entries": entries, **params}}],
        "edges": [{"from": "lm", "to": "evaluate", "port": "models"}]}, root)


def test_inline_entries_are_scored_through_the_evaluation_service(root):
    entries = [detect_task(root / "data" / f, root / "lm", relative_to=root) for f in ("trivia.jsonl", "prose.txt")]
    recipe = _recipe(root, entries)
    assert validate(recipe) == []
    assert EVALUATE.subtitle(recipe.nodes["evaluate"]) == "2 tasks"
    [run] = EvaluationService(device="cpu").evaluate(recipe)["runs"]
    direct = Evaluator(load_tasks(None, entries, root), device="cpu").scores(weights(root / "lm"))
    assert run["tasks"]["trivia"]["accuracy"] == direct["trivia"].accuracy and run["tasks"]["trivia"]["n"] == 3
    assert run["tasks"]["prose"]["perplexity"] == pytest.approx(direct["prose"].extra["perplexity"], rel=1e-6)
    assert run["tasks"]["prose"]["primary"] == "perplexity"


def test_inline_entries_join_a_suite_and_the_tasks_filter(root, tmp_path):
    suite = {"format": "weightsmith-suite", "version": 1, "name": "s", "base": "../lm",
             "tasks": [{"name": "code", "kind": "text-perplexity", "data": "../data/code.py", "block_size": 16}]}
    (root / "suites").mkdir(exist_ok=True)
    (root / "suites" / "suite.json").write_text(json.dumps(suite))
    trivia = detect_task(root / "data" / "trivia.jsonl", root / "lm", relative_to=root)
    recipe = _recipe(root, [trivia], suite="suites/suite.json")
    assert [t.name for t in node_tasks(recipe, "evaluate")] == ["code", "trivia"]
    assert EVALUATE.subtitle(recipe.nodes["evaluate"]) == "suite.json + 1 task"
    recipe.set_param("evaluate", "tasks", ["trivia"])
    [run] = EvaluationService(device="cpu").evaluate(recipe)["runs"]
    assert list(run["tasks"]) == ["trivia"]
    recipe.set_param("evaluate", "tasks", [])
    recipe.set_param("evaluate", "task_entries", [dict(trivia, name="code")])
    with pytest.raises(EngineInputError, match="two tasks are named 'code'"):
        node_tasks(recipe, "evaluate")
    recipe.set_param("evaluate", "suite", "")
    recipe.set_param("evaluate", "task_entries", [])
    with pytest.raises(EngineInputError, match="names no task suite .* no tasks of its own"):
        EvaluationService(device="cpu").evaluate(recipe)


def test_validation_reports_bad_entries_with_file_and_line_without_loading_a_model(root, tmp_path, monkeypatch):
    def no_models():
        raise AssertionError("validation loaded a model")

    monkeypatch.setattr(hf, "transformers_module", no_models)
    bad = write_jsonl(tmp_path / "bad.jsonl", [CHOICES[0], CHOICES[1], {"question": "x", "choices": "ab", "answer": 0}])
    trivia = detect_task(root / "data" / "trivia.jsonl", root / "lm", relative_to=root)
    cases = [
        ([dict(trivia, data=str(bad))], f"task 'trivia' (multiple-choice): {bad}: line 3: 'choices' must be a list"),
        ([dict(trivia, colour="red")], "task 'trivia' (multiple-choice): unknown field(s) 'colour'"),
        ([trivia, {"name": "x", "data": "data/prose.txt"}], "task entry 2 (x) names no kind"),
        ([dict(trivia, model="nowhere")], "task 'trivia' (multiple-choice): " + str(root / "nowhere")),
        ([{"name": "y", "kind": "text-perplexity", "data": "data/prose.txt"}],
         "task 'y' (text-perplexity): names no model: give 'model'"),
        ([trivia, trivia], "two task entries are named 'trivia'"),
        ("trivia.jsonl", "'task_entries' must be a list of task entries"),
    ]
    for entries, message in cases:
        problems = validate(_recipe(root, entries), open_files=False)
        assert [p.node_id for p in problems] == ["evaluate"], (entries, problems)
        assert message in problems[0].message, problems[0].message
        assert "(task entries)" not in problems[0].message  # inline entries have no manifest file to name
    assert validate(_recipe(root, [trivia]), open_files=False) == []
    # the data file changes on disk: validation reads it again
    good_then_bad = write_jsonl(tmp_path / "changing.jsonl", CHOICES)
    recipe = _recipe(root, [dict(trivia, data=str(good_then_bad))])
    assert validate(recipe, open_files=False) == []
    write_jsonl(good_then_bad, [CHOICES[0], {"question": "x", "choices": ["a", "b"]}])
    assert "line 2 has no 'answer' field" in validate(recipe, open_files=False)[0].message


def test_saving_elsewhere_rebases_the_paths_in_task_entries(root, tmp_path):
    """The entries' data and model paths are relative to the recipe: saved into another folder they are
    rewritten to name the same files, and the project reader makes them absolute."""
    from app.project import absolutize_paths

    trivia = detect_task(root / "data" / "trivia.jsonl", root / "lm", relative_to=root)
    assert not Path(trivia["data"]).is_absolute()
    recipe = _recipe(root, [trivia])
    target = tmp_path / "elsewhere" / "deeper" / "recipe.json"
    target.parent.mkdir(parents=True)
    recipe.save(target)
    saved = json.loads(target.read_text())
    [entry] = saved["nodes"][1]["params"]["task_entries"]
    assert (target.parent / entry["data"]).resolve() == (root / "data" / "trivia.jsonl").resolve()
    assert (target.parent / entry["model"]).resolve() == (root / "lm").resolve()
    assert recipe.nodes["evaluate"].params["task_entries"] == [trivia]  # the open recipe is unchanged
    moved = Recipe.load(target)
    assert validate(moved, open_files=False) == []
    assert [t.name for t in node_tasks(moved, "evaluate")] == ["trivia"]
    absolute = absolutize_paths(saved, target.parent)
    [entry] = absolute["nodes"][1]["params"]["task_entries"]
    assert entry["data"] == str((root / "data" / "trivia.jsonl").resolve())
    assert entry["model"] == str((root / "lm").resolve())
