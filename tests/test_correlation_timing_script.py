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
