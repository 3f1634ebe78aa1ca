"""Cross-universe validation folds: many asset universes built from pre-2016 real returns.

The 20 bundled S&P 500 stocks (:mod:`shrinklab.data.returns`) are one universe; a
choice validated on them alone can be tuned to those 20 stocks. These folds give the
validation backtest many universes of other sizes and structures, all from dates
before :data:`shrinklab.data.returns.TEST_START` (the 2016–2022 test period is never
read; :func:`cross_universe_folds` checks it). Four fold families, fixed seeds:

``halves``
    Disjoint asset halves: ``n_splits`` random permutations of the 20 stocks, each
    split into two disjoint universes of 10 (every split gives two folds).
``portfolios``
    Derived universes of ``p`` long-only portfolios of the stocks, ``p`` in
    :data:`PORTFOLIO_SIZES` (5 to 100). Each asset is, with probability ½, a
    *sector-like* portfolio (2–6 random stocks) or an *index-like* one (all 20
    stocks), with Dirichlet(1) weights — assets with a dominant common factor, as
    sector and index funds have. Linear combinations of 20 stocks span at most 20
    dimensions, so each asset also gets an idiosyncratic part: the real returns of
    a random stock shifted circularly in time by a random lag of at least one year
    (real marginal behaviour, no cross-sectional link), scaled to a share ``h ~
    U(0.1, 0.5)`` of the asset's variance.
``mixtures``
    The 20 stocks plus ``m`` derived portfolios (as above), ``m`` in
    :data:`MIXTURE_SIZES` (p = 30, 50, 100).
``etf``
    The bundled factor ETFs (MTUM, QUAL, SIZE, USMV, VLUE, from 2014-01-02) and the
    S&P 500 index: p = 6 on 2014-01-02 .. 2015-12-31 (only there do they fit before
    2016; the backtest of this fold starts on 2015-01-02, after 250 days of history).

Every stock-based universe is backtested from :data:`STOCK_START` (after the longest
estimation window, 250 days) to 2015-12-31. Returns are the cleaned log returns of
:func:`shrinklab.data.returns.load_returns` (winsorising bounds from pre-2016 data).
The folds share dates, so they are not independent draws; their standard errors
measure the spread across universes, not sampling error over time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from shrinklab.data import returns as data

__all__ = [
    "ETF_START",
    "FOLD_FAMILIES",
    "MIXTURE_SIZES",
    "PORTFOLIO_SIZES",
    "STOCK_START",
    "Universe",
    "cross_universe_folds",
    "derived_portfolios",
    "etf_returns",
    "etf_universe",
    "stock_halves",
    "stock_subsets",
]

FOLD_FAMILIES = ("halves", "portfolios", "mixtures", "etf")
PORTFOLIO_SIZES = (5, 10, 20, 50, 100)
MIXTURE_SIZES = (10, 30, 80)
STOCK_START = pd.Timestamp("1991-01-02")
ETF_START = pd.Timestamp("2015-01-02")
VALIDATION_END = data.TEST_START - pd.Timedelta(days=1)


@dataclass(frozen=True)
class Universe:
    """One fold: returns (dates before 2016 only), the first backtest date and the
    returns' frequency (252 for daily returns, 12 for monthly), which annualises
    their volatility."""

    family: str
    name: str
    returns: pd.DataFrame
    start: pd.Timestamp
    periods_per_year: int = 252

    @property
    def p(self) -> int:
        return int(self.returns.shape[1])


def stock_halves(returns: pd.DataFrame, n_splits: int, rng: np.random.Generator) -> list[Universe]:
    """``2 · n_splits`` universes: each split of the columns into two disjoint halves."""
    if n_splits < 1 or returns.shape[1] < 4:
        raise ValueError("need n_splits >= 1 and at least 4 assets")
    out = []
    for k in range(n_splits):
        perm = rng.permutation(returns.shape[1])
        half = len(perm) // 2
        for side, cols in (("a", perm[:half]), ("b", perm[half:])):
            sub = returns.iloc[:, np.sort(cols)]
            out.append(Universe("halves", f"halves {k}{side} p={sub.shape[1]}", sub, STOCK_START))
    return out


def stock_subsets(
    returns: pd.DataFrame, sizes: tuple[int, ...], draws: int, rng: np.random.Generator
) -> list[Universe]:
    """Universes of single stocks only (family ``stocks``): for each ``p`` in ``sizes``
    (those above the number of columns are skipped), ``draws`` random subsets of ``p`` of
    the columns (one when ``p`` is all of them), backtested from :data:`STOCK_START`.
    Decision 0072's stock class; unlike the cross-universe folds, no derived portfolio."""
    q = returns.shape[1]
    if draws < 1 or not sizes or min(sizes) < 2:
        raise ValueError(f"need draws >= 1 and sizes of at least 2, got {draws}, {sizes}")
    out = []
    for p in sorted({int(s) for s in sizes if s <= q}):
        for d in range(1 if p == q else draws):
            sub = returns.iloc[:, np.sort(rng.choice(q, size=p, replace=False))]
            out.append(Universe("stocks", f"stocks {d} p={p}", sub, STOCK_START))
    if not out:
        raise ValueError(f"every size in {sizes} is above the {q} columns")
    return out


