"""Cross-universe validation folds (data/universes.py), their backtest
(evaluation/universe_backtest.py) and the final.pt rule (evaluation/compression.choose_final)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shrinklab.data import returns as data
from shrinklab.data import universes
from shrinklab.evaluation import backtest, compression, universe_backtest


@pytest.fixture(scope="module")
def folds():
    r = data.load_returns()
    return universes.cross_universe_folds(
        r, data.load_factor_returns(), data.load_index_returns(), seed=2021
    )


def test_folds_are_pre_2016_seeded_and_cover_the_families(folds):
    assert [u.family for u in folds].count("halves") == 8 and len(folds) == 25
    assert {u.family for u in folds} == set(universes.FOLD_FAMILIES)
    assert all(u.returns.index.max() < data.TEST_START for u in folds)
    assert all(np.isfinite(u.returns.to_numpy()).all() for u in folds)
    assert {u.p for u in folds if u.family == "portfolios"} == set(universes.PORTFOLIO_SIZES)
    assert {u.p for u in folds if u.family == "mixtures"} == {30, 50, 100}
    # each split gives two disjoint halves covering the 20 stocks
    a, b = folds[0].returns.columns, folds[1].returns.columns
    assert not set(a) & set(b) and len(set(a) | set(b)) == 20
    etf = folds[-1]
    assert etf.family == "etf" and etf.p == 6 and etf.returns.index[0] == pd.Timestamp("2014-01-03")
    again = universes.cross_universe_folds(data.load_returns(), seed=2021)
    pd.testing.assert_frame_equal(again[12].returns, folds[12].returns)
    other = universes.cross_universe_folds(data.load_returns(), seed=1)
    assert not np.allclose(other[12].returns.to_numpy(), folds[12].returns.to_numpy())


def test_stock_subsets_are_columns_of_the_stocks_of_each_size():
    r = data.before_test(data.load_returns())
    subs = universes.stock_subsets(r, (5, 10, 20, 30), 2, np.random.default_rng(3))
    # two draws per size below the 20 columns, one of all 20, none above
    assert [u.p for u in subs] == [5, 5, 10, 10, 20]
    assert all(u.family == "stocks" and u.start == universes.STOCK_START for u in subs)
    for u in subs:
        assert len(set(u.returns.columns)) == u.p
        pd.testing.assert_frame_equal(u.returns, r.loc[:, list(u.returns.columns)])
    assert list(subs[0].returns.columns) != list(subs[1].returns.columns)
    again = universes.stock_subsets(r, (5, 10, 20, 30), 2, np.random.default_rng(3))
    assert [list(u.returns.columns) for u in again] == [list(u.returns.columns) for u in subs]
    with pytest.raises(ValueError, match="above"):
        universes.stock_subsets(r, (30,), 2, np.random.default_rng(3))
    with pytest.raises(ValueError, match="draws"):
        universes.stock_subsets(r, (5,), 0, np.random.default_rng(3))


def test_etf_returns_cover_the_test_period_and_the_fold_is_their_pre_2016_part(folds):
    factors, index = data.load_factor_returns(), data.load_index_returns()
    r = universes.etf_returns(factors, index)
    assert list(r.columns) == [*factors.columns, "SP500"] and np.isfinite(r.to_numpy()).all()
    assert r.index.min() < data.TEST_START < r.index.max()
    assert r.index.max() >= pd.Timestamp("2022-12-01")
    # only common dates: a date the index lacks is dropped, not filled
    short = universes.etf_returns(factors, index.drop(index.index[-5:]))
    assert len(short) == len(r) - 5
    pd.testing.assert_frame_equal(folds[-1].returns, r[r.index < data.TEST_START])


def test_derived_assets_have_full_rank_and_a_common_factor(folds):
    u = next(f for f in folds if f.family == "portfolios" and f.p == 100)
    X = u.returns.to_numpy()
    ev = np.linalg.eigvalsh(np.corrcoef(X, rowvar=False))
    assert ev[0] > 1e-3  # the idiosyncratic parts lift the rank above 20
    assert ev[-1] / ev.sum() > 0.3  # a dominant common factor (sector/index-like assets)


def test_start_must_leave_a_year_before_2016(folds):
    with pytest.raises(ValueError, match="start"):
        universes.cross_universe_folds(data.load_returns(), start="2015-06-01")


def test_fold_backtest_matches_gmv_backtest_by_hand(folds):
    u = universes.Universe("halves", "x", folds[0].returns, pd.Timestamp("2014-01-02"))
    est = {
        "ledoit_wolf": backtest.classical_estimators()["ledoit_wolf"],
        "sample": backtest.classical_estimators()["sample"],
    }
    rows = universe_backtest.fold_backtest([u], est, (60,))
    ref = backtest.gmv_backtest(u.returns, est, (60,), 21, start=u.start, end="2015-12-31")
    vol = ref.returns[60].std(ddof=1) * np.sqrt(252) * 100
    got = rows.set_index("estimator")
    np.testing.assert_allclose(got.loc["sample", "ann_vol"], vol["sample"], rtol=1e-12)
    np.testing.assert_allclose(
        got.loc["sample", "rel_vol"], 100 * (vol["sample"] / vol["ledoit_wolf"] - 1), rtol=1e-12
    )
    assert got.loc["ledoit_wolf", "rel_vol"] == 0.0
    assert ref.returns[60].index.max() < data.TEST_START


def test_fold_backtest_is_the_same_for_two_workers(folds):
    """The folds shared by two worker processes (a learned estimator pickled to them):
    the same frame, row for row and bit for bit, as in one process."""
    import pickle

    import torch
    from _forced_model import random_network

    small = [
        universes.Universe(u.family, u.name, u.returns, pd.Timestamp("2015-01-02"))
        for u in (folds[0], folds[9], folds[-1])
    ]
    est = {
        "ledoit_wolf": backtest.classical_estimators()["ledoit_wolf"],
        "learned": backtest.learned_estimator(random_network(3)),
    }
    again = pickle.loads(pickle.dumps(est["learned"]))
    X = torch.as_tensor(small[0].returns.to_numpy()[None, :60])
    assert torch.equal(again(X), est["learned"](X))  # the estimator pickles whole
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = universe_backtest.fold_backtest(small, est, (60,))
        two = universe_backtest.fold_backtest(small, est, (60,), workers=2)
    finally:
        torch.set_num_threads(threads)
    assert list(one["fold"].unique()) == [u.name for u in small]
    assert len(one) == 3 * 3 and one["ann_vol"].gt(0).all()
    pd.testing.assert_frame_equal(one, two, check_exact=True)
    with pytest.raises(ValueError, match="workers"):
        universe_backtest.fold_backtest(small, est, (60,), workers=0)


def test_single_fold_family_gets_a_bootstrap_se_over_days(folds):
    etf = folds[-1]
    cl = backtest.classical_estimators()
    est = {k: cl[k] for k in ("ledoit_wolf", "sample", "single_factor")}
    rows = universe_backtest.fold_backtest([folds[0], folds[1], etf], est, (60,))
    calls = []

    def se_of(fold, best, window):
        calls.append((fold, best, window))
        return universe_backtest.single_fold_difference_se(
            etf, est, "ledoit_wolf", best, window, reps=400
        )

    table = universe_backtest.best_classical_table(
        rows, "ledoit_wolf", ["sample", "single_factor"], se_of
    )
    assert calls == [(etf.name, table.loc[("etf", 60), "best classical"], 60)]
    assert table.loc[("etf", 60), "se source"] == "days"
    assert table.loc[("halves", 60), "se source"] == "folds"
    # independent reference: the two estimators' daily GMV returns, resampled in blocks
    # with the same indices, annualised volatility difference's s.d.
    best = table.loc[("etf", 60), "best classical"]
    ref = backtest.gmv_backtest(etf.returns, est, (60,), 21, start=etf.start, end="2015-12-31")
    daily = ref.returns[60]
    idx = backtest.stationary_bootstrap_indices(len(daily), 400, 21.0, np.random.default_rng(0))
    a, b = daily["ledoit_wolf"].to_numpy()[idx], daily[best].to_numpy()[idx]
    want = 100 * np.std(np.sqrt(252) * (a.std(1, ddof=1) - b.std(1, ddof=1)), ddof=1)
    np.testing.assert_allclose(table.loc[("etf", 60), "difference se"], want, rtol=1e-10)
    assert 0 < want < 1  # a fraction of a volatility point for a year of six assets
    # without the callback the single fold has no SE
    plain = universe_backtest.best_classical_table(rows, "ledoit_wolf", ["sample", "single_factor"])
    assert np.isnan(plain.loc[("etf", 60), "difference se"])
    assert plain.loc[("etf", 60), "se source"] == "none"


def _rows(delta: float, noise: float, k: int = 10) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    out = []
    for f in range(k):
        for w in (60, 120):
            base = rng.normal()
            out += [
                {"fold": f"f{f}", "window": w, "estimator": "ensemble", "rel_vol": base},
                {
                    "fold": f"f{f}",
                    "window": w,
                    "estimator": "ft",
                    "rel_vol": base + delta + noise * rng.normal(),
                },
            ]
    return pd.DataFrame(out)


def test_choose_final_follows_the_declared_rule():
    clear = _rows(-1.0, 0.1)
    name, _, scores = compression.choose_final(clear, "ensemble", ["ft"], {"ft": 0.95})
    assert name == "ft" and scores.loc["ft", "qualifies"]
    # same folds, but the challenger loses too much on the synthetic validation worlds
    assert compression.choose_final(clear, "ensemble", ["ft"], {"ft": 0.5})[0] == "ensemble"
    # lower, but within one SE: the tie goes to the incumbent
    tie = _rows(-0.05, 2.0)
    name, _, scores = compression.choose_final(tie, "ensemble", ["ft"], {"ft": 1.0})
    assert name == "ensemble" and scores.loc["ft", "delta"] > -scores.loc["ft", "delta_se"]
    d = (
        clear[clear.estimator == "ft"].groupby("fold")["rel_vol"].mean()
        - clear[clear.estimator == "ensemble"].groupby("fold")["rel_vol"].mean()
    )
    np.testing.assert_allclose(
        scores_se := d.std(ddof=1) / np.sqrt(len(d)),
        compression.choose_final(clear, "ensemble", ["ft"], {"ft": 1.0})[2].loc["ft", "delta_se"],
    )
    assert scores_se > 0
    with pytest.raises(ValueError, match="not in the fold rows"):
        compression.choose_final(clear, "ensemble", ["nope"], {})


def _fold_rows(deltas: list[float]) -> pd.DataFrame:
    """Two windows per fold; the gated model is the network plus ``deltas[f]`` in fold f."""
    out = []
    for f, dv in enumerate(deltas):
        for w, base in ((60, 1.0 + f), (120, 2.0 - f)):
            out.append({"fold": f"f{f}", "window": w, "estimator": "net", "rel_vol": base})
            out.append({"fold": f"f{f}", "window": w, "estimator": "gated", "rel_vol": base + dv})
    return pd.DataFrame(out)


def test_experts_rule_follows_the_declared_rule():
    same = _fold_rows([0.0, 0.0, 0.0, 0.0])  # the gate never fires on the real folds
    ok, reason, x = compression.experts_rule(same, "net", "gated", 2.0, 0.5)
    assert ok and reason.startswith("gated:") and x["fold_delta"] == 0 and x["folds"] == 4
    # validation gain within one SE: keep the network
    assert not compression.experts_rule(same, "net", "gated", 0.4, 0.5)[0]
    assert not compression.experts_rule(same, "net", "gated", -2.0, 0.5)[0]
    # worse on the folds by more than max(SE, 0.01): keep the network
    worse = _fold_rows([0.2, 0.3, 0.2, 0.3])
    ok, reason, x = compression.experts_rule(worse, "net", "gated", 2.0, 0.5)
    se = np.std([0.2, 0.3, 0.2, 0.3], ddof=1) / 2
    assert not ok and reason.startswith("net:") and not x["rule1_folds"]
    assert x["fold_delta"] == pytest.approx(0.25) and x["fold_delta_se"] == pytest.approx(se)
    # a tiny difference below the 0.01-point tolerance passes even with SE ~ 0
    tiny = _fold_rows([0.004, 0.004, 0.004, 0.004])
    assert compression.experts_rule(tiny, "net", "gated", 2.0, 0.5)[0]
    # noisy folds: a mean within one SE passes
    noisy = _fold_rows([1.0, -0.8, 0.9, -0.7])
    assert compression.experts_rule(noisy, "net", "gated", 2.0, 0.5)[2]["rule1_folds"]
    with pytest.raises(ValueError, match="not in the fold rows"):
        compression.experts_rule(same, "net", "nope", 2.0, 0.5)
    with pytest.raises(ValueError, match="finite"):
        compression.experts_rule(same, "net", "gated", float("nan"), 0.5)


def test_server_rule_adds_the_grid_condition_to_the_experts_rule():
    same = _fold_rows([0.0, 0.0, 0.0, 0.0])
    before = {"grid_fails": 4, "grid_mean_prial": 81.0}
    ok, reason, x = compression.server_rule(
        same, "net", "gated", 1.0, 0.2, before, {"grid_fails": 2, "grid_mean_prial": 81.5}
    )
    assert ok and reason.startswith("gated:") and x["rule3_grids"] and x["grid_fails"] == 2
    # equal failures and mean pass (not worse); one more failure or a lower mean fails
    assert compression.server_rule(same, "net", "gated", 1.0, 0.2, before, dict(before))[0]
    more = {"grid_fails": 5, "grid_mean_prial": 90.0}
    lower = {"grid_fails": 1, "grid_mean_prial": 80.9}
    for after in (more, lower):
        ok, reason, x = compression.server_rule(same, "net", "gated", 1.0, 0.2, before, after)
        assert not ok and reason.startswith("net:") and not x["rule3_grids"]
    # parts 1 and 2 are the experts rule's: a validation gain within one SE fails
    good = {"grid_fails": 0, "grid_mean_prial": 99.0}
    assert not compression.server_rule(same, "net", "gated", 0.1, 0.2, before, good)[0]
    worse = _fold_rows([0.2, 0.3, 0.2, 0.3])
    assert not compression.server_rule(worse, "net", "gated", 1.0, 0.2, before, good)[0]
    mean, se, n = compression.fold_delta(worse, "gated", "net")
    assert (mean, n) == (pytest.approx(0.25), 4)
    assert se == pytest.approx(np.std([0.2, 0.3, 0.2, 0.3], ddof=1) / 2)
    with pytest.raises(ValueError, match="lacks"):
        compression.server_rule(same, "net", "gated", 1.0, 0.2, before, {"grid_fails": 1})


def test_normalised_prial_delta_matches_a_direct_computation():
    """The paired difference equals normalised_prial(w) − normalised_prial(w0) computed
    from the losses directly, and its SE is positive and shrinks with more worlds."""
    from types import SimpleNamespace

    import torch

    from shrinklab.core.metrics import normalised_prial, quadratic_loss

    rng = np.random.default_rng(3)
    n, k = 400, 3
    A = rng.normal(size=(n, k, k))
    G = torch.as_tensor(A @ A.transpose(0, 2, 1) + 0.5 * np.eye(k))
    c = torch.as_tensor(rng.uniform(0.5, 1.5, size=(n, k)))
    d = torch.as_tensor(rng.uniform(5.0, 9.0, size=n))
    w_opt = torch.linalg.solve(G, c.unsqueeze(-1)).squeeze(-1)  # best unconstrained weights
    fs = quadratic_loss(w_opt, G, c, d)
    data = SimpleNamespace(G=G, c=c, d=d, loss_fsopt=fs)
    w = torch.as_tensor(rng.uniform(0, 0.3, size=(n, k)))
    w0 = torch.as_tensor(rng.uniform(0, 0.3, size=(n, k)))
    delta, se = compression.normalised_prial_delta(w, w0, data)
    L, L0 = quadratic_loss(w, G, c, d), quadratic_loss(w0, G, c, d)
    direct = normalised_prial(L, d, fs) - normalised_prial(L0, d, fs)
    assert delta == pytest.approx(direct, rel=1e-10, abs=1e-10)
    assert se > 0
    assert compression.normalised_prial_delta(w, w, data) == (0.0, 0.0)


def test_rule_parts_not_worse_and_gains():
    assert compression.not_worse(0.005, 0.001) and compression.not_worse(0.02, 0.03)
    assert not compression.not_worse(0.02, 0.015)  # above both 1 SE and 0.01
    assert compression.not_worse(0.02, 0.0, tolerance=0.05)
    assert compression.gains(0.3, 0.1) and not compression.gains(0.05, 0.1)
    assert not compression.gains(-0.3, 0.1)
