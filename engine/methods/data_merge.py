"""Merges from statistics gathered on data beforehand: Fisher merging and RegMean (with MaTS's CG solver).

Both stay pure per-tensor functions: the data-dependent part (running the models over task data) is
done once by ``weightsmith learn fisher|regmean``, which writes a *statistics file* and a recipe whose
merge node names it in its ``statistics`` parameter. ``weightsmith run`` then reproduces the merge from
the weights and that file alone, streaming one tensor at a time.

Each method declares the file it reads (``StatisticsFile``): its kind, the shape of a model's statistic
for a tensor, and the metadata it uses. The executor opens and checks the file and hands the method, per
tensor, the per-model statistics as ``ctx.statistics``:

- Fisher: the diagonal empirical Fisher of the tensor (its shape), the mean over examples of the
  squared gradient of the log-likelihood; metadata ``fisher_norms`` (each model's L2 norm of its whole
  Fisher, used by ``normalize``);
- RegMean: for the weight ``[out, in]`` of a linear layer, the Gram matrix ``XᵀX / n`` ``[in, in]`` of
  that layer's inputs on the model's own task (mean over the n input rows); nothing for other tensors.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from engine.errors import EngineInputError
from engine.methods.base import (MergeInputs, MethodSpec, Param, Requirement, StatisticsFile, TensorContext,
                                 TensorStatistics)
from engine.methods.linear import WEIGHT
from engine.methods.registry import register


def gathered(ctx: TensorContext) -> TensorStatistics:
    """The tensor's statistics the executor opened for the method (a clear error when there are none)."""
    if ctx.statistics is None:
        raise EngineInputError("this method merges with statistics gathered on data, and none were handed to it "
                               "(run it in a recipe whose merge node names its statistics file)", tensor=ctx.name)
    return ctx.statistics


