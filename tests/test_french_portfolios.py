"""Ken French's monthly portfolios (data/french_portfolios.py): a real universe not built
from the 20 stocks, and the monthly annualisation of the fold backtest and bootstrap."""

from __future__ import annotations

import bz2

import numpy as np
import pandas as pd
import pytest

from shrinklab.data import french_portfolios as french
from shrinklab.data import returns as data
from shrinklab.evaluation import backtest, universe_backtest


@pytest.fixture(scope="module")
def portfolios():
    return french.load_french_portfolios()


def test_loads_the_thirty_portfolios_before_2016(portfolios):
    cols = [c for g in french.FRENCH_GROUPS.values() for c in g]
    assert list(portfolios.columns) == cols and len(cols) == 30
    assert portfolios.index[0] == pd.Timestamp("1949-01-01")
    assert portfolios.index[-1] == pd.Timestamp("2015-12-01")  # the file runs to 2017-03
    assert (portfolios.index.to_series().diff().dropna().dt.days.between(28, 31)).all()
    # an independent read of the file: the market factor plus the risk-free rate is the
    # value-weighted market, which the average industry portfolio tracks closely
    with bz2.open(french.french_data_path(), "rt") as fh:
        raw = pd.read_csv(fh, parse_dates=["dates"]).set_index("dates")
    raw = raw[raw.index < data.TEST_START]
    np.testing.assert_array_equal(portfolios["S5V5"].to_numpy(), raw["S5V5"].to_numpy())
    market = (raw["MktRF"] + raw["RF"]).to_numpy()
    industries = portfolios[list(french.FRENCH_GROUPS["industries"])].mean(axis=1).to_numpy()
    assert np.corrcoef(market, industries)[0, 1] > 0.95
    assert 0.10 < industries.std() * np.sqrt(12) < 0.20  # annualised, a stock market's


def _write(tmp_path, frame: pd.DataFrame):
    path = tmp_path / "french.csv"
    frame.to_csv(path, index=False)
    return path


def _synthetic(months: int = 20, start: str = "2014-06-01") -> pd.DataFrame:
    rng = np.random.default_rng(0)
    cols = [c for g in french.FRENCH_GROUPS.values() for c in g]
    frame = pd.DataFrame(rng.normal(0.01, 0.04, (months, 30)), columns=cols)
    frame.insert(0, "dates", pd.date_range(start, periods=months, freq="MS").strftime("%Y-%m-%d"))
    return frame


def test_test_period_months_are_never_returned(tmp_path):
    got = french.load_french_portfolios(_write(tmp_path, _synthetic()))
    assert got.index.max() == pd.Timestamp("2015-12-01") and len(got) == 19


def test_bad_files_get_clear_errors(tmp_path):
    frame = _synthetic()
    with pytest.raises(ValueError, match="lacks the portfolio columns"):
        french.load_french_portfolios(_write(tmp_path, frame.drop(columns=["Hlth"])))
    with pytest.raises(ValueError, match="'dates'"):
        french.load_french_portfolios(_write(tmp_path, frame.rename(columns={"dates": "d"})))
    bad = frame.copy()
    bad.loc[3, "S1M1"] = 4.2  # a percentage where a fraction belongs
    with pytest.raises(ValueError, match="implausible.*2014-09-01"):
        french.load_french_portfolios(_write(tmp_path, bad))
    bad = frame.copy()
    bad.loc[5, "Utils"] = np.nan
    with pytest.raises(ValueError, match="missing or implausible"):
        french.load_french_portfolios(_write(tmp_path, bad))
    with pytest.raises(ValueError, match="increase"):
        french.load_french_portfolios(_write(tmp_path, frame.iloc[::-1]))


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(french.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install 'linearmodels"):
        french.french_data_path()


def test_universes_are_monthly_and_one_family_each(portfolios):
    us = french.french_universes(portfolios)
    assert [u.p for u in us] == [12, 9, 9, 30]
    assert len({u.family for u in us}) == 4
    assert all(u.periods_per_year == 12 and u.start == french.FRENCH_START for u in us)
    with pytest.raises(ValueError, match="120 months"):
        french.french_universes(portfolios, start="1955-01-01")
    with pytest.raises(ValueError, match="start"):
        french.french_universes(portfolios, start="2015-06-01")


def test_monthly_fold_is_annualised_with_twelve_periods(portfolios):
    """The fold backtest of a monthly universe (rebalanced every month) against the same
    GMV backtest annualised by hand with √12; and the bootstrap SE of one fold's
    difference in the same units."""
    u = french.french_universes(portfolios, start="2010-01-01")[1]
    cl = backtest.classical_estimators()
    est = {"ledoit_wolf": cl["ledoit_wolf"], "sample": cl["sample"]}
    rows = universe_backtest.fold_backtest([u], est, (36,), rebalance=1)
    ref = backtest.gmv_backtest(u.returns, est, (36,), 1, start=u.start, end="2015-12-31")
    monthly = ref.returns[36]
    assert len(monthly) == 72  # 2010-01 .. 2015-12
    vol = monthly.std(ddof=1) * np.sqrt(12) * 100
    got = rows.set_index("estimator")["ann_vol"]
    np.testing.assert_allclose(got["sample"], vol["sample"], rtol=1e-12)
    np.testing.assert_allclose(got["ledoit_wolf"], vol["ledoit_wolf"], rtol=1e-12)
    se = universe_backtest.single_fold_difference_se(
        u, est, "sample", "ledoit_wolf", 36, rebalance=1, reps=300, block_length=6
    )
    a, b = monthly["sample"].to_numpy(), monthly["ledoit_wolf"].to_numpy()
    idx = backtest.stationary_bootstrap_indices(len(a), 300, 6.0, np.random.default_rng(0))
    boot = np.sqrt(12) * (a[idx].std(axis=1, ddof=1) - b[idx].std(axis=1, ddof=1))
    np.testing.assert_allclose(se, 100 * boot.std(ddof=1), rtol=1e-12)


def test_bootstrap_periods_per_year_scales_the_difference():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 0.05, 120), rng.normal(0, 0.04, 120)
    monthly = backtest.bootstrap_vol_difference(a, b, block_length=3, reps=200, periods_per_year=12)
    daily = backtest.bootstrap_vol_difference(a, b, block_length=3, reps=200)
    np.testing.assert_allclose(
        monthly["diff"], np.sqrt(12) * (a.std(ddof=1) - b.std(ddof=1)), rtol=1e-12
    )
    np.testing.assert_allclose(monthly["se"], daily["se"] * np.sqrt(12 / 252), rtol=1e-12)
    with pytest.raises(ValueError, match="periods_per_year"):
        backtest.bootstrap_vol_difference(a, b, periods_per_year=0)


