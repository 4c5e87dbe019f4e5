"""Merges from statistics gathered on data beforehand: Fisher merging, RegMean, MaTS and Concrete subspace masks.

All stay pure per-tensor functions: the data-dependent part (running the models over task data) is
done once by ``weightsmith learn fisher|regmean|mats|concrete``, which writes a *statistics file* and a recipe whose
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
  MaTS reads the same file;
- Concrete: one learned mask per tensor (its shape), shared by every model and stored once, under
  the key of one of them.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from engine.errors import EngineInputError
from engine.methods.base import (MergeInputs, MethodSpec, Param, Requirement, StatisticsFile, TensorContext,
                                 TensorStatistics)
from engine.methods.linear import WEIGHT, task_arithmetic
from engine.methods.params import density
from engine.methods.registry import register
from engine.methods.ties import ties


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


def gram_system(grams: Sequence[torch.Tensor], models: Sequence[torch.Tensor],
                alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """RegMean's linear system for one layer, ``(Σ_t G̃_t) Wᵀ = Σ_t G̃_t W_tᵀ``: the left-hand side
    ``[in, in]`` and the right-hand side ``[in, out]`` (G̃_t = ``shrink_gram(G_t, alpha)``)."""
    lhs = torch.zeros_like(grams[0])
    rhs = torch.zeros(models[0].shape[1], models[0].shape[0], device=grams[0].device)
    for g, w in zip(grams, models):
        g = shrink_gram(g, alpha)
        lhs.add_(g)
        rhs.addmm_(g, w.T)
    return lhs, rhs


def regmean_merge(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """Linear weights: W* = (Σ_t W_t G̃_t)(Σ_t G̃_t)⁻¹, the minimiser of Σ_t ‖X_t Wᵀ − X_t W_tᵀ‖²;
    every other tensor (biases, norms) is the plain average, as in the RegMean paper.

    G_t = X_tᵀX_t / n_t is the Gram matrix of the layer's inputs on task t (from the statistics
    file) and G̃_t = α G_t + (1 − α) diag(G_t) shrinks its off-diagonal entries (``alpha``; default
    0.6 as FusionBench's CLIP configuration; α = 1 is the exact least-squares merge). The system is
    solved directly (a pseudo-inverse when it is singular); solving it by conjugate gradient is
    ``mats`` (``regmean_migrate`` turns the ``solver`` of older recipes into it).
    """
    grams = gathered(ctx).tensors()
    models = inputs.models
    if models[0].dim() != 2 or any(g is None for g in grams):
        return _weighted_average(models, [1.0] * len(models))
    lhs, rhs = gram_system(grams, models, float(params["alpha"]))
    solution, info = torch.linalg.solve_ex(lhs, rhs)
    if int(info) != 0 or not bool(torch.isfinite(solution).all()):
        solution = torch.linalg.pinv(lhs, hermitian=True) @ rhs
    return solution.T.contiguous()


def regmean_migrate(params: dict[str, Any]) -> dict[str, Any]:
    """RegMean parameters from recipes written before ``mats`` existed: ``solver`` exact is RegMean
    itself; ``solver`` cg (conjugate gradient from the average) is ``mats`` from the average with the
    same ``alpha`` (RegMean's default when unset) and ``iterations``."""
    out = dict(params)
    solver = out.pop("solver", "exact")
    if solver == "cg":
        out.update(method="mats", init="average", alpha=out.get("alpha", 0.6))
    else:
        out.pop("iterations", None)
    return out


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
    ),
    merge=regmean_merge,
    migrate=regmean_migrate,
    statistics_file=StatisticsFile("regmean", shape=gram_shape),
    requirements=frozenset({Requirement.UNLABELED}),
    needs_base=False,
    reference="Jin et al. 2023, Dataless Knowledge Fusion by Merging Weights of Language Models (arXiv:2212.09849); "
              "Tam et al. 2024, Merging by Matching Models in Task Parameter Subspaces (MaTS, arXiv:2312.04339)",
))


