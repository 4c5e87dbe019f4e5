"""Cache-sized chunking of one tensor's work on the CPU, and exact selection over chunked values.

On the CPU an element-wise pipeline of many small steps (TIES: trim, elect, mean) is bound by memory
traffic and by page faults on large temporaries; running the whole pipeline on one 32K-entry slice of
the flattened tensor at a time keeps every temporary in cache (and in malloc's reused memory) and reads
each input from memory only once or twice. The chunk is exactly torch's parallel grain (32768), so each
small operation runs inline on the calling thread: measured on a shared 2-core machine, pipelines of
hundreds of OpenMP parallel regions per tensor slowed down tenfold whenever another process (or the
GUI thread) held a core, while inline chunks kept their speed. On accelerators the whole tensor is one
chunk (kernel launches, not bandwidth, dominate).

``select_ranks`` finds exact order statistics of values that are computed chunk by chunk (e.g.
``|θt − θ0|``) without materialising them: a strided sample brackets each wanted rank, one pass over
the chunks counts the values below each bracket and keeps the few inside it, and ``kthvalue`` finishes
inside the bracket. A bracket that misses falls back to materialising the values (exact either way).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

CHUNK = 1 << 15  # torch's GRAIN_SIZE: element-wise ops this small run inline (no OpenMP region)
_SAMPLE = 1 << 16
_SMALL = 1 << 20
_COPRIME = 2 * 3 * 5 * 7

ValuesAt = Callable[[slice | torch.Tensor], Sequence[torch.Tensor]]


def chunk_slices(numel: int, device: torch.device) -> list[slice]:
    """Slices of the flattened tensor to process one after another (one slice off the CPU)."""
    if device.type != "cpu" or numel <= CHUNK:
        return [slice(0, numel)]
    return [slice(i, min(i + CHUNK, numel)) for i in range(0, numel, CHUNK)]


def kth_smallest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The exact ``k``-th smallest (1-based) entry of ``values`` (any shape), as a 0-d tensor.

    Accelerators: ``topk`` of the smaller side, then its max/min (``kthvalue`` is pathologically slow
    on CUDA). CPU: ``kthvalue`` for small tensors, else the bracketing selection of ``select_ranks``.
    """
    flat = values.reshape(-1)
    n = flat.numel()
    if not 1 <= k <= n:
        raise ValueError(f"rank {k} outside 1..{n}")
    if flat.device.type != "cpu":
        if k <= n - k + 1:
            return flat.topk(k, largest=False, sorted=False).values.max()
        return flat.topk(n - k + 1, largest=True, sorted=False).values.min()
    if n <= _SMALL:
        return flat.kthvalue(k).values
    return select_ranks(lambda index: [flat[index]], n, [[k]], flat.device)[0][0]


def select_ranks(values_at: ValuesAt, n: int, ranks: Sequence[Sequence[int | None]],
                 device: torch.device) -> list[list[torch.Tensor | None]]:
    """Exact k-th smallest values (1-based ranks, None = not wanted) of per-group value streams.

    ``values_at(index)`` returns one flat tensor per group holding the values at flat positions
    ``index`` (a slice or an index tensor) of an ``n``-entry tensor; it is called on a sample and on
    each chunk, so it must be a pure function of its positions.
    """
    if device.type != "cpu" or n <= _SMALL:
        vals = values_at(slice(0, n))
        return [[None if r is None else kth_smallest(v, r) for r in rs] for v, rs in zip(vals, ranks)]
    chunks = chunk_slices(n, device)
    step = n // _SAMPLE
    while math.gcd(step, _COPRIME) != 1:
        step -= 1
    positions = torch.arange(0, step * _SAMPLE, step, dtype=torch.int64, device=device)
    samples = [torch.sort(v).values for v in values_at(positions)]
    brackets = [[None if r is None else _bracket(s, r / n) for r in rs] for s, rs in zip(samples, ranks)]
    at_least = [[0] * len(rs) for rs in ranks]
    bands: list[list[list[torch.Tensor]]] = [[[] for _ in rs] for rs in ranks]
    scratch = (torch.empty(CHUNK, device=device), torch.empty(CHUNK, device=device))
    for sl in chunks:
        for g, v in enumerate(values_at(sl)):
            for j, br in enumerate(brackets[g]):
                if br is not None:
                    at_least[g][j] += _band(v, br[0], br[1], bands[g][j], scratch)
    out: list[list[torch.Tensor | None]] = []
    for g, rs in enumerate(ranks):
        row: list[torch.Tensor | None] = []
        for j, r in enumerate(rs):
            if r is None:
                row.append(None)
                continue
            local = r - (n - at_least[g][j])
            band = torch.cat(bands[g][j]) if brackets[g][j] is not None else None
            if band is not None and 1 <= local <= band.numel():
                row.append(band.kthvalue(local).values)
            else:
                row.append(torch.cat([values_at(sl)[g] for sl in chunks]).kthvalue(r).values)
        out.append(row)
    return out


def _band(values: torch.Tensor, lo: torch.Tensor | None, hi: torch.Tensor | None, out: list[torch.Tensor],
          scratch: tuple[torch.Tensor, torch.Tensor]) -> int:
    """Append the values in ``[lo, hi]`` to ``out``; return how many values are ``≥ lo``.

    Comparisons write float 0/1 masks into ``scratch`` (chunk-sized): on the CPU, comparisons that
    allocate boolean tensors are several times slower than float arithmetic on the same data.
    """
    inside, upper = (s[: values.numel()] for s in scratch)
    if lo is None:
        torch.le(values, hi, out=inside)
        count = values.numel()
    else:
        torch.ge(values, lo, out=inside)
        count = int(inside.sum())
        if hi is not None:
            inside.mul_(torch.le(values, hi, out=upper))
    out.append(values[inside.bool()])
    return count


def _bracket(sorted_sample: torch.Tensor, p: float) -> tuple[torch.Tensor | None, torch.Tensor | None] | None:
    """Sample values around quantile ``p``, 5 standard deviations of the sample rank on each side.

    A side that runs off the sample is open (None); None when both do (the caller materialises).
    """
    m = sorted_sample.numel()
    margin = int(5.0 * math.sqrt(m * p * (1.0 - p))) + 16
    centre = int(p * m)
    lo = sorted_sample[centre - margin] if centre - margin >= 0 else None
    hi = sorted_sample[centre + margin] if centre + margin < m else None
    return None if lo is None and hi is None else (lo, hi)
