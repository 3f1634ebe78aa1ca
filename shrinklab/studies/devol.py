"""Decision 0076's study: devolatilise the windows whose assets' volatilities differ widely.

A universe that mixes assets of very different volatility (bond and equity funds, a
deleveraged sleeve next to equities) is one a user may well bring, and none of the
validation universes has one: every real universe of the repository is equities of
similar volatility. In such universes `final.pt` falls far behind the best classical
estimator (research log, "Exploration: universes whose volatilities differ widely"): the
identity target pulls the variances towards their mean, which costs most where the
low-volatility assets carry the portfolio. Devolatilising (the estimator on returns
scaled to unit variance, scaled back; Engle, Ledoit & Wolf 2019, JBES 37, "Large dynamic
covariance matrices") makes the estimate scale-equivariant; on every window it costs
(research log, "Exploration: scenarios outside the grids and the training ranges"), so the
candidate (:class:`Devolatilised`) applies it only where the spread of the log sample
variances (the feature ``logvar_std``) exceeds a threshold.

:func:`deleveraged` builds the multi-scale universes, :data:`HETERO_MAP` the synthetic
worlds of unequal volatilities inside the training range; :func:`select_0076` and
:func:`rule_0076` hold the rule of docs/decisions/0076-devolatilise-wide-volatility-spreads.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from shrinklab.core.features import FEATURE_NAMES, extract_features
from shrinklab.data.universes import Universe
from shrinklab.evaluation import backtest
from shrinklab.studies.fold_parts import (
    fold_means,
    mean_se,
    real_parts,
    real_parts_hold,
    scenario_mean,
)

__all__ = [
    "HETERO_MAP",
    "LEVERAGES",
    "Devolatilised",
    "deleveraged",
    "rule_0076",
    "select_0076",
    "spread_of",
]

LEVERAGES = (0.1, 0.25)
"""The factors ``k`` of :func:`deleveraged`: half the assets' returns times ``k`` (the
rest of that sleeve in cash), as bond-like funds next to equities (volatility ratios
of 10 and 4)."""

_SPREAD = FEATURE_NAMES.index("logvar_std")


def spread_of(X: Any) -> torch.Tensor:
    """``(B,)``: the feature ``logvar_std`` (standard deviation of the log sample variances
    over the assets) of windows ``X (B, n, p)``."""
    return extract_features(torch.as_tensor(X, dtype=torch.float64))[:, _SPREAD].double()


class Devolatilised:
    """A batched estimator (:func:`shrinklab.evaluation.backtest.batched`): ``model``'s
    learned estimate (modules, steps and volatility timing, as
    :func:`~shrinklab.evaluation.backtest.learned_estimator`), and on the windows whose
    :func:`spread_of` exceeds ``threshold`` the same estimate of the returns divided by
    each asset's sample standard deviation, scaled back (``D Σ̂ D``). Constant columns
    are divided by one (they stay constant). Picklable when the model is."""

    def __init__(self, model: Any, threshold: float) -> None:
        if not np.isfinite(threshold):
            raise ValueError(f"threshold must be finite, got {threshold!r}")
        self.inner = backtest.learned_estimator(model)
        self.threshold = float(threshold)
        self.__name__ = "devolatilised"

    def __call__(self, X: Any, **_: Any) -> torch.Tensor:
        X = torch.as_tensor(X, dtype=torch.float64)
        out = self.inner(X)
        fire = spread_of(X) > self.threshold
        if not bool(fire.any()):
            return out
        Xf = X[fire]
        sd = Xf.std(dim=1, unbiased=True)
        sd = torch.where(sd > 0, sd, torch.ones_like(sd))
        inner = self.inner(Xf / sd[:, None, :]).to(torch.float64)
        out = out.clone()
        out[fire] = (sd[:, :, None] * inner * sd[:, None, :]).to(out.dtype)
        return out


def deleveraged(
    universes: Sequence[Universe], seed: int, leverages: Sequence[float] = LEVERAGES
) -> list[Universe]:
    """For each universe and each ``k`` of ``leverages``, the same universe with a random
    half of its assets' returns times ``k`` (``numpy.random.default_rng([seed, i])`` for
    the ``i``-th universe; the same half for every ``k``), family ``"<family> x<k>"``."""
    out = []
    for i, u in enumerate(universes):
        p = u.returns.shape[1]
        pick = np.random.default_rng([int(seed), i]).permutation(p)[: p // 2]
        for k in leverages:
            r = u.returns.copy()
            r.iloc[:, pick] = r.iloc[:, pick] * float(k)
            out.append(
                dataclasses.replace(
                    u, family=f"{u.family} x{k:g}", name=f"{u.name} x{k:g}", returns=r
                )
            )
    return out


def _spec(family: str, p: int, n: int, tau: float) -> dict[str, Any]:
    return {"name": f"{family} hetero{tau:g} p{p} n{n}", "family": family, "p": p, "n": n,
            "hetero": tau}  # fmt: skip


HETERO_MAP: list[dict[str, Any]] = [
    _spec(f, p, n, tau)
    for f, p, n in (
        ("factor", 50, 100),
        ("lognormal", 60, 120),
        ("discrete", 40, 120),
        ("toeplitz", 50, 100),
        ("block", 40, 80),
        ("near_singular", 30, 60),
        ("dominant_factor", 40, 80),
    )
    for tau in (0.6, 0.8)
]
"""Worlds of the seven families the training worlds give unequal volatilities
(``shrinklab.data.families.HETERO_FAMILIES``) at τ = 0.6 and 0.8, inside the training
range (τ up to 0.8, spreads of the log variances up to 1.6), in no grid; declared with
decision 0076's rule."""


