"""Out-of-sample global-minimum-variance (GMV) backtest of covariance estimators.

Design (that of Ledoit & Wolf, "Nonlinear shrinkage of the covariance matrix for
portfolio selection: Markowitz meets Goldilocks", RFS 30, 2017, and Engle &
Colacito, JBES 24, 2006): on every rebalance date ``t`` (the first trading day
``≥ start``, then every ``rebalance`` days) each estimator sees the ``window`` days
of returns strictly before ``t``, the GMV weights ``Σ̂⁻¹1 / 1ᵀΣ̂⁻¹1``
(:func:`shrinklab.data.real_windows.gmv_weights`) are held fixed until the next rebalance
date (the last period ends at ``end``), and the portfolio earns ``wᵀr_s`` on each
day ``s`` of the holding period. Equal weights ``1/p`` are the naive benchmark
(DeMiguel, Garlappi & Uppal, RFS 22, 2009).

Metrics (:func:`summarise`)
---------------------------
* annualised out-of-sample volatility ``√252 · sd(daily portfolio returns)``
  (sample s.d., ``ddof = 1``) over the whole test period;
* turnover: mean over rebalances (after the first) of ``Σ_i |w_new,i − w_old,i|``
  (weights are held fixed, so there is no drift adjustment);
* difference of annualised volatility to the benchmark (Ledoit–Wolf by default)
  with a two-sided confidence interval from the **stationary bootstrap** of
  Politis & Romano (JASA 89, 1994) over days: the pairs ``(r_est,s, r_bench,s)`` are
  resampled jointly in blocks of geometric length with mean ``block_length``
  (default 21 days, one holding period, to keep volatility clustering), ``reps``
  (default 2000) replications, NumPy ``default_rng(seed)`` (default 0); the
  interval is the percentile interval of the replicated differences; the p-value
  ``2 · min(P*(Δ* ≤ 0), P*(Δ* ≥ 0))`` is its inversion, so that "significant"
  (the interval excludes 0) and ``p < 1 − level`` agree.
  (Ledoit & Wolf, "Robust performance hypothesis testing with the variance",
  Wilmott 2011, studentise the log-variance ratio; the percentile interval is the
  simpler, non-studentised variant of the same block-bootstrap idea.)
* cumulative out-of-sample variance ``Σ_{s ≤ u} r_s²`` per day (for plots).

Estimators are given as ``{name: estimator}``; an estimator is

* an object with ``fit(X)`` setting ``covariance_`` (scikit-learn / skfolio style,
  e.g. :class:`shrinklab.sklearn.MLShrinkageCovariance`): fitted window by window;
* a *batched* callable ``f(X (B, n, p)) -> (B, p, p)``: the functions of
  :func:`classical_estimators` (the batched torch estimators of
  :mod:`shrinklab.core.estimators`), anything wrapped with :func:`batched`, and
  :func:`learned_estimator`; all rebalance dates go through one call;
* any other callable ``f(X (n, p) ndarray) -> (p, p)``: called window by window.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from shrinklab.core import estimators as _est
from shrinklab.core.features import extract_features
from shrinklab.core.progress import report
from shrinklab.core.targets import combine, shrinkage_targets
from shrinklab.core.volatility_timing import finish_covariance
from shrinklab.data.real_windows import gmv_weights, regime_codes

__all__ = [
    "BacktestResult",
    "BacktestSummary",
    "EQUAL_WEIGHT",
    "batched",
    "bootstrap_vol_difference",
    "classical_estimators",
    "gmv_backtest",
    "learned_estimator",
    "stationary_bootstrap_indices",
    "summarise",
]


EQUAL_WEIGHT = "equal_weight"


PERIODS_PER_YEAR = 252


_BATCHED = tuple(_est.CLASSICAL_ESTIMATORS.values())


def classical_estimators() -> dict[str, Callable[..., Any]]:
    """The batched classical estimators of :mod:`shrinklab.core.estimators`, by report name."""
    return dict(_est.CLASSICAL_ESTIMATORS)


class _Batched:
    """A batched estimator (see :func:`batched`): a picklable callable, so that backtests
    can run in worker processes (:func:`shrinklab.evaluation.universe_backtest.fold_backtest`)."""

    batched = True

    def __init__(self, fn: Callable[..., Any], wants_dates: bool) -> None:
        self.fn = fn
        self.wants_dates = bool(wants_dates)
        self.__name__ = getattr(fn, "__name__", "batched")
        self.__doc__ = getattr(fn, "__doc__", None)

    def __call__(self, X: torch.Tensor, **kw: Any) -> Any:
        return self.fn(X, **kw)


def batched(fn: Callable[..., Any], *, wants_dates: bool = False) -> Callable[..., Any]:
    """Mark ``fn`` as batched: ``fn(X (B, n, p) tensor) -> (B, p, p)``.

    With ``wants_dates`` it is called ``fn(X, dates=...)`` with the rebalance dates
    (e.g. to look up the market regime known at each date). The result pickles when
    ``fn`` does.
    """
    return _Batched(fn, wants_dates)


class _LearnedEstimate:
    """``Σ̂ = S + Σ_k α π_k (T_k − S)`` from ``model`` (:func:`learned_estimator`), finished by
    :func:`shrinklab.core.volatility_timing.finish_covariance`."""

    def __init__(
        self, model: Any, regimes: pd.Series | None, returns_index: pd.DatetimeIndex | None
    ) -> None:
        self.model, self.regimes, self.returns_index = model, regimes, returns_index
        self.__name__ = "estimate"

    def __call__(
        self,
        X: torch.Tensor,
        dates: pd.DatetimeIndex | None = None,
        shared: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Σ̂ of every window of ``X``; ``shared``: a dict that keeps the windows' features,
        sample covariances and targets for the next learned estimator of the same windows
        (:func:`gmv_backtest` passes one per window length; the same values, computed once)."""
        X = torch.as_tensor(X, dtype=torch.float64)
        regime = None
        if self.regimes is not None:
            if dates is None:
                raise ValueError("this learned estimator needs the rebalance dates")
            idx = pd.DatetimeIndex(self.returns_index)
            regime = torch.as_tensor(regime_codes(self.regimes, idx, idx.get_indexer(dates)))
        shared = {} if shared is None else shared
        if not shared:
            shared.update(
                feats=extract_features(X), S=_est.sample_covariance(X), T=shrinkage_targets(X)
            )
        out = self.model.predict(shared["feats"], regime)
        w = out.intensities.detach().to("cpu", torch.float64)
        return finish_covariance(self.model, combine(shared["S"], shared["T"], w), X)


