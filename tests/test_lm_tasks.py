"""Causal-LM task kinds on a tiny Llama made here: perplexity and multiple-choice log-likelihoods checked
against a direct torch loop, greedy generation against transformers' own, stop strings, chat templates,
cut texts and unfinished generations noted, and every bad input named by file and line."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")

from engine.errors import EngineInputError  # noqa: E402
from engine.evaluation import Evaluator  # noqa: E402
from engine.evaluation.lm_tasks import GenerationTask, MultipleChoiceTask, TextPerplexityTask  # noqa: E402
from engine.evaluation.metrics import Scores  # noqa: E402
from engine.evaluation.runner import result_table  # noqa: E402
from hf_helpers import CONTEXT, causal_lm, continuation_loglik, make_tokenizer, weights, write_jsonl  # noqa: E402

TEXT = ("the cat sat on the mat and the dog ran in the park.\n"
        "red apples and green pears, blue sky over the sea.\n"
        "def add(x, y): return x + y\n")


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    """(folder, its model, its tokenizer, its state dict)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = causal_lm(tmp_path_factory.mktemp("lm") / "llama")
    return folder, AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder), \
        weights(folder)


# ---------------------------------------------------------------- text-perplexity


@torch.no_grad()
def _block_stats(model, ids: list[int], block: int) -> tuple[float, int, int]:
    """(summed NLL, tokens predicted, tokens predicted right) over non-overlapping blocks, by a loop."""
    nll, count, right = 0.0, 0, 0
    for start in range(0, len(ids), block):
        chunk = ids[start:start + block]
        if len(chunk) < 2:
            continue
        logits = model(input_ids=torch.tensor([chunk])).logits[0]
        for i in range(1, len(chunk)):
            log_p = F.log_softmax(logits[i - 1].double(), dim=-1)
            nll -= float(log_p[chunk[i]])
            right += int(int(logits[i - 1].argmax()) == chunk[i])
            count += 1
    return nll, count, right


