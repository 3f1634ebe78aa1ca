"""scripts/test_period_margins.py: the deployed model minus every other estimator, with the
paired bootstrap interval, against a direct computation on a small backtest."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shrinklab.core.estimators import ledoit_wolf, sample_covariance
from shrinklab.evaluation import backtest
from tests._scripts import load_script

script = load_script("scripts/test_period_margins.py")


def _results() -> backtest.BacktestResult:
    rng = np.random.default_rng(3)
    A = rng.normal(size=(5, 5)) / np.sqrt(5) + 0.3
    X = rng.standard_t(6, size=(400, 5)) @ A.T * 0.01
    r = pd.DataFrame(X, index=pd.bdate_range("2010-01-04", periods=400), columns=list("abcde"))
    est = {"sample": sample_covariance, "ledoit_wolf": ledoit_wolf,
           "learned": lambda X: 0.5 * ledoit_wolf(X) + 0.5 * sample_covariance(X)}  # fmt: skip
    return backtest.gmv_backtest(r, est, windows=(40, 80), rebalance=21, start=r.index[100])


def test_margins_are_the_paired_volatility_differences():
    res = _results()
    m = script.margins(res, learned="learned", seed=7)
    assert list(m["window"].unique()) == [40, 80] and len(m) == 6  # equal weights too
    for (window, other), row in m.set_index(["window", "other"]).iterrows():
        df = res.returns[window]
        vol = df.std() * np.sqrt(252)
        assert row["diff"] == pytest.approx(100 * (vol["learned"] - vol[other]), rel=1e-10)
        ref = backtest.bootstrap_vol_difference(
            df["learned"].to_numpy(), df[other].to_numpy(), seed=7
        )
        assert (row["ci_low"], row["ci_high"]) == (100 * ref["ci_low"], 100 * ref["ci_high"])
        assert row["ci_low"] <= row["diff"] <= row["ci_high"]
    # within a window the largest difference (the closest rival of a lowest model) comes first
    for _, sub in m.groupby("window"):
        assert list(sub["diff"]) == sorted(sub["diff"], reverse=True)
    with pytest.raises(ValueError, match="'ML \\(final\\)' is not among"):
        script.margins(res)
