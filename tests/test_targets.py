"""Shrinkage targets, `combine` and `quadratic_form` against closed forms and the authors' code."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _lw_reference import ref_cov_cor, ref_cov_market, ref_qis

from shrinklab.core import estimators, metrics
from shrinklab.core import qis as qis_module
from shrinklab.core.targets import TARGET_NAMES, combine, quadratic_form, shrinkage_targets

RTOL = 1e-10


def _rel(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def _factor_returns(n, p, seed, B=None):
    """Returns with a common factor (so correlations and market loadings are non-trivial)."""
    rng = np.random.default_rng(seed)
    shape = (n, p) if B is None else (B, n, p)
    f = rng.standard_normal(shape[:-1] + (1,))
    beta = rng.uniform(0.5, 1.5, p)
    vol = rng.uniform(0.5, 2.0, p)
    return (f * beta + rng.standard_normal(shape) * vol) * 0.01


def test_target_names_fixed():
    assert TARGET_NAMES == ("identity", "diagonal", "constant_correlation", "single_factor", "qis")


@pytest.mark.parametrize("n,p", [(60, 12), (15, 40)])
def test_targets_match_closed_forms_and_reference_code(n, p):
    X = _factor_returns(n, p, seed=1)
    T = shrinkage_targets(X).numpy()
    assert T.shape == (5, p, p)
    S = np.cov(X, rowvar=False, bias=True)
    # identity: (tr S / p) I ; diagonal: diag(S)
    assert _rel(T[0], np.trace(S) / p * np.eye(p)) < RTOL
    assert _rel(T[1], np.diag(np.diag(S))) < RTOL
    # constant correlation: prior of covCor.m ; single factor: prior of covMarket.m
    assert _rel(T[2], ref_cov_cor(X)[1]) < RTOL
    assert _rel(T[3], ref_cov_market(X)[1]) < RTOL
    # QIS: the authors' QIS code
    assert _rel(T[4], ref_qis(X)) < RTOL
    # all targets symmetric
    assert np.abs(T - T.transpose(0, 2, 1)).max() < 1e-14 * np.abs(T).max()


def test_targets_batched_equal_loop_and_subset_order():
    X = _factor_returns(30, 8, seed=2, B=4)
    T = shrinkage_targets(torch.from_numpy(X))
    assert T.shape == (4, 5, 8, 8)
    for b in range(4):
        assert _rel(T[b].numpy(), shrinkage_targets(X[b]).numpy()) < 1e-12
    sub = shrinkage_targets(X, names=("qis", "identity"))
    assert torch.allclose(sub[:, 0], T[:, 4], rtol=0, atol=0) or _rel(sub[:, 0], T[:, 4]) < 1e-13
    assert _rel(sub[:, 1], T[:, 0]) < 1e-15


def test_targets_with_constant_column_are_finite_and_zero_there():
    X = _factor_returns(40, 6, seed=3)
    X[:, 2] = 0.0  # stale price
    T = shrinkage_targets(X).numpy()
    assert np.isfinite(T).all()
    off = ~np.eye(6, dtype=bool)[2]
    assert np.all(T[:, 2, off] == 0) and np.all(T[:, off, 2] == 0)  # zero covariance
    assert np.all(T[1:, 2, 2] == 0)  # zero variance (the identity target gives it tr S / p)
    assert T[0, 2, 2] == pytest.approx(np.trace(np.cov(X, rowvar=False, bias=True)) / 6, rel=1e-12)
    keep = [0, 1, 3, 4, 5]
    Tr = shrinkage_targets(X[:, keep]).numpy()
    # the flat asset is as if removed: the other entries equal the targets without it
    # (identity target excepted: tr S / p counts the flat asset in p)
    for k in (1, 2, 3, 4):
        assert _rel(T[k][np.ix_(keep, keep)], Tr[k]) < 1e-10


def test_combine_vertices_and_linearity():
    X = _factor_returns(30, 7, seed=4, B=3)
    S = estimators.sample_covariance(X)
    T = shrinkage_targets(X)
    K = T.shape[1]
    assert torch.equal(combine(S, T, torch.zeros(3, K, dtype=torch.float64)), S)
    for k in range(K):
        w = torch.zeros(3, K, dtype=torch.float64)
        w[:, k] = 1.0
        assert _rel(combine(S, T, w), T[:, k]) < 1e-14
    w = torch.tensor([[0.1, 0.2, 0.0, 0.3, 0.25]] * 3, dtype=torch.float64)
    direct = (1 - w.sum(1))[:, None, None] * S + torch.einsum("bk,bkij->bij", w, T)
    assert _rel(combine(S, T, w), direct) < 1e-13
    # unbatched
    assert _rel(combine(S[0], T[0], w[0]), direct[0]) < 1e-13


def test_quadratic_form_identity_vs_direct_frobenius():
    rng = np.random.default_rng(5)
    X = _factor_returns(25, 10, seed=5, B=6)
    A = rng.standard_normal((6, 10, 10))
    sigma = torch.from_numpy(A @ A.transpose(0, 2, 1) / 10 * 1e-4 + 1e-4 * np.eye(10))
    S = estimators.sample_covariance(X)
    T = shrinkage_targets(X)
    G, c, d = quadratic_form(S, T, sigma)
    assert G.shape == (6, 5, 5) and c.shape == (6, 5) and d.shape == (6,)
    # d is the loss of S; G is symmetric PSD
    assert _rel(d, metrics.frobenius_loss(S, sigma)) < RTOL
    assert torch.linalg.eigvalsh(G).min() > -1e-12 * G.abs().max()
    for _ in range(5):
        w = torch.from_numpy(rng.dirichlet(np.ones(5), size=6) * rng.uniform(0, 1, (6, 1)))
        quad = torch.einsum("bk,bkl,bl->b", w, G, w) - 2 * (c * w).sum(1) + d
        direct = metrics.frobenius_loss(combine(S, T, w), sigma)
        assert _rel(quad, direct) < RTOL
    # unbatched call gives the same numbers
    G0, c0, d0 = quadratic_form(S[0], T[0], sigma[0])
    assert _rel(G0, G[0]) < 1e-15 and _rel(c0, c[0]) < 1e-15 and _rel(d0, d[0]) < 1e-15


# ----------------------------------------------------------------------------- QIS fast paths
def _centred(X):
    from shrinklab.core.validation import as_returns, center

    return center(as_returns(X)[0])


@pytest.mark.parametrize("n,p", [(60, 12), (15, 40), (41, 40), (6, 9)])
def test_qis_from_shared_eigh_equals_qis(n, p):
    """qis_from_eig (the eigh of S reused) equals qis() to 1e-10, incl. p > n and flat assets."""
    from shrinklab.core.qis import qis_from_eig

    X = _factor_returns(n, p, seed=n * p, B=5)
    X[3, :, 1] = 0.01  # a constant column: that sample takes the removal path
    Xc, S = _centred(X)
    evals, evecs = torch.linalg.eigh(S)
    got = qis_from_eig(evals, evecs, S, n)
    want = estimators.qis(X)
    for b in range(5):
        assert _rel(got[b], want[b]) < 1e-10
    assert bool((got[3, 1] == 0).all())
    assert _rel(got[0], ref_qis(X[0])) < RTOL


@pytest.mark.parametrize("n,p", [(600, 300), (150, 300), (300, 300)])
def test_qis_block_products_for_large_p_match_the_authors_code(n, p):
    """p >= 256 takes the block-lower-triangular Gram / reconstruction path; still the
    authors' QIS (1e-10), from returns and from S, and exactly symmetric."""
    X = _factor_returns(n, p, seed=p + n, B=2)
    Q = estimators.qis(X)
    assert torch.equal(Q, Q.mT)
    _, S = _centred(X)
    from shrinklab.core.qis import qis_estimate

    QS = qis_estimate(S=S, N=n)
    for b in range(2):
        ref = ref_qis(X[b])
        assert _rel(Q[b], ref) < RTOL
        assert _rel(QS[b], ref) < RTOL


