"""Isotropic merging: flatten the spectrum of the summed task matrix (Iso-C), plus task subspaces (Iso-CTS).

Marczak et al. 2025, "No Task Left Behind: Isotropic Model Merging with Common and Task-Specific
Subspaces" (arXiv:2502.04959); reference code danielm1405/iso-merging (``src/utils/iso.py``).
"""

from __future__ import annotations

from typing import Any

import torch

from engine.methods.base import MergeInputs, MethodSpec, Param, TensorContext
from engine.methods.registry import register
from engine.methods.spectral import polar, top_singular


def mean_delta(inputs: MergeInputs) -> torch.Tensor:
    """The average task vector (what both methods use for tensors that are not matrices)."""
    return torch.stack(inputs.deltas).mean(dim=0)


def iso_c_update(deltas: list[torch.Tensor]) -> torch.Tensor:
    """U · mean(S) · Vᵀ for the SVD U S Vᵀ of Σ_t τ_t: the summed directions with a flat spectrum."""
    u, s, vh = torch.linalg.svd(torch.stack(deltas).sum(dim=0), full_matrices=False)
    return (u @ vh).mul_(s.mean())


def iso_cts_update(deltas: list[torch.Tensor], common_fraction: float) -> torch.Tensor:
    """Common subspace of Σ τ_t plus each task's top directions orthogonal to it, with a flat spectrum."""
    rank = min(deltas[0].shape)
    n_tasks = len(deltas)
    specific = round((rank - int(rank * common_fraction)) / n_tasks) * n_tasks
    if specific > rank:
        specific -= n_tasks
    common, per_task = rank - specific, specific // n_tasks
    u, s, vh = torch.linalg.svd(torch.stack(deltas).sum(dim=0), full_matrices=False)
    uc, sc, vc = u[:, :common], s[:common], vh[:common]
    us, ss, vs = [], [], []
    for tau in deltas:
        tu, ts, tv = top_singular(tau - uc @ (uc.T @ tau), per_task)
        us.append(tu)
        ss.append(ts)
        vs.append(tv.T)
    big_u = torch.cat(us + [uc], dim=1)
    big_v = torch.cat(vs + [vc], dim=0)
    flat = torch.cat(ss + [sc]).mean()
    return (polar(big_u) @ polar(big_v)).mul_(flat)


def _is_matrix(t: torch.Tensor) -> bool:
    return t.dim() == 2


def iso_c(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """θ = θ0 + α · U·mean(S)·Vᵀ for 2-D weights, with U S Vᵀ the SVD of Σ_t τ_t.

    Choices, following the authors' code: the SVD is of the *sum* of the task vectors (thin SVD, on the
    compute device, float32) and the flat spectrum is the mean of all its singular values. Tensors that
    are not 2-D (biases, norms, and also convolution kernels) fall back to task arithmetic with the mean
    task vector, ``θ0 + α·mean_t(τ_t)``, as the authors' code does. Their special case for CLIP's
    ``text_projection`` is not reproduced (it is a matrix here like any other).
    """
    deltas = inputs.deltas
    update = iso_c_update(deltas) if _is_matrix(deltas[0]) else mean_delta(inputs)
    return update.mul_(float(params["alpha"])).add_(inputs.base)


def iso_cts(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """θ = θ0 + α · (common + task-specific subspaces with a flat spectrum) for 2-D weights.

    Following the authors' code: of the r = min(shape) directions, ``common_space_fraction`` (adjusted
    so the rest divides evenly among the T tasks) come from the SVD of Σ τ_t; each task adds its top
    r_t = (r − common)/T directions of τ_t with the common left subspace projected out (when rounding
    would give the tasks more than r directions, each gets one fewer); the stacked left
    and right bases are re-orthogonalised by their polar factors (U Vᵀ of their SVDs) and all singular
    values are replaced by their mean. Tensors that are not 2-D fall back to ``θ0 + α·mean_t(τ_t)``.
    """
    deltas = inputs.deltas
    if _is_matrix(deltas[0]):
        update = iso_cts_update(deltas, float(params["common_space_fraction"]))
    else:
        update = mean_delta(inputs)
    return update.mul_(float(params["alpha"])).add_(inputs.base)


ALPHA = Param("alpha", "float", 1.0, "scaling of the merged update", min=0.0, max=5.0, layerwise=True,
              typical=(0.0, 3.0))

register(MethodSpec(
    name="iso_c",
    label="Iso-C",
    family="iso",
    summary="Sum the task matrices and flatten their singular-value spectrum (isotropic merge).",
    params=(ALPHA,),
    merge=iso_c,
    needs_base=True,
    scale="alpha",
    min_models=1,
    reference="Marczak et al. 2025, No Task Left Behind (arXiv:2502.04959); code danielm1405/iso-merging",
))

register(MethodSpec(
    name="iso_cts",
    label="Iso-CTS",
    family="iso",
    summary="Iso-C on a common subspace plus task-specific subspaces orthogonal to it.",
    params=(
        ALPHA,
        Param("common_space_fraction", "float", 0.8, "fraction of the directions taken from the common subspace",
              min=0.0, max=1.0),
    ),
    merge=iso_cts,
    needs_base=True,
    scale="alpha",
    min_models=1,
    reference="Marczak et al. 2025, No Task Left Behind (arXiv:2502.04959); code danielm1405/iso-merging",
))
