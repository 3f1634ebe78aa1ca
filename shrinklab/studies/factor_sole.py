"""Decision 0075's study: the factor expert as the sole server where the gate is sure of
a factor world.

In the soft mixture (decision 0044) a window's weights are the gate's probabilities, so
in factor worlds, where the gate gives ``factor`` 0.5–0.8 and the rest to families the
general network serves, the factor expert takes only part of the window. Alone it is
0.4–4 PRIAL points above ``final.pt`` in factor worlds near ``p = n`` (research log,
"Exploration: factor worlds near p = n"). Decision 0058 gave the Toeplitz expert its
family's probability only where the gate is sure; the candidate here
(:func:`with_factor_sole`) goes further for the factor expert: where the gate's
probability of ``factor`` exceeds a threshold (at least 0.5) and p/n is within the
training worlds' range, the factor expert serves alone
(:func:`shrinklab.evaluation.compression.with_sole_servers`).

:data:`FACTOR_MAP` holds factor worlds in no grid (declared with the rule of
docs/decisions/0075-factor-expert-sole-where-sure.md); :func:`select_0075` and
:func:`rule_0075` hold that rule, which did not adopt it (the stress scenarios and the
stock folds lost a little); ``final.pt`` has no sole server.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from shrinklab.evaluation.compression import with_sole_servers
from shrinklab.models.switched import SwitchedModel
from shrinklab.studies.fold_parts import real_parts, real_parts_hold, scenario_mean
from shrinklab.studies.stock_shrink import VALID_MARGIN

__all__ = [
    "FACTOR_MAP",
    "IN_RANGE",
    "VALID_MARGIN",
    "rule_0075",
    "select_0075",
    "sole_share",
    "with_factor_sole",
]

IN_RANGE = 4.0
"""The largest p/n where the factor expert may serve alone: the training worlds' range
(decision 0011), as decision 0058's guard."""


def _spec(p: int, n: int, k: int, df: float | None = None) -> dict[str, Any]:
    tail = "" if df is None else f" t{df:g}"
    spec = {"name": f"{k}-factor{tail} p{p} n{n}", "family": "factor", "p": p, "n": n}
    spec["n_factors"] = k
    return spec if df is None else spec | {"df": df}


FACTOR_MAP: list[dict[str, Any]] = [
    _spec(60, 120, 1),
    _spec(100, 80, 2),
    _spec(120, 100, 3),
    _spec(250, 125, 3),
    _spec(40, 80, 4),
    _spec(150, 300, 5),
    _spec(200, 100, 8),
    _spec(100, 200, 3, 5.0),
    _spec(60, 60, 5, 5.0),
    _spec(300, 150, 2, 8.0),
    _spec(80, 40, 6),
    _spec(30, 90, 1, 4.0),
    _spec(120, 240, 10),
    _spec(50, 25, 3),
]
"""Factor worlds in no grid (p = 30–300, p/n = 0.33–2, 1–10 factors, Gaussian and
Student-t returns), declared with decision 0075's rule."""


def with_factor_sole(model: SwitchedModel, threshold: float) -> SwitchedModel:
    """``model`` (the same modules, discriminants, steps and ``extra``) with its factor
    expert serving alone where the gate's probability of ``factor`` exceeds
    ``threshold`` and p/n is at most :data:`IN_RANGE` (near and far windows alike: the
    far model shares the near model's experts and gate)."""
    if not isinstance(model, SwitchedModel):
        raise TypeError(f"model must be a SwitchedModel, got {type(model).__name__}")
    spec = {"factor": {"threshold": float(threshold), "max_p_over_n": IN_RANGE}}
    return model.with_changes(near=with_sole_servers(model.near, spec))


def sole_share(model: SwitchedModel, features: Any) -> float:
    """Share of the rows of ``features`` where a sole server takes the whole weight of
    ``model``'s near mixture."""
    near = model.near
    x = near._as_input(features)
    cols = near.sole_columns()
    if not cols:
        return 0.0
    w = near.family_weights(x).detach().numpy()
    return float(np.mean(np.isclose(w[:, [c for c, _, _ in cols]].max(1), 1.0)))


def select_0075(table: pd.DataFrame) -> pd.Series | None:
    """Step 1 of decision 0075's rule. ``table``: one row per candidate with
    ``threshold``, ``valid_delta`` (normalised PRIAL of the validation worlds, candidate
    minus ``final.pt``) and ``gain`` (mean PRIAL gain over :data:`FACTOR_MAP`). Among the
    candidates with ``−valid_delta ≤ VALID_MARGIN``, the one with the largest gain (ties:
    the higher threshold); ``None`` when none is admissible or that gain is not above
    zero."""
    ok = table[-table["valid_delta"] <= VALID_MARGIN]
    if ok.empty:
        return None
    best = ok.sort_values(["gain", "threshold"], ascending=[False, False]).iloc[0]
    return best if best["gain"] > 0 else None


def rule_0075(
    factor: pd.DataFrame,
    factor_misses: tuple[int, int],
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
    """The judgement of docs/decisions/0075-factor-expert-sole-where-sure.md. ``factor``,
    ``grids``, ``stress``: rows of :func:`shrinklab.studies.worlds.scenario_gains_by_rep`;
    ``factor_misses`` and ``grid_fails``: ``(final.pt's, the candidate's)`` counts of
    scenarios more than one SE behind the best classical estimator (:data:`FACTOR_MAP`;
    the selection and wide grids at their own seed); ``folds``, ``funds``, ``french``: rows
    of :func:`shrinklab.evaluation.universe_backtest.fold_backtest`; ``valid``: the
    validation worlds' normalised PRIAL difference and SE.

    1. factor map: the mean gain more than one SE above zero, and no more misses;
    2. grids, 3. stress: the mean gain not more than one SE below zero
       (:func:`~shrinklab.studies.fold_parts.scenario_mean`), and no new grid failure;
    4. real universes (folds with the ETF fold, funds, French; each part on its own):
       the mean relative volatility change ``cand / base − 1`` (%, per fold or universe
       the mean over windows; French per cell) not above zero by more than its SE;
    5. validation worlds: the drop at most :data:`VALID_MARGIN`."""
    f_m, f_se = scenario_mean(factor)
    gr_m, gr_se = scenario_mean(grids)
    st_m, st_se = scenario_mean(stress)
    real = real_parts(folds, funds, french, cand, base)
    parts = {
        "rule1_factor": f_m > f_se and factor_misses[1] <= factor_misses[0],
        "rule2_grids": gr_m >= -gr_se and grid_fails[1] <= grid_fails[0],
        "rule3_stress": st_m >= -st_se,
        "rule4_real": real_parts_hold(real),
        "rule5_valid": -valid[0] <= VALID_MARGIN,
    }
    out: dict[str, Any] = {
        "factor_gain": f_m, "factor_se": f_se,
        "factor_misses_final": factor_misses[0], "factor_misses_cand": factor_misses[1],
        "grids_gain": gr_m, "grids_se": gr_se,
        "grid_fails_final": grid_fails[0], "grid_fails_cand": grid_fails[1],
        "stress_gain": st_m, "stress_se": st_se,
        "valid_delta": valid[0], "valid_se": valid[1],
    }  # fmt: skip
    for k, (m, se) in real.items():
        out[f"{k}_rel_vol_pct"], out[f"{k}_rel_vol_se"] = m, se
    return out | {k: bool(v) for k, v in parts.items()} | {"adopt": bool(all(parts.values()))}