def test_block_gram_lower_triangle_equals_matmul():
    from shrinklab.core.linalg import gram_lower, outer_sym

    A = torch.randn(3, 70, 301, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    full = A.mT @ A
    low = gram_lower(A)
    assert torch.allclose(torch.tril(low), torch.tril(full), rtol=1e-12, atol=1e-12)
    W = A.mT[:, :, :50]  # (3, 301, 50)
    V = W * torch.linspace(-1, 1, 50, dtype=torch.float64)  # W diag(d) Wᵀ is symmetric
    out = outer_sym(V, W)
    assert torch.equal(out, out.mT)
    assert torch.allclose(out, V @ W.mT, rtol=1e-12, atol=1e-12)


def test_qis_chunked_batch_equals_single_samples(monkeypatch):
    """Processing in cache-sized chunks gives the same as one sample at a time (1e-12)."""

    monkeypatch.setattr(qis_module, "_QIS_STEP_ELEMENTS", 3 * 12 * (12 + 30))  # 3 samples per chunk
    X = _factor_returns(30, 12, seed=4, B=8)
    X[5, :, 0] = 0.2
    Q = estimators.qis(X)
    for b in range(8):
        assert _rel(Q[b], estimators.qis(X[b])) < 1e-12


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gram_is_exactly_symmetric_and_equals_the_matmul(dtype):
    """linalg.gram (one BLAS syrk per matrix) against ``AᵀA`` in float64: 1e-13 relative
    for float64 input, 1e-5 for float32 (accumulation of 300 float32 products); exactly
    symmetric; each matrix independent of the batch it is in; autograd falls back to matmul."""
    from shrinklab.core.linalg import gram

    A = torch.as_tensor(_factor_returns(300, 40, seed=3, B=3)).to(dtype)
    G = gram(A)
    ref = A.double().mT @ A.double()
    assert G.dtype == dtype and torch.equal(G, G.mT)
    assert _rel(G, ref) < (1e-13 if dtype == torch.float64 else 1e-5)
    assert torch.equal(gram(A[1:2].clone())[0], G[1])
    B = A.double().clone().requires_grad_(True)
    gram(B).sum().backward()  # d/dA Σ_ij (AᵀA)_ij = d/dA ‖A 1‖² = 2 (A 1) 1ᵀ
    torch.testing.assert_close(B.grad, 2 * B.detach().sum(-1, keepdim=True).expand(-1, -1, 40))


def test_matvecs_equal_row_times_and_keep_gradients():
    """linalg.matvecs (one OpenBLAS GEMM A[v1 .. vk]) against row_times per vector
    (1e-13 relative); with a gradient it falls back to row_times (same values)."""
    from shrinklab.core.linalg import matvecs, row_times

    A = torch.as_tensor(_factor_returns(150, 30, seed=5, B=2))
    vs = [
        torch.randn(2, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(k))
        for k in range(3)
    ]
    got = matvecs(A, *vs)
    assert len(got) == 3
    for g, v in zip(got, vs, strict=True):
        ref = row_times(v, A.mT)
        assert g.shape == (2, 150) and _rel(g, ref) < 1e-13
    v = vs[0].clone().requires_grad_(True)
    (out,) = matvecs(A, v)
    out.sum().backward()
    torch.testing.assert_close(v.grad, A.sum(-2))


@pytest.mark.parametrize("n,p", [(60, 12), (15, 40), (41, 40), (40, 40)])
def test_qis_eigenvalues_are_the_spectrum_of_the_qis_target(n, p):
    """qis_eigenvalues(evals, N): the eigenvalues of the authors' QIS (ref_qis, numpy,
    sorted; 1e-10 relative to the largest), and with the eigenvectors of the same eigh
    U diag(δ) Uᵀ = qis_from_eig (1e-12), for p < n, p > n and p = n."""
    from shrinklab.core.qis import qis_eigenvalues, qis_from_eig

    X = _factor_returns(n, p, seed=7 * n + p, B=3)
    _, S = _centred(X)
    evals, U = torch.linalg.eigh(S)
    delta = qis_eigenvalues(evals, n)
    assert delta.shape == (3, p)
    np.testing.assert_allclose(
        (U @ torch.diag_embed(delta) @ U.mT).numpy(),
        qis_from_eig(evals, U, S, n).numpy(),
        rtol=0,
        atol=1e-12 * float(delta.max()),
    )
    for b in range(3):
        ref = np.sort(np.linalg.eigvalsh(ref_qis(X[b])))
        got = np.sort(delta[b].numpy())
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10 * ref.max())


