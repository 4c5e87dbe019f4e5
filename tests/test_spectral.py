"""The top singular triplets (engine.methods.spectral): the Gram-matrix subset route against a full SVD."""

from __future__ import annotations

import pytest
import torch

from engine.methods import spectral
from engine.methods.spectral import polar, top_singular


def _no_svd(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the full SVD ran")
    monkeypatch.setattr(torch.linalg, "svd", refuse)


def _decaying(m: int, n: int, seed: int) -> torch.Tensor:
    """A matrix with singular values 1, 0.98, 0.96², … (distinct, like a task matrix's)."""
    gen = torch.Generator().manual_seed(seed)
    q1, _ = torch.linalg.qr(torch.randn(m, min(m, n), generator=gen))
    q2, _ = torch.linalg.qr(torch.randn(n, min(m, n), generator=gen))
    s = 0.98 ** torch.arange(min(m, n), dtype=torch.float32)
    return (q1 * s) @ q2.T


@pytest.mark.parametrize("shape", [(200, 120), (120, 200)])
def test_the_gram_route_gives_the_svds_top_triplets_on_both_orientations(shape, monkeypatch):
    a = _decaying(*shape, seed=1)
    u_ref, s_ref, vh_ref = torch.linalg.svd(a, full_matrices=False)
    _no_svd(monkeypatch)
    monkeypatch.setattr(spectral, "CHUNK", 32)  # the long side widened to float64 in several slices
    u, s, v = top_singular(a, 30)
    assert u.shape == (shape[0], 30) and s.shape == (30,) and v.shape == (shape[1], 30)
    assert torch.allclose(s, s_ref[:30], atol=1e-5)
    assert torch.allclose(u.T @ u, torch.eye(30), atol=1e-4) and torch.allclose(v.T @ v, torch.eye(30), atol=1e-4)
    # each singular vector matches up to its sign, and the rank-30 approximation is the SVD's
    signs = torch.sign((u * u_ref[:, :30]).sum(0))
    assert torch.allclose(u * signs, u_ref[:, :30], atol=1e-4)
    assert torch.allclose((u * s) @ v.T, (u_ref[:, :30] * s_ref[:30]) @ vh_ref[:30], atol=1e-5)


def test_a_matrix_of_lower_rank_than_k_and_large_shares_take_the_full_svd(monkeypatch):
    gen = torch.Generator().manual_seed(2)
    low = torch.randn(150, 4, generator=gen) @ torch.randn(4, 100, generator=gen)  # rank 4 < k = 20
    u, s, v = top_singular(low, 20)
    assert torch.allclose((u * s) @ v.T, low, atol=1e-4)
    assert torch.allclose(u.T @ u, torch.eye(20), atol=1e-4)  # the SVD's null-space vectors, orthonormal
    a = _decaying(100, 100, seed=3)
    calls = []
    real = torch.linalg.svd
    monkeypatch.setattr(torch.linalg, "svd", lambda *args, **kw: calls.append(1) or real(*args, **kw))
    top_singular(a, int(spectral.SUBSET_SHARE * 100) + 1)
    assert calls == [1]


def test_half_precision_inputs_come_back_in_their_dtype(monkeypatch):
    a = _decaying(96, 80, seed=4).to(torch.bfloat16)
    expected = torch.linalg.svdvals(a.float())[:8]
    _no_svd(monkeypatch)
    u, s, v = top_singular(a, 8)
    assert u.dtype == s.dtype == v.dtype == torch.bfloat16
    assert torch.allclose(s.float(), expected, rtol=1e-2)


def test_polar_factor_and_its_fallback_agree(monkeypatch):
    gen = torch.Generator().manual_seed(5)
    for shape in [(30, 20), (20, 30)]:
        x = torch.randn(*shape, generator=gen)
        p, _, qh = torch.linalg.svd(x, full_matrices=False)
        assert torch.allclose(polar(x), p @ qh, atol=1e-5)

        def fail(*args, **kwargs):
            raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge")
        monkeypatch.setattr(torch.linalg, "svd", fail)
        assert torch.allclose(polar(x), p @ qh, atol=1e-5)  # the eigendecomposition route
        monkeypatch.undo()