def learned_estimator(
    model: Any, regimes: pd.Series | None = None, returns_index: pd.DatetimeIndex | None = None
) -> Callable[..., Any]:
    """Batched estimator ``Σ̂ = S + Σ_k α π_k (T_k − S)`` from a trained model.

    ``model`` is anything with ``predict(features, regime=None) -> ShrinkageOutput``
    (network, ensemble, compressed model); a model file that carries the volatility timing
    (decision 0047) gets it (:func:`shrinklab.core.volatility_timing.finish_covariance`). Features
    (:func:`shrinklab.core.features.extract_features`) and targets
    (:func:`shrinklab.core.targets.shrinkage_targets`) of every window are computed in one
    batch. With ``regimes`` (codes by date, :func:`shrinklab.data.returns.market_regimes`)
    and the returns' index, each window gets the code of the day before its
    rebalance date. The estimator pickles when the model does.
    """

    if (regimes is None) != (returns_index is None):
        raise ValueError("regimes and returns_index must be given together")
    return batched(_LearnedEstimate(model, regimes, returns_index), wants_dates=regimes is not None)


# --------------------------------------------------------------------------- backtest
@dataclass
class BacktestResult:
    """Output of :func:`gmv_backtest`, per estimation window length.

    ``returns[window]``: daily out-of-sample portfolio returns (days × estimators,
    equal weights included); ``weights[window][name]``: weights on each rebalance
    date (dates × assets); ``turnover[window]``: ``Σ|Δw|`` at each rebalance
    (NaN at the first); ``rebalance_dates``: the common rebalance dates;
    ``variances[window][name]``: each estimator's variance forecasts, the diagonal of its
    Σ̂, on each rebalance date (dates × assets; :mod:`shrinklab.evaluation.variance_forecast`
    scores them).
    """

    returns: dict[int, pd.DataFrame]
    weights: dict[int, dict[str, pd.DataFrame]]
    turnover: dict[int, pd.DataFrame]
    rebalance_dates: pd.DatetimeIndex
    rebalance: int
    start: pd.Timestamp
    end: pd.Timestamp
    names: list[str] = field(default_factory=list)
    variances: dict[int, dict[str, pd.DataFrame]] = field(default_factory=dict)


