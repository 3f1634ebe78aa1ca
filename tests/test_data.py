"""Tests of shrinklab.data.returns: offline loading, cleaning, walk-forward splits, regimes."""

from __future__ import annotations

import socket

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from shrinklab.data import returns as data


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    return data.load_prices()


@pytest.fixture(scope="module")
def index_prices() -> pd.Series:
    return data.load_index_prices()


def test_loading_needs_no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    p = data.load_prices()
    i = data.load_index_prices()
    f = data.load_factor_prices()
    assert p.shape == (8313, 20) and i.shape == (8313,)
    assert p.index[0] == pd.Timestamp("1990-01-02") and p.index[-1] == pd.Timestamp("2022-12-28")
    assert i.index.equals(p.index)
    assert list(f.columns) == ["MTUM", "QUAL", "SIZE", "USMV", "VLUE"]
    assert f.index[0] == pd.Timestamp("2014-01-02")


def test_load_returns_clean_and_consistent(prices):
    r = data.load_returns()
    assert r.shape == (8312, 20) and np.isfinite(r.to_numpy()).all()
    raw = np.log(prices).diff().iloc[1:]
    # away from imputed/winsorised cells the returns are the raw log returns
    c = data.clean_returns(prices)
    keep = ~(c.imputed | c.outliers)
    np.testing.assert_allclose(r.to_numpy()[keep.to_numpy()], raw.to_numpy()[keep.to_numpy()])
    # cumulative log return over the whole period is preserved by the imputation
    c_nw = data.clean_returns(prices, mad_k=None)
    np.testing.assert_allclose(c_nw.returns.sum(), raw.sum(), rtol=1e-10)
    ri = data.load_index_returns()
    assert ri.shape == (8312,) and np.isfinite(ri).all()
    fr = data.load_factor_returns()
    assert fr.shape == (2263, 5) and np.isfinite(fr.to_numpy()).all()
    assert int(c.outliers.to_numpy().sum()) == 28  # documented in the module docstring
    simple = data.load_returns(kind="simple", mad_k=None)
    np.testing.assert_allclose(np.log1p(simple), c_nw.returns, atol=1e-12)


def test_cleaning_of_the_training_period_ignores_the_test_period(prices):
    """Scale every test-period log return by 10 *before* cleaning (prices rebuilt from
    the raw returns): the cleaned pre-2016 returns must not move. With the statistics
    taken over every date (the old rule, ``stats_end=None``) they do move."""
    logp = np.log(prices)
    r = logp.diff()
    test = r.index >= data.TEST_START
    r.loc[test] *= 10.0
    perturbed = np.exp(logp.iloc[0] + r.fillna(0.0).cumsum())
    perturbed.iloc[0] = prices.iloc[0]
    perturbed = perturbed.where(prices.notna())  # keep the missing prices missing
    pre = lambda c: c.returns[c.returns.index < data.TEST_START]  # noqa: E731
    a, b = data.clean_returns(prices), data.clean_returns(perturbed)
    pd.testing.assert_frame_equal(pre(a), pre(b), rtol=0, atol=1e-12)
    assert not np.allclose(a.returns[test[1:]], b.returns[test[1:]])  # the perturbation is real
    a0, b0 = (
        data.clean_returns(prices, stats_end=None),
        data.clean_returns(perturbed, stats_end=None),
    )
    assert not np.allclose(pre(a0), pre(b0), rtol=0, atol=1e-9)


def test_rrc_stale_stretch_is_flagged(prices):
    c = data.clean_returns(prices)
    # RRC is flat for 68 sessions in 1990 (>= 5 equal prices: stale)
    assert c.imputed["RRC"]["1990"].sum() >= 60
    assert c.imputed["MSFT"].sum() == 0
    assert c.summary().loc["RRC", "imputed"] == c.imputed["RRC"].sum()


def _toy_prices() -> pd.DataFrame:
    idx = pd.bdate_range("2020-01-01", periods=400)
    rng = np.random.default_rng(0)
    r = rng.normal(0, 0.01, size=(400, 3))
    p = pd.DataFrame(100 * np.exp(np.cumsum(r, axis=0)), index=idx, columns=["A", "B", "C"])
    p.iloc[50:54, 0] = np.nan  # a missing stretch
    p.iloc[100:108, 1] = p.iloc[99, 1]  # 9 equal prices: stale
    p.iloc[200:203, 1] = p.iloc[199, 1]  # 4 equal prices: kept
    p.iloc[300, 2] *= 1.8  # a one-day +80 % spike (and the reversal next day)
    return p


def test_imputation_is_log_linear_and_keeps_cumulative_return():
    p = _toy_prices()
    clean, imputed = data.clean_prices(p)
    assert not clean.isna().any().any()
    assert imputed["A"].iloc[50:54].all() and imputed["A"].sum() == 4
    # stale: the first price of the run is genuine, the 8 repeats are imputed
    assert imputed["B"].iloc[100:108].all() and not imputed["B"].iloc[99]
    assert imputed["B"].sum() == 8
    r = np.log(clean["A"]).diff()
    gap = r.iloc[50:55]  # 5 equal returns across the 4 missing prices
    np.testing.assert_allclose(gap, gap.iloc[0], rtol=1e-12)
    np.testing.assert_allclose(gap.sum(), np.log(p["A"].iloc[54] / p["A"].iloc[49]), rtol=1e-12)
    assert (np.log(clean["B"]).diff().iloc[200:203] == 0).all()  # short run untouched