# ---------------------------------------------------------------- MaTS

MATS_STARTS = ("task_arithmetic", "average", "base")


def mats_start(inputs: MergeInputs, params: dict[str, Any], name: str) -> torch.Tensor:
    """Where MaTS's conjugate gradient starts: task arithmetic ``θ0 + λ Σ_t τ_t``, the plain average
    of the models, or the base θ0 (``init``)."""
    if params["init"] == "average":
        return _weighted_average(inputs.models, [1.0] * len(inputs))
    if inputs.base is None:
        raise EngineInputError(f"MaTS starting from '{params['init']}' needs a base model on the merge node's "
                               "'base' port (or set init to 'average')", tensor=name)
    if params["init"] == "base":
        return inputs.base.clone()
    out = inputs.base.clone()
    for d in inputs.deltas:
        out.add_(d, alpha=float(params["lambda"]))
    return out


def mats_merge(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """Linear weights: ``iterations`` conjugate-gradient steps on RegMean's system
    ``(Σ_t G̃_t) Wᵀ = Σ_t G̃_t W_tᵀ`` from ``init``; every other tensor is the plain average.

    Tam et al. ("Merging by Matching Models in Task Parameter Subspaces") cast merging as matching
    each model in its task subspace, a linear system whose matrix is the sum of the models' curvature
    estimates; closed-form merges (averaging: identity; Fisher merging: diagonal Fisher; RegMean:
    input Gram matrices) are its exact solutions. MaTS solves it by conjugate gradient from a chosen
    start, which makes non-diagonal estimates tractable and acts as a regulariser when stopped early.

    Choices, after the authors' code (r-three/mats, ``src/merging/conjugateGradient_fisherMerging.py``
    with the RegMean objective, and its README's commands):

    - the estimate is the per-layer input Gram matrix ``G_t = X_tᵀX_t / n`` of RegMean's statistics
      file (``weightsmith learn regmean`` or ``learn mats``); with a diagonal Fisher the system is
      diagonal and its solution is Fisher merging (``fisher``); the blockwise (K-FAC) Fisher, which
      also needs each layer's output-gradient Gram matrix, is not gathered here;
    - ``alpha`` scales the Grams' off-diagonal entries (the code's ``model_lambda``; its commands use
      1.0, no shrinkage);
    - the start (the code's ``--initialization``) is task arithmetic at ``lambda`` (its commands start
      from the task-vector merge at λ 0.3) by default, or the average, or the base; the average start
      with RegMean's ``alpha`` is what older recipes' RegMean ``solver cg`` computed;
    - 100 iterations (its commands), no preconditioner (scipy's ``cg`` as called there), stopping
      early once the residual is below 1e-6 of the right-hand side (scipy stops at 1e-5);
    - tensors without Gram matrices (biases, norms) are averaged, as the code does.
    """
    grams = gathered(ctx).tensors()
    models = inputs.models
    if models[0].dim() != 2 or any(g is None for g in grams):
        return _weighted_average(models, [1.0] * len(models))
    lhs, rhs = gram_system(grams, models, float(params["alpha"]))
    start = mats_start(inputs, params, ctx.name).T
    return conjugate_gradient(lhs, rhs, start, int(params["iterations"])).T.contiguous()


register(MethodSpec(
    name="mats",
    label="MaTS",
    family="data",
    summary="RegMean's per-layer system solved by conjugate gradient from task arithmetic "
            "(statistics from `weightsmith learn mats` or `learn regmean`).",
    params=(
        Param("statistics", "path", "", "Gram-matrix statistics file written by `weightsmith learn mats` "
                                        "or `weightsmith learn regmean`"),
        Param("init", "choice", "task_arithmetic", "where the conjugate gradient starts",
              choices=MATS_STARTS),
        Param("lambda", "float", 0.3, "task-arithmetic scale of the start (init task_arithmetic)",
              min=-5.0, max=5.0, typical=(0.0, 1.0)),
        Param("alpha", "float", 1.0, "scale of the Gram matrices' off-diagonal entries (1 = none shrunk)",
              min=0.0, max=1.0),
        Param("iterations", "int", 100, "conjugate-gradient steps per layer", min=1, max=10000),
    ),
    merge=mats_merge,
    statistics_file=StatisticsFile("regmean", shape=gram_shape),
    requirements=frozenset({Requirement.UNLABELED}),
    needs_base=False,
    reference="Tam et al. 2024, Merging by Matching Models in Task Parameter Subspaces (MaTS, arXiv:2312.04339); "
              "code r-three/mats",
))


# ---------------------------------------------------------------- Concrete subspace masks

CONCRETE_BASES = ("task_arithmetic", "ties")


def shared_mask(ctx: TensorContext) -> torch.Tensor:
    """The tensor's learned mask: a Concrete mask file stores one mask per tensor, shared by every model,
    under the key of one of them (the first input when it was learned)."""
    stats = gathered(ctx)
    mask = next((m for m in stats.tensors() if m is not None), None)
    if mask is None:
        raise EngineInputError("the mask file holds no mask for this tensor (learned on another model? "
                               "learn again)", path=stats.source, tensor=ctx.name)
    return mask


def concrete_merge(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """The base method (``base_method``: task arithmetic or TIES) over the masked task vectors m ⊙ τ_t.

    Tang et al. ("Concrete Subspace Learning based Interference Elimination for Multi-task Model
    Fusion") learn one mask m shared by all task vectors, a Concrete (relaxed Bernoulli) sample per
    parameter, by meta-learning on unlabeled test inputs: the merge through the masked task vectors
    minimises AdaMerging's prediction entropy (``engine.learn.concrete``). The mask file holds the
    final sample, already divided by its mean over each tensor (FusionBench's rescaling), so with a
    mask of ones the merge is exactly the base method. Task arithmetic is
    ``θ0 + λ Σ_t w_t (m ⊙ τ_t)``; TIES trims, elects and averages the masked vectors (per tensor,
    ties at the cut kept, the disjoint mean — its defaults). The mask is learned against task
    arithmetic, as FusionBench's ``clip_concrete_task_arithmetic`` does; applying it under TIES is an
    option that paper does not evaluate.
    """
    mask = shared_mask(ctx)
    masked = MergeInputs(inputs.base, inputs.keys, deltas=[mask * d for d in inputs.deltas])
    if params["base_method"] == "ties":
        return ties(masked, {**params, "scope": "tensor", "tie_break": "keep_all", "normalize": True}, ctx)
    return task_arithmetic(masked, {**params, "normalize": False}, ctx)


register(MethodSpec(
    name="concrete",
    label="Concrete subspace mask",
    family="data",
    summary="Task arithmetic or TIES over task vectors masked by a shared learned Concrete mask "
            "(mask file from `weightsmith learn concrete`).",
    params=(
        Param("statistics", "path", "", "mask file written by `weightsmith learn concrete`"),
        Param("base_method", "choice", "task_arithmetic", "the merge applied to the masked task vectors",
              choices=CONCRETE_BASES),
        WEIGHT,
        Param("lambda", "float", 0.3, "global scaling of the merged task vector", min=-5.0, max=5.0,
              layerwise=True, typical=(0.0, 2.0)),
        density(0.2, "TIES: fraction of each masked task vector's largest-magnitude entries kept"),
    ),
    merge=concrete_merge,
    statistics_file=StatisticsFile("concrete", shape=lambda shape: shape),
    requirements=frozenset({Requirement.UNLABELED, Requirement.GRADIENTS}),
    needs_base=True,
    reference="Tang et al. 2023, Concrete Subspace Learning based Interference Elimination for Multi-task Model "
              "Fusion (arXiv:2312.06173); code tanganke/fusion_bench (method/concrete_subspace)",
))