def _estimate(
    name: str,
    est: Any,
    Xb: np.ndarray,
    dates: pd.DatetimeIndex,
    shared: dict[str, torch.Tensor] | None = None,
) -> np.ndarray:
    """Covariances ``(B, p, p)`` for the stacked windows ``Xb (B, n, p)`` (``shared``: the
    windows' features and targets, shared by the learned estimators of
    :func:`learned_estimator`)."""
    B, _, p = Xb.shape
    is_batched = getattr(est, "batched", False) is True or any(est is f for f in _BATCHED)
    if hasattr(est, "fit") and not is_batched:
        covs = []
        for b in range(B):
            est.fit(Xb[b])
            covs.append(np.asarray(est.covariance_, dtype=np.float64))
        out = np.stack(covs)
    elif is_batched:
        kw = {"dates": dates} if getattr(est, "wants_dates", False) else {}
        if shared is not None and isinstance(getattr(est, "fn", None), _LearnedEstimate):
            kw["shared"] = shared
        out = est(torch.as_tensor(Xb), **kw)
        out = out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
    elif callable(est):
        out = np.stack([np.asarray(est(Xb[b]), dtype=float) for b in range(B)])
    else:
        raise ValueError(f"estimator {name!r} must be callable or have fit(X) setting covariance_")
    out = np.asarray(out, dtype=np.float64)
    if out.shape != (B, p, p):
        raise ValueError(f"estimator {name!r} returned shape {out.shape}, expected {(B, p, p)}")
    if not np.isfinite(out).all():
        raise ValueError(f"estimator {name!r} returned a non-finite covariance")
    return out


def gmv_backtest(
    returns: pd.DataFrame,
    estimators: Mapping[str, Any],
    windows: Sequence[int] = (60, 120, 250),
    rebalance: int = 21,
    start: Any = "2016-01-01",
    end: Any = "2022-12-28",
) -> BacktestResult:
    """Walk-forward GMV backtest of each estimator (and equal weights); module docstring.

    ``returns`` is a DataFrame of daily returns with an increasing DatetimeIndex
    (the portfolio return is ``wᵀr``, exact for simple returns, a first-order
    approximation for log returns). Only data before each rebalance date enters its
    estimate; the test period is ``[start, end]``.
    """
    if not isinstance(returns, pd.DataFrame) or not isinstance(returns.index, pd.DatetimeIndex):
        raise ValueError("returns must be a DataFrame with a DatetimeIndex")
    if not returns.index.is_monotonic_increasing or returns.index.has_duplicates:
        raise ValueError("returns' index must be strictly increasing dates")
    R = returns.to_numpy(dtype=np.float64)
    if not np.isfinite(R).all():
        raise ValueError("returns contain NaN or inf")
    if int(rebalance) != rebalance or rebalance < 1:
        raise ValueError(f"rebalance must be a positive integer, got {rebalance}")
    names = list(estimators)
    if EQUAL_WEIGHT in names:
        raise ValueError(f"{EQUAL_WEIGHT!r} is reserved for the equal-weight benchmark")
    windows = [int(w) for w in windows]
    if not windows or min(windows) < 2:
        raise ValueError(f"windows must be integers >= 2, got {windows}")
    index = returns.index
    lo = int(index.searchsorted(pd.Timestamp(start), side="left"))
    hi = int(index.searchsorted(pd.Timestamp(end), side="right")) - 1
    if hi < lo:
        raise ValueError(f"no trading day in [{start}, {end}]")
    pos = np.arange(lo, hi + 1, int(rebalance))
    if lo < max(windows):
        raise ValueError(
            f"the first rebalance date {index[lo].date()} has only {lo} days of history; "
            f"window {max(windows)} needs more"
        )
    bounds = np.append(pos, hi + 1)
    days = index[lo : hi + 1]
    dates = index[pos]
    p = R.shape[1]
    cols = list(returns.columns)
    out_ret: dict[int, pd.DataFrame] = {}
    out_w: dict[int, dict[str, pd.DataFrame]] = {}
    out_to: dict[int, pd.DataFrame] = {}
    out_var: dict[int, dict[str, pd.DataFrame]] = {}
    for window in windows:
        Xb = np.stack([R[t - window : t] for t in pos])  # (B, window, p), all before t
        W: dict[str, np.ndarray] = {}
        V: dict[str, pd.DataFrame] = {}
        shared: dict[str, torch.Tensor] = {}  # the learned estimators' features and targets
        for name in names:
            report(f"backtest: window {window}, {name} ({len(pos)} rebalances)")
            cov = _estimate(name, estimators[name], Xb, dates, shared)
            W[name] = gmv_weights(torch.as_tensor(cov)).numpy()
            V[name] = pd.DataFrame(np.diagonal(cov, axis1=1, axis2=2), index=dates, columns=cols)
        W[EQUAL_WEIGHT] = np.full((len(pos), p), 1.0 / p)
        daily = {}
        for name, w in W.items():
            r = np.empty(hi + 1 - lo)
            for k in range(len(pos)):
                a, b = bounds[k], bounds[k + 1]
                r[a - lo : b - lo] = R[a:b] @ w[k]
            daily[name] = r
        out_ret[window] = pd.DataFrame(daily, index=days)
        out_w[window] = {n: pd.DataFrame(w, index=dates, columns=cols) for n, w in W.items()}
        to = {}
        for name, w in W.items():
            t = np.full(len(pos), np.nan)
            t[1:] = np.abs(np.diff(w, axis=0)).sum(1)
            to[name] = t
        out_to[window] = pd.DataFrame(to, index=dates)
        out_var[window] = V
    return BacktestResult(
        returns=out_ret,
        weights=out_w,
        turnover=out_to,
        rebalance_dates=dates,
        rebalance=int(rebalance),
        start=index[lo],
        end=index[hi],
        names=[*names, EQUAL_WEIGHT],
        variances=out_var,
    )