def select_0076(table: pd.DataFrame) -> pd.Series | None:
    """Step 1 of decision 0076's rule. ``table``: one row per candidate with ``threshold``,
    ``map_gain`` and ``map_se`` (mean PRIAL gain over :data:`HETERO_MAP` and its SE) and
    ``multi`` (mean relative volatility change on the multi-scale universes, %). Among
    the candidates whose map gain is not more than one SE below zero, the lowest
    ``multi`` (ties: the higher threshold); ``None`` when none is admissible or that
    ``multi`` is not below zero."""
    ok = table[table["map_gain"] >= -table["map_se"]]
    if ok.empty:
        return None
    best = ok.sort_values(["multi", "threshold"], ascending=[True, False]).iloc[0]
    return best if best["multi"] < 0 else None


def rule_0076(
    multi: pd.DataFrame,
    folds: pd.DataFrame,
    funds: pd.DataFrame,
    french: pd.DataFrame,
    grids: pd.DataFrame,
    grid_fails: tuple[int, int],
    stress: pd.DataFrame,
    hetero: pd.DataFrame,
    base: str = "final",
    cand: str = "switch",
) -> dict[str, Any]:
    """The judgement of docs/decisions/0076-devolatilise-wide-volatility-spreads.md.
    ``multi``, ``folds``, ``funds``, ``french``: rows of
    :func:`shrinklab.evaluation.universe_backtest.fold_backtest`; ``grids``, ``stress``,
    ``hetero``: paired PRIAL gains per scenario (columns ``scenario``,
    ``prial_gain_B_minus_A``, ``se``); ``grid_fails``: ``(final.pt's, the candidate's)``
    scenarios of the selection and wide grids more than one SE behind the best classical
    estimator at the grids' own seed.

    1. multi-scale universes: the mean relative volatility change (per universe the mean
       over windows) below zero by more than one SE;
    2. the real universes of earlier rules (folds with the ETF fold, funds, French; each
       part on its own): not above zero by more than its SE;
    3. grids: the mean gain not more than one SE below zero and no new failure;
    4. stress scenarios, 5. :data:`HETERO_MAP`: the mean gain not more than one SE below
       zero."""
    m_m, m_se = mean_se(fold_means(multi, cand, base))
    real = real_parts(folds, funds, french, cand, base)
    gr_m, gr_se = scenario_mean(grids)
    st_m, st_se = scenario_mean(stress)
    h_m, h_se = scenario_mean(hetero)
    parts = {
        "rule1_multi": m_m < -m_se,
        "rule2_real": real_parts_hold(real),
        "rule3_grids": gr_m >= -gr_se and grid_fails[1] <= grid_fails[0],
        "rule4_stress": st_m >= -st_se,
        "rule5_hetero": h_m >= -h_se,
    }
    out: dict[str, Any] = {
        "multi_rel_vol_pct": m_m, "multi_rel_vol_se": m_se,
        "grids_gain": gr_m, "grids_se": gr_se,
        "grid_fails_final": grid_fails[0], "grid_fails_cand": grid_fails[1],
        "stress_gain": st_m, "stress_se": st_se, "hetero_gain": h_m, "hetero_se": h_se,
    }  # fmt: skip
    for k, (m, se) in real.items():
        out[f"{k}_rel_vol_pct"], out[f"{k}_rel_vol_se"] = m, se
    return out | {k: bool(v) for k, v in parts.items()} | {"adopt": bool(all(parts.values()))}
