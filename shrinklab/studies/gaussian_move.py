"""Decision 0073's study: on windows whose tails pre-test as Gaussian, move a share of the
identity target's intensity to the QIS target.

Half of the training worlds have Student-t returns, and the networks put a share of
their intensity on the identity target as a hedge against heavy tails. Where returns are
Gaussian, ``p`` is large and ``n ≥ 2p``, QIS (Ledoit & Wolf 2022) is nearly the
multi-target oracle and the hedge costs 0.1–0.25 PRIAL points (research log, "The
QIS-dominated worlds at large p, and the heavy-tail hedge"). The candidate
(:func:`with_gaussian_move`) applies :func:`shrinklab.models.switched.towards_qis` with
share ``s`` on the windows whose mean excess kurtosis is at most ``z`` standard errors
above its normal-theory mean, where that standard error is at most ``se`` (a test with
power; :func:`shrinklab.core.tail_pretest.gaussian_rows`).

:data:`GAUSSIAN_MAP` and :data:`TAILED_MAP` are synthetic scenarios in no grid (declared
with the rule of docs/decisions/0073-gaussian-tails-move-to-qis.md);
:func:`select_0073` and :func:`rule_0073` hold that rule.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from shrinklab.models.switched import SwitchedModel
from shrinklab.studies.fold_parts import real_parts, real_parts_hold, scenario_mean
from shrinklab.studies.stock_shrink import VALID_MARGIN

__all__ = [
    "GAUSSIAN_MAP",
    "TAILED_MAP",
    "VALID_MARGIN",
    "fired_share",
    "map_misses",
    "rule_0073",
    "select_0073",
    "with_gaussian_move",
]


def _spec(family: str, p: int, n: int, **kw: Any) -> dict[str, Any]:
    extra = " ".join(f"{k}={v}" for k, v in kw.items())
    name = f"{family} {extra} p{p} n{n}".replace("  ", " ")
    return {"name": name, "family": family, "p": p, "n": n, **kw}


GAUSSIAN_MAP: list[dict[str, Any]] = [
    _spec("spectrum_1_3_10", 60, 240),
    _spec("spectrum_1_3_10", 120, 240),
    _spec("spectrum_1_3_10", 200, 400),
    _spec("spectrum_1_3_10", 300, 900),
    _spec("lognormal", 100, 400, sigma_log=0.5),
    _spec("lognormal", 250, 500, sigma_log=0.5),
    _spec("lognormal", 80, 160, sigma_log=1.0),
    _spec("lognormal", 200, 800, sigma_log=1.0),
    _spec("toeplitz", 150, 300, rho=0.5),
    _spec("toeplitz", 60, 180, rho=0.3),
    _spec("toeplitz", 20, 60, rho=0.5),
    _spec("factor", 120, 240, n_factors=3),
    _spec("factor", 200, 400, n_factors=5),
    _spec("block", 150, 300),
    _spec("discrete", 200, 400),
    _spec("diversified", 30, 120),
    _spec("market_sectors", 100, 200),
]
"""Gaussian scenarios in no grid (none of the public, selection or wide grids' ``(family,
p, n)``), from ``p = 20`` to 300 and ``n = 2p`` to ``4p``."""

TAILED_MAP: list[dict[str, Any]] = [
    _spec("spectrum_1_3_10", 200, 400, df=30),
    _spec("spectrum_1_3_10", 60, 240, df=10),
    _spec("spectrum_1_3_10", 120, 240, df=5),
    _spec("lognormal", 250, 500, sigma_log=0.5, df=30),
    _spec("lognormal", 80, 160, sigma_log=1.0, df=10),
    _spec("toeplitz", 150, 300, rho=0.5, df=30),
    _spec("factor", 120, 240, n_factors=3, df=10),
    _spec("block", 150, 300, df=30),
    _spec("diversified", 30, 120, df=5),
    _spec("market_sectors", 100, 200, df=10),
    _spec("spectrum_1_3_10", 20, 60, df=30),
    _spec("factor", 20, 60, n_factors=3, df=30),
]
"""Student-t versions of some of :data:`GAUSSIAN_MAP`'s scenarios (5, 10 and 30 degrees of
freedom) and two small ones (``p = 20, n = 60``, 30 degrees of freedom, where the pre-test
has little power): where a false call costs."""


def with_gaussian_move(model: SwitchedModel, share: float, z: float, se: float) -> SwitchedModel:
    """``model`` (the same modules, discriminants, scale, stock step and ``extra``) with
    decision 0073's move of ``share`` of the identity intensity to QIS on the windows
    whose kurtosis pre-test statistic is at most ``z`` and its SE at most ``se``."""
    if not isinstance(model, SwitchedModel):
        raise TypeError(f"model must be a SwitchedModel, got {type(model).__name__}")
    return model.with_changes(gauss_share=share, gauss_z=z, gauss_se=se)


def map_misses(table: pd.DataFrame) -> int:
    """Scenarios of a :func:`shrinklab.studies.selection_grid.score` table where the model
    is more than one SE behind the best classical estimator."""
    return int(table["fail"].sum())


def select_0073(table: pd.DataFrame, base_misses: int) -> pd.Series | None:
    """Step 1 of decision 0073's rule. ``table``: one row per candidate with ``share``,
    ``z``, ``se``, ``valid_delta`` (normalised PRIAL of the validation worlds, candidate minus
    ``final.pt``), ``misses`` and ``gain`` (mean PRIAL gain over :data:`GAUSSIAN_MAP`).
    Among the candidates with ``−valid_delta ≤ VALID_MARGIN``, the one with the fewest
    misses, ties broken by the larger gain (then the smaller share and ``se``); ``None``
    when none is
    admissible or the chosen one has neither fewer misses than ``base_misses`` nor a
    gain above zero."""
    ok = table[-table["valid_delta"] <= VALID_MARGIN]
    if ok.empty:
        return None
    order = ["misses", "gain", "share", "se"]
    best = ok.sort_values(order, ascending=[True, False, True, True]).iloc[0]
    if not (best["misses"] < base_misses or best["gain"] > 0):
        return None
    return best


def rule_0073(
    gaussian: pd.DataFrame,
    gaussian_misses: tuple[int, int],
    tailed: pd.DataFrame,
    grids: pd.DataFrame,
    grid_fails: tuple[int, int],
    stress: pd.DataFrame,
    folds: pd.DataFrame,
    funds: pd.DataFrame,
    french: pd.DataFrame,
    valid: tuple[float, float],
    base: str = "final",
    cand: str = "switch",
) -> dict[str, Any]:
    """The judgement of docs/decisions/0073-gaussian-tails-move-to-qis.md. ``gaussian``,
    ``tailed``, ``grids``, ``stress``: rows of
    :func:`shrinklab.studies.worlds.scenario_gains_by_rep`; ``gaussian_misses`` and
    ``grid_fails``: ``(final.pt's, the candidate's)`` counts of scenarios more than one
    SE behind the best classical estimator (:data:`GAUSSIAN_MAP`; the selection and
    wide grids at their own seed); ``folds``, ``funds``, ``french``: rows of
    :func:`shrinklab.evaluation.universe_backtest.fold_backtest`; ``valid``: the
    validation worlds' normalised PRIAL difference and SE.

    1. Gaussian map: fewer misses, and the mean gain more than one SE above zero;
    2. tailed map, 3. grids, 4. stress: the mean gain not more than one SE below zero
       (:func:`~shrinklab.studies.fold_parts.scenario_mean`), and no new grid failure;
    5. real universes (folds with the ETF fold, funds, French; each part on its own):
       the mean relative volatility change ``cand / base − 1`` (%, per fold or universe
       the mean over windows; French per cell) not above zero by more than its SE;
    6. validation worlds: the drop at most :data:`VALID_MARGIN`."""
    g_m, g_se = scenario_mean(gaussian)
    t_m, t_se = scenario_mean(tailed)
    gr_m, gr_se = scenario_mean(grids)
    st_m, st_se = scenario_mean(stress)
    real = real_parts(folds, funds, french, cand, base)
    parts = {
        "rule1_gaussian": gaussian_misses[1] < gaussian_misses[0] and g_m > g_se,
        "rule2_tailed": t_m >= -t_se,
        "rule3_grids": gr_m >= -gr_se and grid_fails[1] <= grid_fails[0],
        "rule4_stress": st_m >= -st_se,
        "rule5_real": real_parts_hold(real),
        "rule6_valid": -valid[0] <= VALID_MARGIN,
    }
    out: dict[str, Any] = {
        "gaussian_gain": g_m, "gaussian_se": g_se,
        "gaussian_misses_final": gaussian_misses[0], "gaussian_misses_cand": gaussian_misses[1],
        "tailed_gain": t_m, "tailed_se": t_se, "grids_gain": gr_m, "grids_se": gr_se,
        "grid_fails_final": grid_fails[0], "grid_fails_cand": grid_fails[1],
        "stress_gain": st_m, "stress_se": st_se,
        "valid_delta": valid[0], "valid_se": valid[1],
    }  # fmt: skip
    for k, (m, se) in real.items():
        out[f"{k}_rel_vol_pct"], out[f"{k}_rel_vol_se"] = m, se
    return out | {k: bool(v) for k, v in parts.items()} | {"adopt": bool(all(parts.values()))}


def fired_share(model: SwitchedModel, features: Any) -> float:
    """Share of the rows of ``features`` that :meth:`SwitchedModel.is_gaussian` picks."""
    return float(np.mean(model.is_gaussian(features).numpy()))
