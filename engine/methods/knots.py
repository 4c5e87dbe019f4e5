"""KnOTS: align the task updates of a layer in one SVD basis, then merge their coefficients there.

Stoica, Ramesh, Ecsedi, Choshen & Hoffman 2024, "Model merging with SVD to tie the KnOTS"
(arXiv:2410.19735); reference code gstoica27/KnOTS (``task_merger.SVDMerger``, ``masking_ops``).

The reference's steps for one layer with task updates ΔW_t (out × in, LoRA's ``B_t @ A_t``):

1. concatenate them side by side, ``X = [ΔW_1 … ΔW_n]`` (out × n·in; its ``concat_across_output``);
2. one SVD ``X = U S Vᵀ`` in float64, keeping the singular values above a tolerance;
3. cut ``Vᵀ`` into n column blocks: task t is represented by ``S V_tᵀ`` (k × in) in the shared basis U,
   and ``U S V_tᵀ = ΔW_t`` exactly (the alignment loses nothing);
4. merge the n representations with a merge method (TIES or task arithmetic, optionally after DARE);
5. the merged update is ``U · merged``.

Low-rank updates never need the dense X: with ``ΔW_t = B_t A_t`` and ``A_tᵀ = Q_t R_t``, the SVD of the
out × Σr_t stack ``[B_t R_tᵀ]`` gives the same U and S (``align``).

Choices the paper or its code leave open, and what this implementation does:
- the tolerance: the reference drops singular values ≤ 1e-5 (absolute); here those ≤ 1e-5 · σ_max, so the
  choice does not depend on the updates' scale;
- the updates are the adapters' scaled deltas ``scale_t · B_t A_t`` (the reference's adapters had
  ``lora_alpha = r``, scale 1, and it multiplied ``B_t A_t`` unscaled);
- the merge of the representations is any engine method run on them as task vectors over a zero base
  (``engine.lora_merge`` offers TIES, task arithmetic, DARE-TIES, DARE-linear); the reference trims with
  one top-K threshold over the whole model's concatenated representations, here each layer is trimmed on
  its own (TIES's ``scope='tensor'``); its published configurations keep everything (``topK: 100``), where
  the two agree. Its sign election resolves an exact zero sum to the model-wide majority sign, the engine's
  to +; it weights all tasks by one λ, the engine takes a weight per task and λ.
"""

from __future__ import annotations

from typing import Sequence

import torch

SINGULAR_TOLERANCE = 1e-5  # relative to the largest singular value


def svd_of_product(b: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The thin SVD ``U, S, Vh`` of ``b @ a`` (b: m × r, a: r × n) without forming the m × n product.

    ``b = Q_b R_b`` and ``aᵀ = Q_a R_a`` (reduced QR), so ``b a = Q_b (R_b R_aᵀ) Q_aᵀ``; the small core's
    SVD ``P S Wᵀ`` gives ``U = Q_b P`` and ``Vh = Wᵀ Q_aᵀ``. Computed in float64, returned in float32;
    S is sorted descending and has min(m, n, r) entries.
    """
    q_b, r_b = torch.linalg.qr(b.double())
    q_a, r_a = torch.linalg.qr(a.double().T)
    p, s, wh = torch.linalg.svd(r_b @ r_a.T, full_matrices=False)
    return (q_b @ p).float(), s.float(), (wh @ q_a.T).float()


def align(bs: Sequence[torch.Tensor], as_: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """KnOTS's alignment of task updates ``B_t @ A_t`` (all out × in): the shared basis U (out × k) and each
    task's coefficients ``S V_tᵀ`` (k × in), with ``U @ coefficients[t] = B_t @ A_t`` up to the dropped
    singular values (those ≤ ``SINGULAR_TOLERANCE`` · σ_max).

    With ``A_tᵀ = Q_t R_t`` (reduced QR),
    ``[B_1 A_1 … B_n A_n] = [B_1 R_1ᵀ … B_n R_nᵀ] · blockdiag(Q_tᵀ)`` and
    ``blockdiag(Q_t)`` has orthonormal columns, so the SVD ``U S Pᵀ`` of the out × Σr_t stack of
    ``B_t R_tᵀ`` is the SVD of the concatenated updates, with ``V_tᵀ = P_tᵀ Q_tᵀ`` (float64 throughout)."""
    widths = {a.shape[1] for a in as_}
    if len(widths) != 1:
        raise ValueError(f"task updates of different widths {sorted(widths)}")
    qs, stack = [], []
    for b, a in zip(bs, as_):
        q, r = torch.linalg.qr(a.double().T)
        qs.append(q)
        stack.append(b.double() @ r.T)
    u, s, ph = torch.linalg.svd(torch.cat(stack, dim=1), full_matrices=False)
    keep = s > SINGULAR_TOLERANCE * s[0] if s.numel() and s[0] > 0 else torch.zeros_like(s, dtype=torch.bool)
    u, s, ph = u[:, keep], s[keep], ph[keep]
    coefficients, start = [], 0
    for q in qs:
        coefficients.append(((s[:, None] * ph[:, start:start + q.shape[1]]) @ q.T).float().contiguous())
        start += q.shape[1]
    return u.float(), coefficients