def test_versus_best_classical_wires_the_single_fold_se(portfolios):
    """The fold tables of notebooks 5 and 6: ``versus_best_classical`` is
    ``best_classical_table`` with the bootstrap SE of each single-fold family, computed with
    the given rebalance, block length and seed."""
    folds = french.french_universes(portfolios, start="2012-01-01")[:2]
    cl = backtest.classical_estimators()
    est = {k: cl[k] for k in ("ledoit_wolf", "oas", "sample")}
    rows = universe_backtest.fold_backtest(folds, est, (36,), rebalance=1)
    got = universe_backtest.versus_best_classical(
        rows, folds, est, "sample", rebalance=1, block_length=4, seed=3
    )
    by_name = {u.name: u for u in folds}
    ref = universe_backtest.best_classical_table(
        rows,
        "sample",
        ["ledoit_wolf", "oas", "sample"],
        single_fold_se=lambda fold, best, window: universe_backtest.single_fold_difference_se(
            by_name[fold], est, "sample", best, window, rebalance=1, block_length=4, seed=3
        ),
    )
    pd.testing.assert_frame_equal(got, ref)
    assert (got["se source"] == "days").all() and (got["difference se"] > 0).all()
    with pytest.raises(ValueError, match="no classical"):
        universe_backtest.versus_best_classical(rows, folds, {"x": est["sample"]}, "x")


def test_french_portfolio_tables_and_the_scoring_script():
    from _forced_model import random_network
    from _scripts import load_script

    script = load_script("scripts/french_portfolios.py")
    table, summary = script.score({"net": random_network(1)}, (36,), "2013-01-01")
    assert list(table.index.names) == ["model", "family", "window"]
    assert len(table) == 4 and set(table.index.get_level_values("window")) == {36}
    assert summary.loc["net", "cells"] == 4
    # the summary is the mean over cells of the model's volatility relative to Ledoit–Wolf
    est = backtest.classical_estimators() | {"net": backtest.learned_estimator(random_network(1))}
    rows, tables = universe_backtest.french_portfolio_tables(
        est, ["net"], (36,), start="2013-01-01"
    )
    rel = rows[rows["estimator"] == "net"]["rel_vol"]
    np.testing.assert_allclose(summary.loc["net", "mean"], rel.mean(), rtol=1e-12)
    np.testing.assert_allclose(
        table.xs("net", level="model")["difference"].to_numpy(),
        tables["net"]["difference"].to_numpy(),
    )
    assert summary.loc["net", "cells won"] == int((tables["net"]["difference"] <= 0).sum())
    with pytest.raises(ValueError, match="not among"):
        universe_backtest.french_portfolio_tables(est, ["missing"], (36,), start="2013-01-01")
    with pytest.raises(ValueError, match="no model"):
        script.score({})
