"""Real returns: the S&P 500 data bundled in the ``skfolio`` wheel, cleaned, split and labelled.

Sources (read from the installed wheel through ``importlib.resources``; no network):

* ``skfolio.datasets.load_sp500_dataset`` — daily adjusted closes of 20 S&P 500
  stocks, 1990-01-02 .. 2022-12-28 (8313 days);
* ``skfolio.datasets.load_sp500_index`` — the S&P 500 index, same dates;
* ``skfolio.datasets.load_factors_dataset`` — factor ETFs (MTUM, QUAL, SIZE, USMV,
  VLUE), 2014-01-02 .. 2022-12-28.

Cleaning (:func:`clean_prices`, :func:`winsorize_returns`, :func:`clean_returns`)
--------------------------------------------------------------------------------
1. **Non-positive prices** are treated as missing.
2. **Stale prices**: a run of at least ``stale_run`` (default 5) consecutive
   identical prices is a stale stretch (no trading information, e.g. RRC in
   1990 is flat for 68 days); every price of the run but the first is set missing.
   Shorter runs are kept: the early prices are rounded to 0.001 $, so a few equal
   consecutive closes are genuine.
3. **Missing prices** are imputed by log-linear interpolation between the
   surrounding valid prices, which spreads the return over the gap and keeps the
   cumulative return exact; leading gaps are back-filled and trailing gaps
   forward-filled (zero returns). Imputed cells are flagged.
4. **Returns** are log returns ``log(P_t / P_{t−1})`` (``kind="simple"`` for
   ``P_t/P_{t−1} − 1``).
5. **Outliers**: per asset, a return farther than ``mad_k`` (default 15) robust
   standard deviations (``1.4826·MAD``, Hampel 1974) from the median is winsorised
   to that bound and flagged. The median and MAD are computed on the dates before
   :data:`TEST_START` only (``stats_end``), so the test period never shapes the
   cleaning of the training period; the same bounds are applied to every date. With daily stock returns
   (robust s.d. 1–3 %) the bound is ±15–40 %: on the 20 stocks it clips 28 of
   166,240 returns (26 of them before 2016, 12 BAC in 2008–09; 9 at ``mad_k = 20``,
   130 at ``mad_k = 10``), single-stock shocks such as AAPL on 2000-09-29 (−52 %) that
   would otherwise dominate a window's sample covariance, while ordinary crisis
   days are kept. The index returns are not winsorised (crashes are the signal
   the regimes need).

Splits and regimes
------------------
* :data:`TEST_START`..:data:`TEST_END` (2016-01-01 .. 2022-12-28) is the final test
  period. :func:`walk_forward_splits` never gives a training or validation date in
  it: an expanding training window from the first date, then ``n_folds``
  consecutive, non-overlapping validation blocks of ``val_years`` years that end
  just before the test period, with an optional ``gap`` (days dropped between
  training end and validation start, e.g. the estimation window length).
* :func:`market_regimes` labels each day calm / volatile / crisis
  (:data:`REGIME_NAMES`, codes 0/1/2) from the index's trailing annualised
  volatility (``vol_window`` = 42 days) and drawdown from its trailing
  ``dd_window`` (252 days) maximum, using only past data:
  crisis if vol ≥ 35 % or (drawdown ≥ 20 % and vol ≥ 25 %); otherwise volatile
  if vol ≥ 20 % or drawdown ≥ 10 %; otherwise calm. The first ``vol_window``
  days (no full history) are labelled from the data available (expanding).
  On 1990–2022 this gives 73 % calm, 22 % volatile and 5.5 % crisis days; the crisis
  days fall in 1998 (LTCM), 2001–03, 2008–09, 2011, 2020 and 2022. A 42-day window
  reacts within weeks; 63 days missed 1998 and September 2001.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

TEST_START = pd.Timestamp("2016-01-01")


TEST_END = pd.Timestamp("2022-12-28")


REGIME_NAMES: tuple[str, ...] = ("calm", "volatile", "crisis")


CALM, VOLATILE, CRISIS = 0, 1, 2


MAD_SCALE = 1.482602218505602  # 1 / Φ⁻¹(3/4): MAD → standard deviation under normality


# --------------------------------------------------------------------------- loading
def load_prices() -> pd.DataFrame:
    """Daily adjusted closes of the 20 S&P 500 stocks shipped with skfolio (raw)."""
    from skfolio.datasets import load_sp500_dataset

    return load_sp500_dataset()


def load_index_prices() -> pd.Series:
    """The S&P 500 index level shipped with skfolio (raw), as a Series named ``SP500``."""
    from skfolio.datasets import load_sp500_index

    return load_sp500_index().iloc[:, 0]


def load_factor_prices() -> pd.DataFrame:
    """The factor ETF prices shipped with skfolio (MTUM, QUAL, SIZE, USMV, VLUE; from 2014)."""
    from skfolio.datasets import load_factors_dataset

    return load_factors_dataset()


# --------------------------------------------------------------------------- cleaning
def _as_frame(prices: pd.DataFrame | pd.Series) -> pd.DataFrame:
    if isinstance(prices, pd.Series):
        prices = prices.to_frame()
    if not isinstance(prices, pd.DataFrame):
        raise ValueError(f"prices must be a pandas DataFrame or Series, got {type(prices)!r}")
    if not isinstance(prices.index, pd.DatetimeIndex):
        raise ValueError("prices need a DatetimeIndex")
    if not prices.index.is_monotonic_increasing or prices.index.has_duplicates:
        raise ValueError("prices' index must be strictly increasing dates")
    if len(prices) < 2:
        raise ValueError("need at least two dates of prices")
    return prices.astype(float)


def stale_mask(prices: pd.DataFrame, stale_run: int = 5) -> pd.DataFrame:
    """True where a price repeats the previous one inside a run of ``>= stale_run`` equal prices.

    The first price of the run is not flagged (it is a genuine observation).
    """
    if stale_run < 2:
        raise ValueError(f"stale_run must be >= 2, got {stale_run}")
    same = prices.eq(prices.shift(1)) & prices.notna()
    out = pd.DataFrame(False, index=prices.index, columns=prices.columns)
    for col in prices.columns:
        s = same[col].to_numpy()
        # run id increments whenever the price changes; count repeats inside each run
        run_id = np.cumsum(~s)
        counts = np.bincount(run_id)  # run length = repeats + 1
        long_run = counts[run_id] >= stale_run
        out[col] = s & long_run
    return out


def clean_prices(
    prices: pd.DataFrame | pd.Series, stale_run: int = 5
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Steps 1–3 of the module docstring: ``(clean prices, imputed mask)``."""
    p = _as_frame(prices)
    missing = p.isna() | (p <= 0)
    p = p.mask(p <= 0)
    stale = stale_mask(p, stale_run)
    imputed = missing | stale
    logp = np.log(p.mask(stale))
    logp = logp.interpolate(method="linear", limit_area="inside").ffill().bfill()
    if logp.isna().any().any():
        empty = list(logp.columns[logp.isna().all()])
        raise ValueError(f"no valid price at all for columns {empty}")
    return np.exp(logp), imputed


