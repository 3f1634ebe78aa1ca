"""Tests of shrinklab.evaluation.backtest: GMV walk-forward, metrics, stationary bootstrap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.covariance import LedoitWolf

from shrinklab.core.estimators import ledoit_wolf, sample_covariance
from shrinklab.core.features import extract_features
from shrinklab.core.targets import combine, shrinkage_targets
from shrinklab.data import returns as data
from shrinklab.evaluation import backtest as bt
from shrinklab.models.network import MLShrinkageNetwork


def _returns(n: int = 500, p: int = 5, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(p, p)) / np.sqrt(p) + 0.3
    X = rng.standard_t(6, size=(n, p)) @ A.T * 0.01
    return pd.DataFrame(X, index=pd.bdate_range("2010-01-04", periods=n), columns=list("abcde")[:p])


def _run(r: pd.DataFrame, estimators=None, **kw) -> bt.BacktestResult:
    kw = {"windows": (40, 80), "rebalance": 21, "start": r.index[100], "end": r.index[-1]} | kw
    est = (
        {"sample": sample_covariance, "ledoit_wolf": ledoit_wolf}
        if estimators is None
        else estimators
    )
    return bt.gmv_backtest(r, est, **kw)


def test_equal_weight_volatility_matches_pandas_on_sp500():
    r = data.load_returns(kind="simple")
    res = bt.gmv_backtest(r, {"ledoit_wolf": ledoit_wolf}, windows=(60,))
    s = bt.summarise(res, reps=50)
    direct = r.loc["2016-01-01":"2022-12-28"].mean(axis=1).std() * np.sqrt(252)
    assert s.table.loc[(60, "equal_weight"), "ann_vol"] == pytest.approx(direct, rel=1e-12)
    assert res.start == pd.Timestamp("2016-01-04") and res.end == pd.Timestamp("2022-12-28")
    assert res.returns[60].index[0] == res.start and res.returns[60].index[-1] == res.end


def test_weights_and_returns_against_sklearn_ledoit_wolf():
    r = _returns()
    res = _run(r)
    R = r.to_numpy()
    pos = r.index.get_indexer(res.rebalance_dates)
    assert np.all(np.diff(pos) == 21) and pos[0] == 100
    for window in (40, 80):
        W = res.weights[window]["ledoit_wolf"].to_numpy()
        for k, t in enumerate(pos):
            cov = LedoitWolf().fit(R[t - window : t]).covariance_
            x = np.linalg.solve(cov, np.ones(5))
            np.testing.assert_allclose(W[k], x / x.sum(), atol=1e-9)
            end = pos[k + 1] if k + 1 < len(pos) else len(r)
            np.testing.assert_allclose(
                res.returns[window]["ledoit_wolf"].iloc[t - 100 : end - 100].to_numpy(),
                R[t:end] @ W[k],
                atol=1e-15,
            )
        # turnover is the L1 change of weights between rebalances
        to = res.turnover[window]["ledoit_wolf"].to_numpy()
        assert np.isnan(to[0])
        np.testing.assert_allclose(to[1:], np.abs(np.diff(W, axis=0)).sum(1), atol=1e-15)


def test_no_look_ahead_in_the_backtest():
    r = _returns()
    base = _run(r)
    k = 5
    t = r.index.get_loc(base.rebalance_dates[k])
    pert = r.copy()
    pert.iloc[t:] = pert.iloc[t:] * -2.0 + 0.01
    new = _run(pert)
    for window in (40, 80):
        for name in ("sample", "ledoit_wolf", "equal_weight"):
            a = base.weights[window][name].iloc[: k + 1]
            b = new.weights[window][name].iloc[: k + 1]
            pd.testing.assert_frame_equal(a, b, check_exact=True)
            assert (
                not base.weights[window][name]
                .iloc[k + 1 :]
                .equals(new.weights[window][name].iloc[k + 1 :])
                or name == "equal_weight"
            )
        before = base.returns[window].index < r.index[t]
        pd.testing.assert_frame_equal(
            base.returns[window][before], new.returns[window][before], check_exact=True
        )


def test_estimator_kinds_agree():
    r = _returns(300)
    est = {
        "batched": ledoit_wolf,
        "function": lambda X: LedoitWolf().fit(X).covariance_,
        "sklearn": LedoitWolf(),
        "marked": bt.batched(lambda X: ledoit_wolf(X)),
    }
    res = _run(r, est, windows=(60,))
    df = res.returns[60]
    for name in ("function", "sklearn", "marked"):
        np.testing.assert_allclose(df[name], df["batched"], atol=1e-12)


def test_summary_table_and_cumulative_variance():
    r = _returns()
    res = _run(r)
    s = bt.summarise(res, reps=200, seed=1)
    tab = s.table
    for window in (40, 80):
        df = res.returns[window]
        vol = df.std() * np.sqrt(252)
        np.testing.assert_allclose(tab.loc[window, "ann_vol"].loc[df.columns], vol, rtol=1e-12)
        d = tab.loc[(window, "sample"), "diff_vs_benchmark"]
        assert d == pytest.approx(vol["sample"] - vol["ledoit_wolf"], rel=1e-12)
        row = tab.loc[(window, "sample")]
        assert row.ci_low <= row.ci_high
        assert row.significant == (row.ci_low > 0 or row.ci_high < 0)
        assert tab.loc[(window, "ledoit_wolf"), "diff_vs_benchmark"] == 0.0
        assert sorted(tab.loc[window, "rank"]) == [1, 2, 3]
        cv = s.cumulative_variance[window]
        np.testing.assert_allclose(cv.iloc[-1], (df**2).sum(), rtol=1e-12)
        assert (cv.diff().iloc[1:] >= 0).all().all()
        # the closest rival: the lowest of the others, its margin paired as vs the benchmark
        order = list(vol.sort_values().index)
        for name in df.columns:
            row = tab.loc[(window, name)]
            rival = order[1] if name == order[0] else order[0]
            assert row.rival == rival
            assert row.diff_vs_rival == pytest.approx(vol[name] - vol[rival], rel=1e-12)
            assert (row.diff_vs_rival < 0) == (name == order[0])
            ref = bt.bootstrap_vol_difference(
                df[name].to_numpy(), df[rival].to_numpy(), reps=200, seed=1
            )
            assert (row.rival_ci_low, row.rival_ci_high) == (ref["ci_low"], ref["ci_high"])
    assert s.method["reps"] == 200 and s.method["block_length"] == 21.0
    # deterministic given the seed
    pd.testing.assert_frame_equal(tab, bt.summarise(res, reps=200, seed=1).table)


def test_stationary_bootstrap_indices_have_geometric_blocks():
    rng = np.random.default_rng(0)
    idx = bt.stationary_bootstrap_indices(1000, 200, 10.0, rng)
    assert idx.shape == (200, 1000) and idx.min() >= 0 and idx.max() < 1000
    breaks = np.diff(idx, axis=1) != 1
    wrap = (idx[:, :-1] == 999) & (idx[:, 1:] == 0)
    frac_new = (breaks & ~wrap).mean()
    # a new block starts with probability 1/L (minus the chance of a start exactly at i+1)
    assert frac_new == pytest.approx(0.1 * (1 - 1 / 1000), abs=0.005)
    assert np.all(bt.stationary_bootstrap_indices(5, 3, 1.0, rng) >= 0)


def test_bootstrap_interval_covers_the_true_difference_at_about_the_nominal_rate():
    # two correlated Gaussian series with known s.d.: true difference of annualised vol
    rng = np.random.default_rng(42)
    sa, sb, rho, n, mc = 0.012, 0.010, 0.6, 400, 200
    L = np.linalg.cholesky(np.array([[sa**2, rho * sa * sb], [rho * sa * sb, sb**2]]))
    truth = np.sqrt(252) * (sa - sb)
    covered = 0
    for m in range(mc):
        z = rng.normal(size=(n, 2)) @ L.T
        res = bt.bootstrap_vol_difference(z[:, 0], z[:, 1], block_length=5, reps=300, seed=m)
        covered += res["ci_low"] <= truth <= res["ci_high"]
    # nominal 95 %; binomial s.d. with 200 trials is 1.5 %
    assert 0.89 <= covered / mc <= 0.99


def test_bootstrap_detects_a_large_difference():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(1000, 2)) * [0.02, 0.01]
    res = bt.bootstrap_vol_difference(z[:, 0], z[:, 1], reps=500)
    assert res["significant"] and res["p_value"] < 0.01 and res["ci_low"] > 0


def test_errors():
    r = _returns(200)
    with pytest.raises(ValueError, match="history"):
        bt.gmv_backtest(r, {"ledoit_wolf": ledoit_wolf}, windows=(60,), start=r.index[10])
    with pytest.raises(ValueError, match="reserved"):
        _run(r, {"equal_weight": ledoit_wolf}, windows=(40,))
    with pytest.raises(ValueError, match="non-finite"):
        _run(r, {"bad": lambda X: np.full((5, 5), np.nan)}, windows=(40,))
    with pytest.raises(ValueError, match="shape"):
        _run(r, {"bad": lambda X: np.eye(3)}, windows=(40,))
    with pytest.raises(ValueError, match="benchmark"):
        bt.summarise(_run(r, {"sample": sample_covariance}, windows=(40,)))
    with pytest.raises(ValueError, match="same length"):
        bt.bootstrap_vol_difference(np.zeros(5), np.zeros(6))


def test_learned_estimator_is_the_family_member_of_the_predicted_intensities():
    r = _returns(300)
    F = extract_features(r.to_numpy()[:50]).shape[-1]
    torch.manual_seed(0)
    net = MLShrinkageNetwork(F, hidden_dims=(8,), n_regimes=3)
    regimes = pd.Series(np.arange(len(r)) % 3, index=r.index)
    est = bt.learned_estimator(net, regimes, r.index)
    res = _run(r, {"learned": est, "ledoit_wolf": ledoit_wolf}, windows=(60,))
    R = r.to_numpy()
    pos = r.index.get_indexer(res.rebalance_dates)
    for k in (0, len(pos) - 1):
        t = pos[k]
        X = R[t - 60 : t]
        out = net.predict(extract_features(X[None]), torch.tensor([(t - 1) % 3]))
        cov = combine(
            torch.as_tensor(np.cov(X, rowvar=False, bias=True))[None],
            shrinkage_targets(X)[None],
            out.intensities.double(),
        )[0].numpy()
        x = np.linalg.solve(cov, np.ones(5))
        np.testing.assert_allclose(
            res.weights[60]["learned"].iloc[k].to_numpy(), x / x.sum(), atol=1e-6
        )
    with pytest.raises(ValueError, match="together"):
        bt.learned_estimator(net, regimes)


def test_learned_estimators_of_one_backtest_share_features_and_get_the_same_weights():
    """The learned estimators of one backtest compute the windows' features and targets
    once (gmv_backtest's ``shared``): each one's weights are those it gets alone."""
    r = _returns(300)
    F = extract_features(r.to_numpy()[:50]).shape[-1]
    nets = {}
    for seed in (0, 1):
        torch.manual_seed(seed)
        nets[f"net{seed}"] = bt.learned_estimator(MLShrinkageNetwork(F, hidden_dims=(8,)))
    together = _run(r, {**nets, "ledoit_wolf": ledoit_wolf})
    for name, est in nets.items():
        alone = _run(r, {name: est})
        for window in (40, 80):
            np.testing.assert_array_equal(
                together.weights[window][name].to_numpy(), alone.weights[window][name].to_numpy()
            )
    assert not np.allclose(together.weights[40]["net0"], together.weights[40]["net1"])
