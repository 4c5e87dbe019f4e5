"""Vocabulary growth: experts with added tokens merge with their base row by token (engine.checkpoints.vocab).

Tiny Llama models (transformers, no download) share a byte-level BPE tokenizer trained here; the experts
add tokens (``add_tokens`` + ``resize_token_embeddings``) at different ids. Every expected row is computed
by hand from the input files, looked up by each model's own token id."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from engine.checkpoints import compare, open_checkpoint
from engine.errors import EngineInputError
from engine.graph import Edge, Node, Recipe, run_recipe, validate
from engine.graph.build import simple_merge_recipe
from engine.graph.mergekit import export_mergekit, import_mergekit
from hf_helpers import llama_config, make_tokenizer

transformers = pytest.importorskip("transformers")

EMBED, HEAD = "model.embed_tokens.weight", "lm_head.weight"
CHAT_TOKENS = ["<|im_start|>", "<|im_end|>"]
CODE_TOKENS = ["<|code|>", "<|im_start|>"]  # <|im_start|> again, at another id than in chat


def _expert(base_folder: Path, folder: Path, seed: int, added: list[str]) -> Path:
    """The base fine-tuned (noise on every weight) with ``added`` tokens appended to its vocabulary."""
    model = transformers.AutoModelForCausalLM.from_pretrained(base_folder)
    tok = transformers.AutoTokenizer.from_pretrained(base_folder)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    if added:
        tok.add_tokens(added)
        model.resize_token_embeddings(len(tok))
        with torch.no_grad():  # distinct, known rows for the new tokens
            model.get_input_embeddings().weight[-len(added):] = torch.randn(len(added), 16, generator=gen)
            model.get_output_embeddings().weight[-len(added):] = torch.randn(len(added), 16, generator=gen)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vocab")
    tok = make_tokenizer()
    torch.manual_seed(0)
    base = root / "base"
    transformers.LlamaForCausalLM(llama_config(tok)).save_pretrained(base)
    tok.save_pretrained(base)
    return {"base": base, "chat": _expert(base, root / "chat", 1, CHAT_TOKENS),
            "code": _expert(base, root / "code", 2, CODE_TOKENS), "plain": _expert(base, root / "plain", 3, [])}


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _vocab(folder: Path) -> dict[str, int]:
    return transformers.AutoTokenizer.from_pretrained(folder).get_vocab()


def _ta_recipe(models, out: Path, source: str | None, lam: float = 0.5, weights=(1.0, 0.6)) -> Recipe:
    recipe = simple_merge_recipe("task_arithmetic", [models["chat"], models["code"]], base=models["base"],
                                 params={"lambda": lam}, weights=list(weights), out=out)
    if source is not None:
        recipe.nodes["save"].params["tokenizer_source"] = source
    return recipe


def _expected_ta(models, token: str, tensor: str, lam: float = 0.5, weights=(1.0, 0.6)) -> torch.Tensor:
    """θ0 + λ Σ w (θt − θ0) for one token's row, each model's row looked up by its own id; a model lacking
    the token stands in with the base's row, else the mean of the rows of the models that have it."""
    rows = {}
    for key in ("base", "chat", "code"):
        vocab = _vocab(models[key])
        if token in vocab:
            rows[key] = _weights(models[key])[tensor][vocab[token]].float()
    stand_in = rows.get("base", torch.stack(list(rows.values())).mean(0) if rows else None)
    full = {k: rows.get(k, stand_in) for k in ("base", "chat", "code")}
    b = full["base"]
    return b + lam * (weights[0] * (full["chat"] - b) + weights[1] * (full["code"] - b))


def _check_output(out: Path, models, tokens: list[str]) -> dict[str, int]:
    """The output loads in transformers; its config, tokenizer and rows agree; returns its vocabulary."""
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    vocab = tok.get_vocab()
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == len(tok) == model.get_input_embeddings().weight.shape[0]
    assert model.get_output_embeddings().weight.shape[0] == len(tok)
    weights = _weights(out)
    for token in tokens:
        for tensor in (EMBED, HEAD):
            assert torch.allclose(weights[tensor][vocab[token]], _expected_ta(models, token, tensor), atol=1e-6), \
                (token, tensor)
    return vocab