def prices_to_returns(prices: pd.DataFrame, kind: str = "log") -> pd.DataFrame:
    """Log (default) or simple returns; the first date is dropped."""
    if kind == "log":
        r = np.log(prices).diff()
    elif kind == "simple":
        r = prices.pct_change(fill_method=None)
    else:
        raise ValueError(f"kind must be 'log' or 'simple', got {kind!r}")
    return r.iloc[1:]


def winsorize_returns(
    returns: pd.DataFrame, mad_k: float = 15.0, stats_end=None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Clip each column to ``median ± mad_k · 1.4826 · MAD``; return ``(clipped, outlier mask)``.

    Robust z-score screening (Hampel 1974; Rousseeuw & Croux 1993). The median and
    MAD come from the dates before ``stats_end`` (``None``: every date); the bounds
    are applied to every date. A column with zero MAD (constant) is left unchanged.
    """
    if not mad_k > 0:
        raise ValueError(f"mad_k must be > 0, got {mad_k}")
    ref = returns
    if stats_end is not None:
        ref = returns[returns.index < pd.Timestamp(stats_end)]
        if len(ref) < 2:
            raise ValueError(f"fewer than two returns before stats_end={stats_end}")
    med = ref.median()
    mad = (ref - med).abs().median() * MAD_SCALE
    lo, hi = med - mad_k * mad, med + mad_k * mad
    active = mad > 0
    flags = ((returns.lt(lo, axis=1)) | (returns.gt(hi, axis=1))) & active
    clipped = returns.clip(lower=lo.where(active), upper=hi.where(active), axis=1)
    return clipped, flags


@dataclass
class CleanReturns:
    """Cleaned returns with the cells that were imputed (stale/missing) and winsorised."""

    returns: pd.DataFrame
    imputed: pd.DataFrame
    outliers: pd.DataFrame

    def summary(self) -> pd.DataFrame:
        """Per asset: number of imputed and winsorised returns."""
        return pd.DataFrame({"imputed": self.imputed.sum(), "winsorised": self.outliers.sum()})


def clean_returns(
    prices: pd.DataFrame | pd.Series,
    *,
    kind: str = "log",
    stale_run: int = 5,
    mad_k: float | None = 15.0,
    stats_end=TEST_START,
) -> CleanReturns:
    """Clean prices, take returns, winsorise (``mad_k=None`` skips it). See the module docstring.

    The winsorising bounds come from the returns before ``stats_end`` (default
    :data:`TEST_START`; ``None``: every date). A return is flagged imputed when
    either of its two prices was imputed.
    """
    clean, imputed_p = clean_prices(prices, stale_run)
    r = prices_to_returns(clean, kind)
    imputed = (imputed_p | imputed_p.shift(1, fill_value=False)).iloc[1:]
    if mad_k is None:
        flags = pd.DataFrame(False, index=r.index, columns=r.columns)
    else:
        r, flags = winsorize_returns(r, mad_k, stats_end=stats_end)
    return CleanReturns(returns=r, imputed=imputed, outliers=flags)


def load_returns(kind: str = "log", stale_run: int = 5, mad_k: float | None = 15.0) -> pd.DataFrame:
    """Cleaned daily returns of the 20 S&P 500 stocks (8312 × 20, no NaN)."""
    return clean_returns(load_prices(), kind=kind, stale_run=stale_run, mad_k=mad_k).returns


def load_index_returns(kind: str = "log", stale_run: int = 5) -> pd.Series:
    """Cleaned daily returns of the S&P 500 index (not winsorised: crashes are the signal)."""
    r = clean_returns(load_index_prices(), kind=kind, stale_run=stale_run, mad_k=None).returns
    return r.iloc[:, 0]


def load_factor_returns(
    kind: str = "log", stale_run: int = 5, mad_k: float | None = 15.0
) -> pd.DataFrame:
    """Cleaned daily returns of the factor ETFs (from 2014)."""
    return clean_returns(load_factor_prices(), kind=kind, stale_run=stale_run, mad_k=mad_k).returns


# --------------------------------------------------------------------------- splits
@dataclass(frozen=True)
class Split:
    """One walk-forward fold: integer positions into the index and the date bounds."""

    fold: int
    train: np.ndarray
    val: np.ndarray

    def dates(self, index: pd.DatetimeIndex) -> dict[str, pd.Timestamp]:
        """First/last training and validation dates."""
        return {
            "train_start": index[self.train[0]],
            "train_end": index[self.train[-1]],
            "val_start": index[self.val[0]],
            "val_end": index[self.val[-1]],
        }


def before_test(frame: pd.DataFrame | pd.Series) -> pd.DataFrame | pd.Series:
    """The rows of ``frame`` dated strictly before :data:`TEST_START`: the only real
    returns that training, validation and model choices may read. ``frame`` needs a
    :class:`~pandas.DatetimeIndex` (``TypeError`` otherwise)."""
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise TypeError(f"before_test needs a DatetimeIndex, got {type(frame.index).__name__}")
    return frame[frame.index < TEST_START]


def test_positions(index: pd.DatetimeIndex, test_start=TEST_START, test_end=TEST_END) -> np.ndarray:
    """Positions of the final test period ``[test_start, test_end]``."""
    index = pd.DatetimeIndex(index)
    return np.flatnonzero((index >= pd.Timestamp(test_start)) & (index <= pd.Timestamp(test_end)))


# Same function under a name pytest never collects (``from shrinklab.data import
# test_positions`` inside a test module would be taken for a test).
final_test_positions = test_positions


def walk_forward_splits(
    index: pd.DatetimeIndex,
    *,
    n_folds: int = 6,
    val_years: int = 2,
    gap: int = 0,
    test_start=TEST_START,
) -> list[Split]:
    """Expanding-window walk-forward folds before ``test_start`` (the specification's forward-walk validation).

    Validation blocks are the ``n_folds`` consecutive ``val_years``-year blocks ending
    the day before ``test_start`` (default: 2004–05, …, 2014–15); fold ``k`` trains on
    every date before its block minus the last ``gap`` days. Blocks never overlap each
    other, training never overlaps validation, and nothing reaches ``test_start``.
    """
    index = pd.DatetimeIndex(index)
    if not index.is_monotonic_increasing:
        raise ValueError("index must be increasing dates")
    if n_folds < 1 or val_years < 1 or gap < 0:
        raise ValueError("need n_folds >= 1, val_years >= 1, gap >= 0")
    test_start = pd.Timestamp(test_start)
    splits = []
    for k in range(n_folds):
        v0 = test_start - pd.DateOffset(years=val_years * (n_folds - k))
        v1 = v0 + pd.DateOffset(years=val_years)
        val = np.flatnonzero((index >= v0) & (index < v1))
        train = np.flatnonzero(index < v0)
        train = train[: max(0, len(train) - gap)]
        if len(val) == 0 or len(train) == 0:
            raise ValueError(
                f"fold {k}: empty training or validation period ({v0.date()}..{v1.date()}); "
                "use fewer folds or shorter blocks"
            )
        splits.append(Split(fold=k, train=train, val=val))
    return splits


# --------------------------------------------------------------------------- regimes
def market_regimes(
    index_prices: pd.Series | pd.DataFrame,
    *,
    vol_window: int = 42,
    dd_window: int = 252,
    vol_volatile: float = 0.20,
    vol_crisis: float = 0.35,
    dd_volatile: float = 0.10,
    dd_crisis: float = 0.20,
    vol_crisis_dd: float = 0.25,
    periods_per_year: int = 252,
) -> pd.Series:
    """Calm (0) / volatile (1) / crisis (2) per date from trailing volatility and drawdown.

    Uses only data up to each date (thresholds in the module docstring; names in
    :data:`REGIME_NAMES`). Returns an ``int8`` Series on the prices' index.
    """
    prices = _as_frame(index_prices)
    if prices.shape[1] != 1:
        raise ValueError("market_regimes takes one price series")
    s = prices.iloc[:, 0]
    if (s <= 0).any() or s.isna().any():
        raise ValueError("index prices must be positive and complete")
    r = np.log(s).diff()
    vol = r.rolling(vol_window, min_periods=2).std() * np.sqrt(periods_per_year)
    vol = vol.fillna(0.0)
    peak = s.rolling(dd_window, min_periods=1).max()
    dd = 1.0 - s / peak
    crisis = (vol >= vol_crisis) | ((dd >= dd_crisis) & (vol >= vol_crisis_dd))
    volatile = (vol >= vol_volatile) | (dd >= dd_volatile)
    codes = np.where(crisis, CRISIS, np.where(volatile, VOLATILE, CALM)).astype(np.int8)
    return pd.Series(codes, index=s.index, name="regime")
