"""Spherical interpolation: SLERP between the base and one model, NuSLERP between two models (or task vectors).

Shoemake 1985 ("Animating rotation with quaternion curves") as used by mergekit's ``slerp`` and
``nuslerp``; semantics follow mergekit 0.1.5.
"""

from __future__ import annotations

from typing import Any

import torch

from engine.methods.base import MergeInputs, MethodSpec, Param, TensorContext
from engine.methods.params import WEIGHT
from engine.methods.registry import register

DOT_THRESHOLD = 0.9995


def slerp_tensors(t: float, v0: torch.Tensor, v1: torch.Tensor, dot_threshold: float = DOT_THRESHOLD,
                  eps: float = 1e-8) -> torch.Tensor:
    """Spherical interpolation of two whole tensors (flattened), falling back to linear when near-parallel.

    The angle comes from the normalised tensors (norms below ``eps`` count as 1); the interpolation
    weights ``sin((1−t)θ)/sinθ`` and ``sin(tθ)/sinθ`` apply to the raw tensors, so magnitudes interpolate
    along with directions. ``|cos θ| > dot_threshold`` (parallel or antiparallel) uses ``(1−t)·v0 + t·v1``.
    """
    a, b = v0.reshape(-1), v1.reshape(-1)
    na, nb = torch.linalg.vector_norm(a), torch.linalg.vector_norm(b)
    na = torch.where(na > eps, na, torch.ones_like(na))
    nb = torch.where(nb > eps, nb, torch.ones_like(nb))
    dot = float(((a / na) * (b / nb)).sum().clamp(-1, 1))
    if abs(dot) > dot_threshold:
        c0, c1 = 1.0 - t, t
    else:
        theta = torch.acos(torch.tensor(dot, dtype=torch.float64))
        s = torch.sin(theta)
        c0, c1 = float(torch.sin((1 - t) * theta) / s), float(torch.sin(t * theta) / s)
    return torch.add(v0 * c0, v1, alpha=c1)


def slerp(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """SLERP from the base (t = 0) to the one input model (t = 1), on the whole flattened tensor.

    mergekit's semantics: the base model is one endpoint, ``t`` (per layer allowed) the position, the
    angle taken between the two normalised tensors, linear interpolation when ``|cos θ| > 0.9995``.
    The angle is computed in float64 from a float32 dot product.
    """
    return slerp_tensors(float(params["t"]), inputs.base, inputs.models[0])


def nuslerp_rows(t: float, v0: torch.Tensor, v1: torch.Tensor, dim: int | None, eps: float = 1e-8) -> torch.Tensor:
    """NuSLERP of two tensors: per vector along ``dim`` (None = the whole flattened tensor).

    Each pair of vectors is interpolated on the sphere with weights applied to the raw vectors; exactly
    (anti)parallel pairs (``1 − cos² ≤ eps²``) are interpolated linearly.
    """
    shape = v0.shape
    if dim is None:
        a, b = v0.reshape(1, -1), v1.reshape(1, -1)
    else:
        a, b = v0.movedim(dim, -1), v1.movedim(dim, -1)
    ua = a / torch.linalg.vector_norm(a, dim=-1, keepdim=True).clamp(min=1e-7)
    ub = b / torch.linalg.vector_norm(b, dim=-1, keepdim=True).clamp(min=1e-7)
    cos = (ua * ub).sum(dim=-1, keepdim=True).clamp(-1, 1)
    colinear = (1 - cos * cos) <= eps * eps
    theta = torch.acos(torch.where(colinear, torch.zeros_like(cos), cos))
    s = torch.sin(theta)
    spherical = (torch.sin((1 - t) * theta) * a + torch.sin(t * theta) * b) / torch.where(colinear, torch.ones_like(s), s)
    out = torch.where(colinear, (1 - t) * a + t * b, spherical)
    return out.reshape(shape) if dim is None else out.movedim(-1, dim)


def nuslerp(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """Spherical interpolation of exactly two models at ``t = w₂ / (w₁ + w₂)`` (0.5 when the sum is ~0).

    mergekit's ``nuslerp`` semantics: with a base model the two task vectors are interpolated and added
    to the base; without one, the two models themselves. ``nuslerp_flatten`` (default) treats the whole
    tensor as one vector; otherwise each row (``nuslerp_row_wise``: each column, i.e. vectors along
    the first dimension) is interpolated on its own.
    """
    w0, w1 = (float(w) for w in params["weight"])
    t = 0.5 if abs(w0 + w1) < 1e-6 else w1 / (w0 + w1)
    dim = None if params["nuslerp_flatten"] else (0 if params["nuslerp_row_wise"] else -1)
    if inputs.base is None:
        a, b = inputs.models
        return nuslerp_rows(t, a, b, dim)
    a, b = inputs.deltas
    return nuslerp_rows(t, a, b, dim).add_(inputs.base)


register(MethodSpec(
    name="slerp",
    label="SLERP",
    family="slerp",
    summary="Spherical interpolation between the base model and one other model.",
    params=(
        Param("t", "float", 0.5, "position between the base (0) and the model (1)", min=0.0, max=1.0,
              layerwise=True),
    ),
    merge=slerp,
    needs_base=True,
    min_models=1,
    max_models=1,
    reference="Shoemake 1985; mergekit slerp (github.com/arcee-ai/mergekit)",
))

register(MethodSpec(
    name="nuslerp",
    label="NuSLERP",
    family="slerp",
    summary="Spherical interpolation of two models, or of their task vectors when a base is connected.",
    params=(
        WEIGHT,
        Param("nuslerp_flatten", "bool", True, "interpolate the whole tensor as one vector"),
        Param("nuslerp_row_wise", "bool", False,
              "when not flattened: interpolate column vectors (along the first dimension) instead of rows"),
    ),
    merge=nuslerp,
    needs_base=False,
    min_models=2,
    max_models=2,
    reference="mergekit nuslerp (github.com/arcee-ai/mergekit)",
))
