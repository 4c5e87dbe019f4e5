"""Cache-sized chunking of one tensor's work on the CPU, and exact selection over chunked values.

On the CPU an element-wise pipeline of many small steps (TIES: trim, elect, mean) is bound by memory
traffic and by page faults on large temporaries. ``run_chunks`` runs the whole pipeline on one
256K-entry slice of the flattened tensor at a time, which keeps every temporary in cache (and in
malloc's reused memory) and reads each input from memory once or twice.

The slices are spread over a small pool of worker threads, one per torch CPU thread, each of which
runs torch single-threaded (OpenMP's thread count is per thread). Measured on a shared 2-core machine:
letting every small operation open its own OpenMP parallel region instead (hundreds per tensor) slowed
the pipeline down tenfold whenever another process held a core, while single-threaded workers kept
their speed and still use every core (torch releases the GIL inside each operation). Where torch is
not built on OpenMP, or runs single-threaded, the slices run in the calling thread. Results never
depend on how slices are spread: each slice's work is independent and results are combined in slice
order. On accelerators the whole tensor is one slice (kernel launches, not bandwidth, dominate).

``select_ranks`` finds exact order statistics of values that are computed slice by slice (e.g.
``|θt − θ0|``) without materialising them: a strided sample brackets each wanted rank, one pass over
the slices counts the values below each bracket and keeps the few inside it, and ``kthvalue``
finishes inside the bracket. A bracket that misses falls back to materialising the values (exact
either way).
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import torch

CHUNK = 1 << 18
_SAMPLE = 1 << 16
_SMALL = 1 << 20
_COPRIME = 2 * 3 * 5 * 7

ValuesAt = Callable[[slice | torch.Tensor], Sequence[torch.Tensor]]

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()
_local = threading.local()


def chunk_slices(numel: int, device: torch.device) -> list[slice]:
    """Slices of the flattened tensor to process (one slice off the CPU)."""
    if device.type != "cpu" or numel <= CHUNK:
        return [slice(0, numel)]
    return [slice(i, min(i + CHUNK, numel)) for i in range(0, numel, CHUNK)]


def run_chunks(chunks: Sequence[slice], work: Callable[[slice], Any]) -> list[Any]:
    """``[work(sl) for sl in chunks]``, spread over the CPU workers when there are several chunks."""
    pool = _workers() if len(chunks) > 1 else None
    if pool is None:
        return [work(sl) for sl in chunks]
    return list(pool.map(work, chunks))


def _workers() -> ThreadPoolExecutor | None:
    """The shared pool of single-threaded torch workers (None: run in the calling thread)."""
    global _pool, _pool_size
    threads = torch.get_num_threads()
    if threads <= 1 or getattr(_local, "worker", False) or not torch.backends.openmp.is_available():
        return None
    with _pool_lock:
        if _pool is None or _pool_size != threads:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool, _pool_size = _start_pool(threads), threads
        return _pool


def _start_pool(threads: int) -> ThreadPoolExecutor:
    """Start ``threads`` workers, each set to run torch on one thread, then restore the process default.

    ``torch.set_num_threads`` sets the calling thread's OpenMP thread count but also a process-wide
    default that threads starting later copy; the caller resets that default once every worker is set.
    """
    ready = threading.Barrier(threads + 1)

    def setup() -> None:
        _local.worker = True
        torch.set_num_threads(1)

    pool = ThreadPoolExecutor(threads, thread_name_prefix="ws-chunks", initializer=setup)
    for _ in range(threads):
        pool.submit(ready.wait)
    ready.wait()
    torch.set_num_threads(threads)
    return pool


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
    each slice, possibly from several threads at once, so it must be a pure function of its positions.
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

    def scan(sl: slice) -> list[list[tuple[int, torch.Tensor] | None]]:
        return [[None if br is None else _band(v, br[0], br[1]) for br in brackets[g]]
                for g, v in enumerate(values_at(sl))]

    scans = run_chunks(chunks, scan)
    out: list[list[torch.Tensor | None]] = []
    for g, rs in enumerate(ranks):
        row: list[torch.Tensor | None] = []
        for j, r in enumerate(rs):
            if r is None:
                row.append(None)
                continue
            found = None
            if brackets[g][j] is not None:
                at_least = sum(s[g][j][0] for s in scans)
                band = torch.cat([s[g][j][1] for s in scans])
                local = r - (n - at_least)
                if 1 <= local <= band.numel():
                    found = band.kthvalue(local).values
            row.append(found if found is not None else
                       torch.cat([values_at(sl)[g] for sl in chunks]).kthvalue(r).values)
        out.append(row)
    return out


def _band(values: torch.Tensor, lo: float | None, hi: float | None) -> tuple[int, torch.Tensor]:
    """How many ``values`` are ``≥ lo``, and the values in ``[lo, hi]`` (None: an open side).

    The comparisons write float 0/1 masks into this thread's reused scratch buffers: on the CPU,
    comparisons that allocate (boolean) tensors are several times slower than float arithmetic on
    memory already in cache.
    """
    inside, upper = _scratch(values.numel(), values.device)
    if lo is None:
        torch.le(values, hi, out=inside)
        count = values.numel()
    else:
        torch.ge(values, lo, out=inside)
        count = int(inside.sum())
        if hi is not None:
            inside.mul_(torch.le(values, hi, out=upper))
    return count, values[inside.bool()]


def _scratch(numel: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Two float buffers of ``numel`` entries, kept per thread and reused across calls."""
    bufs = getattr(_local, "scratch", None)
    if bufs is None or bufs[0].numel() < numel or bufs[0].device != device:
        bufs = _local.scratch = (torch.empty(numel, device=device), torch.empty(numel, device=device))
    return bufs[0][:numel], bufs[1][:numel]


def _bracket(sorted_sample: torch.Tensor, p: float) -> tuple[float | None, float | None] | None:
    """Sample values around quantile ``p``, 5 standard deviations of the sample rank on each side.

    A side that runs off the sample is open (None); None when both do (the caller materialises).
    """
    m = sorted_sample.numel()
    margin = int(5.0 * math.sqrt(m * p * (1.0 - p))) + 16
    centre = int(p * m)
    lo = float(sorted_sample[centre - margin]) if centre - margin >= 0 else None
    hi = float(sorted_sample[centre + margin]) if centre + margin < m else None
    return None if lo is None and hi is None else (lo, hi)
