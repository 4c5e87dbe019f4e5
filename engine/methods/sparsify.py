"""Shared trimming helpers: keep counts, the Breadcrumbs window, random keep masks, L1 rescaling.

Thresholds come from the exact selection of ``engine.methods.streaming``. Counts follow mergekit 0.1.5
(``mergekit/sparsify.py``): keeping a fraction ``density`` of ``n`` entries keeps
``k = max(1, floor(density·n))`` of them; ``density ≥ 1`` keeps everything and ``density ≤ 0`` nothing.
Methods turn counts into thresholds ("magnitude ≥ the k-th largest"); where equal magnitudes straddle a
threshold (common in fp16/bf16 weights) a per-tensor trim falls back to ``sorted_window_mask``, which
keeps exactly the count, splitting the tie as mergekit's sort does. Whole-model thresholds keep ties.
"""

from __future__ import annotations

import math

import torch


def keep_count(density: float, n: int) -> int:
    """How many of ``n`` entries a ``density`` keeps (mergekit's count: at least one when density > 0)."""
    if density >= 1:
        return n
    if density <= 0 or n == 0:
        return 0
    return max(1, int(density * n))


def band_bounds(n: int, density: float, gamma: float) -> tuple[int, int]:
    """Ascending-rank window ``[start, stop)`` of the magnitudes Model Breadcrumbs keeps.

    mergekit 0.1.5 (``magnitude_outliers``): keep ``target = floor(density·n)`` entries after dropping the
    ``floor(gamma·n)`` largest; when that would drop too many, fewer outliers are dropped so ``target``
    entries remain. ``density ≥ 1`` keeps everything.
    """
    if density >= 1:
        return 0, n
    target = max(0, int(density * n))
    n_top = int(gamma * n)
    start = max(0, n - target - n_top)
    return start, start + target


RANDOM_BLOCK = 1 << 18
_GOLDEN = 0x9E3779B97F4A7C15


def random_keep_mask(seed: int, positions: slice, density: float, device: torch.device) -> torch.Tensor:
    """Bernoulli(``density``) keep mask, as float 0/1, for flat positions ``positions`` of a tensor.

    Entries are drawn on the CPU in fixed blocks of ``RANDOM_BLOCK`` positions, block b from its own
    generator seeded from (``seed``, b), so the draws for a position never depend on how the tensor is
    sliced, in what order or on which thread the slices run, or on the device. Each entry compares one
    uniform 32-bit word (64-bit draws split in two: half the generator calls of ``torch.rand``) with
    ``density·2³²``, in float32 (probabilities exact to about 2⁻²⁴; float masks are much faster on the
    CPU than boolean ones).
    """
    start, stop = positions.start, positions.stop
    if density >= 1 or stop <= start:
        return torch.ones(max(0, stop - start), device=device)
    parts = []
    for block in range(start // RANDOM_BLOCK, (stop - 1) // RANDOM_BLOCK + 1):
        first = block * RANDOM_BLOCK
        lo, hi = max(start, first) - first, min(stop, first + RANDOM_BLOCK) - first
        gen = torch.Generator().manual_seed((seed + (block + 1) * _GOLDEN) % 2**63)
        words = torch.empty((hi + 1) // 2, dtype=torch.int64).random_(-2**63, 2**63 - 1, generator=gen)
        parts.append(words.view(torch.int32)[lo:hi])
    bits = parts[0] if len(parts) == 1 else torch.cat(parts)
    return bits.to(device).to(torch.float32).lt_(math.floor(density * 2.0**32) - 2.0**31)


def rescale_l1(original: torch.Tensor, masked: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Scale ``masked`` (in place) so its L1 norm matches ``original``'s — mergekit's ``rescale: true``.

    Left as is when either norm is below ``eps`` (mergekit's rule).
    """
    before = original.abs().sum()
    after = masked.abs().sum()
    if before >= eps and after >= eps:
        masked.mul_(before / after)
    return masked


def sorted_window_mask(magnitudes: torch.Tensor, start: int, stop: int, *, descending: bool) -> torch.Tensor:
    """Boolean mask of the entries at ranks ``[start, stop)`` of torch's default sort of the float32 flat
    ``magnitudes``: the order mergekit's ``magnitude``/``magnitude_outliers`` use (the sort is deterministic
    for given values and torch version), so ties at a cut are split exactly as mergekit splits them."""
    mask = torch.zeros(magnitudes.numel(), dtype=torch.bool, device=magnitudes.device)
    mask[torch.sort(magnitudes.reshape(-1).float(), descending=descending).indices[start:stop]] = True
    return mask
