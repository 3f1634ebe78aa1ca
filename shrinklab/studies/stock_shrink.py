"""Decision 0071's study: extra shrinkage of the correlations on the windows that look like
real single-stock windows.

The 20 bundled stocks and every universe built from them reward shrinking the
correlations far beyond what the Frobenius-scored family chooses (research log, "Where
the learned peer's lead on the test period comes from"), while stationary synthetic
worlds and universes of diversified funds punish it. A quadratic discriminant
(:class:`shrinklab.models.switched.FeatureDiscriminant`) with one class for the windows of
the stock-based cross-universe folds and one class per family of synthetic training
worlds picks the windows where the stock class is more likely than every family by a
margin ``tau``; there :func:`shrinklab.models.switched.towards_diagonal` moves ``Σ̂``
towards its diagonal by ``c``.

:func:`rule_0071` holds the rule of docs/decisions/0071-stock-window-correlation-shrinkage.md;
decision 0072 (docs/decisions/0072-single-stock-class.md) applies the same rule with a
stock class of single-stock universes only (:func:`single_stock_class`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from shrinklab.core.features import FEATURE_NAMES
from shrinklab.data.returns import before_test
from shrinklab.data.universes import stock_subsets
from shrinklab.models.switched import FeatureDiscriminant, SwitchedModel
from shrinklab.studies.domain_switch import window_features
from shrinklab.studies.fold_parts import fold_means, mean_se, relative_vols, scenario_mean

__all__ = [
    "SINGLE_STOCK_SIZES",
    "VALID_MARGIN",
    "family_feature_sets",
    "rule_0071",
    "single_stock_class",
    "stock_discriminant",
    "with_stock_shrinkage",
]

VALID_MARGIN = 0.5
"""Largest drop of the synthetic validation worlds' normalised PRIAL (points) a candidate
may cost in decision 0071's selection: below every difference between two training-seed
sets of the same pipeline (0.66-1.67; research log, "Training-seed spread")."""


SINGLE_STOCK_SIZES = (5, 8, 10, 12, 15, 20)
"""Universe sizes of decision 0072's stock class (two random subsets of the stocks each)."""


def single_stock_class(returns: pd.DataFrame, seed: Any) -> list[Any]:
    """Decision 0072's stock class: :func:`shrinklab.data.universes.stock_subsets` of the
    pre-2016 ``returns``, :data:`SINGLE_STOCK_SIZES` (those up to the number of columns),
    two draws each, ``numpy.random.default_rng(seed)``."""
    stocks = before_test(returns)
    return stock_subsets(stocks, SINGLE_STOCK_SIZES, 2, np.random.default_rng(seed))


def family_feature_sets(training_set: Any) -> list[np.ndarray]:
    """The features ``(N_f, F)`` of a stored training set's worlds, one array per family
    (families in name order)."""
    names = np.array([training_set.family_names[i] for i in np.asarray(training_set.family)])
    feats = np.asarray(training_set.features, dtype=np.float64)
    return [feats[names == f] for f in sorted(set(names.tolist()))]


def stock_discriminant(
    training_set: Any, stock_folds: Sequence[Any], windows: Sequence[int] = (60, 120, 250)
) -> FeatureDiscriminant:
    """The discriminant whose class ``b`` is the windows of ``stock_folds`` (every 21st
    day, :func:`~shrinklab.studies.domain_switch.window_features`) and whose other classes
    are the training set's families, one each: its score is positive where the stock
    class is more likely than every family."""
    stock = window_features(stock_folds, windows)[list(FEATURE_NAMES)].to_numpy()
    first, *rest = family_feature_sets(training_set)
    return FeatureDiscriminant.fit(first, stock, *rest)


def with_stock_shrinkage(
    model: SwitchedModel, stock: FeatureDiscriminant, tau: float, strength: float
) -> SwitchedModel:
    """``model`` (the same modules, discriminant, scale and ``extra``) with decision 0071's
    extra shrinkage on the windows whose ``stock`` score is above ``tau``."""
    if not isinstance(model, SwitchedModel):
        raise TypeError(f"model must be a SwitchedModel, got {type(model).__name__}")
    return model.with_changes(stock=stock, stock_tau=tau, stock_strength=strength)


def rule_0071(
    folds: pd.DataFrame,
    disjoint: pd.DataFrame,
    funds: pd.DataFrame,
    french: pd.DataFrame,
    grids: pd.DataFrame,
    stress: pd.DataFrame,
    base: str = "final",
    cand: str = "switch",
) -> dict[str, Any]:
    """The rule of docs/decisions/0071-stock-window-correlation-shrinkage.md. Rows of
    :func:`shrinklab.evaluation.universe_backtest.fold_backtest` (``folds``, ``funds``,
    ``french``; ``disjoint`` with a ``split`` column) and of
    :func:`shrinklab.studies.worlds.scenario_gains_by_rep` (``grids``, ``stress``):

    1. fresh stock folds (every family but ``etf``): the per-fold mean over windows of
       ``cand / base − 1`` (%) below zero by more than one SE, and no family × window
       whose mean is above zero;
    2. universes of stocks the gate's stock class never saw (``disjoint``): the same
       per-fold mean below zero by more than one SE;
    3. funds and the ETF fold: the per-universe mean not above zero by more than its SE;
    4. French: the mean over cells not above zero by more than its SE;
    5. grids, 6. stress scenarios: the mean gain not more than one SE below zero
       (:func:`~shrinklab.studies.fold_parts.scenario_mean`)."""
    is_etf = folds["family"] == "etf"
    stock = folds[~is_etf]
    s_m, s_se = mean_se(fold_means(stock, cand, base))
    by_cell = relative_vols(stock, cand, base).groupby(level=["family", "window"]).mean()
    d = disjoint.assign(fold=disjoint["split"] + " " + disjoint["fold"])
    d_m, d_se = mean_se(fold_means(d, cand, base))
    f_m, f_se = mean_se(fold_means(pd.concat([funds, folds[is_etf]]), cand, base))
    fr = relative_vols(french, cand, base)
    fr_m, fr_se = mean_se(fr)
    g_m, g_se = scenario_mean(grids)
    st_m, st_se = scenario_mean(stress)
    parts = {
        "rule1_folds": s_m + s_se < 0 and bool((by_cell <= 0).all()),
        "rule2_disjoint": d_m + d_se < 0,
        "rule3_funds": f_m <= f_se,
        "rule4_french": fr_m <= fr_se,
        "rule5_grids": g_m >= -g_se,
        "rule6_stress": st_m >= -st_se,
    }
    return {
        "folds_rel_vol_pct": s_m, "folds_rel_vol_se": s_se,
        "folds_worst_cell_pct": float(by_cell.max()),
        "disjoint_rel_vol_pct": d_m, "disjoint_rel_vol_se": d_se,
        "funds_rel_vol_pct": f_m, "funds_rel_vol_se": f_se,
        "french_rel_vol_pct": fr_m, "french_rel_vol_se": fr_se,
        "grids_gain": g_m, "grids_se": g_se, "stress_gain": st_m, "stress_se": st_se,
        **{k: bool(x) for k, x in parts.items()}, "adopt": bool(all(parts.values())),
    }  # fmt: skip
