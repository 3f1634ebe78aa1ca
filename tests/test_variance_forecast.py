"""shrinklab.evaluation.variance_forecast: QLIKE and the backtest's variance forecasts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shrinklab.evaluation import backtest
from shrinklab.evaluation.variance_forecast import (
    qlike,
    realised_variances,
    variance_forecast_table,
)


def test_qlike_is_zero_at_the_truth_larger_elsewhere_and_skips_still_assets():
    realised = np.array([[1.0, 4.0, 0.0]])
    np.testing.assert_allclose(qlike(realised[:, :2], realised[:, :2]), 0.0, atol=1e-15)
    for h in (0.5, 2.0, 8.0):  # RV/h − log(RV/h) − 1 by hand, for RV = 4
        want = 4 / h - np.log(4 / h) - 1
        assert qlike(np.array([h]), np.array([4.0]))[0] == pytest.approx(want, rel=1e-12)
        assert want > 0
    # under-forecasting costs more than over-forecasting by the same factor (Patton 2011)
    assert qlike(np.array([2.0]), np.array([4.0]))[0] > qlike(np.array([8.0]), np.array([4.0]))[0]
    assert np.isnan(qlike(np.ones((1, 3)), realised)[0, 2])


def test_qlike_refuses_bad_forecasts():
    with pytest.raises(ValueError, match="positive"):
        qlike(np.array([0.0, 1.0]), np.array([1.0, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        qlike(np.ones(2), np.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        qlike(np.ones(2), np.array([1.0, np.nan]))


@pytest.fixture(scope="module")
def run():
    rng = np.random.default_rng(3)
    days = pd.bdate_range("2015-01-01", periods=400)
    scale = np.where(np.arange(400) < 250, 0.01, 0.02)  # volatility doubles on day 250
    R = pd.DataFrame(rng.standard_normal((400, 4)) * scale[:, None], index=days)
    est = {"ledoit_wolf": backtest.classical_estimators()["ledoit_wolf"], "sample": _sample}
    res = backtest.gmv_backtest(R, est, windows=(60,), rebalance=21, start=days[200], end=days[-1])
    return R, res


def _sample(X):
    return np.cov(X, rowvar=False, bias=True)


def test_realised_variances_and_the_table_match_a_loop(run):
    R, res = run
    rv = realised_variances(R, res)
    dates = res.rebalance_dates
    X = R.to_numpy()
    k = R.index.get_loc(dates[3])
    nxt = R.index.get_loc(dates[4])
    np.testing.assert_allclose(rv.iloc[3], np.mean(X[k:nxt] ** 2, axis=0), rtol=1e-12)
    # the forecasts the backtest kept are the diagonals of the estimates
    np.testing.assert_allclose(
        res.variances[60]["sample"].iloc[3], np.diag(_sample(X[k - 60 : k])), rtol=1e-12
    )
    table = variance_forecast_table(R, res)
    manual = []
    for name in ("ledoit_wolf", "sample"):
        per_date = [
            np.mean(
                [
                    rv.iloc[t, i] / res.variances[60][name].iloc[t, i]
                    - np.log(rv.iloc[t, i] / res.variances[60][name].iloc[t, i])
                    - 1
                    for i in range(4)
                ]
            )
            for t in range(len(dates))
        ]
        manual.append(np.array(per_date))
        assert table.loc[(60, name), "qlike"] == pytest.approx(np.mean(per_date), rel=1e-10)
    d = manual[1] - manual[0]
    assert table.loc[(60, "sample"), "difference"] == pytest.approx(d.mean(), rel=1e-10)
    assert table.loc[(60, "sample"), "difference se"] == pytest.approx(
        d.std(ddof=1) / np.sqrt(len(d)), rel=1e-10
    )
    assert table.loc[(60, "ledoit_wolf"), "difference"] == 0.0
    # after the volatility doubles, 60-day forecasts lag: the loss is higher there
    per_date_sample = manual[1]
    after = np.asarray(dates > R.index[250]) & np.asarray(dates < R.index[310])
    assert per_date_sample[after].mean() > per_date_sample[~after].mean()


def test_the_table_refuses_a_missing_benchmark(run):
    R, res = run
    with pytest.raises(ValueError, match="benchmark"):
        variance_forecast_table(R, res, benchmark="oas")
