"""The learners on causal language-model tasks (the reduced LM demo): loss, entropy and statistics over
real tokens, and learned recipes that merge and score."""

from __future__ import annotations

import pytest
import torch

from engine.errors import EngineInputError
from engine.evaluation import EvaluationService, load_suite
from engine.evaluation.hooks import linear_input_grams
from engine.evaluation.metrics import TokenAccumulator
from engine.graph import Recipe
from engine.graph.statistics_files import statistics_key
from engine.learn import learn_concrete, learn_mats, learn_self_positioning
from engine.learn.objectives import task_entropy, task_loss
from safetensors.torch import load_file
from tests.hf_helpers import weights
from tests.zoo_helpers import reduced_lm_zoo

DOMAINS = ["python", "prose", "data", "c", "logs"]


def _tasks(names):
    return load_suite(reduced_lm_zoo() / "suite.json", names)


def _recipe(tasks_):
    recipe = Recipe.load(reduced_lm_zoo() / "demo.json")
    evaluate = next(n for n in recipe.nodes.values() if n.kind.name.lower() == "evaluate")
    evaluate.params["tasks"] = tasks_
    return recipe


def _val_perplexities(recipe):
    run = EvaluationService(device="cpu").evaluate(recipe, split="val", models=["merge"])["runs"][0]
    return {t: v["perplexity"] for t, v in run["tasks"].items()}


def test_the_text_loss_and_entropy_are_the_scored_ones_over_real_tokens():
    task = _tasks(["python"])[0]
    data = task.data("val")
    inputs, labels = data.inputs[:4].clone(), data.labels[:4].clone()
    inputs[-1, 0, 30:], inputs[-1, 1, 30:], labels[-1, 30:] = task.pad_id, 0, -100  # a padded last block
    with torch.no_grad():
        logits = task.forward(weights(reduced_lm_zoo() / "experts/python"), inputs)
    acc = TokenAccumulator()
    acc.add(logits, labels)
    scored = acc.result()
    assert scored.n == 3 * (inputs.shape[-1] - 1) + 29
    assert float(task_loss(task, logits, labels)) == pytest.approx(scored.loss, rel=1e-5)
    assert float(task_entropy(task, logits, inputs)) == pytest.approx(scored.entropy, rel=1e-5)


def test_choice_loss_is_the_cross_entropy_of_the_choices_log_likelihoods():
    task = _tasks(["python-choice"])[0]
    data = task.data("val")
    with torch.no_grad():
        ll = task.forward(weights(reduced_lm_zoo() / "experts/python"), data.inputs)
    answer = data.labels[:, 0].long()
    expected = -(ll.log_softmax(-1).gather(1, answer[:, None])).mean()
    assert float(task_loss(task, ll, data.labels)) == pytest.approx(float(expected), rel=1e-5)
    p = ll.softmax(-1)
    assert float(task_entropy(task, ll, data.inputs)) == pytest.approx(
        float(-(torch.where(p > 0, p * p.log(), 0.0)).sum(-1).mean()), rel=1e-5)


def test_padding_is_left_out_of_the_gram_matrices():
    task = _tasks(["prose"])[0]
    model = task.build_model(weights(reduced_lm_zoo() / "experts/prose"), "cpu")
    full = task.data("val").inputs[:1].clone()
    half = full.shape[-1] // 2
    short = full[:, :, :half + 1].clone()  # a shorter block: the model is given its first half
    padded = full.clone()
    padded[:, 0, half:] = task.pad_id  # the same tokens, right-padded to the full length
    padded[:, 1, half:] = 0
    with torch.no_grad():
        want = linear_input_grams(model, short, token_mask=task.token_mask)
        got = linear_input_grams(model, padded, token_mask=task.token_mask)
        unmasked = linear_input_grams(model, padded)
    name = "model.layers.0.mlp.down_proj.weight"
    assert got[name][1] == want[name][1] == half
    assert torch.allclose(got[name][0], want[name][0], rtol=1e-4, atol=1e-5)
    assert unmasked[name][1] == full.shape[-1] - 1  # without the mask the padding would count


def test_self_positioning_on_text_lowers_the_probe_loss_and_its_recipe_scores(tmp_path):
    tasks = _tasks(DOMAINS)
    recipe = _recipe(DOMAINS)
    result = learn_self_positioning(recipe, "merge", tasks, split="val", examples=4, batch_size=2, steps=15,
                                    lr=0.05, device="cpu")
    assert result.info["final_loss"] < result.info["initial_loss"]
    assert set(result.coefficients) == {"python", "prose", "data", "c", "logs_lora"}
    assert result.recipe.node("merge").params["method"] == "task_arithmetic"
    ppl = _val_perplexities(result.recipe)
    assert set(ppl) == set(DOMAINS) and all(0 < v < float("inf") for v in ppl.values())


def test_mats_gathers_real_token_grams_per_expert_and_merges(tmp_path):
    tasks = _tasks(DOMAINS)
    recipe = _recipe(DOMAINS)
    result = learn_mats(recipe, "merge", tasks, tmp_path / "grams.safetensors", split="val",
                        task_map={"logs_lora": "logs"}, iterations=5, device="cpu")
    stats = load_file(str(result.statistics))
    gram = stats[statistics_key("python", "model.layers.0.mlp.down_proj.weight")]
    assert gram.shape == (gram.shape[0], gram.shape[0]) and torch.allclose(gram, gram.T, atol=1e-5)
    assert result.info["tasks"]["logs_lora"] == "logs"
    ppl = _val_perplexities(result.recipe)
    assert all(0 < v < float("inf") for v in ppl.values())


def test_concrete_on_text_learns_a_mask_whose_recipe_scores(tmp_path):
    tasks = _tasks(DOMAINS)
    result = learn_concrete(_recipe(DOMAINS), "merge", tasks, tmp_path / "mask.safetensors", split="val",
                            steps=3, batch_size=2, device="cpu")
    assert result.info["final_entropy"] > 0 and len(result.history) == 3
    ppl = _val_perplexities(result.recipe)
    assert all(0 < v < float("inf") for v in ppl.values())


def test_a_generation_task_is_refused_by_name_before_any_step():
    tasks = _tasks(["python", "python-complete"])
    with pytest.raises(EngineInputError, match="python-complete"):
        learn_self_positioning(_recipe(["python"]), "merge", tasks, split="val", steps=1, device="cpu")
