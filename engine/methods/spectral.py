"""The SVD pieces of the low-rank merges: a matrix's top singular triplets (STF, CART, TSV-M, Iso-CTS)
and the polar factor that re-orthogonalises stacked singular vectors (TSV-M, Iso-CTS).

A full SVD computes every singular triplet; these methods keep a tenth to a third of them. On the CPU
the top k come faster from the Gram matrix on the smaller side, ``A Aᵀ`` (m ≤ n) or ``Aᵀ A``, whose
top k eigenpairs LAPACK's subset eigensolver (``syevr`` through ``scipy.linalg.eigh``) finds without
the rest: ``σ = √λ``, the eigenvectors are one side's singular vectors and the other side's are
``Aᵀ u / σ`` (or ``A v / σ``). On a 4096 × 4096 matrix with 2 threads: 5.4–8.0 s for the top 10 %
and 8.2 s for the top third, against 11.1–14.6 s for the full SVD (``bench/method_bench.py`` measures
the methods that use it). The Gram matrix and the eigensolver work in float64 (the matrix is widened
``CHUNK`` columns at a time, so the extra memory is the Gram matrix, side², not a float64 copy of the
matrix), so singular values down to 10⁻⁶ of the largest keep their digits; when the k-th is smaller
than that (a matrix of lower rank than k, such as a LoRA product), or on a GPU, or when k is more than
``SUBSET_SHARE`` of the rank, the full SVD is used. Singular vectors of (nearly) equal singular values are determined only up to a
rotation among themselves by either route.

The polar factor ``P Qᵀ`` of ``X = P Σ Qᵀ`` comes from the SVD; LAPACK's divide-and-conquer SVD fails
to converge on some stacks of nearly orthonormal vectors (seen on 4096 × 4096 Iso-CTS stacks), and
then it comes from the float64 eigendecomposition of ``XᵀX = W Λ Wᵀ`` as ``X W Λ^(-1/2) Wᵀ``.
"""

from __future__ import annotations

import torch

SUBSET_SHARE = 0.4  # above this share of the rank the full SVD is as fast (measured at 1/3: 8.2 s against 11.1 s)
SMALLEST = 1e-6  # the subset route's k-th singular value must be at least this share of the largest
MIN_SIDE = 64  # below this the full SVD costs nothing worth saving
CHUNK = 1024  # columns of the long side converted to float64 at a time


def top_singular(matrix: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``k`` largest singular triplets of a 2-D ``matrix``: U [m, k], σ [k] (descending), V [n, k],
    in the matrix's dtype and on its device (``k`` is capped at the rank bound min(m, n))."""
    m, n = matrix.shape
    side = min(m, n)
    k = max(0, min(int(k), side))
    if matrix.device.type == "cpu" and side >= MIN_SIDE and 0 < k <= SUBSET_SHARE * side:
        found = _gram_route(matrix, k)
        if found is not None:
            return found
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    return u[:, :k], s[:k], vh[:k].T


def _gram_route(matrix: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The top-k triplets through the smaller Gram matrix's subset eigensolver; None when the k-th
    singular value is below ``SMALLEST`` of the first (the other side's vectors would lose digits)."""
    from scipy.linalg import eigh  # imported here: only the CPU route of these methods needs scipy

    wide = matrix.shape[0] <= matrix.shape[1]
    rows = matrix if wide else matrix.T  # the smaller side first: [side, long]
    side, long = rows.shape
    gram = torch.zeros(side, side, dtype=torch.float64)
    for start in range(0, long, CHUNK):  # float64 a slice at a time: no float64 copy of the whole matrix
        part = rows[:, start:start + CHUNK].double()
        gram.addmm_(part, part.T)
    values, vectors = eigh(gram.numpy(), subset_by_index=[side - k, side - 1], driver="evr",
                            overwrite_a=True, check_finite=False)
    sigma = torch.from_numpy(values[::-1].copy()).clamp(min=0).sqrt()
    if sigma[0] == 0 or sigma[-1] < SMALLEST * sigma[0]:
        return None
    near = torch.from_numpy(vectors[:, ::-1].copy())
    far = torch.cat([rows[:, s:s + CHUNK].double().T @ near for s in range(0, long, CHUNK)]) / sigma
    u, v = (near, far) if wide else (far, near)
    dtype = matrix.dtype
    return u.to(dtype), sigma.to(dtype), v.to(dtype)


def polar(matrix: torch.Tensor) -> torch.Tensor:
    """The nearest matrix with orthonormal columns (or rows) to ``matrix``: ``P Qᵀ`` for its thin SVD
    ``P Σ Qᵀ`` (directions of zero singular value are dropped by the eigendecomposition fallback)."""
    try:
        p, _, qh = torch.linalg.svd(matrix, full_matrices=False)
        return p @ qh
    except torch.linalg.LinAlgError:
        x = matrix.double()
        tall = x.shape[0] >= x.shape[1]
        values, w = torch.linalg.eigh(x.T @ x if tall else x @ x.T)
        keep = values > values[-1] * torch.finfo(matrix.dtype).eps * max(x.shape)
        w, root = w[:, keep], values[keep].rsqrt()
        out = (x @ w * root) @ w.T if tall else w @ ((w.T * root[:, None]) @ x)
        return out.to(matrix.dtype)
