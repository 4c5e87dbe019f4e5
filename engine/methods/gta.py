"""The generalized task-arithmetic core shared by TIES, DARE, Breadcrumbs and DELLA (mergekit's term).

Every member computes ``θ = θ0 + λ · combine(sparsify(τ_t))``: each task vector is sparsified (its own
way), multiplied by its weight, optionally put through TIES's sign election and disjoint mean, summed
(or averaged) and scaled. ``gta_merge`` runs that pipeline on cache-sized chunks of the flattened
tensor on the CPU (spread over worker threads) and on the whole tensor elsewhere (see
``engine.methods.streaming``).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from engine.errors import EngineInputError
from engine.methods.base import MergeInputs, TensorContext
from engine.methods.streaming import chunk_slices, run_chunks

SparsifyChunk = Callable[[int, slice, torch.Tensor], None]


def combine(deltas: list[torch.Tensor], weights: Sequence[float], *, elect_sign: bool,
            normalize: bool) -> torch.Tensor:
    """Weighted merge of (already sparsified) task vectors, as mergekit's generalized task arithmetic.

    ``deltas`` are owned by the caller and overwritten. Each is multiplied by its weight. Without sign
    election the result is ``Σ w_t τ_t`` (divided by ``Σ w_t`` when ``normalize`` and that sum is not
    ~0). With it, the elected sign is ``γ = +1 where Σ w_t τ_t ≥ 0, else −1`` (mergekit breaks the tie
    at exactly 0 towards +1; the TIES authors' code breaks it by the model-wide majority sign) and only
    entries whose weighted value has sign ``γ`` contribute: ``Σ_agree w_t τ_t``, divided by
    ``Σ_agree w_t`` when ``normalize`` (the disjoint mean; entries without contributors stay 0).
    """
    for d, w in zip(deltas, weights):
        if w != 1:
            d.mul_(float(w))
    if not elect_sign:
        mixed = deltas[0]
        for d in deltas[1:]:
            mixed.add_(d)
        total = float(sum(weights))
        if normalize and abs(total) >= 1e-8:
            mixed.div_(total)
        return mixed
    sign = torch.add(deltas[0], deltas[1]) if len(deltas) > 1 else deltas[0].clone()
    for d in deltas[2:]:
        sign.add_(d)
    sign.sign_().add_(0.5).sign_()
    mixed = den = None
    for d, w in zip(deltas, weights):
        d.mul_(sign).clamp_(min=0)
        if mixed is None:
            mixed = d
            if normalize:
                den = torch.sign(d).mul_(float(w))
        else:
            mixed.add_(d)
            if normalize:
                den.add_(d.sign_(), alpha=float(w))
    mixed.mul_(sign)
    if normalize:
        if min(weights) > 0:  # den is 0 exactly where mixed is 0, else at least the smallest weight
            mixed.div_(den.clamp_(min=1e-30))
        else:  # a zero divisor becomes 1 (mergekit's rule), in float arithmetic (boolean masks are slow)
            nonzero = den.abs().sign_()
            mixed.div_(den.add_(1.0).sub_(nonzero))
    return mixed


def gta_merge(inputs: MergeInputs, params: dict[str, Any], sparsify: SparsifyChunk | None, *,
              elect_sign: bool, rescale_l1: bool = False) -> torch.Tensor:
    """``θ0 + λ · combine(sparsify(τ_t))``, slice by slice of the flattened tensor (``run_chunks``).

    ``sparsify(t, sl, d)`` sparsifies model t's values ``d`` at flat positions ``sl`` in place; it must
    depend on nothing but its arguments (slices may run in any order, on several threads). With
    ``rescale_l1`` a first pass measures, per model, the L1 norm of τ_t before and after sparsifying and
    the survivors are scaled to restore it (mergekit's ``rescale``; left as is when either norm < 1e-7).
    Reads ``weight``, ``normalize`` and ``lambda`` from ``params``.
    """
    base = inputs.base
    base_flat = base.reshape(-1)
    chunks = chunk_slices(base.numel(), base.device)
    factors = _l1_factors(inputs, sparsify, chunks) if rescale_l1 and sparsify is not None else None
    out = torch.empty(base.shape, dtype=base.dtype, device=base.device)
    out_flat = out.view(-1)
    lam = float(params["lambda"])

    def work(sl: slice) -> None:
        deltas = inputs.fresh_deltas(sl)
        if sparsify is not None:
            for t, d in enumerate(deltas):
                sparsify(t, sl, d)
                if factors is not None and factors[t] != 1:
                    d.mul_(factors[t])
        mixed = combine(deltas, params["weight"], elect_sign=elect_sign, normalize=params["normalize"])
        torch.add(base_flat[sl], mixed, alpha=lam, out=out_flat[sl])

    run_chunks(chunks, work)
    return out


def _l1_factors(inputs: MergeInputs, sparsify: SparsifyChunk, chunks: list[slice]) -> list[float]:
    """Per model ``‖τ_t‖₁ / ‖sparsify(τ_t)‖₁`` over the whole tensor (1 when either is below 1e-7)."""
    def norms(sl: slice) -> torch.Tensor:
        deltas = inputs.fresh_deltas(sl)
        before = torch.stack([d.abs().sum(dtype=torch.float64) for d in deltas])
        for t, d in enumerate(deltas):
            sparsify(t, sl, d)
        return torch.stack([before, torch.stack([d.abs().sum(dtype=torch.float64) for d in deltas])])

    total = sum(run_chunks(chunks, norms)).tolist()
    return [x / y if x >= 1e-7 and y >= 1e-7 else 1.0 for x, y in zip(*total)]


def magnitudes_at(inputs: MergeInputs) -> Callable[[slice | torch.Tensor], list[torch.Tensor]]:
    """``values_at`` for ``select_ranks``: |τ_t| at the given flat positions, one tensor per model."""
    return lambda index: [d.abs_() for d in inputs.fresh_deltas(index)]


def check_scope(params: dict[str, Any], ctx: TensorContext) -> None:
    """Raise a clear error when a ``scope='model'`` method runs without its statistics pass."""
    if params.get("scope") == "model" and ctx.stats is None:
        raise EngineInputError("scope 'model' needs the whole-model statistics pass, which did not run",
                               tensor=ctx.name)
