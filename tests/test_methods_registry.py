"""Every registered method declares a complete schema, requirements and reference."""

from __future__ import annotations

import json

import pytest

from engine.methods import Requirement, all_methods, get_method

TIER1 = {
    "linear", "slerp", "nuslerp", "task_arithmetic", "ties", "dare_linear", "dare_ties", "breadcrumbs",
    "breadcrumbs_ties", "della", "della_linear", "model_stock", "consensus_ta", "consensus_ties",
    "tall_mask_reconstruct", "pcb", "metagpt", "lines", "iso_c", "iso_cts", "lwptv_ta", "lwptv_ties",
}


def test_every_tier1_method_is_registered():
    assert TIER1 <= {m.name for m in all_methods()}


@pytest.mark.parametrize("spec", all_methods(), ids=lambda s: s.name)
def test_schema_is_complete(spec):
    assert spec.label and spec.summary and spec.family and spec.reference
    assert spec.merge.__doc__ and len(spec.merge.__doc__.strip()) > 40
    data_free = spec.requirements == frozenset({Requirement.DATA_FREE})
    assert data_free or (spec.requirements and Requirement.DATA_FREE not in spec.requirements)
    assert spec.min_models >= 1 and (spec.max_models is None or spec.max_models >= spec.min_models)
    names = [p.name for p in spec.params]
    assert len(names) == len(set(names))
    for p in spec.params:
        assert p.type in ("float", "int", "bool", "choice", "str", "path") and p.help
        if p.type in ("float", "int"):
            assert p.min is not None and p.max is not None and p.min <= p.max
        if p.type == "choice":
            assert p.choices and p.default in p.choices
        assert p.check_scalar(p.default) is None, (spec.name, p.name)
    if spec.random:
        assert "seed" in names
    json.dumps(spec.to_json())


def test_mergekit_names_and_parameter_names():
    for name in ("ties", "dare_ties", "dare_linear", "breadcrumbs", "breadcrumbs_ties", "della", "della_linear"):
        params = {p.name for p in get_method(name).params}
        assert {"weight", "density", "lambda", "normalize"} <= params
    assert {p.name for p in get_method("breadcrumbs").params} >= {"gamma"}
    assert {p.name for p in get_method("della").params} >= {"epsilon", "seed"}
    assert [p.name for p in get_method("slerp").params] == ["t"]
    assert get_method("slerp").param("t").layerwise


def test_sparsifying_methods_offer_model_scope():
    for name in ("ties", "breadcrumbs", "breadcrumbs_ties", "pcb", "consensus_ties", "lwptv_ties"):
        spec = get_method(name)
        assert spec.param("scope").choices == ("tensor", "model")
        assert spec.statistic({**spec.defaults(), "scope": "model"}) is not None
        if not name.startswith("lwptv"):  # LwPTV always needs its layer-norm pass
            assert spec.statistic({**spec.defaults(), "scope": "tensor"}) is None


def test_a_declared_scale_must_be_one_of_the_methods_float_parameters():
    from engine.methods import MethodSpec, Param

    def merge(inputs, params, ctx):
        """Returns the base (a placeholder merge for a declaration that must be refused)."""
        return inputs.base

    with pytest.raises(ValueError, match="'alpha' as its scale"):
        MethodSpec(name="x", label="X", family="iso", summary="s", merge=merge, scale="alpha",
                   params=(Param("gamma", "float", 1.0, "g"),))
    assert get_method("tsv_m").scale == "alpha" and get_method("iso_c").scale == "alpha"
