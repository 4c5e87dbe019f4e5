"""How each ``merge-lora`` method combines the adapters' updates: which engine merge method runs, with what.

The combinations are the engine's registered methods (``engine.methods``), run on each adapted weight's
updates as task vectors over a zero base, so TIES, DARE and task arithmetic behave exactly as in a
recipe. The defaults follow PEFT's ``add_weighted_adapter`` (``svd``-family names) and the KnOTS reference
code (``knots``); the user may set any other parameter of the method (``--param``), except the ones fixed
here (whole-model thresholds need a statistics pass a LoRA merge does not make).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from engine.errors import EngineInputError
from engine.graph.param_checks import check_param_value
from engine.methods import MethodSpec, get_method


@dataclass(frozen=True)
class Combination:
    """An engine method, its defaults here (where they differ from the method's own) and fixed values."""

    method: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    fixed: Mapping[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> MethodSpec:
        return get_method(self.method)


_TENSOR_SCOPE = {"scope": "tensor"}

# PEFT add_weighted_adapter's combination of the dense deltas before the truncated SVD
SVD_METHODS: dict[str, Combination] = {
    "svd": Combination("task_arithmetic"),
    "ties_svd": Combination("ties", fixed=_TENSOR_SCOPE),
    "dare_linear_svd": Combination("dare_linear"),
    "dare_ties_svd": Combination("dare_ties", {"normalize": True}),  # PEFT's disjoint mean
    "magnitude_prune_svd": Combination("breadcrumbs", fixed={"gamma": 0.0, **_TENSOR_SCOPE}),  # top-k, summed
}

# KnOTS: the merge of the aligned coefficients (the reference: TIES with topK 100, optionally after DARE)
KNOTS_COMBINES: dict[str, Combination] = {
    "ties": Combination("ties", {"density": 1.0}, fixed=_TENSOR_SCOPE),
    "task_arithmetic": Combination("task_arithmetic"),
    "dare_ties": Combination("dare_ties", {"normalize": True}),
    "dare_linear": Combination("dare_linear"),
}

LORA_METHODS = ("cat", *SVD_METHODS, "knots")


def combination_for(method: str, combine: str) -> Combination | None:
    """The combination a ``merge-lora`` method uses (None for ``cat``, which only concatenates)."""
    if method == "cat":
        return None
    if method == "knots":
        if combine not in KNOTS_COMBINES:
            raise EngineInputError(f"unknown KnOTS combination '{combine}' (one of {', '.join(KNOTS_COMBINES)})")
        return KNOTS_COMBINES[combine]
    if method not in SVD_METHODS:
        raise EngineInputError(f"unknown merge-lora method '{method}' (one of {', '.join(LORA_METHODS)})")
    return SVD_METHODS[method]


def checked_values(combination: Combination | None, params: Mapping[str, Any], keys: Sequence[str],
                   label: str) -> dict[str, Any]:
    """The parameter values of the combination (its defaults, the user's ``params``, the fixed values),
    every user value checked against the method's declared range; ``label`` names the method in messages."""
    if combination is None:
        if params:
            raise EngineInputError(f"{label} takes no parameters (got {', '.join(sorted(params))}): it only "
                                   "concatenates the factors")
        return {}
    spec = combination.spec
    declared = {p.name: p for p in spec.params}
    problems = []
    for name, value in params.items():
        if name not in declared or name == "weight":
            choices = ", ".join(n for n in declared if n != "weight" and n not in combination.fixed)
            problems.append(f"'{name}' is not a parameter of {label} (it takes: {choices}; weights: --weight)")
        elif name in combination.fixed:
            problems.append(f"'{name}' is fixed to {combination.fixed[name]!r} in {label}")
        else:
            problems += check_param_value(declared[name], value, list(keys))
    if problems:
        raise EngineInputError(f"{label}: " + "; ".join(problems))
    return {**combination.defaults, **params, **combination.fixed}
