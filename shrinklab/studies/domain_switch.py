"""Decision 0066's study: windows unlike the fine-tuning's real stock windows are served by
the pretrained network instead of the fine-tuned one.

`final.pt`'s general network is fine-tuned on the 20 bundled stocks and portfolios of
them; there it learns to shrink hard, which helps every universe built from those
stocks and costs universes of diversified funds (the ETF fold, fund universes, Ken
French's portfolios: research log, "Where the learned peer's lead on the test period
comes from"). The gate cannot tell the two apart (it calls both `diversified`). A
distance can: the Mahalanobis distance (Mahalanobis 1936) of a window's features from
those of the stock-based cross-universe folds' windows is small for every stock-based
universe and large for funds and ETFs (research log, "Exploration: a window's distance
from the fine-tuning's domain").

* :func:`window_features` — the features of every rebalancing window of some universes;
* :class:`FeatureDistance` — squared Mahalanobis distance from a reference set of
  features (standardised, covariance with a ridge);
* :class:`DomainSwitch` — a model whose windows at distance ``> tau`` get the ``far``
  model's intensities, the others the ``near`` model's (the near model's volatility
  timing and every other attribute);
* :func:`rule_0066` — the rule of docs/decisions/0066-domain-switch-to-pretrained.md.

The discriminant of decisions 0067/0068, :class:`FeatureDiscriminant`, and
:func:`with_general` (a gated model with another general network) live in
:mod:`shrinklab.models.switched`, beside the deployed :class:`SwitchedModel`; they are
imported here for the studies. Chooses nothing by itself; ``scripts/domain_switch_rule.py`` runs the parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from shrinklab.core.features import FEATURE_NAMES, extract_features
from shrinklab.data.returns import before_test
from shrinklab.data.universes import Universe
from shrinklab.models.network import ShrinkageOutput
from shrinklab.models.switched import (
    FeatureDiscriminant,
    column_scale,
    reference_sets,
    standardised,
    switched_output,
    with_general,
)
from shrinklab.studies.fold_parts import mean_se, relative_vols, switch_rule_values
from shrinklab.studies.qis_transfer import FUND_START
from shrinklab.studies.worlds import diversified_returns_frame

__all__ = [
    "DomainSwitch",
    "FeatureDiscriminant",
    "FeatureDistance",
    "fund_universes_of",
    "NON_INFERIORITY_MARGIN",
    "rule_0066",
    "window_features",
    "with_general",
]

#: Part 2's margin, % of ``final.pt``'s volatility (decision 0061's M).
NON_INFERIORITY_MARGIN = 0.05


def window_features(
    folds: Sequence[Universe], windows: Sequence[int] = (60, 120, 250), step: int = 21
) -> pd.DataFrame:
    """Features (:func:`shrinklab.core.features.extract_features`) of the window before
    every ``step``-th date from each universe's ``start`` (as the fold backtest
    rebalances), one row per window: the feature columns, ``family``, ``fold``,
    ``window``."""
    frames = []
    for u in folds:
        R = u.returns.to_numpy(np.float64)
        first = int(u.returns.index.searchsorted(u.start))
        for w in windows:
            ends = range(max(first, int(w)), len(R), int(step))
            if len(ends) == 0:
                continue
            X = torch.as_tensor(np.stack([R[t - w : t] for t in ends]))
            f = pd.DataFrame(extract_features(X).numpy(), columns=list(FEATURE_NAMES))
            frames.append(f.assign(family=u.family, fold=u.name, window=int(w)))
    if not frames:
        raise ValueError("no universe has a window after its start")
    return pd.concat(frames, ignore_index=True)


class FeatureDistance:
    """Squared Mahalanobis distance ``zᵀ (C + ridge·I)⁻¹ z`` of standardised features
    ``z = (f − mean) / sd`` from a reference set (``mean``, ``sd`` and ``C``, the
    covariance of ``z``, from ``reference (N, F)``); a constant feature gets ``sd`` 1."""

    def __init__(self, reference: Any, ridge: float = 1e-2) -> None:
        (F,) = reference_sets([reference], ridge)
        self.mean, self.sd = column_scale(F)
        Z = (F - self.mean) / self.sd
        self.precision = np.linalg.inv(np.cov(Z, rowvar=False) + ridge * np.eye(F.shape[1]))

    def __call__(self, features: Any) -> np.ndarray:
        Z = standardised(features, self.mean, self.sd)
        return np.einsum("bi,ij,bj->b", Z, self.precision, Z)


def fund_universes_of(
    returns: pd.DataFrame, sizes: Sequence[int], draws: int, seed: int
) -> list[Universe]:
    """Universes of funds of the stocks ``returns`` (dates before 2016): for each size ``p``,
    ``draws`` universes of ``p − 1`` long-only portfolios of 8 or more of the stocks and
    their index (:func:`shrinklab.studies.worlds.diversified_returns_frame`), seeds
    ``seed``, ``seed + 1``, …, backtested from 2004 (``qis_transfer.FUND_START``)."""
    ret = before_test(returns)
    out, j = [], 0
    for p in sizes:
        for _ in range(draws):
            frame = diversified_returns_frame(ret, int(p), seed + j)
            out.append(Universe("funds", f"funds p={p} s={seed + j}", frame, FUND_START))
            j += 1
    return out


class DomainSwitch:
    """``predict``: the ``far`` model's intensities on the rows whose distance exceeds
    ``tau``, the ``near`` model's elsewhere (its ``log_var`` everywhere); every other
    attribute (the volatility timing in ``extra`` included) is the near model's."""

    def __init__(self, near: Any, far: Any, distance: FeatureDistance, tau: float) -> None:
        if not np.isfinite(tau) or tau < 0:
            raise ValueError(f"tau must be finite and >= 0, got {tau!r}")
        self._near, self.far, self.distance, self.tau = near, far, distance, float(tau)

    def __getattr__(self, name: str) -> Any:
        # only reached for names the wrapper lacks; "_near" itself is missing while
        # unpickling (a worker process), where delegating would recurse
        if name == "_near" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._near, name)

    def is_far(self, features: Any) -> torch.Tensor:
        return torch.as_tensor(self.distance(features) > self.tau)

    @torch.no_grad()
    def predict(self, features: Any, regime: Any = None) -> ShrinkageOutput:
        far = self.is_far(features)
        a = self._near.predict(features, regime)
        if not bool(far.any()):
            return a
        return switched_output(a, self.far.predict(features, regime), far)


