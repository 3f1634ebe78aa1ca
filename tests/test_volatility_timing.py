"""shrinklab.core.volatility_timing (and scripts/volatility_timing.py's wrapper): the
exponentially weighted rescaling and its James–Stein pre-test against independent NumPy
computations and its own sampling theory; the NumPy and torch backends agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shrinklab.core import volatility_timing as vt
from tests._scripts import load_script

m = load_script("scripts/volatility_timing.py")


def _sample_cov(X: torch.Tensor) -> torch.Tensor:
    Xc = X - X.mean(-2, keepdim=True)
    return Xc.transpose(-1, -2) @ Xc / X.shape[-2]


def test_weights_halve_every_half_life_and_sum_to_one():
    w = vt.ewma_weights(100, 20.0).numpy()
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
    r, v0, _ = vt.log_variance_ratios(X, vt.ewma_weights(n, 60.0))
    # 400 independent columns: the empirical variance of r estimates v0 (delta method)
    assert abs(float(r.var()) / float(v0) - 1.0) < 0.2


def test_pretest_switches_off_in_stationary_worlds_and_on_after_a_volatility_jump():
    g = torch.Generator().manual_seed(2)
    B, n, p = 200, 120, 30
    X = torch.randn(B, n, p, generator=g, dtype=torch.float64)
    est = m.VolatilityTiming(_sample_cov, c=1.0, pretest=True)
    r, v0, _ = vt.log_variance_ratios(X, vt.ewma_weights(n, float(n)))
    f = vt.james_stein_factor(r, v0)
    assert float((f == 0).double().mean()) > 0.5  # mostly off under the null
    assert float(f.mean()) < 0.15
    off = int(torch.nonzero(f[:, 0] == 0)[0])  # where the factor is 0, the base is returned
    torch.testing.assert_close(est(X[off : off + 1]), _sample_cov(X[off : off + 1]))
    # volatility tripled over the last third of the window: the pre-test lets it through
    Y = X.clone()
    Y[:, -40:] *= 3.0
    r, v0, _ = vt.log_variance_ratios(Y, vt.ewma_weights(n, float(n)))
    f = vt.james_stein_factor(r, v0)
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


def test_numpy_and_torch_agree_and_a_single_window_matches_the_batch():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((4, 90, 12))
    X[:, 60:, :6] *= 2.5  # a volatility jump in half the assets
    Xc = X - X.mean(1, keepdims=True)
    S = np.einsum("bni,bnj->bij", Xc, Xc) / X.shape[1]
    a = vt.apply_volatility_timing(S, X)
    b = vt.apply_volatility_timing(torch.as_tensor(S), torch.as_tensor(X))
    assert isinstance(a, np.ndarray) and isinstance(b, torch.Tensor)
    np.testing.assert_allclose(a, b.numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(vt.apply_volatility_timing(S[1], X[1]), a[1], rtol=1e-12)
    assert not np.allclose(a, S)  # the jump passes the pre-test
    # independent reference for the pre-test factor: a plain loop over assets
    n, p = X.shape[1:]
    w = 0.5 ** (np.arange(n)[::-1] / n)
    w /= w.sum()
    x = Xc[0]
    r = np.array([np.log((w * x[:, i] ** 2).sum() / (x[:, i] ** 2).mean()) for i in range(p)])
    kurt = np.mean([(x[:, i] ** 4).mean() / (x[:, i] ** 2).mean() ** 2 for i in range(p)])
    f = max(0.0, 1 - p * (kurt - 1) * ((w - 1 / n) ** 2).sum() / (r**2).sum())
    np.testing.assert_allclose(np.diag(a[0]) / np.diag(S[0]), np.exp(f * r), rtol=1e-10)


def test_bad_input_is_refused():
    X = np.zeros((30, 3))
    with pytest.raises(ValueError, match="does not match"):
        vt.apply_volatility_timing(np.eye(4), X)
    with pytest.raises(ValueError, match="half_life_ratio"):
        vt.timing_scales(X, 0.0)
    with pytest.raises(ValueError, match="need n >= 2"):
        vt.ewma_weights(1, 1.0)


# ------------------------------------------------------------ a model file that carries it
def _model_files(tmp_path):
    """The same random network saved twice: plain, and with ``extra["volatility_timing"]``."""
    from shrinklab.core.features import FEATURE_NAMES
    from shrinklab.core.targets import TARGET_NAMES
    from shrinklab.models.registry import save_model
    from tests._forced_model import random_network

    net = random_network(3)
    plain = save_model(tmp_path / "plain.pt", net, FEATURE_NAMES, TARGET_NAMES)
    timed = save_model(
        tmp_path / "timed.pt", net, FEATURE_NAMES, TARGET_NAMES, extra={vt.EXTRA_KEY: 1.0}
    )
    return plain, timed


def _jumpy_returns(seed: int = 5, n: int = 200, p: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = 0.01 * rng.standard_normal((n, p)) @ (np.eye(p) + 0.3)
    X[n // 2 :] *= 2.0  # volatility doubles half way: the pre-test lets the timing through
    return X


def test_every_path_applies_the_timing_of_a_model_file(tmp_path):
    from shrinklab.evaluation import backtest
    from shrinklab.models.registry import load_model
    from shrinklab.sklearn import MLShrinkageCovariance

    plain, timed = _model_files(tmp_path)
    X = _jumpy_returns()
    a = MLShrinkageCovariance(model_path=str(plain)).fit(X).covariance_
    b = MLShrinkageCovariance(model_path=str(timed)).fit(X).covariance_
    np.testing.assert_allclose(b, vt.apply_volatility_timing(a, X), rtol=1e-10)
    assert np.all(np.diag(b) > np.diag(a))  # the recent, higher volatility
    # rolling fit: each window as a single fit
    roll = MLShrinkageCovariance(model_path=str(timed)).fit_rolling(X, window=120, step=40)
    single = MLShrinkageCovariance(model_path=str(timed)).fit(X[40:160]).covariance_
    np.testing.assert_allclose(roll.covariances[1], single, rtol=1e-8)
    # the backtest's batched learned estimator
    Xb = torch.as_tensor(np.stack([X[:120], X[80:]]))
    est_p = backtest.learned_estimator(load_model(plain))
    est_t = backtest.learned_estimator(load_model(timed))
    np.testing.assert_allclose(
        est_t(Xb).numpy(), vt.apply_volatility_timing(est_p(Xb), Xb).numpy(), rtol=1e-10
    )


def test_the_estimators_can_leave_the_timing_out(tmp_path):
    from shrinklab.models.registry import load_model
    from shrinklab.sklearn import (
        MLShrinkageCovariance,
        MLShrinkageCovarianceSkfolio,
        load_pretrained,
        without_volatility_timing,
    )

    plain, timed = _model_files(tmp_path)
    X = _jumpy_returns()
    a = MLShrinkageCovariance(model_path=str(plain)).fit(X).covariance_
    est = MLShrinkageCovariance(model_path=str(timed), volatility_timing=False).fit(X)
    np.testing.assert_allclose(est.covariance_, a, rtol=1e-12)  # the plain model's estimate
    assert vt.EXTRA_KEY not in est.model_.extra
    # the cached model itself keeps its timing: the next default fit is timed again
    assert vt.EXTRA_KEY in load_pretrained(str(timed)).extra
    b = MLShrinkageCovariance(model_path=str(timed)).fit(X).covariance_
    np.testing.assert_allclose(b, vt.apply_volatility_timing(a, X), rtol=1e-10)
    # rolling fits and the skfolio estimator follow the switch
    roll = MLShrinkageCovariance(model_path=str(timed), volatility_timing=False).fit_rolling(
        X, window=120, step=40
    )
    single = MLShrinkageCovariance(model_path=str(plain)).fit(X[40:160]).covariance_
    np.testing.assert_allclose(roll.covariances[1], single, rtol=1e-8)
    sk = MLShrinkageCovarianceSkfolio(str(timed), nearest=False, volatility_timing=False).fit(X)
    np.testing.assert_allclose(sk.covariance_, a, rtol=1e-10)
    # a copy shares the weights; a model without timing is returned as it is
    model = load_model(timed)
    bare = without_volatility_timing(model)
    assert bare is not model and bare is without_volatility_timing(model)  # cached
    assert all(p is q for p, q in zip(bare.parameters(), model.parameters(), strict=True))
    assert vt.EXTRA_KEY in model.extra
    untimed = load_model(plain)
    assert without_volatility_timing(untimed) is untimed
    with pytest.raises(ValueError, match="volatility_timing must be a bool"):
        MLShrinkageCovarianceSkfolio(str(timed), volatility_timing="no").fit(X)


def test_scenario_grid_scores_a_timed_model_from_its_matrices(tmp_path):
    from shrinklab.core import metrics
    from shrinklab.data.synthetic import make_scenario
    from shrinklab.evaluation import backtest, scenarios
    from shrinklab.models.registry import load_model

    plain, timed = _model_files(tmp_path)
    spec = {"family": "factor", "p": 12, "n": 40, "n_factors": 2}
    mp, mt = load_model(plain), load_model(timed)
    rp = scenarios.evaluate_scenario(spec, mp, 20, 11)
    rt = scenarios.evaluate_scenario(spec, mt, 20, 11)
    # the plain model's quadratic-form loss equals the loss of its matrices
    sigma, X = make_scenario(spec, 20, 11)
    lp = metrics.frobenius_loss(backtest.learned_estimator(mp)(X), sigma).numpy()
    np.testing.assert_allclose(rp["losses"]["learned"], lp, rtol=1e-6)  # quadratic form: round-off
    lt = metrics.frobenius_loss(backtest.learned_estimator(mt)(X), sigma).numpy()
    np.testing.assert_allclose(rt["losses"]["learned"], lt, rtol=1e-6)
    # the pre-test lets the timing through in some replications even in i.i.d. worlds
    assert np.abs(lt / lp - 1).max() > 1e-4
    np.testing.assert_allclose(rt["losses"]["oas"], rp["losses"]["oas"])


def test_a_bad_timing_in_a_model_file_is_refused():
    class M:
        extra = {vt.EXTRA_KEY: -1.0}

    with pytest.raises(ValueError, match="half-life ratio"):
        vt.volatility_timing_of(M())
    assert vt.volatility_timing_of(object()) is None


def test_a_constant_column_whose_mean_rounds_off_counts_nowhere():
    rng = np.random.default_rng(8)
    X = rng.standard_normal((20, 6)) * 0.01
    X[12:] *= 2.0
    X[:, 2] = 0.02  # its mean rounds off, so the demeaned column is ~1e-18, not 0
    assert np.abs(X[:, 2] - X[:, 2].mean()).max() > 0  # the case this test is about
    live = np.delete(X, 2, axis=1)
    d = vt.timing_scales(X)
    d_live = vt.timing_scales(live)
    assert d[2] == 1.0
    np.testing.assert_allclose(np.delete(d, 2), d_live, rtol=1e-13)
    np.testing.assert_allclose(vt.timing_scales(torch.as_tensor(X)).numpy(), d, rtol=1e-12)


# ------------------------------------------------------------------ the split pre-test
def test_split_pretest_matches_a_plain_reference_and_both_backends():
    rng = np.random.default_rng(11)
    X = rng.standard_normal((3, 60, 7)) * 0.01
    X[:, 40:] *= 1.8  # a common volatility rise
    X[:, 40:, :2] *= 1.5  # and a further one in two assets
    a = vt.split_log_scales(X, vt.ewma_weights(60, 60.0, like=X))
    b = vt.split_log_scales(torch.as_tensor(X), vt.ewma_weights(60, 60.0))
    np.testing.assert_allclose(a, b.numpy(), rtol=1e-12, atol=1e-15)
    # independent reference: loops over days and assets
    n, p = 60, 7
    w = 0.5 ** (np.arange(n)[::-1] / n)
    w /= w.sum()
    s = ((w - 1 / n) ** 2).sum()
    for b_ in range(3):
        x = X[b_] - X[b_].mean(0)
        m2 = (x**2).mean(0)
        z = x**2 / m2 - 1
        r = np.log((w[:, None] * x**2).sum(0) / m2)
        zbar = np.array([z[t].mean() for t in range(n)])
        v_c = s * np.mean(zbar**2)
        v_e = s * (sum(np.mean(z[:, i] ** 2) for i in range(p)) - p * np.mean(zbar**2))
        rbar = r.mean()
        e = r - rbar
        f_c = max(0.0, 1 - 4 * v_c / rbar**2)
        f_e = max(0.0, 1 - v_e / (e**2).sum())
        np.testing.assert_allclose(a[b_], f_c * rbar + f_e * e, rtol=1e-10, atol=1e-14)
    assert np.all(a > 0)  # the rise passes


def test_split_pretest_is_quieter_than_the_pooled_one_under_a_common_daily_scale():
    # i.i.d. days, a common Student-t(5) scale per day: no volatility to time
    g = torch.Generator().manual_seed(4)
    B, n, p = 1000, 40, 20
    Z = torch.randn(B, n, p, generator=g, dtype=torch.float64)
    chi = torch.distributions.Chi2(torch.tensor(5.0, dtype=torch.float64))
    torch.manual_seed(4)
    X = Z / (chi.sample((B, n, 1)) / 5).sqrt()
    pooled = vt.timing_scales(X, 1.0, "pooled").log()
    split = vt.timing_scales(X, 1.0, "split").log()
    # the common rescaling (the mean log scale per window) is what costs in such worlds
    assert float(split.mean(-1).square().mean()) < 0.7 * float(pooled.mean(-1).square().mean())


def test_a_model_file_names_its_pretest():
    class Old:
        extra = {vt.EXTRA_KEY: 1.0}

    class New:
        extra = {vt.EXTRA_KEY: 1.0, vt.PRETEST_KEY: "split"}

    class Bad:
        extra = {vt.EXTRA_KEY: 1.0, vt.PRETEST_KEY: "median"}

    assert vt.volatility_pretest_of(Old()) == "pooled"  # files of decision 0047
    assert vt.volatility_pretest_of(New()) == "split"
    with pytest.raises(ValueError, match="volatility_pretest"):
        vt.volatility_pretest_of(Bad())
    rng = np.random.default_rng(2)
    X = rng.standard_normal((80, 5))
    X[50:] *= 2
    S = np.cov(X.T, bias=True)
    np.testing.assert_allclose(
        vt.finish_covariance(New(), S, X), vt.apply_volatility_timing(S, X, 1.0, "split")
    )
    with pytest.raises(ValueError, match="pretest"):
        vt.timing_scales(X, 1.0, "median")


def test_relative_pretest_is_the_split_one_without_its_common_part():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((4, 80, 6)) * 0.01
    X[:, 55:] *= 2.0  # a common rise the split pre-test passes
    X[:, 55:, 0] *= 1.7  # and one asset's own
    w = vt.ewma_weights(80, 40.0, like=X)
    split = vt.split_log_scales(X, w)
    relative = vt.split_log_scales(X, w, common=False)
    gap = split - relative  # the common part: one number per window
    np.testing.assert_allclose(gap, gap[:, :1].repeat(6, 1), rtol=0, atol=1e-14)
    assert np.all(gap[:, 0] > 0)
    assert np.any(relative != 0)
    # so Σ̂ differs by a scalar, and the GMV weights are the same
    cov = np.einsum("bni,bnj->bij", X, X) / 80 + 1e-5 * np.eye(6)
    ones = np.ones(6)
    weights = {}
    for pretest in ("split", "relative"):
        timed = vt.apply_volatility_timing(cov, X, 0.5, pretest)
        g = np.linalg.solve(timed, ones)
        weights[pretest] = g / g.sum(-1, keepdims=True)
    np.testing.assert_allclose(weights["split"], weights["relative"], rtol=1e-10)
    torch_rel = vt.split_log_scales(torch.as_tensor(X), vt.ewma_weights(80, 40.0), common=False)
    np.testing.assert_allclose(torch_rel.numpy(), relative, rtol=1e-12, atol=1e-15)
