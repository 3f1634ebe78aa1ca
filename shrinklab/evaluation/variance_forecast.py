"""Variance forecasts: how well each estimator's Σ̂ predicts the level of risk.

Minimum-variance weights ignore a common scale of Σ̂, so the GMV backtest cannot see
whether an estimator forecasts the *level* of volatility well; a user who reads Σ̂ as a
risk forecast needs that too. Each asset's forecast is the diagonal of Σ̂ on a rebalance
date, its target the mean squared return over the holding period that follows (a noisy
but unbiased proxy of that period's variance), and the loss Patton's QLIKE

    L(h, RV) = RV/h − log(RV/h) − 1,

which is 0 when ``h = RV``, costs more for under- than for over-forecasting by the same
factor, and ranks forecasts as their true variances would even though ``RV`` is noisy
(Patton 2011, "Volatility forecast comparison using imperfect volatility proxies",
J. Econometrics 160(1)). Decision 0050 used it to judge the volatility timing's common
part; notebook 6 reports it for every estimator of the backtests.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shrinklab.evaluation.backtest import BacktestResult

__all__ = ["holding_variances", "qlike", "realised_variances", "variance_forecast_table"]


def qlike(forecast: np.ndarray, realised: np.ndarray) -> np.ndarray:
    """QLIKE ``RV/h − log(RV/h) − 1`` elementwise for variance forecasts ``h > 0`` and
    realised variances ``RV`` (equal shapes); NaN where ``RV = 0`` (nothing moved: no
    score), ``ValueError`` for a forecast that is not positive and finite."""
    h = np.asarray(forecast, dtype=np.float64)
    rv = np.asarray(realised, dtype=np.float64)
    if h.shape != rv.shape:
        raise ValueError(f"forecast {h.shape} and realised {rv.shape} differ in shape")
    if not (np.isfinite(h).all() and (h > 0).all()):
        raise ValueError("variance forecasts must be positive and finite")
    if not (np.isfinite(rv).all() and (rv >= 0).all()):
        raise ValueError("realised variances must be non-negative and finite")
    ratio = np.where(rv > 0, rv / h, np.nan)
    return ratio - np.log(ratio) - 1.0


def holding_variances(R: np.ndarray, starts: np.ndarray, end: int) -> np.ndarray:
    """``(len(starts), p)``: the mean squared return of each column of ``R (T, p)`` over each
    holding period, rows ``starts[k]`` up to ``starts[k + 1]`` (the last up to ``end``,
    exclusive)."""
    bounds = np.append(np.asarray(starts, dtype=int), int(end))
    return np.stack([np.mean(np.square(R[a:b]), axis=0) for a, b in zip(bounds[:-1], bounds[1:])])


def realised_variances(returns: pd.DataFrame, result: BacktestResult) -> pd.DataFrame:
    """The mean squared return of each asset over each holding period of ``result``
    (from a rebalance date up to the day before the next, the last up to ``result.end``),
    dates × assets."""
    index = returns.index
    pos = index.get_indexer(result.rebalance_dates)
    if (pos < 0).any():
        raise ValueError("the backtest's rebalance dates are not all in returns' index")
    end = int(index.get_loc(result.end)) + 1
    rv = holding_variances(returns.to_numpy(dtype=np.float64), pos, end)
    return pd.DataFrame(rv, index=result.rebalance_dates, columns=returns.columns)


def variance_forecast_table(
    returns: pd.DataFrame, result: BacktestResult, benchmark: str = "ledoit_wolf"
) -> pd.DataFrame:
    """Per (window, estimator) of ``result`` (a :func:`~shrinklab.evaluation.backtest.gmv_backtest`
    of ``returns``): ``qlike``, the mean over rebalance dates of the assets' mean QLIKE;
    ``difference``, its paired difference to ``benchmark``'s, with ``difference se`` (SE
    over the rebalance dates, whose holding periods do not overlap; volatility clustering
    makes it a rough guide); ``dates``."""
    if not result.variances:
        raise ValueError("the backtest result carries no variance forecasts")
    rv = realised_variances(returns, result).to_numpy()
    rows = []
    for window, forecasts in result.variances.items():
        if benchmark not in forecasts:
            raise ValueError(f"benchmark {benchmark!r} is not among {list(forecasts)}")
        per_date = {
            name: np.nanmean(qlike(v.to_numpy(), rv), axis=1) for name, v in forecasts.items()
        }
        ref = per_date[benchmark]
        for name, q in per_date.items():
            d = q - ref
            rows.append(
                {
                    "window": int(window),
                    "estimator": name,
                    "qlike": float(np.mean(q)),
                    "difference": float(np.mean(d)),
                    "difference se": float(np.std(d, ddof=1) / np.sqrt(len(d))),
                    "dates": len(d),
                }
            )
    return pd.DataFrame(rows).set_index(["window", "estimator"])
