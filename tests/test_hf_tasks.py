"""Hugging Face task adapters on tiny randomly initialised models made here (no download): sequence
classification on CSV/JSONL files, causal-LM perplexity on a text file, bad data files, and a merge
of two such models evaluated end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from safetensors.torch import save_file  # noqa: E402

from engine.errors import EngineInputError  # noqa: E402
from engine.evaluation import Evaluator  # noqa: E402
from engine.evaluation.hf import HFSequenceClassificationTask  # noqa: E402
from engine.evaluation.lm_tasks import TextPerplexityTask  # noqa: E402
from engine.evaluation.metrics import perplexity  # noqa: E402
from engine.graph import materialize  # noqa: E402
from engine.graph.build import simple_merge_recipe  # noqa: E402

WORDS = "the a good bad movie film great awful plot acting was is very not".split()


def make_tokenizer():
    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    core = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]")


def save_model(model, tokenizer, folder):
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(WORDS) + 2, hidden_size=16, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=32,
                                     num_labels=2, id2label={0: "negative", 1: "positive"},
                                     label2id={"negative": 0, "positive": 1})
    model = transformers.BertForSequenceClassification(config)
    return save_model(model, make_tokenizer(), tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=len(WORDS) + 2, n_embd=16, n_layer=2, n_head=2, n_positions=32)
    model = transformers.GPT2LMHeadModel(config)
    return save_model(model, make_tokenizer(), tmp_path_factory.mktemp("gpt2"))


def write_reviews(folder):
    rows = [("a good movie", "positive"), ("the film was awful", "negative"), ("great acting", 1),
            ("bad plot", 0), ("the movie is very good", "positive"), ("not good", "negative")]
    csv_path = folder / "reviews.csv"
    csv_path.write_text("text,label\n" + "\n".join(f"{t},{label}" for t, label in rows) + "\n", encoding="utf-8")
    jsonl_path = folder / "reviews.jsonl"
    jsonl_path.write_text("\n".join(json.dumps({"text": t, "label": label}) for t, label in rows) + "\n",
                          encoding="utf-8")
    return csv_path, jsonl_path


def weights(folder):
    from engine.checkpoints import open_checkpoint

    with open_checkpoint(folder) as ckpt:
        return {n: ckpt.get(n, dtype=torch.float32) for n in ckpt.names}


def test_sequence_classification_accuracy_matches_the_model(bert_dir, tmp_path):
    csv_path, jsonl_path = write_reviews(tmp_path)
    task = HFSequenceClassificationTask(bert_dir, csv_path)
    assert task.classes == ("negative", "positive")
    data = task.data("test")
    assert data.labels.tolist() == [1, 0, 1, 0, 1, 0]
    assert task.data("unlabeled").labels is None
    state = weights(bert_dir)
    model = transformers.BertForSequenceClassification.from_pretrained(bert_dir).eval()
    with torch.no_grad():
        mask = (data.inputs != 0).long()
        expected = model(input_ids=data.inputs, attention_mask=mask).logits
        assert torch.allclose(task.build_model(state)(data.inputs), expected, atol=1e-5)
        assert torch.allclose(task.forward(state, data.inputs), expected, atol=1e-5)
    accuracy = float((expected.argmax(-1) == data.labels).float().mean())
    scores = Evaluator([task], device="cpu").scores(state)[task.name]
    assert scores.n == 6 and scores.accuracy == pytest.approx(accuracy)
    jsonl = HFSequenceClassificationTask(bert_dir, jsonl_path)
    assert torch.equal(jsonl.data("test").inputs, data.inputs)


def test_perplexity_is_the_exponential_of_the_token_loss(gpt2_dir, tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text(" ".join(WORDS * 6), encoding="utf-8")
    task = TextPerplexityTask(gpt2_dir, text, block_size=16)
    inputs = task.data("test").inputs
    assert inputs.shape == (6, 2, 16)  # 84 tokens → 5 full blocks and a 4-token tail (ids, attention mask)
    state = weights(gpt2_dir)
    assert "lm_head.weight" not in state  # tied to the token embedding; the adapter follows the tie
    scores = Evaluator([task], device="cpu").scores(state)[task.name]
    model = transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir).eval()
    with torch.no_grad():
        blocks = [row[0][row[1].bool()] for row in inputs]
        nll = sum(float(model(input_ids=b[None], labels=b[None]).loss) * (len(b) - 1) for b in blocks)
    assert scores.n == 5 * 15 + 3
    assert scores.loss == pytest.approx(nll / scores.n, rel=1e-4)
    assert perplexity(scores.loss) == pytest.approx(math.exp(nll / scores.n), rel=1e-4)
    assert scores.extra["perplexity"] == pytest.approx(perplexity(scores.loss)) and scores.primary == "perplexity"


def test_merged_hf_models_evaluate_end_to_end(bert_dir, tmp_path):
    csv_path, _ = write_reviews(tmp_path)
    state = weights(bert_dir)
    other = {n: t + 0.05 * torch.randn_like(t) for n, t in state.items()}
    save_file(other, str(tmp_path / "other.safetensors"))
    recipe = simple_merge_recipe("linear", [bert_dir / "model.safetensors", tmp_path / "other.safetensors"])
    merged = materialize(recipe, "merge", device="cpu")
    task = HFSequenceClassificationTask(bert_dir, csv_path, expert=bert_dir / "model.safetensors")
    report = Evaluator([task], device="cpu").report(merged)
    row = report["tasks"][task.name]
    assert row["n"] == 6 and 0.0 <= row["accuracy"] <= 1.0 and row["normalized_accuracy"] is not None


@pytest.mark.parametrize("name, content, message", [
    ("missing.csv", None, "not found"),
    ("bad.jsonl", '{"text": "a good movie", "label": 1}\n{"text": broken\n', "line 2 is not valid JSON"),
    ("nolabel.csv", "text,stars\na good movie,5\n", "no 'label' column"),
    ("unknown.csv", "text,label\na good movie,neutral\n", "unknown label 'neutral'"),
    ("range.csv", "text,label\na good movie,7\n", "label 7 is outside 0…1"),
    ("empty.jsonl", "\n", "holds no examples"),
    ("data.txt", "a good movie", "expected .csv or .jsonl"),
])
def test_bad_data_files_give_a_clear_error(bert_dir, tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    task = HFSequenceClassificationTask(bert_dir, path)
    with pytest.raises(EngineInputError, match=message) as info:
        task.data("test")
    assert str(path) in str(info.value)


def test_bad_text_file_and_model_folder(gpt2_dir, bert_dir, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("the", encoding="utf-8")
    with pytest.raises(EngineInputError, match="at least two tokens"):
        TextPerplexityTask(gpt2_dir, short).data("test")
    with pytest.raises(EngineInputError, match="no config.json"):
        TextPerplexityTask(tmp_path, short)
    task = HFSequenceClassificationTask(bert_dir, tmp_path / "x.csv")
    with pytest.raises(EngineInputError, match="lacks"):
        task.build_model({})
