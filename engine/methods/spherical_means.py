"""Means on the hypersphere for more than two models: the Karcher (Riemannian) mean and Multi-SLERP.

Karcher 1977 ("Riemannian center of mass and mollifier smoothing"); for merging, "Functionality-Oriented LLM
Merging on the Fisher-Rao Manifold" (arXiv:2603.04972); mergekit ``karcher``.
Goddard 2025, "Multi-SLERP" (goddard.blog, barycentric interpolation in the tangent space);
mergekit ``multislerp``. Both work on each whole tensor flattened to one vector.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from engine.errors import EngineInputError
from engine.methods.base import MergeInputs, MethodSpec, Param, TensorContext
from engine.methods.params import WEIGHT
from engine.methods.registry import register


def karcher_mean(vectors: list[torch.Tensor], max_iter: int, tol: float) -> torch.Tensor:
    """The equal-weight Karcher mean direction of ``vectors`` (flat), scaled by their mean norm.

    Vectors with norm ≤ ``tol`` have no direction and are left out of the mean direction (their norms
    still count in the scale). Starts from the normalised arithmetic mean of the unit vectors (the first
    unit vector when that mean vanishes) and takes at most ``max_iter`` Riemannian gradient steps,
    stopping when the tangent step's norm falls below ``tol``; a vector within angle ``tol`` of the
    current estimate contributes no step.
    """
    norms = [float(torch.linalg.vector_norm(v)) for v in vectors]
    scale = sum(norms) / len(vectors)
    units = [v / n for v, n in zip(vectors, norms) if n > tol]
    if not units:
        return torch.zeros_like(vectors[0])
    weight = 1.0 / len(units)
    u = torch.stack(units).mean(dim=0)
    norm_u = float(torch.linalg.vector_norm(u))
    u = units[0].clone() if norm_u < tol else u / norm_u
    for _ in range(max_iter):
        step = torch.zeros_like(u)
        for unit in units:
            cos = float(torch.dot(u, unit).clamp(-1.0, 1.0))
            theta = math.acos(cos)
            if theta >= tol:
                step.add_(unit - cos * u, alpha=weight * theta / math.sin(theta))
        length = float(torch.linalg.vector_norm(step))
        if length < tol:
            break
        u = math.cos(length) * u + (math.sin(length) / length) * step
        norm_u = float(torch.linalg.vector_norm(u))
        if norm_u > tol:
            u = u / norm_u
    return scale * u


def karcher(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """θ = (mean_t ‖θt‖) · KarcherMean(θt / ‖θt‖), over the connected models (a connected base is one of them).

    As mergekit does, the models themselves (not task vectors) are averaged, with equal weights; a
    connected base joins the models (mergekit gathers the base model's tensor with the others).
    Computed in float32 with Python-float angles, as mergekit's scalar ``.item()`` loop does.
    """
    models = list(inputs.models) + ([inputs.base] if inputs.base is not None else [])
    if len(models) == 1 or models[0].numel() == 0:
        return models[0].clone()
    flat = [m.reshape(-1) for m in models]
    return karcher_mean(flat, int(params["max_iter"]), float(params["tol"])).reshape(models[0].shape)


def multislerp(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """Barycentric spherical interpolation of N models (or of their task vectors when a base is connected).

    Each input is flattened and projected onto the unit sphere; the weighted mean of the unit vectors,
    normalised, is the point of tangency; the weighted sum of the tangent components is mapped back by
    the exponential map and scaled by the weighted mean norm. ``normalize_weights`` divides the weights
    by their sum first; ``eps`` guards the divisions. Two inputs whose weighted mean vanishes (antipodal,
    equal weights) fall back to the linear combination; more than two raise an error naming the tensor.
    """
    vectors = inputs.deltas if inputs.base is not None else inputs.models
    if len(vectors) == 1 or vectors[0].numel() == 0:
        out = vectors[0].clone()
        return out if inputs.base is None else out.add_(inputs.base)
    eps = float(params["eps"])
    stacked = torch.stack([v.reshape(-1) for v in vectors])
    weights = torch.tensor([float(w) for w in params["weight"]], dtype=stacked.dtype, device=stacked.device)
    if params["normalize_weights"]:
        weights = weights / weights.sum()
    norms = torch.linalg.vector_norm(stacked, dim=1, keepdim=True)
    units = stacked / (norms + eps)
    mean = (units * weights[:, None]).sum(dim=0)
    mean_norm = torch.linalg.vector_norm(mean)
    if mean_norm < eps:
        if len(vectors) != 2:
            raise EngineInputError(
                f"Multi-SLERP of '{ctx.name}': the weighted mean of the models' directions is zero "
                "(antipodal models with balancing weights); change the weights")
        result = weights[0] * stacked[0] + weights[1] * stacked[1]
    else:
        mean = mean / mean_norm
        tangent = ((units - (units @ mean)[:, None] * mean) * weights[:, None]).sum(dim=0)
        length = torch.linalg.vector_norm(tangent) + eps
        result = (mean * torch.cos(length) + tangent * (torch.sin(length) / length)) * (norms[:, 0] * weights).sum()
    result = result.reshape(vectors[0].shape)
    return result if inputs.base is None else result.add_(inputs.base)


register(MethodSpec(
    name="karcher",
    label="Karcher mean",
    family="slerp",
    summary="The Riemannian mean of the models' directions on the sphere, scaled by their mean norm.",
    params=(
        Param("max_iter", "int", 10, "most gradient steps on the sphere", min=1, max=1000),
        Param("tol", "float", 1e-5, "stop when a step is shorter than this (and ignore norms below it)",
              min=0.0, max=1.0),
    ),
    merge=karcher,
    needs_base=False,
    min_models=1,
    reference="Karcher 1977, Riemannian center of mass; merging on the Fisher-Rao manifold (arXiv:2603.04972); mergekit karcher",
))

register(MethodSpec(
    name="multislerp",
    label="Multi-SLERP",
    family="slerp",
    summary="Spherical interpolation of any number of models (or task vectors) with per-model weights.",
    params=(
        WEIGHT,
        Param("normalize_weights", "bool", True, "divide the weights by their sum"),
        Param("eps", "float", 1e-8, "guard against division by zero", min=0.0, max=1e-2),
    ),
    merge=multislerp,
    needs_base=False,
    min_models=1,
    reference="Goddard 2025, Multi-SLERP (goddard.blog/posts/multislerp-wow-what-a-cool-idea); mergekit multislerp",
))
