"""A BertModel base and BertForSequenceClassification experts (names under 'bert.'): detected, reported, mapped."""

from __future__ import annotations

import json

import pytest
import torch

from engine.checkpoints import compare, open_checkpoint
from engine.cli import main
from engine.graph import Node, run_recipe
from engine.graph.build import simple_merge_recipe

transformers = pytest.importorskip("transformers")


@pytest.fixture
def bert_models(tmp_path):
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32, num_labels=3)
    torch.manual_seed(0)
    transformers.BertModel(config, add_pooling_layer=True).save_pretrained(tmp_path / "base")
    for name in ("sst", "nli"):
        transformers.BertForSequenceClassification(config).save_pretrained(tmp_path / name)
    return tmp_path


def test_the_prefix_is_detected_and_named_in_the_report(bert_models, capsys):
    report = compare(open_checkpoint(bert_models / "base"), open_checkpoint(bert_models / "sst"))
    assert not report.compatible and report.prefix == ("other", "bert.")
    assert "strip_prefix 'bert.'" in report.reason()
    assert main(["inspect", str(bert_models / "base"), str(bert_models / "sst")]) == 0
    assert "prefix 'bert.'" in capsys.readouterr().out


def test_strip_prefix_merges_task_head_models_onto_their_backbone(bert_models):
    recipe = simple_merge_recipe("task_arithmetic", [bert_models / "sst", bert_models / "nli"],
                                 base=bert_models / "base", out=bert_models / "out", params={"lambda": 0.5})
    for nid in ("sst", "nli"):
        recipe.nodes[nid].params["strip_prefix"] = "bert."
    run_recipe(recipe)
    merged = transformers.BertModel.from_pretrained(bert_models / "out")
    base = transformers.BertModel.from_pretrained(bert_models / "base").state_dict()
    experts = [transformers.BertForSequenceClassification.from_pretrained(bert_models / n).state_dict()
               for n in ("sst", "nli")]
    name = "encoder.layer.1.attention.self.query.weight"
    expected = base[name] + 0.5 * sum(e["bert." + name] - base[name] for e in experts)
    assert torch.allclose(merged.state_dict()[name], expected, atol=1e-6)
    assert json.loads((bert_models / "out" / "config.json").read_text())["model_type"] == "bert"