def test_perplexity_matches_a_direct_loop(lm, tmp_path):
    folder, model, tok, state = lm
    path = tmp_path / "domain.txt"
    path.write_text(TEXT, encoding="utf-8")
    ids = tok(TEXT)["input_ids"]
    assert len(ids) % 8 != 0  # a shorter last block is scored too
    task = TextPerplexityTask(folder, path, block_size=8)
    s = Evaluator([task], device="cpu").scores(state)[task.name]
    nll, count, right = _block_stats(model, ids, 8)
    assert s.n == count and s.accuracy == right / count
    assert s.loss == pytest.approx(nll / count, rel=1e-5)
    assert s.extra["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-5)
    assert s.primary == "perplexity" and s.notes == ()
    row = s.to_json()
    assert row["metrics"]["perplexity"]["higher_is_better"] is False and row["metrics"]["accuracy"]["higher_is_better"]


def test_max_tokens_folders_and_an_overlong_block(lm, tmp_path):
    folder, model, tok, state = lm
    domain = tmp_path / "domain"
    domain.mkdir()
    (domain / "a.txt").write_text(TEXT[:52], encoding="utf-8")
    (domain / "b.txt").write_text(TEXT[52:], encoding="utf-8")
    ids = tok(TEXT[:52])["input_ids"] + [tok.eos_token_id] + tok(TEXT[52:])["input_ids"]  # documents joined by </s>
    task = TextPerplexityTask(folder, domain, block_size=10, max_tokens=25)
    s = Evaluator([task], device="cpu").scores(state)[task.name]
    nll, count, _ = _block_stats(model, ids[:25], 10)
    assert s.n == count and s.loss == pytest.approx(nll / count, rel=1e-5)
    assert any(f"the first 25 of {len(ids)} tokens" in n for n in s.notes)
    long = TextPerplexityTask(folder, domain, block_size=1000)
    assert long.data("test").inputs.shape[-1] == CONTEXT  # cut to the model's context, and said so
    assert any("longer than the model's context" in n for n in long.notes("test"))


def test_batches_follow_the_memory_budget_and_half_precision_falls_back_on_the_cpu(lm, tmp_path):
    folder, _, _, state = lm
    path = tmp_path / "domain.txt"
    path.write_text(TEXT * 3, encoding="utf-8")
    whole = TextPerplexityTask(folder, path, block_size=32, name="whole")
    small = TextPerplexityTask(folder, path, block_size=32, memory_mb=1, dtype="bf16", name="small")
    evaluator = Evaluator([whole, small], device="cpu")
    scores = evaluator.scores(state)
    per_row = small.row_bytes(32)  # tokens × (logits and their softmax copies + activations) + attention
    assert evaluator.batch_size_for(small) == 2 ** 20 // per_row < len(small.data("test")) <= evaluator.batch_size_for(whole)
    assert scores["small"].loss == pytest.approx(scores["whole"].loss, rel=1e-6) and scores["whole"].notes == ()
    assert scores["small"].notes == ("dtype bf16 applies on a CUDA device only; scored in fp32 on cpu",)


# ---------------------------------------------------------------- multiple-choice


CHOICE_ROWS = [
    {"question": "the cat sat on the", "choices": ["mat", "sea", "park"], "answer": 0},
    {"context": "red apples and green", "choices": ["pears", "sky over the dog"], "answer": "pears"},
    {"question": "def add(x, y): return", "choices": ["x + y", "print", "one two", "blue"], "answer": 3},
]


def test_multiple_choice_log_likelihoods_by_hand(lm, tmp_path):
    folder, model, tok, state = lm
    path = write_jsonl(tmp_path / "choice.jsonl", CHOICE_ROWS)
    task = MultipleChoiceTask(folder, path, delimiter=" ")
    data = task.data("test")
    assert data.inputs.shape[:3] == (3, 5, 2)  # the question, then up to four choices
    with torch.no_grad():
        got = task.build_model(state)(data.inputs)
    expected = []
    for row in CHOICE_ROWS:
        context = tok(row.get("question", row.get("context")))["input_ids"]
        lls = [continuation_loglik(model, context, tok(" " + c, add_special_tokens=False)["input_ids"])
               for c in row["choices"]]
        expected.append(lls)
    for i, lls in enumerate(expected):
        assert got[i, :len(lls)].tolist() == pytest.approx(lls, abs=1e-4)
        assert torch.isinf(got[i, len(lls):]).all()  # missing choices never win
    answers = [0, 0, 3]
    acc = sum(max(range(len(lls)), key=lls.__getitem__) == a for lls, a in zip(expected, answers)) / 3
    norm = sum(max(range(len(lls)), key=lambda k: lls[k] / len(row["choices"][k])) == a
               for lls, a, row in zip(expected, answers, CHOICE_ROWS)) / 3
    s = Evaluator([task], device="cpu").scores(state)[task.name]
    assert s.n == 3 and s.accuracy == pytest.approx(acc) and s.extra["accuracy_norm"] == pytest.approx(norm)
    assert s.loss is None and "loss" not in s.to_json()  # a metric that does not apply is absent


def test_a_question_longer_than_the_context_is_cut_from_the_left_and_noted(lm, tmp_path):
    folder, model, tok, state = lm
    long = " ".join(["one two three four five"] * 12)
    path = write_jsonl(tmp_path / "long.jsonl", [CHOICE_ROWS[0], {"question": long, "choices": ["six", "seven"],
                                                                  "answer": 0}])
    task = MultipleChoiceTask(folder, path, delimiter=" ")
    with torch.no_grad():
        got = task.build_model(state)(task.data("test").inputs)
    ids = tok(long)["input_ids"]
    six, seven = (tok(c, add_special_tokens=False)["input_ids"] for c in (" six", " seven"))
    keep = ids[-(CONTEXT - max(len(six), len(seven))):]  # room for the longest choice
    assert len(ids) + len(six) > CONTEXT
    assert float(got[1, 0]) == pytest.approx(continuation_loglik(model, keep, six), abs=1e-4)
    assert float(got[1, 1]) == pytest.approx(continuation_loglik(model, keep, seven), abs=1e-4)
    assert task.notes("test") == [f"{path}: 1 question(s) were cut to the model's context of {CONTEXT} tokens (line 2)"]


# ---------------------------------------------------------------- generation


def _greedy(model, tok, prompt: str, steps: int) -> list[int]:
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=None)
    return out[0, ids.shape[1]:].tolist()