# --------------------------------------------------------------------------- bootstrap
def stationary_bootstrap_indices(
    n: int, reps: int, block_length: float, rng: np.random.Generator
) -> np.ndarray:
    """``(reps, n)`` resampling indices of the stationary bootstrap (Politis & Romano 1994).

    Blocks start at uniform positions, have geometric lengths with mean
    ``block_length`` (a new block starts with probability ``1/block_length``) and wrap
    around the end of the sample.
    """
    if n < 1 or reps < 1:
        raise ValueError(f"need n >= 1 and reps >= 1, got {n}, {reps}")
    if not block_length >= 1:
        raise ValueError(f"block_length must be >= 1, got {block_length}")
    starts = rng.integers(0, n, size=(reps, n))
    new = rng.random((reps, n)) < 1.0 / block_length
    new[:, 0] = True
    t = np.arange(n)
    last_start = np.maximum.accumulate(np.where(new, t, 0), axis=1)  # time the block began
    begin = np.take_along_axis(starts, last_start, axis=1)
    return (begin + t - last_start) % n


def _ann_vol(r: np.ndarray, axis: int = -1, periods_per_year: int = PERIODS_PER_YEAR) -> np.ndarray:
    return np.std(r, axis=axis, ddof=1) * np.sqrt(periods_per_year)


