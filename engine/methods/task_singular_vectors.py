"""Low-rank merges of 2-D weights through the SVD: Task Singular Vectors (TSV-M) and CART.

- TSV-M: Gargiulo et al. 2025, "Task Singular Vectors: Reducing Task Interference in Model Merging"
  (CVPR 2025, arXiv:2412.00081); reference code in FusionBench
  (``fusion_bench/method/task_singular_vector/utils/TSVM_utils.py``, ``compute_and_sum_svd_mem_reduction``).
- CART: Choi et al. 2024, "Revisiting Weight Averaging for Model Merging" (arXiv:2411.12567): centred
  task vectors around the models' average, each replaced by its best low-rank approximation.

Tensors that are not matrices take the mean task vector (TSV-M) or the average (CART), as the authors do.
"""

from __future__ import annotations

from typing import Any

import torch

from engine.methods.base import MergeInputs, MethodSpec, Param, TensorContext
from engine.methods.params import WEIGHT
from engine.methods.registry import register
from engine.methods.spectral import polar, top_singular


def tsv_update(deltas: list[torch.Tensor]) -> torch.Tensor:
    """Σ over tasks of each task's top ``floor(r/T)`` singular triplets, with the stacked singular vectors
    orthogonalised (their polar factors) so that the tasks' subspaces no longer interfere."""
    keep = min(deltas[0].shape) // len(deltas)
    if keep == 0:
        return torch.stack(deltas).mean(dim=0)
    us, ss, vhs = [], [], []
    for tau in deltas:
        u, s, v = top_singular(tau, keep)
        us.append(u)
        ss.append(s)
        vhs.append(v.T)
    return (polar(torch.cat(us, dim=1)) * torch.cat(ss)) @ polar(torch.cat(vhs, dim=0))


def tsv_m(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """θ = θ0 + α · TSV(w_1 τ_1, …, w_T τ_T) for matrices; θ0 + α · mean_t(w_t τ_t) for other tensors.

    Choices, following the FusionBench reference: each task keeps ``floor(rank / T)`` singular triplets
    (the paper's 1/T budget); the concatenated left and right singular vectors are orthogonalised by
    their polar factor (SVD); per-model ``weight``s scale the task vectors before the SVD (the
    reference's list-valued α) and ``alpha`` scales the merged update (its scalar α, default 1).
    With ``floor(rank / T) = 0`` (more tasks than the matrix's rank) the mean task vector is used.
    """
    deltas = [d * float(w) for d, w in zip(inputs.deltas, params["weight"])]
    if inputs.base.dim() == 2 and inputs.base.numel():
        update = tsv_update(deltas)
    else:
        update = torch.stack(deltas).mean(dim=0)
    return update.mul_(float(params["alpha"])).add_(inputs.base)


def low_rank(matrix: torch.Tensor, fraction: float) -> torch.Tensor:
    """The best approximation of ``matrix`` with rank ``max(1, round(fraction · rank))`` (Eckart–Young)."""
    u, s, v = top_singular(matrix, max(1, round(fraction * min(matrix.shape))))
    return (u * s) @ v.T


def cart(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """θ = θ̄ + λ Σ_t LowRank_k(θ_t − θ̄), θ̄ the models' average, for matrices; θ̄ for other tensors.

    The centred vectors sum to zero, so it is their low-rank parts that carry each task's own
    directions back into the average (the paper's "centred task arithmetic"). ``rank_fraction`` is k
    as a fraction of each matrix's rank (a small fraction; the paper tunes it, as it tunes ``lambda``, its
    scaling). Needs no base: the average is the anchor.
    """
    models = inputs.models
    mean = torch.stack(models).mean(dim=0)
    if mean.dim() != 2 or mean.numel() == 0:
        return mean
    fraction = float(params["rank_fraction"])
    update = sum(low_rank(m - mean, fraction) for m in models)
    return update.mul_(float(params["lambda"])).add_(mean)


register(MethodSpec(
    name="tsv_m",
    label="TSV-M",
    family="iso",
    summary="Keep each task's top singular directions, orthogonalise them across tasks, and sum.",
    params=(
        WEIGHT,
        Param("alpha", "float", 1.0, "scaling of the merged update", min=-5.0, max=5.0, layerwise=True),
    ),
    merge=tsv_m,
    needs_base=True,
    min_models=1,
    scale="alpha",
    reference="Gargiulo et al. 2025, Task Singular Vectors (arXiv:2412.00081); FusionBench TSVM",
))

register(MethodSpec(
    name="cart",
    label="CART",
    family="iso",
    summary="Average the models, then add back each model's low-rank deviation from that average.",
    params=(
        Param("rank_fraction", "float", 0.12, "rank kept of each centred matrix, as a fraction of its rank",
              min=0.0, max=1.0, layerwise=True),
        Param("lambda", "float", 1.0, "scaling of the summed low-rank deviations", min=-5.0, max=5.0,
              layerwise=True),
    ),
    merge=cart,
    needs_base=False,
    min_models=2,
    reference="Choi et al. 2024, Revisiting Weight Averaging for Model Merging (arXiv:2411.12567)",
))