def _weighted_average(models: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    total = sum(weights)
    if abs(total) < 1e-12:
        raise EngineInputError("the model weights sum to zero; cannot average")
    out = torch.zeros_like(models[0])
    for w, m in zip(weights, models):
        out.add_(m, alpha=w / total)
    return out


# ---------------------------------------------------------------- Fisher merging


def fisher_merge(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """θ = Σ c_t (F_t + ε) ⊙ θ_t / Σ c_t (F_t + ε), F_t the diagonal Fisher of model t on its task.

    ``c_t`` is the model's ``weight`` (FusionBench's ``fisher_scaling_coefficients``); with
    ``normalize`` it is also multiplied by ``(1/‖F_t‖) / Σ_k (1/‖F_k‖)``, ‖F_t‖ the L2 norm of model
    t's whole Fisher, so a model whose gradients are larger overall does not dominate (FusionBench's
    ``normalize_fisher_weight``, its default). ``epsilon`` (FusionBench's ``minimal_fisher_weight``,
    1e-6) keeps the denominator positive. A tensor without Fisher values (not differentiated) gets the
    weighted average.
    """
    stats = gathered(ctx)
    weights = [float(w) for w in params["weight"]]
    if params["normalize"]:
        norms = stats.metadata("fisher_norms", {})
        missing = [k for k in inputs.keys if k not in norms]
        if missing:
            raise EngineInputError(f"the statistics hold no Fisher norm for {', '.join(missing)}; "
                                   "set normalize to false", path=stats.source)
        inverse = [1.0 / (float(norms[k]) + params["epsilon"]) for k in inputs.keys]
        weights = [w * v / sum(inverse) for w, v in zip(weights, inverse)]
    models = inputs.models
    fishers = stats.tensors()
    if any(f is None for f in fishers):
        return _weighted_average(models, weights)
    numerator = torch.zeros_like(models[0])
    denominator = torch.zeros_like(models[0])
    for w, f, m in zip(weights, fishers, models):
        f = (f + params["epsilon"]).mul_(w)
        denominator.add_(f)
        numerator.addcmul_(f, m)
    return numerator.div_(denominator)


register(MethodSpec(
    name="fisher",
    label="Fisher merging",
    family="data",
    summary="Per-weight average weighted by each model's diagonal Fisher on its task "
            "(statistics from `weightsmith learn fisher`).",
    params=(
        Param("statistics", "path", "", "Fisher statistics file written by `weightsmith learn fisher`"),
        WEIGHT,
        Param("normalize", "bool", True, "scale each model's Fisher by the inverse of its whole-model norm"),
        Param("epsilon", "float", 1e-6, "added to every Fisher value (keeps the division finite)", min=0.0, max=1.0),
    ),
    merge=fisher_merge,
    statistics_file=StatisticsFile("fisher", shape=lambda shape: shape, metadata=("fisher_norms",)),
    requirements=frozenset({Requirement.LABELED, Requirement.GRADIENTS}),
    needs_base=False,
    reference="Matena & Raffel 2022, Merging Models with Fisher-Weighted Averaging (arXiv:2111.09832)",
))


# ---------------------------------------------------------------- RegMean / MaTS


def shrink_gram(gram: torch.Tensor, alpha: float) -> torch.Tensor:
    """RegMean's regularised Gram matrix ``α G + (1 − α) diag(G)`` (off-diagonal entries scaled by α)."""
    return gram * alpha + torch.diag_embed(torch.diagonal(gram) * (1.0 - alpha))


def conjugate_gradient(a: torch.Tensor, b: torch.Tensor, x: torch.Tensor, iterations: int,
                       tolerance: float = 1e-6) -> torch.Tensor:
    """Solve ``a x = b`` for symmetric positive (semi-)definite ``a`` [n, n], every column of ``b``
    [n, k] at once, starting from ``x``; stops early when every column's residual is below
    ``tolerance`` times its right-hand side."""
    r = b - a @ x
    p = r.clone()
    rr = (r * r).sum(0)
    stop = (tolerance * b.norm(dim=0)) ** 2
    for _ in range(iterations):
        if bool((rr <= stop).all()):
            break
        ap = a @ p
        step = rr / (p * ap).sum(0).clamp_min(1e-30)
        x = x + p * step
        r = r - ap * step
        rr_next = (r * r).sum(0)
        p = r + p * (rr_next / rr.clamp_min(1e-30))
        rr = rr_next
    return x


def gram_shape(shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The Gram matrix ``[in, in]`` a linear layer's weight ``[out, in]`` is merged with; None for other tensors."""
    return (shape[1], shape[1]) if len(shape) == 2 else None


def regmean_merge(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """Linear weights: W* = (Σ_t W_t G̃_t)(Σ_t G̃_t)⁻¹, the minimiser of Σ_t ‖X_t Wᵀ − X_t W_tᵀ‖²;
    every other tensor (biases, norms) is the plain average, as in the RegMean paper.

    G_t = X_tᵀX_t / n_t is the Gram matrix of the layer's inputs on task t (from the statistics
    file) and G̃_t = α G_t + (1 − α) diag(G_t) shrinks its off-diagonal entries (``alpha``; default
    0.6 as FusionBench's CLIP configuration; α = 1 is the exact least-squares merge). ``solver``
    ``exact`` solves the system directly (a pseudo-inverse when it is singular); ``cg`` runs
    ``iterations`` steps of conjugate gradient from the average of the weights, as MaTS does — cheaper
    for wide layers and well defined when the system is singular.
    """
    grams = gathered(ctx).tensors()
    models = inputs.models
    if models[0].dim() != 2 or any(g is None for g in grams):
        return _weighted_average(models, [1.0] * len(models))
    alpha = float(params["alpha"])
    lhs = torch.zeros_like(grams[0])
    rhs = torch.zeros(models[0].shape[1], models[0].shape[0], device=ctx.device)
    for g, w in zip(grams, models):
        g = shrink_gram(g, alpha)
        lhs.add_(g)
        rhs.addmm_(g, w.T)
    if params["solver"] == "cg":
        start = _weighted_average(models, [1.0] * len(models)).T
        return conjugate_gradient(lhs, rhs, start, int(params["iterations"])).T.contiguous()
    solution, info = torch.linalg.solve_ex(lhs, rhs)
    if int(info) != 0 or not bool(torch.isfinite(solution).all()):
        solution = torch.linalg.pinv(lhs, hermitian=True) @ rhs
    return solution.T.contiguous()


register(MethodSpec(
    name="regmean",
    label="RegMean",
    family="data",
    summary="Per linear layer, the weights that best reproduce every model's outputs on its own task's inputs "
            "(statistics from `weightsmith learn regmean`).",
    params=(
        Param("statistics", "path", "", "Gram-matrix statistics file written by `weightsmith learn regmean`"),
        Param("alpha", "float", 0.6, "scale of the Gram matrices' off-diagonal entries (1 = exact least squares)",
              min=0.0, max=1.0),
        Param("solver", "choice", "exact", "solve each layer's system directly, or by conjugate gradient (MaTS)",
              choices=("exact", "cg")),
        Param("iterations", "int", 100, "conjugate-gradient steps per layer (solver cg)", min=1, max=10000),
    ),
    merge=regmean_merge,
    statistics_file=StatisticsFile("regmean", shape=gram_shape),
    requirements=frozenset({Requirement.UNLABELED}),
    needs_base=False,
    reference="Jin et al. 2023, Dataless Knowledge Fusion by Merging Weights of Language Models (arXiv:2212.09849); "
              "Tam et al. 2024, Merging by Matching Models in Task Parameter Subspaces (MaTS, arXiv:2312.04339)",
))
