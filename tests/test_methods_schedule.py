"""Per-layer schedules follow mergekit 0.1.5's gradient semantics; per-model values expand as documented."""

from __future__ import annotations

import pytest

from engine.errors import EngineInputError
from engine.methods import get_method
from engine.methods.schedule import per_model_values, relative_depth, resolve_layer_value, resolve_params


def test_relative_depth_matches_mergekit():
    assert relative_depth(0, 5) == 0.0 and relative_depth(4, 5) == 1.0 and relative_depth(1, 5) == 0.25
    assert relative_depth(None, 5) == 0.0  # embeddings, final norm and head all read t = 0
    assert relative_depth(0, 1) == 1.0  # a one-layer model is read at t = 1


@pytest.mark.parametrize("layer,expected", [(0, 0.0), (1, 0.25), (2, 0.5), (3, 0.75), (4, 1.0), (None, 0.0)])
def test_two_anchor_gradient_interpolates_linearly(layer, expected):
    assert resolve_layer_value([0.0, 1.0], "x", layer, 5) == pytest.approx(expected)


def test_three_anchor_gradient():
    # anchors at depth 0, 0.5, 1; layer 1 of 5 is at depth 0.25, halfway between the first two
    grad = [0.0, 1.0, 0.5]
    assert resolve_layer_value(grad, "x", 1, 5) == pytest.approx(0.5)
    assert resolve_layer_value(grad, "x", 3, 5) == pytest.approx(0.75)
    assert resolve_layer_value(grad, "x", 4, 5) == pytest.approx(0.5)
    assert resolve_layer_value(grad, "lm_head.weight", None, 5) == pytest.approx(0.0)


def test_non_numeric_gradient_steps_instead_of_interpolating():
    assert resolve_layer_value([True, False], "x", 0, 3) is True
    assert resolve_layer_value([True, False], "x", 1, 3) is True  # int(0.5 * 1) = 0
    assert resolve_layer_value([True, False], "x", 2, 3) is False


def test_overrides_first_match_wins_and_may_carry_a_gradient():
    value = [{"filter": r"self_attn", "value": [0.0, 1.0]}, {"filter": "mlp", "value": 0.7}, {"value": 0.1}]
    assert resolve_layer_value(value, "model.layers.2.self_attn.q_proj.weight", 2, 5) == pytest.approx(0.5)
    assert resolve_layer_value(value, "model.layers.2.mlp.up_proj.weight", 2, 5) == 0.7
    assert resolve_layer_value(value, "model.norm.weight", None, 5) == 0.1
    with pytest.raises(EngineInputError):
        resolve_layer_value([{"filter": "mlp", "value": 1.0}], "model.norm.weight", None, 5)


def test_per_model_values_and_resolve_params():
    assert per_model_values({"a": 2.0}, ["a", "b"], 1.0) == [2.0, 1.0]
    assert per_model_values([1, 2], ["a", "b"]) == [1, 2]
    with pytest.raises(EngineInputError):
        per_model_values([1, 2, 3], ["a", "b"])
    spec = get_method("ties")
    params = resolve_params(spec.params, {"weight": {"b": [0.0, 1.0]}, "lambda": [1.0, 2.0]},
                            ["a", "b"], "model.layers.1.mlp.up_proj.weight", 1, 3)
    assert params["weight"] == [1.0, pytest.approx(0.5)]
    assert params["lambda"] == pytest.approx(1.5)
    assert params["density"] == [0.2, 0.2] and params["scope"] == "tensor"