def test_the_compatibility_report_counts_added_tokens_instead_of_refusing(models):
    report = compare(open_checkpoint(models["base"]), open_checkpoint(models["chat"]))
    assert report.compatible and report.reason() == "" and not report.shape_mismatch
    chat = str(open_checkpoint(models["chat"]).path)
    assert report.vocabulary == f"vocabulary differs: 2 added tokens in {chat}; merged by token"
    both = compare(open_checkpoint(models["chat"]), open_checkpoint(models["code"]))
    assert both.compatible and both.vocabulary.startswith("vocabulary differs: 1 added token in ")
    assert ", 1 added token in " in both.vocabulary  # <|code|> in code, <|im_end|> in chat


def test_base_tokenizer_keeps_the_base_vocabulary_rows_merged_by_token(models, tmp_path):
    run_recipe(_ta_recipe(models, tmp_path / "out", None))
    vocab = _check_output(tmp_path / "out", models, ["the", "<s>", "cat"])
    assert vocab == _vocab(models["base"]) and len(vocab) == 300  # the added tokens are not in the output


def test_an_experts_tokenizer_brings_its_added_tokens(models, tmp_path):
    run_recipe(_ta_recipe(models, tmp_path / "out", "chat"))
    vocab = _check_output(tmp_path / "out", models, ["the", "<pad>", *CHAT_TOKENS])
    assert vocab == _vocab(models["chat"])
    weights, chat = _weights(tmp_path / "out"), _weights(models["chat"])
    # only chat has <|im_end|>: the merged row is chat's own row
    end = _vocab(models["chat"])["<|im_end|>"]
    assert torch.allclose(weights[EMBED][vocab["<|im_end|>"]], chat[EMBED][end], atol=1e-6)
    # <|im_start|> sits at id 300 in chat and 301 in code: their mean stands in for the base
    start = weights[EMBED][vocab["<|im_start|>"]]
    code = _weights(models["code"])
    mean = (chat[EMBED][300] + code[EMBED][301]) / 2
    assert torch.allclose(start, mean + 0.5 * ((chat[EMBED][300] - mean) + 0.6 * (code[EMBED][301] - mean)), atol=1e-6)


def test_union_holds_every_models_tokens(models, tmp_path):
    result = run_recipe(_ta_recipe(models, tmp_path / "out", "union"))
    vocab = _check_output(tmp_path / "out", models, ["the", "</s>", "<|im_start|>", "<|im_end|>", "<|code|>"])
    assert len(vocab) == 303 and all(vocab[t] == i for t, i in _vocab(models["base"]).items())
    assert [vocab[t] for t in ("<|im_start|>", "<|im_end|>", "<|code|>")] == [300, 301, 302]  # model order
    assert not result.warnings
    code = _weights(models["code"])
    assert torch.allclose(_weights(tmp_path / "out")[HEAD][302], code[HEAD][300], atol=1e-6)  # only code has it


def test_linear_union_without_a_base_averages_only_models_holding_a_token(models, tmp_path):
    recipe = simple_merge_recipe("linear", [models["chat"], models["code"], models["plain"]],
                                 weights=[1.0, 3.0, 1.0], out=tmp_path / "out")
    recipe.nodes["save"].params["tokenizer_source"] = "union"
    run_recipe(recipe)
    out, vocab = _weights(tmp_path / "out"), _vocab(tmp_path / "out")
    w = {k: _weights(models[k]) for k in ("chat", "code", "plain")}
    v = {k: _vocab(models[k]) for k in ("chat", "code", "plain")}
    the = {k: w[k][EMBED][v[k]["the"]] for k in w}
    assert torch.allclose(out[EMBED][vocab["the"]], (the["chat"] + 3 * the["code"] + the["plain"]) / 5, atol=1e-6)
    assert torch.allclose(out[EMBED][vocab["<|code|>"]], w["code"][EMBED][v["code"]["<|code|>"]], atol=1e-6)
    # <|im_start|>: chat (the reference) has it, so its row stands in for plain; code brings its own
    chat_row, code_row = w["chat"][EMBED][v["chat"]["<|im_start|>"]], w["code"][EMBED][v["code"]["<|im_start|>"]]
    assert torch.allclose(out[EMBED][vocab["<|im_start|>"]], (chat_row + 3 * code_row + chat_row) / 5, atol=1e-6)
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert model.config.vocab_size == len(vocab) == 303