@pytest.mark.parametrize("n,p", [(60, 12), (15, 40)])
def test_target_rayleigh_quotients_equal_the_brute_force_products(n, p):
    """uᵢᵀT_kuᵢ in O(p²) for identity, diagonal, constant correlation and single factor
    equal diag(UᵀT_kU) computed with numpy from the target matrices (1e-12 relative to the
    largest), also with a zero-variance market (single factor = diagonal)."""
    from shrinklab.core.targets import (
        constant_correlation_target,
        market_parts,
        target_rayleigh_quotients,
    )

    X = _factor_returns(n, p, seed=n + 3 * p, B=3)
    Xc, S = _centred(X)
    _, U = torch.linalg.eigh(S)
    _, rbar = constant_correlation_target(S)
    parts = market_parts(Xc)
    T = shrinkage_targets(X)[:, :4].numpy()
    Un = U.numpy()
    ref = np.einsum("bji,bkjl,bli->bki", Un, T, Un)  # (B, 4, p): u_iᵀ T_k u_i
    got = target_rayleigh_quotients(S, U, rbar, parts).numpy()
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * np.abs(ref).max())
    flat = {**parts, "varmkt": torch.zeros_like(parts["varmkt"])}
    got0 = target_rayleigh_quotients(S, U, rbar, flat)[:, 3].numpy()
    diag_only = np.einsum("bj,bji->bi", np.diagonal(S.numpy(), axis1=1, axis2=2), Un**2)
    np.testing.assert_allclose(got0, diag_only, rtol=0, atol=1e-12 * np.abs(diag_only).max())


def test_market_parts_from_cov_equal_the_returns_route():
    """market_parts_from_cov(S, Xc 1/p) (covmkt = S 1/p, O(p²)) equals market_parts(Xc)
    (sums over the returns) to 1e-12 relative; a flat market (rows summing to 0) keeps a
    variance at round-off level (< 1e-30) on both routes."""
    from shrinklab.core.targets import market_parts, market_parts_from_cov

    X = _factor_returns(50, 12, seed=5, B=3)
    X[2] -= X[2].mean(-1, keepdims=True)  # every row sums to 0: the market is flat
    Xc, S = _centred(X)
    ref = market_parts(Xc)
    got = market_parts_from_cov(S, Xc @ torch.full((12,), 1 / 12, dtype=torch.float64))
    for k in ("m", "covmkt", "varmkt"):
        np.testing.assert_allclose(
            got[k][:2].numpy(),
            ref[k][:2].numpy(),
            rtol=1e-12,
            atol=1e-12 * float(ref[k].abs().max()),
        )
    assert float(got["varmkt"][2]) < 1e-30 and float(ref["varmkt"][2]) < 1e-30