def bootstrap_vol_difference(
    r_est: np.ndarray,
    r_bench: np.ndarray,
    *,
    block_length: float = 21.0,
    reps: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    periods_per_year: int = PERIODS_PER_YEAR,
) -> dict[str, float]:
    """Annualised-volatility difference ``vol(r_est) − vol(r_bench)`` with its stationary
    bootstrap percentile interval, p-value and standard error (``se``: the s.d. of the
    replicated differences; module docstring). ``periods_per_year``: 252 for daily
    returns, 12 for monthly ones."""
    a = np.asarray(r_est, dtype=np.float64)
    b = np.asarray(r_bench, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or len(a) < 3:
        raise ValueError("r_est and r_bench must be 1-D series of the same length (>= 3)")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("returns contain NaN or inf")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if int(periods_per_year) != periods_per_year or periods_per_year < 1:
        raise ValueError(f"periods_per_year must be a positive integer, got {periods_per_year}")
    ppy = int(periods_per_year)
    diff = float(_ann_vol(a, periods_per_year=ppy) - _ann_vol(b, periods_per_year=ppy))
    idx = stationary_bootstrap_indices(len(a), int(reps), block_length, np.random.default_rng(seed))
    boot = _ann_vol(a[idx], periods_per_year=ppy) - _ann_vol(b[idx], periods_per_year=ppy)
    lo_q, hi_q = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    p_value = min(1.0, 2.0 * min(float(np.mean(boot <= 0)), float(np.mean(boot >= 0))))
    return {
        "diff": diff,
        "ci_low": float(lo_q),
        "ci_high": float(hi_q),
        "p_value": p_value,
        "significant": bool(lo_q > 0 or hi_q < 0),
        "se": float(np.std(boot, ddof=1)),
    }


@dataclass
class BacktestSummary:
    """``table``: one row per (window, estimator) with ``ann_vol``, ``turnover``,
    ``diff_vs_benchmark``, ``ci_low``, ``ci_high``, ``p_value``, ``significant``,
    ``rank`` (1 = lowest volatility) and the margin to the closest rival: ``rival`` (the
    estimator with the lowest volatility among the *others*), ``diff_vs_rival`` (this
    one's volatility minus the rival's: negative for the lowest estimator, positive for
    every other), ``rival_ci_low``, ``rival_ci_high`` (the same paired stationary
    bootstrap); ``cumulative_variance[window]``: running ``Σ r²`` per day and
    estimator; ``method``: how the intervals were computed."""

    table: pd.DataFrame
    cumulative_variance: dict[int, pd.DataFrame]
    method: dict[str, Any]


def summarise(
    results: BacktestResult,
    benchmark: str = "ledoit_wolf",
    *,
    block_length: float = 21.0,
    reps: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> BacktestSummary:
    """Annualised volatility, turnover and the bootstrap comparisons with ``benchmark`` and
    with each estimator's closest rival (:class:`BacktestSummary`): "is the lowest one
    lowest beyond sampling noise?" is the rival interval of the rank-1 row."""
    rows = []
    cumvar = {}
    for window, df in results.returns.items():
        if benchmark not in df.columns:
            raise ValueError(
                f"benchmark {benchmark!r} is not among the estimators {list(df.columns)}"
            )
        vols = {name: float(_ann_vol(df[name].to_numpy())) for name in df.columns}
        order = sorted(vols, key=vols.get)
        for name in df.columns:
            row: dict[str, Any] = {
                "window": int(window),
                "estimator": name,
                "ann_vol": vols[name],
                "turnover": float(results.turnover[window][name].mean(skipna=True)),
                "rank": order.index(name) + 1,
            }
            if name == benchmark:
                row.update(diff_vs_benchmark=0.0, ci_low=np.nan, ci_high=np.nan)
                row.update(p_value=np.nan, significant=False)
            else:
                bs = bootstrap_vol_difference(
                    df[name].to_numpy(),
                    df[benchmark].to_numpy(),
                    block_length=block_length,
                    reps=reps,
                    seed=seed,
                    level=level,
                )
                row.update(
                    diff_vs_benchmark=bs["diff"],
                    ci_low=bs["ci_low"],
                    ci_high=bs["ci_high"],
                    p_value=bs["p_value"],
                    significant=bs["significant"],
                )
            if len(order) > 1:
                rival = next(o for o in order if o != name)
                rv = bootstrap_vol_difference(
                    df[name].to_numpy(),
                    df[rival].to_numpy(),
                    block_length=block_length,
                    reps=reps,
                    seed=seed,
                    level=level,
                )
                row.update(
                    rival=rival,
                    diff_vs_rival=rv["diff"],
                    rival_ci_low=rv["ci_low"],
                    rival_ci_high=rv["ci_high"],
                )
            else:
                row.update(
                    rival="", diff_vs_rival=np.nan, rival_ci_low=np.nan, rival_ci_high=np.nan
                )
            rows.append(row)
        cumvar[int(window)] = (df**2).cumsum()
    table = pd.DataFrame(rows).set_index(["window", "estimator"])
    method = {
        "statistic": "annualised volatility difference (sqrt(252) * sd, ddof=1) vs " + benchmark,
        "bootstrap": "stationary bootstrap (Politis & Romano 1994), paired days",
        "interval": "percentile",
        "block_length": float(block_length),
        "reps": int(reps),
        "seed": int(seed),
        "level": float(level),
    }
    return BacktestSummary(table=table, cumulative_variance=cumvar, method=method)