def test_greedy_generation_matches_transformers_and_cuts_at_a_stop_string(lm, tmp_path):
    folder, model, tok, state = lm
    prompts = ["the cat", "def add(x, y):", "blue sky over the sea and"]
    texts = [tok.decode(_greedy(model, tok, p, 6)) for p in prompts]
    stop = texts[0][3]  # a character the first output holds: its text is cut there
    expected = [t[:t.index(stop)] if stop in t else t for t in texts]
    rows = [{"prompt": prompts[0], "reference": expected[0]},
            {"prompt": prompts[1], "reference": ["no", expected[1]]},
            {"prompt": prompts[2], "reference": "something else"}]
    path = write_jsonl(tmp_path / "gen.jsonl", rows)
    task = GenerationTask(folder, path, max_new_tokens=6, stop=[stop], strip=False)
    with torch.no_grad():  # the three prompts are padded on the left in one batch
        generated = task.build_model(state)(task.data("test").inputs)
    for row, prompt, text in zip(generated.tolist(), prompts, texts):
        tokens = [t for t in row if t >= 0]
        assert tokens == _greedy(model, tok, prompt, 6)[:len(tokens)]
        assert stop in tok.decode(tokens) or len(tokens) == 6
    s = Evaluator([task], device="cpu").scores(state)[task.name]
    assert s.n == 3 and s.accuracy == pytest.approx(2 / 3) and s.extra["exact_match"] == pytest.approx(2 / 3)
    assert [o["output"] for o in s.outputs] == expected and [o["correct"] for o in s.outputs] == [True, True, False]
    assert [o["line"] for o in s.outputs] == [1, 2, 3]
    json.dumps(s.to_json(), allow_nan=False)


def test_contains_regex_and_a_generation_that_never_stops(lm, tmp_path):
    folder, model, tok, state = lm
    out = tok.decode(_greedy(model, tok, "the dog", 5))
    path = write_jsonl(tmp_path / "gen.jsonl", [{"prompt": "the dog", "reference": out[1:3]}])
    contains = GenerationTask(folder, path, max_new_tokens=5, stop=["NEVER"], match="contains", strip=False)
    s = Evaluator([contains], device="cpu").scores(state)[contains.name]
    assert s.accuracy == 1.0 and s.extra["contains"] == 1.0 and s.outputs[0]["output"] == out
    assert s.notes == (f"{path}: 1 generation(s) reached max_new_tokens (5) without a stop (line 1)",)
    write_jsonl(path, [{"prompt": "the dog", "reference": "^" + "." * len(out) + "$"}])
    regex = GenerationTask(folder, path, max_new_tokens=5, stop=["NEVER"], match="regex", strip=False)
    assert Evaluator([regex], device="cpu").scores(state)[regex.name].extra["regex_match"] == 1.0


def test_a_prompt_longer_than_the_context_is_cut_and_noted(lm, tmp_path):
    folder, _, tok, _ = lm
    long = " ".join(["red apples and green pears"] * 10)
    path = write_jsonl(tmp_path / "gen.jsonl", [{"prompt": long, "reference": "x"}])
    task = GenerationTask(folder, path, max_new_tokens=8)
    assert task.data("test").inputs.shape[-1] == CONTEXT - 8
    assert task.data("test").inputs[0, 0].tolist() == tok(long)["input_ids"][-(CONTEXT - 8):]
    assert "1 prompt(s) were cut to 40 tokens" in task.notes("test")[0] and str(path) in task.notes("test")[0]


def test_chat_template_wraps_prompts_when_declared(lm, tmp_path):
    folder, _, tok, _ = lm
    chat = tmp_path / "chat-tokenizer"
    templated = make_tokenizer()
    templated.chat_template = ("{% for m in messages %}<s>{{ m['content'] }}</s>{% endfor %}"
                               "{% if add_generation_prompt %}<s>{% endif %}")
    templated.save_pretrained(chat)
    path = write_jsonl(tmp_path / "gen.jsonl", [{"prompt": "the cat", "reference": "x"}])
    task = GenerationTask(folder, path, tokenizer=chat, chat_template=True)
    assert task.encode_prompt("the cat") == tok("<s>the cat</s><s>", add_special_tokens=False)["input_ids"]
    with pytest.raises(EngineInputError, match="no chat template"):
        GenerationTask(folder, path, chat_template=True)


# ---------------------------------------------------------------- bad inputs: file and line named


