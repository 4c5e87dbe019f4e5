"""STF: Superpose Task-specific Features (Qiu, Wu, Li, Guo and Yao, EMNLP 2025, arXiv:2502.10698;
the first version's title: "Superpose Singular Features for Model Merging", SFTM).

A weight matrix maps input directions to output features. Task t's update ``τ_t = Σ_j σ_tj u_tj v_tjᵀ``
(its SVD) sends its input direction ``v_tj`` to the output feature ``σ_tj u_tj``. STF looks for one
merged update that keeps every task's strongest features: it superposes the tasks' own rank-one
features, ``Δ = Σ_(t,j) α_tj u_tj v_tjᵀ``, and chooses the weights α so that each kept feature is
preserved along its own output direction, ``u_tjᵀ Δ v_tj = σ_tj``. That is a linear system in α of
size (kept features)²:

    Σ_(s,k) (u_tjᵀ u_sk)(v_skᵀ v_tj) α_sk = σ_tj,   i.e.  ((UᵀU) ∘ (VᵀV)) α = σ,

U and V the kept left and right singular vectors of all tasks side by side and ∘ the entrywise
product. The matrix is positive semi-definite (a Schur product of two Gram matrices); it is solved in
float64 through its eigendecomposition (the SVDs stay in the tasks' dtype), eigenvalues below the SVDs' rounding level (the dtype's epsilon times the
number of features, relative to the largest) dropped (the minimum-norm
least-squares solution when features repeat across tasks or outnumber the matrix's rank).

What follows from the construction (tested): one task gives its best rank-k approximation; tasks
whose features are mutually orthogonal add up unchanged (α = σ); T copies of one task give that task
once, not T times (the shared features split their weight); and every kept feature of a generic set
is preserved exactly.

Choices made here, because the paper's method section and its reference code
(github.com/LARS-research/STF) could not be read from this machine — only its abstract, which states
the construction above (SVD feature bases, a linear system preserving the tasks' output features):
each task keeps ``rank_fraction`` of its matrix's rank (at least one feature; 0.1 by default, the
share at which Task Singular Vectors found a task matrix keeps 99 % of its accuracy); per-model
``weight``s scale the task vectors before the SVD; ``lambda`` scales the merged update; tensors that
are not matrices take the mean task vector, as TSV-M does.
"""

from __future__ import annotations

from typing import Any

import torch

from engine.methods.base import MergeInputs, MethodSpec, Param, TensorContext
from engine.methods.params import LAMBDA, WEIGHT
from engine.methods.registry import register
from engine.methods.spectral import top_singular


def kept_features(tau: torch.Tensor, fraction: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The top ``max(1, round(fraction · rank))`` singular triplets of ``tau``: U [m, k], σ [k], V [n, k]."""
    return top_singular(tau, max(1, round(fraction * min(tau.shape))))


def superpose(deltas: list[torch.Tensor], fraction: float) -> torch.Tensor:
    """The merged update ``Σ α_tj u_tj v_tjᵀ`` whose weights α preserve each task's kept features
    (``u_tjᵀ Δ v_tj = σ_tj``): the SVDs in the tasks' dtype, the (features × features) system in float64."""
    parts = [kept_features(tau, fraction) for tau in deltas]
    u = torch.cat([p[0] for p in parts], dim=1)
    v = torch.cat([p[2] for p in parts], dim=1)
    sigma = torch.cat([p[1] for p in parts]).double()
    u64, v64 = u.double(), v.double()
    values, vectors = torch.linalg.eigh((u64.T @ u64) * (v64.T @ v64))
    cutoff = torch.finfo(u.dtype).eps * len(sigma) * values[-1].clamp(min=0)  # the SVDs' rounding, as pinv's rcond
    inverse = torch.where(values > cutoff, 1.0 / values, torch.zeros_like(values))
    alpha = vectors @ (inverse * (vectors.T @ sigma))
    return (u * alpha.to(u.dtype)) @ v.T


def stf(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """θ = θ0 + λ · STF(w_1 τ_1, …, w_T τ_T) for matrices; θ0 + λ · mean_t(w_t τ_t) for other tensors."""
    deltas = [d * float(w) for d, w in zip(inputs.deltas, params["weight"])]
    if inputs.base.dim() == 2 and inputs.base.numel():
        update = superpose(deltas, float(params["rank_fraction"]))
    else:
        update = torch.stack(deltas).mean(dim=0)
    return update.mul_(float(params["lambda"])).add_(inputs.base)


register(MethodSpec(
    name="stf",
    label="STF",
    family="iso",
    summary="Keep each task's strongest singular features and weight them so that every one survives the sum.",
    params=(
        WEIGHT,
        Param("rank_fraction", "float", 0.1, "features kept of each task's matrix, as a fraction of its rank",
              min=0.0, max=1.0, layerwise=True),
        LAMBDA,
    ),
    merge=stf,
    needs_base=True,
    min_models=1,
    reference="Qiu et al. 2025, Superpose Task-specific Features for Model Merging (EMNLP 2025, arXiv:2502.10698)",
))