def test_winsorisation_against_scipy_mad():
    p = _toy_prices()
    c = data.clean_returns(p, mad_k=8.0, stats_end=None)  # statistics over every date
    raw = data.clean_returns(p, mad_k=None).returns
    x = raw["C"].to_numpy()
    med = np.median(x)
    mad = scipy.stats.median_abs_deviation(x, scale="normal")
    lo, hi = med - 8 * mad, med + 8 * mad
    assert c.outliers["C"].sum() == 2  # the spike and its reversal
    flagged = raw.index[(x < lo) | (x > hi)]
    assert list(c.outliers.index[c.outliers["C"]]) == list(flagged)
    np.testing.assert_allclose(c.returns["C"].max(), hi, rtol=1e-12)
    np.testing.assert_allclose(c.returns["C"].min(), lo, rtol=1e-12)
    assert c.outliers["A"].sum() == 0


def test_cleaning_rejects_bad_input():
    with pytest.raises(ValueError, match="DatetimeIndex"):
        data.clean_returns(pd.DataFrame({"a": [1.0, 2.0, 3.0]}))
    p = _toy_prices()
    with pytest.raises(ValueError, match="increasing"):
        data.clean_returns(p.iloc[::-1])
    with pytest.raises(ValueError, match="mad_k"):
        data.winsorize_returns(p.pct_change().iloc[1:], mad_k=0)
    with pytest.raises(ValueError, match="no valid price"):
        data.clean_prices(p.assign(D=np.nan))
    with pytest.raises(ValueError, match="kind"):
        data.prices_to_returns(p, kind="excess")


def test_walk_forward_splits_never_overlap_and_never_touch_test(prices):
    idx = data.load_returns().index
    splits = data.walk_forward_splits(idx)
    assert len(splits) == 6
    test = data.final_test_positions(idx)
    assert np.array_equal(test, data.test_positions(idx))
    assert idx[test[0]] >= pd.Timestamp("2016-01-01") and idx[test[-1]] == data.TEST_END
    vals = []
    for k, s in enumerate(splits):
        assert s.train.max() < s.val.min()  # validation after training
        assert not set(s.train) & set(s.val)
        assert not (set(s.train) | set(s.val)) & set(test)
        assert idx[s.val[-1]] < data.TEST_START
        assert np.all(np.diff(s.val) == 1)  # one contiguous block
        assert s.train[0] == 0  # expanding window from the first date
        if k:
            prev = splits[k - 1]
            assert len(s.train) > len(prev.train)
            assert set(prev.train) | set(prev.val) <= set(s.train)  # gap = 0
        vals.append(set(s.val))
    for a in range(len(vals)):
        for b in range(a + 1, len(vals)):
            assert not vals[a] & vals[b]
    assert splits[2].dates(idx)["val_start"].year == 2008  # the crisis is validated on
    gapped = data.walk_forward_splits(idx, gap=60)
    for s in gapped:
        assert s.val.min() - s.train.max() == 61
    with pytest.raises(ValueError, match="empty"):
        data.walk_forward_splits(idx, n_folds=20)


def test_market_regimes_label_known_periods(index_prices):
    reg = data.market_regimes(index_prices)
    assert reg.index.equals(index_prices.index) and set(reg.unique()) <= {0, 1, 2}
    assert data.REGIME_NAMES[data.CRISIS] == "crisis"
    assert (reg["2008-10"] == data.CRISIS).mean() > 0.9  # Lehman crash
    assert (reg["2020-03-16":"2020-04-15"] == data.CRISIS).mean() > 0.9  # COVID crash
    assert (reg["2017"] == data.CALM).mean() > 0.9
    assert (reg["2005"] == data.CALM).mean() > 0.9
    assert (reg == data.CRISIS).mean() < 0.15  # crises are rare
    crisis_years = set(reg.index.year[reg == data.CRISIS])
    assert {1998, 2001, 2002, 2008, 2009, 2020} <= crisis_years
    assert not crisis_years & {1993, 1995, 2005, 2006, 2013, 2017}
    # only past data: labels on a truncated history equal the full-history labels
    cut = data.market_regimes(index_prices[:"2008-10-31"])
    pd.testing.assert_series_equal(cut, reg[:"2008-10-31"])


def test_market_regimes_thresholds_on_a_toy_series():
    idx = pd.bdate_range("2000-01-03", periods=600)
    rng = np.random.default_rng(1)
    # 300 days at 3 % annual vol with a 10 %/yr drift (no 10 % drawdown), then 60 % vol
    vol = np.r_[np.full(300, 0.03), np.full(300, 0.60)] / np.sqrt(252)
    s = pd.Series(100 * np.exp(np.cumsum(rng.normal(0.1 / 252, vol))), index=idx)
    reg = data.market_regimes(s)
    assert (reg.iloc[100:300] == data.CALM).all()
    assert (reg.iloc[400:] == data.CRISIS).all()
    with pytest.raises(ValueError, match="positive"):
        data.market_regimes(-s)