def rule_0066(
    funds: pd.DataFrame,
    folds: pd.DataFrame,
    french: pd.DataFrame,
    grids: pd.DataFrame,
    stress: pd.DataFrame,
    valid: tuple[float, float],
    base: str = "final",
    cand: str = "switch",
) -> dict[str, Any]:
    """The rule of docs/decisions/0066-domain-switch-to-pretrained.md. ``funds``, ``folds``,
    ``french``: rows of :func:`shrinklab.evaluation.universe_backtest.fold_backtest` with
    ``base`` and ``cand``; ``grids``, ``stress``: rows of
    :func:`shrinklab.studies.worlds.scenario_gains_by_rep` (A = base, B = cand); ``valid``:
    the normalised-PRIAL difference cand − base on the validation worlds and its SE.

    1. funds: per universe the mean over windows of ``(cand / base − 1)`` (%); their mean
       below zero by more than one SE (over the universes);
    2. folds: (a) over the stock-based folds (every family but ``etf``), the same per-fold
       mean: mean + SE at most :data:`NON_INFERIORITY_MARGIN`; (b) no new miss — in every
       family × window where ``base``'s mean volatility is at or below the best classical
       estimator's, ``cand``'s is too;
    3. French: the mean over cells of ``cand`` relative to ``base`` (%) not above zero by
       more than its SE;
    4. grids, 5. stress scenarios, 6. validation worlds: the mean gain not more than one SE
       below zero."""
    v = switch_rule_values(funds, folds, french, grids, stress, valid, base, cand)
    rel = relative_vols(folds, cand, base)
    stock = rel[rel.index.get_level_values("family") != "etf"].groupby(level="fold").mean()
    s_m, s_se = mean_se(stock)
    parts = {
        "rule1_funds": v["funds_rel_vol_pct"] + v["funds_rel_vol_se"] < 0,
        "rule2_folds": s_m + s_se <= NON_INFERIORITY_MARGIN and not v["folds_new_misses"],
        "rule3_french": v["french_rel_vol_pct"] <= v["french_rel_vol_se"],
        "rule4_grids": v["grids_gain"] >= -v["grids_se"],
        "rule5_stress": v["stress_gain"] >= -v["stress_se"],
        "rule6_valid": v["valid_delta"] >= -v["valid_se"],
    }
    return {
        **v, "folds_stock_rel_vol_pct": s_m, "folds_stock_rel_vol_se": s_se,
        "folds_stock_folds": len(stock),
        **{k: bool(x) for k, x in parts.items()}, "adopt": bool(all(parts.values())),
    }  # fmt: skip
