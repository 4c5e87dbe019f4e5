"""Linear forms of methods whose coefficients depend on the tensor's layer or on whole-model statistics.

``MethodSpec.linear(params, n)`` covers methods whose coefficients follow from the parameters alone
(weighted average, task arithmetic, per-layer schedules). LiNeS and MetaGPT are linear too, but their
coefficients also depend on where the tensor sits or on the task vectors' norms, which that signature
cannot see. This module gives every linear method one form, ``form(params, n, ctx, inputs) -> ([a_t], b)``
(output ``Σ a_t θt + b θ0``), reading the same helpers the methods use, so live tuning moves all of them
by multiply-adds. Parity with the methods is checked by the live tests.
"""

from __future__ import annotations

from typing import Any, Callable

from engine.methods import MergeInputs, MethodSpec, TensorContext
from engine.methods.lines import lines_factor
from engine.methods.metagpt import group_key, squared_norms

LinearForm = Callable[[dict[str, Any], int, TensorContext, MergeInputs], tuple[list[float], float]]


def _lines(params: dict[str, Any], n: int, ctx: TensorContext, inputs: MergeInputs) -> tuple[list[float], float]:
    f = lines_factor(float(params["alpha"]), float(params["beta"]), ctx.layer, ctx.num_layers)
    return [f], 1.0 - f


def _metagpt(params: dict[str, Any], n: int, ctx: TensorContext, inputs: MergeInputs) -> tuple[list[float], float]:
    scope = params["scope"]
    if scope == "tensor" or (scope == "layer" and ctx.layer is None):
        norms = squared_norms(inputs)
    else:
        norms = ctx.stats[group_key(ctx, scope)]
    total = float(norms.sum())
    if total <= 0:
        return [0.0] * n, 1.0
    a = (norms / total).tolist()
    return a, 1.0 - sum(a)


CONTEXT_FORMS: dict[str, LinearForm] = {"lines": _lines, "metagpt": _metagpt}


def linear_form(spec: MethodSpec) -> LinearForm | None:
    """The method's linear form, or None when its output is not a linear combination of the inputs."""
    if spec.linear is not None:
        return lambda params, n, ctx, inputs: spec.linear(params, n)
    return CONTEXT_FORMS.get(spec.name)