@pytest.mark.parametrize("name, content, kind, message", [
    ("missing.txt", None, "text", "text file not found"),
    ("empty.txt", "  \n\n", "text", "the text file is empty"),
    ("latin1.txt", b"the cat\nsat \xe9 on\n", "text", "line 2 is not valid UTF-8"),
    ("bad.jsonl", '{"question": "a", "choices": ["b", "c"], "answer": 0}\n{"question": broken\n', "choice",
     "line 2 is not valid JSON"),
    ("one.jsonl", '{"question": "a", "choices": ["b"], "answer": 0}\n', "choice",
     "line 1: a choice list needs at least two entries"),
    ("range.jsonl", '\n{"question": "a", "choices": ["b", "c"], "answer": 5}\n', "choice",
     "line 2: answer index 5 is outside 0…1"),
    ("text.jsonl", '{"question": "a", "choices": ["b", "c"], "answer": "d"}\n', "choice",
     "line 1: answer 'd' is neither a choice index nor one of the choices"),
    ("noq.jsonl", '{"prompt": "a", "choices": ["b", "c"], "answer": 0}\n', "choice", "line 1 has no 'question' field"),
    ("empty.jsonl", "\n", "choice", "holds no examples"),
    ("noref.jsonl", '{"prompt": "a"}\n', "generate", "line 1 has no 'reference' field"),
    ("regex.jsonl", '{"prompt": "a", "reference": "(unclosed"}\n', "regex",
     r"line 1: reference '\(unclosed' is not a valid"),
])
def test_bad_data_names_the_file_and_line(lm, tmp_path, name, content, kind, message):
    folder = lm[0]
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    task = {"text": lambda: TextPerplexityTask(folder, path),
            "choice": lambda: MultipleChoiceTask(folder, path),
            "generate": lambda: GenerationTask(folder, path),
            "regex": lambda: GenerationTask(folder, path, match="regex")}[kind]()
    with pytest.raises(EngineInputError, match=message) as info:
        task.data("test")
    assert str(path) in str(info.value)


def test_bad_models_name_the_folder(lm, tmp_path):
    folder = lm[0]
    text = tmp_path / "t.txt"
    text.write_text(TEXT, encoding="utf-8")
    no_tokenizer = tmp_path / "weights-only"
    no_tokenizer.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(folder / f, no_tokenizer / f)
    with pytest.raises(EngineInputError, match="cannot load a tokenizer.*declare 'tokenizer'") as info:
        TextPerplexityTask(no_tokenizer, text)
    assert str(no_tokenizer) in str(info.value)
    assert TextPerplexityTask(no_tokenizer, text, tokenizer=folder).data("test").inputs.shape[0] > 0
    with pytest.raises(EngineInputError, match="max_new_tokens 48 leaves no room"):
        GenerationTask(folder, text, max_new_tokens=CONTEXT)


# ---------------------------------------------------------------- metric directions, strict JSON


def test_normalized_score_follows_the_metric_direction():
    merged = Scores(100, 0.3, 0.05, 3.0, 2.0, extra={"perplexity": 20.0}, primary="perplexity")
    expert = Scores(100, 0.4, 0.05, 2.3, 1.5, extra={"perplexity": 10.0}, primary="perplexity")
    row = result_table({"t": merged}, {"t": expert})["tasks"]["t"]
    assert row["normalized_score"] == pytest.approx(10.0 / 20.0)  # lower is better: expert / merged
    assert row["normalized_accuracy"] == pytest.approx(0.3 / 0.4)  # higher is better: merged / expert
    assert row["metrics"]["perplexity"] == {"value": 20.0, "higher_is_better": False}
    assert row["metrics"]["normalized_score"] == {"value": 0.5, "higher_is_better": True}
    assert row["expert_score"] == 10.0


def test_non_finite_metrics_are_left_out_with_a_note_and_results_are_strict_json():
    s = Scores(4, 0.5, 0.25, float("nan"), float("inf"), extra={"perplexity": float("inf")}, primary="perplexity")
    assert s.loss is None and s.entropy is None and "perplexity" not in s.extra
    assert any("loss came out nan" in n for n in s.notes)
    table = result_table({"t": s}, {"t": None})
    text = json.dumps(table, allow_nan=False)
    assert "NaN" not in text and "loss" not in table["tasks"]["t"] and table["tasks"]["t"]["normalized_score"] is None