def test_same_vocabulary_runs_as_before_without_reading_tokenizers(models, tmp_path):
    recipe = simple_merge_recipe("task_arithmetic", [models["plain"]], base=models["base"], params={"lambda": 0.5},
                                 out=tmp_path / "out")
    run_recipe(recipe)
    out, base, plain = _weights(tmp_path / "out"), _weights(models["base"]), _weights(models["plain"])
    assert torch.allclose(out[EMBED], base[EMBED] + 0.5 * (plain[EMBED] - base[EMBED]), atol=1e-6)
    assert (tmp_path / "out" / "tokenizer.json").read_bytes() == (models["base"] / "tokenizer.json").read_bytes()


def test_union_of_bpe_and_wordpiece_is_refused_naming_both_files(models, tmp_path):
    from tokenizers import Tokenizer, models as tmodels, pre_tokenizers

    words = {f"w{i}": i for i in range(300)} | {"[UNK]": 300}
    core = Tokenizer(tmodels.WordPiece(words, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    wordpiece = tmp_path / "wordpiece"
    config = llama_config(make_tokenizer())
    config.vocab_size = 301
    torch.manual_seed(5)
    transformers.LlamaForCausalLM(config).save_pretrained(wordpiece)
    transformers.PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]").save_pretrained(wordpiece)
    out = tmp_path / "out"
    recipe = simple_merge_recipe("task_arithmetic", [wordpiece], base=models["base"], out=out)
    recipe.nodes["save"].params["tokenizer_source"] = "union"
    assert validate(recipe) == []  # rows differ, both have tokenizers: fits by token
    with pytest.raises(EngineInputError) as info:
        run_recipe(recipe)
    message = str(info.value)
    assert str(models["base"] / "tokenizer.json") in message and str(wordpiece / "tokenizer.json") in message
    assert "BPE" in message and "WordPiece" in message
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_grown_vocabulary_without_a_tokenizer_is_refused_by_name(models, tmp_path):
    bare = tmp_path / "bare"
    transformers.AutoModelForCausalLM.from_pretrained(models["chat"]).save_pretrained(bare)  # no tokenizer files
    report = compare(open_checkpoint(models["base"]), open_checkpoint(bare))
    assert not report.compatible and "tokenizer files" in report.reason()
    recipe = simple_merge_recipe("task_arithmetic", [bare], base=models["base"], out=tmp_path / "out")
    problems = validate(recipe)
    assert problems and "tokenizer files" in problems[0].message
    with pytest.raises(EngineInputError):
        run_recipe(recipe)
    assert not (tmp_path / "out").exists()


def test_tokenizer_source_must_name_a_checkpoint(models, tmp_path):
    recipe = _ta_recipe(models, tmp_path / "out", "merge")
    assert any("tokenizer_source" in p.message for p in validate(recipe, open_files=False))
    recipe.nodes["save"].params["tokenizer_source"] = "chat"
    assert validate(recipe, open_files=False) == []


def test_two_saves_with_different_vocabularies_are_refused_before_writing(models, tmp_path):
    recipe = _ta_recipe(models, tmp_path / "a", "union")
    recipe.add_node(Node("save_b", "save", {"path": str(tmp_path / "b"), "tokenizer_source": "chat"}))
    recipe.add_edge(Edge("merge", "save_b", "model"))
    with pytest.raises(EngineInputError, match="different vocabularies"):
        run_recipe(recipe)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_mergekit_tokenizer_source_and_block_map_and_round_trip(models):
    root = models["base"].parent
    head = "models: [{model: chat, parameters: {weight: 1}}, {model: code, parameters: {weight: 1}}]\n" \
           "base_model: base\nmerge_method: task_arithmetic\n"
    save = lambda r: next(n for n in r["nodes"] if n["type"] == "save")["params"]  # noqa: E731
    assert save(import_mergekit(head + "tokenizer_source: union", root))["tokenizer_source"] == "union"
    assert save(import_mergekit(head + "tokenizer: {source: chat}", root))["tokenizer_source"] == "chat"
    assert save(import_mergekit(head + "tokenizer: {}", root))["tokenizer_source"] == "union"  # mergekit's default
    assert save(import_mergekit(head + "tokenizer_source: base", root))["copy_files_from"] == "base"
    with pytest.raises(EngineInputError, match="tokenizer.tokens"):
        import_mergekit(head + "tokenizer: {source: union, tokens: {'<|im_end|>': {source: chat, force: true}}}", root)
    with pytest.raises(EngineInputError, match="pad_to_multiple_of"):
        import_mergekit(head + "tokenizer: {source: union, pad_to_multiple_of: 64}", root)
    for text, expected in (("tokenizer_source: union", "union"), ("tokenizer: {source: code}", str(models["code"]))):
        recipe = import_mergekit(head + text, root)
        assert yaml.safe_load(export_mergekit(copy.deepcopy(recipe)))["tokenizer_source"] == expected


def test_padding_rows_past_the_tokenizer_align_by_index_and_survive_a_union(models, tmp_path):
    padded = tmp_path / "padded"
    model = transformers.AutoModelForCausalLM.from_pretrained(models["base"])
    model.resize_token_embeddings(304, mean_resizing=False)  # 4 tokenless padding rows after the 300 tokens
    model.save_pretrained(padded)
    transformers.AutoTokenizer.from_pretrained(models["base"]).save_pretrained(padded)
    pad, chat = _weights(padded), _weights(models["chat"])
    for source, rows in ((None, 304), ("union", 304)):
        out = tmp_path / f"out-{source}"
        recipe = simple_merge_recipe("task_arithmetic", [models["chat"]], base=padded, params={"lambda": 0.5},
                                     out=out)
        if source:
            recipe.nodes["save"].params["tokenizer_source"] = source
        run_recipe(recipe)
        merged, vocab = _weights(out), _vocab(out)
        assert merged[EMBED].shape[0] == rows == json.loads((out / "config.json").read_text())["vocab_size"]
        shared = vocab["cat"]
        expected = pad[EMBED][shared] + 0.5 * (chat[EMBED][shared] - pad[EMBED][shared])
        assert torch.allclose(merged[EMBED][shared], expected, atol=1e-6)
        # chat holds tokens at 300 and 301, so only the base's tokenless rows fill the padding
        tail = slice(302, 304) if source else slice(300, 304)
        assert torch.allclose(merged[HEAD][tail], pad[HEAD][tail], atol=1e-6)
        if source == "union":
            for token in CHAT_TOKENS:  # only chat has them: its rows, though the base's padding sits at those ids
                assert torch.allclose(merged[HEAD][vocab[token]], chat[HEAD][_vocab(models["chat"])[token]], atol=1e-6)


def test_the_library_says_a_grown_vocabulary_fits_and_how(models, qtbot):
    """The library's "fits" column explains a vocabulary that grew instead of "same tensor names"."""
    from PySide6.QtCore import Qt

    from app.library.inspect import inspect_path
    from app.library.model import FITS, LibraryModel

    library = LibraryModel()
    base, chat = str(models["base"]), str(models["chat"])
    for path in (base, chat):
        library.add_pending(path)
        library.set_inspection(inspect_path(path))
    library.set_base(base)
    library.set_compat(base, {chat: compare(open_checkpoint(models["base"]), open_checkpoint(models["chat"]))})
    index = library.index(library.row_of(chat), FITS)
    assert library.data(index, Qt.DisplayRole) == "fits"
    tip = library.data(index, Qt.ToolTipRole)
    assert tip.startswith("Fits the base: vocabulary differs: 2 added tokens in ") and tip.endswith("merged by token.")
