"""scripts/volatility_timing.py: the exponentially weighted rescaling and its James–Stein
pre-test against independent NumPy computations and its own sampling theory."""

from __future__ import annotations

import numpy as np
import torch

from tests._scripts import load_script

m = load_script("scripts/volatility_timing.py")


def _sample_cov(X: torch.Tensor) -> torch.Tensor:
    Xc = X - X.mean(-2, keepdim=True)
    return Xc.transpose(-1, -2) @ Xc / X.shape[-2]


def test_weights_halve_every_half_life_and_sum_to_one():
    w = m.ewma_weights(100, 20.0).numpy()
    assert np.isclose(w.sum(), 1.0, rtol=1e-12)
    assert np.isclose(w[-21] / w[-1], 0.5, rtol=1e-12)  # 20 days older: half the weight
    assert np.all(np.diff(w) > 0)  # newer days weigh more


def test_plain_rescaling_gives_the_weighted_variances_and_keeps_correlations():
    rng = np.random.default_rng(0)
    n, p, hl = 120, 6, 60.0
    X = rng.standard_normal((n, p)) @ rng.standard_normal((p, p))
    est = m.VolatilityTiming(_sample_cov, c=hl / n, pretest=False)
    out = est(torch.as_tensor(X[None]))[0].numpy()
    # independent reference: weights 0.5 ** (age / hl), demeaned squares
    age = np.arange(n)[::-1]
    w = 0.5 ** (age / hl)
    w /= w.sum()
    Xc = X - X.mean(0)
    np.testing.assert_allclose(np.diag(out), (w[:, None] * Xc**2).sum(0), rtol=1e-10)
    S = Xc.T @ Xc / n
    corr = lambda C: C / np.sqrt(np.outer(np.diag(C), np.diag(C)))  # noqa: E731
    np.testing.assert_allclose(corr(out), corr(S), rtol=1e-10, atol=1e-12)


def test_null_variance_matches_the_spread_of_the_log_ratios_under_iid_returns():
    g = torch.Generator().manual_seed(1)
    n, p = 120, 400
    X = torch.randn(1, n, p, generator=g, dtype=torch.float64)
    r, v0 = m.log_variance_ratios(X, m.ewma_weights(n, 60.0))
    # 400 independent columns: the empirical variance of r estimates v0 (delta method)
    assert abs(float(r.var()) / float(v0) - 1.0) < 0.2


def test_pretest_switches_off_in_stationary_worlds_and_on_after_a_volatility_jump():
    g = torch.Generator().manual_seed(2)
    B, n, p = 200, 120, 30
    X = torch.randn(B, n, p, generator=g, dtype=torch.float64)
    est = m.VolatilityTiming(_sample_cov, c=1.0, pretest=True)
    r, v0 = m.log_variance_ratios(X, m.ewma_weights(n, float(n)))
    f = m.james_stein_factor(r, v0)
    assert float((f == 0).double().mean()) > 0.5  # mostly off under the null
    assert float(f.mean()) < 0.15
    off = int(torch.nonzero(f[:, 0] == 0)[0])  # where the factor is 0, the base is returned
    torch.testing.assert_close(est(X[off : off + 1]), _sample_cov(X[off : off + 1]))
    # volatility tripled over the last third of the window: the pre-test lets it through
    Y = X.clone()
    Y[:, -40:] *= 3.0
    r, v0 = m.log_variance_ratios(Y, m.ewma_weights(n, float(n)))
    f = m.james_stein_factor(r, v0)
    assert float(f.min()) > 0.8
    out = est(Y)
    assert bool(
        (
            torch.diagonal(out, dim1=-2, dim2=-1) > torch.diagonal(_sample_cov(Y), dim1=-2, dim2=-1)
        ).all()
    )


def test_constant_columns_stay_constant():
    X = torch.randn(1, 60, 4, dtype=torch.float64)
    X[..., 2] = 0.5
    out = m.VolatilityTiming(_sample_cov, c=1.0, pretest=False)(X)
    assert torch.isfinite(out).all()
    assert float(out[0, 2].abs().max()) == 0.0
