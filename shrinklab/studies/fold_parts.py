"""Pieces that the rules of several studies share, on rows of
:func:`shrinklab.evaluation.universe_backtest.fold_backtest` (decisions 0064, 0066).

* :func:`estimator_vols` — one estimator's annualised volatility by (family, fold, window);
* :func:`relative_vols` — a candidate's volatility relative to a base's, %;
* :func:`new_misses` — the family × window cells where the base is at or below the best
  classical estimator and the candidate is not;
* :func:`mean_se` and :func:`scenario_mean` — a part's mean and its SE;
* :func:`switch_rule_values` — the values decisions 0066–0068 read from the parts
  they share.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shrinklab.core.estimators import CLASSICAL_ESTIMATORS
from shrinklab.evaluation.universe_backtest import best_classical_table

__all__ = [
    "estimator_vols",
    "fold_means",
    "mean_se",
    "new_misses",
    "real_parts",
    "real_parts_hold",
    "relative_vols",
    "scenario_mean",
    "switch_rule_values",
]


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


def fold_means(rows: pd.DataFrame, cand: str, base: str) -> pd.Series:
    """Per fold (universe), the mean over its windows of :func:`relative_vols` (%)."""
    return relative_vols(rows, cand, base).groupby(level="fold").mean()


def mean_se(x: pd.Series | np.ndarray) -> tuple[float, float]:
    """Mean and its SE (``sd / √n``, ``ddof = 1``; NaN for one value)."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        return float(x.mean()) if len(x) else float("nan"), float("nan")
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(len(x)))


def scenario_mean(gains: pd.DataFrame) -> tuple[float, float]:
    """Mean paired PRIAL gain over the scenarios of
    :func:`shrinklab.studies.worlds.scenario_gains_by_rep` rows, SE √(Σ SEᵢ²) / k
    (independent scenarios)."""
    g = gains["prial_gain_B_minus_A"].to_numpy(dtype=np.float64)
    return float(g.mean()), float(np.sqrt((gains["se"].to_numpy() ** 2).sum()) / len(g))


def real_parts(
    folds: pd.DataFrame, funds: pd.DataFrame, french: pd.DataFrame, cand: str, base: str
) -> dict[str, tuple[float, float]]:
    """The real universes' part of decisions 0073 and 0075: ``{folds, funds, french}`` →
    mean and SE of the relative volatility change ``cand / base − 1`` (%; per fold or
    universe the mean over its windows, :func:`fold_means`; French per cell,
    :func:`relative_vols`)."""
    return {
        "folds": mean_se(fold_means(folds, cand, base)),
        "funds": mean_se(fold_means(funds, cand, base)),
        "french": mean_se(relative_vols(french, cand, base)),
    }


def real_parts_hold(real: dict[str, tuple[float, float]]) -> bool:
    """Every part of :func:`real_parts` not above zero by more than its SE."""
    return all(m <= se or m <= 0 for m, se in real.values())


def switch_rule_values(
    funds: pd.DataFrame,
    folds: pd.DataFrame,
    french: pd.DataFrame,
    grids: pd.DataFrame,
    stress: pd.DataFrame,
    valid: tuple[float, float],
    base: str,
    cand: str,
) -> dict:
    """The shared parts of decisions 0066–0068, ``cand`` against ``base``: fund universes
    (per universe the mean over windows of the relative volatility, %; mean and SE over
    universes), new misses on ``folds``, French (mean and SE over cells, %), grids and
    stress (:func:`scenario_mean`) and the validation worlds (``valid``, as given)."""
    per_universe = fold_means(funds, cand, base)
    f_m, f_se = mean_se(per_universe)
    held, misses = new_misses(folds, base, cand)
    fr_m, fr_se = mean_se(relative_vols(french, cand, base))
    g_m, g_se = scenario_mean(grids)
    st_m, st_se = scenario_mean(stress)
    return {
        "funds_rel_vol_pct": f_m, "funds_rel_vol_se": f_se,
        "funds_universes": len(per_universe),
        "funds_by_universe": per_universe.round(4).to_dict(),
        "folds_new_misses": misses, "folds_cells_at_or_below_best_base": held,
        "french_rel_vol_pct": fr_m, "french_rel_vol_se": fr_se,
        "grids_gain": g_m, "grids_se": g_se, "stress_gain": st_m, "stress_se": st_se,
        "valid_delta": float(valid[0]), "valid_se": float(valid[1]),
    }  # fmt: skip
