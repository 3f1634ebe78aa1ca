"""Pieces that the rules of several studies share, on rows of
:func:`shrinklab.evaluation.universe_backtest.fold_backtest` (decisions 0064, 0066).

* :func:`estimator_vols` — one estimator's annualised volatility by (family, fold, window);
* :func:`relative_vols` — a candidate's volatility relative to a base's, %;
* :func:`new_misses` — the family × window cells where the base is at or below the best
  classical estimator and the candidate is not.
"""

from __future__ import annotations

import pandas as pd

from shrinklab.core.estimators import CLASSICAL_ESTIMATORS
from shrinklab.evaluation.universe_backtest import best_classical_table

__all__ = ["estimator_vols", "new_misses", "relative_vols"]


def estimator_vols(rows: pd.DataFrame, name: str) -> pd.Series:
    """``ann_vol`` of estimator ``name``, indexed by (family, fold, window)."""
    return rows[rows.estimator == name].set_index(["family", "fold", "window"])["ann_vol"]


def relative_vols(rows: pd.DataFrame, cand: str, base: str) -> pd.Series:
    """``(cand / base − 1)`` in %, per (family, fold, window)."""
    return (estimator_vols(rows, cand) / estimator_vols(rows, base) - 1.0) * 100.0


def new_misses(rows: pd.DataFrame, base: str, cand: str) -> tuple[int, list[str]]:
    """The number of family × window cells where ``base``'s mean volatility over the folds
    is at or below the best classical estimator's (lowest mean), and those of them where
    ``cand``'s is above it, as ``"family window"``."""
    classical = [c for c in CLASSICAL_ESTIMATORS if c in set(rows["estimator"])]
    table = best_classical_table(rows, base, classical)
    best = table["best classical vol"]
    cand_vol = rows[rows.estimator == cand].groupby(["family", "window"])["ann_vol"].mean()
    held = table[base] <= best
    misses = [f"{f} {w}" for (f, w) in table.index[held & (cand_vol.reindex(best.index) > best)]]
    return int(held.sum()), misses
