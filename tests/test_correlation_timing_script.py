"""scripts/correlation_timing.py: the weighted rows, the pre-test's null variance against a
Monte-Carlo one, and the pre-test's behaviour in stationary and shifting windows."""

from __future__ import annotations

import pytest
import torch

from shrinklab.core.volatility_timing import ewma_weights
from tests._scripts import load_script

ct = load_script("scripts/correlation_timing.py")


def _gaussian(reps, n, p, rho, seed):
    g = torch.Generator().manual_seed(seed)
    C = torch.full((p, p), rho, dtype=torch.float64) + (1 - rho) * torch.eye(p, dtype=torch.float64)
    L = torch.linalg.cholesky(C)
    return torch.randn(reps, n, p, generator=g, dtype=torch.float64) @ L.T


def test_weighted_rows_give_the_weighted_covariance():
    X = _gaussian(3, 50, 4, 0.3, 0)
    w = ewma_weights(50, 50.0, like=X)
    Y = ct.weighted_rows(X, w)
    mean = (w[:, None] * X).sum(-2, keepdim=True)
    expected = (X - mean).transpose(-1, -2) @ ((X - mean) * w[:, None])
    torch.testing.assert_close(Y.transpose(-1, -2) @ Y / 50, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("rho", [0.0, 0.5])
def test_null_variance_matches_monte_carlo(rho):
    # i.i.d. Gaussian days: the delta-method Σ v (mean over draws) against the Monte-Carlo
    # Σ d², within 10 % (2,000 draws, n = 200: the SE of the ratio is about 2 %)
    n, p = 200, 5
    X = _gaussian(2000, n, p, rho, 1)
    w = ewma_weights(n, float(n), like=X)
    ss, v = ct.correlation_shift(X, w)
    ratio = float(ss.mean() / v.mean())
    assert ratio == pytest.approx(1.0, abs=0.10)


def test_null_variance_with_heavy_tails():
    # Student-t(5) days: the influence function carries the kurtosis; a Gaussian formula
    # ((1 − r²)² s per pair) would be about half of it here (a common daily scale)
    n, p = 250, 4
    g = torch.Generator().manual_seed(2)
    z = torch.randn(2000, n, p, generator=g, dtype=torch.float64)
    chi = torch.distributions.Chi2(torch.tensor(5.0, dtype=torch.float64)).sample((2000, n, 1))
    X = z / (chi / 5).sqrt()
    w = ewma_weights(n, float(n), like=X)
    ss, v = ct.correlation_shift(X, w)
    assert float(ss.mean() / v.mean()) == pytest.approx(1.0, abs=0.12)


def test_pretest_small_when_stationary_large_after_a_shift():
    n, p = 250, 10
    w = ewma_weights(n, float(n), like=torch.zeros(1, dtype=torch.float64))
    still = ct.correlation_pretest(_gaussian(200, n, p, 0.3, 3), w)
    shift = torch.cat([_gaussian(200, n // 2, p, 0.0, 4), _gaussian(200, n // 2, p, 0.7, 5)], -2)
    moved = ct.correlation_pretest(shift, w)
    assert float(still.mean()) < 0.15
    assert float(moved.mean()) > 0.6
    assert bool(((still >= 0) & (still <= 1)).all()) and bool(((moved >= 0) & (moved <= 1)).all())


def test_constant_column_counts_in_no_pair():
    X = _gaussian(2, 80, 4, 0.2, 6)
    w = ewma_weights(80, 80.0, like=X)
    ss, v = ct.correlation_shift(X[..., :3], w)
    Xc = torch.cat([X[..., :3], torch.full_like(X[..., :1], 0.01)], -1)
    ss_c, v_c = ct.correlation_shift(Xc, w)
    torch.testing.assert_close(ss_c, ss)
    torch.testing.assert_close(v_c, v)


def test_mixture_is_between_the_two_estimates():
    def base(X):
        Xc = X - X.mean(-2, keepdim=True)
        return Xc.transpose(-1, -2) @ Xc / X.shape[-2]

    X = torch.cat([_gaussian(4, 60, 5, 0.0, 7), _gaussian(4, 60, 5, 0.8, 8)], -2)
    est = ct.CorrelationTiming(base, 1.0)(X)
    w = ewma_weights(120, 120.0, like=X)
    f = ct.correlation_pretest(X, w)[:, None, None]
    equal, timed = base(X), base(ct.weighted_rows(X, w))
    torch.testing.assert_close(est, equal + f * (timed - equal))
    assert bool((f > 0).all())
    plain = ct.CorrelationTiming(base, 1.0, pretest=False)(X)
    torch.testing.assert_close(plain, timed)


def _brute_force_psi_bar(X):
    """Mean over the pairs i < j of ψ_tij, written out pair by pair."""
    n, p = X.shape[-2], X.shape[-1]
    Xc = X - X.mean(-2, keepdim=True)
    u = Xc / (Xc * Xc).mean(-2, keepdim=True).sqrt()
    r = u.transpose(-1, -2) @ u / n
    total = torch.zeros(X.shape[:-2] + (n,), dtype=X.dtype)
    for i in range(p):
        for j in range(i + 1, p):
            ui, uj = u[..., :, i], u[..., :, j]
            total += ui * uj - r[..., i, j, None] * (ui * ui + uj * uj) / 2
    return total / (p * (p - 1) / 2)


def test_split_pretest_common_part_by_hand():
    # the common part's null variance: the split test's v_c from ψ̄ equals the brute-force one,
    # and under a one-factor world its Monte-Carlo variance matches (within 15 %)
    n, p = 120, 6
    X = _gaussian(3, n, p, 0.5, 9)
    w = ewma_weights(n, float(n), like=X)
    s = float(((w - 1.0 / n) ** 2).sum())
    v_c = s * (_brute_force_psi_bar(X) ** 2).mean(-1)
    # recompute the split factor's pieces through the function: f_c alone when e is absent
    # is not observable, so check v_c against Monte Carlo on many draws instead
    Xs = _gaussian(3000, n, p, 0.5, 10)
    Xc = Xs - Xs.mean(-2, keepdim=True)
    u = Xc / (Xc * Xc).mean(-2, keepdim=True).sqrt()
    r = u.transpose(-1, -2) @ u / n
    uw = u * w.sqrt()[:, None]
    mw = (w[:, None] * u).sum(-2)
    cw = uw.transpose(-1, -2) @ uw - mw[..., :, None] * mw[..., None, :]
    dw = torch.diagonal(cw, dim1=-2, dim2=-1).sqrt()
    rw = cw / (dw[..., :, None] * dw[..., None, :])
    iu = torch.triu_indices(p, p, 1)
    d_bar = (rw - r)[..., iu[0], iu[1]].mean(-1)
    v_mc = float((d_bar**2).mean())
    v_delta = float((s * (_brute_force_psi_bar(Xs) ** 2).mean(-1)).mean())
    assert v_delta == pytest.approx(v_mc, rel=0.15)
    assert bool((v_c > 0).all())


def test_split_pretest_fires_less_by_chance_under_a_common_factor():
    # one strong factor, i.i.d. days: the pooled test passes by chance often, the split
    # test (common part against 4 × its null variance) much less; after a shift both pass
    n, p = 200, 20
    w = ewma_weights(n, float(n), like=torch.zeros(1, dtype=torch.float64))
    still = _gaussian(300, n, p, 0.6, 11)
    pooled, split = ct.correlation_pretest(still, w), ct.correlation_split_pretest(still, w)
    # (the split test passes small pair-specific changes as often; it lets large ones through
    # less often and its mean factor is lower)
    assert float((split > 0.2).double().mean()) < 0.5 * float((pooled > 0.2).double().mean())
    assert float(split.mean()) < 0.8 * float(pooled.mean())
    shift = torch.cat([_gaussian(300, n // 2, p, 0.2, 12), _gaussian(300, n // 2, p, 0.7, 13)], -2)
    moved = ct.correlation_split_pretest(shift, w)
    assert float(moved.mean()) > 0.6
    assert bool(((split >= 0) & (split <= 1)).all()) and bool(((moved >= 0) & (moved <= 1)).all())


def test_split_pretest_ignores_constant_columns_and_is_a_choice():
    X = _gaussian(2, 80, 4, 0.2, 14)
    w = ewma_weights(80, 80.0, like=X)
    Xc = torch.cat([X, torch.full_like(X[..., :1], 0.01)], -1)
    torch.testing.assert_close(
        ct.correlation_split_pretest(Xc, w), ct.correlation_split_pretest(X, w)
    )
    with pytest.raises(ValueError, match="pretest"):
        ct.CorrelationTiming(lambda X: X, 1.0, pretest="split")


def test_correlation_only_timing_keeps_the_volatilities_and_is_the_deployed_at_f_zero():
    def untimed(X):
        Xc = X - X.mean(-2, keepdim=True)
        return Xc.transpose(-1, -2) @ Xc / X.shape[-2]

    def timed(X):  # any volatility rescaling of the untimed estimate
        S = untimed(X)
        d = torch.linspace(1.0, 2.0, S.shape[-1], dtype=S.dtype)
        return S * d[:, None] * d[None, :]

    est = ct.CorrelationOnlyTiming(timed, untimed, 1.0)
    shift = torch.cat([_gaussian(4, 100, 5, 0.0, 15), _gaussian(4, 100, 5, 0.8, 16)], -2)
    out = est(shift)
    torch.testing.assert_close(
        torch.diagonal(out, dim1=-2, dim2=-1), torch.diagonal(timed(shift), dim1=-2, dim2=-1)
    )
    w = ewma_weights(200, 200.0, like=shift)
    f = ct.correlation_split_pretest(shift, w)
    assert bool((f > 0.5).all())
    r0, _ = ct._correlation(untimed(shift))
    r1, _ = ct._correlation(untimed(ct.weighted_rows(shift, w)))
    r, _ = ct._correlation(out)
    torch.testing.assert_close(r, r0 + f[:, None, None] * (r1 - r0))
    assert float(torch.linalg.eigvalsh(out).min()) > 0
    # f = 0 (a world with no change and the test off): the deployed estimate itself
    still = _gaussian(50, 200, 5, 0.3, 17)
    zero = ct.correlation_split_pretest(still, w) == 0
    assert bool(zero.any())
    torch.testing.assert_close(est(still)[zero], timed(still)[zero])