def derived_portfolios(
    returns: pd.DataFrame, m: int, rng: np.random.Generator, *, min_lag: int = 252
) -> pd.DataFrame:
    """``m`` derived assets from the stocks ``returns`` (module docstring, ``portfolios``)."""
    R = returns.to_numpy(dtype=np.float64)
    T, q = R.shape
    if m < 1 or T < 3 * min_lag:
        raise ValueError(f"need m >= 1 and at least {3 * min_lag} dates, got m={m}, T={T}")
    cols = {}
    for k in range(m):
        if rng.random() < 0.5:
            members = rng.choice(q, size=int(rng.integers(2, 7)), replace=False)
            kind = "sector"
        else:
            members, kind = np.arange(q), "index"
        w = np.zeros(q)
        w[members] = rng.dirichlet(np.ones(len(members)))
        f = R @ w
        lag = int(rng.integers(min_lag, T - min_lag))
        e = np.roll(R[:, int(rng.integers(q))], -lag)
        h = float(rng.uniform(0.1, 0.5))
        e = e * np.sqrt(h / (1.0 - h)) * f.std() / e.std()
        cols[f"{kind}{k}"] = f + e
    return pd.DataFrame(cols, index=returns.index)


def etf_returns(factor_returns: pd.DataFrame, index_returns: pd.Series) -> pd.DataFrame:
    """The factor ETFs and the index (column ``SP500``) on their common dates, every year
    (2014–2022 for the bundled data). The ETF fold reads the part before 2016
    (:func:`etf_universe`); notebook 6 backtests 2016–2022 as a report."""
    r = pd.concat([factor_returns, index_returns.rename("SP500")], axis=1, join="inner")
    return r.dropna()


def etf_universe(factor_returns: pd.DataFrame, index_returns: pd.Series) -> Universe:
    """The factor ETFs and the index on their common dates before 2016."""
    r = data.before_test(etf_returns(factor_returns, index_returns))
    if len(r) < 300:
        raise ValueError(f"only {len(r)} common pre-2016 dates of the ETFs and the index")
    return Universe("etf", f"etf p={r.shape[1]}", r, ETF_START)


def cross_universe_folds(
    returns: pd.DataFrame,
    factor_returns: pd.DataFrame | None = None,
    index_returns: pd.Series | None = None,
    *,
    seed: int = 2021,
    n_splits: int = 4,
    draws: int = 2,
    start=STOCK_START,
) -> list[Universe]:
    """Every fold of the module docstring, built from the dates before 2016 only.

    ``returns``: the 20 stocks' cleaned returns (later dates are dropped here);
    ``factor_returns`` and ``index_returns``: the ETF fold (skipped when either is
    ``None``). ``draws`` universes per portfolio and mixture size; ``start``: first
    backtest date of the stock-based folds (later for a quick run). Same ``seed``,
    same folds.
    """
    stocks = data.before_test(returns)
    if stocks.isna().any().any() or len(stocks) < 1000:
        raise ValueError("need complete stock returns with at least 1000 pre-2016 dates")
    rng = np.random.default_rng(seed)
    start = pd.Timestamp(start)
    if not STOCK_START <= start < data.TEST_START - pd.DateOffset(years=1):
        raise ValueError(f"start must be in [{STOCK_START.date()}, 2015-01-01), got {start.date()}")
    folds = [
        Universe(u.family, u.name, u.returns, start) for u in stock_halves(stocks, n_splits, rng)
    ]
    for p in PORTFOLIO_SIZES:
        for d in range(draws):
            r = derived_portfolios(stocks, p, rng)
            folds.append(Universe("portfolios", f"portfolios {d} p={p}", r, start))
    for m in MIXTURE_SIZES:
        for d in range(draws):
            r = pd.concat([stocks, derived_portfolios(stocks, m, rng)], axis=1)
            folds.append(Universe("mixtures", f"mixtures {d} p={r.shape[1]}", r, start))
    if factor_returns is not None and index_returns is not None:
        folds.append(etf_universe(factor_returns, index_returns))
    for u in folds:
        assert u.returns.index.max() < data.TEST_START, u.name
    return folds
