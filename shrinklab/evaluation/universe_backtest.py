"""GMV backtest on the cross-universe validation folds (:mod:`shrinklab.data.universes`).

Each fold is backtested with :func:`shrinklab.evaluation.backtest.gmv_backtest`
(rebalance every 21 days, each estimate from the ``window`` days strictly before the
rebalance date) from the fold's first date to 2015-12-31, so the test period is
never read. Per fold, window and estimator the score is the annualised
out-of-sample volatility ``√252 · sd`` of the daily GMV returns (``√12 · sd`` for a
fold of monthly returns, such as Ken French's portfolios of
:mod:`shrinklab.data.french_portfolios`, rebalanced every month), and its relative
difference to Ledoit–Wolf in percent, ``rel = 100 · (vol / vol_LW − 1)`` (scale-free:
a universe of index-like portfolios and one of single stocks have very different
volatilities). :func:`fold_table` averages over the folds of a family, with the
standard error ``sd / √k`` over folds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from shrinklab.core.progress import report
from shrinklab.data.french_portfolios import FRENCH_START, french_universes
from shrinklab.data.universes import VALIDATION_END, Universe
from shrinklab.evaluation.backtest import (
    EQUAL_WEIGHT,
    bootstrap_vol_difference,
    classical_estimators,
    gmv_backtest,
)
from shrinklab.training.parallel import map_in_processes

__all__ = [
    "best_classical_table",
    "cell_summary",
    "fold_backtest",
    "fold_table",
    "french_portfolio_tables",
    "single_fold_difference_se",
    "versus_best_classical",
]


def fold_backtest(
    folds: Sequence[Universe],
    estimators: Mapping[str, Any],
    windows: Sequence[int] = (60, 120, 250),
    *,
    rebalance: int = 21,
    benchmark: str = "ledoit_wolf",
    workers: int = 1,
) -> pd.DataFrame:
    """One row per (fold, window, estimator): ``family``, ``fold``, ``p``, ``window``,
    ``estimator``, ``ann_vol`` and ``rel_vol`` (percent vs ``benchmark``, which must be
    one of ``estimators``). Equal weights are included as ``equal_weight``.

    The folds are independent: ``workers`` processes share them
    (:func:`shrinklab.training.parallel.map_in_processes`; the estimators must then pickle,
    as those of :mod:`shrinklab.evaluation.backtest` do), and the rows, in fold order,
    are the same for any number of workers."""
    if benchmark not in estimators:
        raise ValueError(f"benchmark {benchmark!r} is not one of the estimators {list(estimators)}")
    if not folds:
        raise ValueError("no folds")
    jobs = [
        (k, len(folds), u, dict(estimators), tuple(windows), rebalance, benchmark)
        for k, u in enumerate(folds)
    ]
    parts = map_in_processes(_fold_rows, jobs, workers)
    return pd.DataFrame([row for part in parts for row in part])


def _fold_rows(job: tuple) -> list[dict[str, Any]]:
    k, n_folds, u, estimators, windows, rebalance, benchmark = job
    report(f"cross-universe backtest: fold {k + 1}/{n_folds} ({u.name})")
    res = gmv_backtest(u.returns, estimators, windows, rebalance, start=u.start, end=VALIDATION_END)
    rows = []
    for window, daily in res.returns.items():
        vol = daily.std(ddof=1) * np.sqrt(u.periods_per_year)
        for name in [*estimators, EQUAL_WEIGHT]:
            rows.append(
                {
                    "family": u.family,
                    "fold": u.name,
                    "p": u.p,
                    "window": int(window),
                    "estimator": name,
                    "ann_vol": 100 * float(vol[name]),
                    "rel_vol": 100 * float(vol[name] / vol[benchmark] - 1.0),
                }
            )
    return rows


def fold_table(rows: pd.DataFrame, value: str = "ann_vol") -> pd.DataFrame:
    """Mean of ``value`` over the folds of each family, with its SE (``sd/√k``; NaN for
    one fold): index (family, window), columns (statistic, estimator)."""
    g = rows.groupby(["family", "window", "estimator"], sort=False)[value]
    out = pd.DataFrame(
        {"mean": g.mean(), "se": g.std(ddof=1) / np.sqrt(g.count()), "folds": g.count()}
    )
    return out.unstack("estimator")


def single_fold_difference_se(
    fold: Universe,
    estimators: Mapping[str, Any],
    learned: str,
    best: str,
    window: int,
    *,
    rebalance: int = 21,
    reps: int = 2000,
    seed: int = 0,
    block_length: float | None = None,
) -> float:
    """Standard error, in points of annualised volatility, of ``learned`` − ``best`` on one
    fold (the fold's backtest of those two at ``window``): the stationary bootstrap over its
    days (:func:`shrinklab.evaluation.backtest.bootstrap_vol_difference`, blocks of one
    holding period unless ``block_length`` is given, ``reps`` replications, ``seed``;
    annualised with the fold's ``periods_per_year``). For a fold family with a single
    fold (the ETF fold), where no SE over folds exists."""
    pair = {name: estimators[name] for name in (learned, best)}
    res = gmv_backtest(
        fold.returns, pair, [window], rebalance, start=fold.start, end=VALIDATION_END
    )
    daily = res.returns[int(window)]
    boot = bootstrap_vol_difference(
        daily[learned].to_numpy(),
        daily[best].to_numpy(),
        block_length=float(rebalance if block_length is None else block_length),
        reps=reps,
        seed=seed,
        periods_per_year=fold.periods_per_year,
    )
    return 100.0 * boot["se"]


def best_classical_table(
    rows: pd.DataFrame,
    learned: str,
    classical: Sequence[str],
    single_fold_se: Callable[[str, str, int], float] | None = None,
) -> pd.DataFrame:
    """Per family and window: the learned model's mean volatility against the best
    classical estimator's (lowest mean over the family's folds), their paired
    difference over folds with its SE, and the folds counted. For a family with one
    fold the SE over folds does not exist: ``single_fold_se(fold, best, window)`` gives
    one (e.g. :func:`single_fold_difference_se`; NaN without it), and ``se source`` says
    which kind each row has."""
    out = []
    for (family, window), sub in rows.groupby(["family", "window"], sort=False):
        vol = sub.pivot(index="fold", columns="estimator", values="ann_vol")
        best = str(vol[list(classical)].mean().idxmin())
        diff = vol[learned] - vol[best]
        k = len(diff)
        se, source = float("nan"), "none"
        if k > 1:
            se, source = float(diff.std(ddof=1) / np.sqrt(k)), "folds"
        elif single_fold_se is not None:
            se, source = float(single_fold_se(str(diff.index[0]), best, int(window))), "days"
        out.append(
            {
                "family": family,
                "window": int(window),
                "folds": k,
                learned: vol[learned].mean(),
                "best classical": best,
                "best classical vol": vol[best].mean(),
                "difference": diff.mean(),
                "difference se": se,
                "se source": source,
            }
        )
    return pd.DataFrame(out).set_index(["family", "window"])


def versus_best_classical(
    rows: pd.DataFrame,
    folds: Sequence[Universe],
    estimators: Mapping[str, Any],
    learned: str,
    *,
    rebalance: int = 21,
    block_length: float | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """:func:`best_classical_table` of ``learned`` against the classical estimators of
    ``estimators`` (those of :func:`shrinklab.evaluation.backtest.classical_estimators`),
    where a family with one fold gets :func:`single_fold_difference_se` (the same
    ``rebalance``, ``block_length`` and ``seed``): the fold tables of notebooks 5 and 6."""
    classical = [k for k in classical_estimators() if k in estimators]
    if not classical:
        raise ValueError(f"no classical estimator among {list(estimators)}")
    by_name = {u.name: u for u in folds}
    return best_classical_table(
        rows,
        learned,
        classical,
        single_fold_se=lambda fold, best, window: single_fold_difference_se(
            by_name[fold],
            estimators,
            learned,
            best,
            window,
            rebalance=rebalance,
            block_length=block_length,
            seed=seed,
        ),
    )


def french_portfolio_tables(
    estimators: Mapping[str, Any],
    learned: Sequence[str],
    windows: Sequence[int] = (36, 60, 120),
    *,
    start: Any = FRENCH_START,
    seed: int = 0,
    workers: int = 1,
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Ken French's monthly universes (:func:`shrinklab.data.french_portfolios.french_universes`
    from ``start``) backtested with ``estimators`` (rebalanced every month, ``windows`` in
    months; :func:`fold_backtest`), and for each name in ``learned`` its
    :func:`versus_best_classical` table (SE: the stationary bootstrap over months, blocks
    of 12, ``seed``). Returns ``(rows, {name: table})``."""
    missing = [name for name in learned if name not in estimators]
    if missing:
        raise ValueError(f"{missing} are not among the estimators {list(estimators)}")
    folds = french_universes(start=start)
    rows = fold_backtest(folds, estimators, windows, rebalance=1, workers=workers)
    tables = {
        name: versus_best_classical(
            rows, folds, estimators, name, rebalance=1, block_length=12, seed=seed
        )
        for name in learned
    }
    return rows, tables


def cell_summary(rows: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """Per name of ``names`` (rows of :func:`fold_backtest`, one fold per family, e.g. Ken
    French's universes): its volatility relative to the benchmark's (``rel_vol``, %)
    averaged over the (family, window) cells, with the SE over cells (the cells share
    dates: a rough guide); the classical estimator with the lowest such mean
    (``best classical``, its ``best mean``) and the paired difference to it with its SE;
    ``cells`` and ``cells won``, where the name's volatility is at or below the cell's best
    classical estimator's."""
    rel = rows.pivot_table(index=["family", "window"], columns="estimator", values="rel_vol")
    vol = rows.pivot_table(index=["family", "window"], columns="estimator", values="ann_vol")
    missing = [n for n in names if n not in rel.columns]
    if missing:
        raise ValueError(f"{missing} are not among the estimators {list(rel.columns)}")
    classical = [e for e in classical_estimators() if e in rel.columns]
    if not classical:
        raise ValueError(f"no classical estimator among {list(rel.columns)}")
    k = len(rel)
    best = min(classical, key=lambda e: rel[e].mean())
    cell_best = vol[classical].min(axis=1)
    out = {}
    for name in names:
        diff = rel[name] - rel[best]
        out[name] = {
            "mean": float(rel[name].mean()),
            "se": float(rel[name].std(ddof=1) / np.sqrt(k)) if k > 1 else float("nan"),
            "best classical": best,
            "best mean": float(rel[best].mean()),
            "difference": float(diff.mean()),
            "difference se": float(diff.std(ddof=1) / np.sqrt(k)) if k > 1 else float("nan"),
            "cells": k,
            "cells won": int((vol[name] <= cell_best).sum()),
        }
    return pd.DataFrame.from_dict(out, orient="index")
