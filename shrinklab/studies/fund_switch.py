"""Decision 0067's study: a two-class switch between the fine-tuned and the pretrained
general network, judged on stocks the fine-tuning never saw.

0066's one-class switch (windows far from the stock folds' windows go to the pretrained
network) failed its non-inferiority part on the stock-based folds, which are built from
the same stocks and dates the fine-tuning trained on. Two things change here
(research log, "After 0066's verdict"):

* the switch asks which of two kinds a window is more like — the stock-based folds'
  windows or the windows of universes of funds built from the same stocks —
  by a quadratic discriminant (:class:`shrinklab.models.switched.FeatureDiscriminant`);
* its cost on stock universes is judged on decision 0038's asset-disjoint folds: the
  pretrained network fine-tuned on one half of the stocks (the deployed recipe,
  assembled as ``final.pt`` is), the discriminant built from that half only, both
  backtested on universes of the other half (:func:`disjoint_job`).

:func:`rule_0067` holds the rule of docs/decisions/0067-two-class-fund-switch.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shrinklab.core.features import FEATURE_NAMES
from shrinklab.data import universes
from shrinklab.evaluation import backtest
from shrinklab.evaluation import universe_backtest as ub
from shrinklab.models.switched import FeatureDiscriminant, SwitchedModel
from shrinklab.studies.disjoint_finetune import (
    DEPLOYED,
    HalfSplit,
    RunInputs,
    deployed_structure,
    held_out_universes,
    split_rows,
)
from shrinklab.studies.domain_switch import (
    NON_INFERIORITY_MARGIN,
    fund_universes_of,
    window_features,
)
from shrinklab.studies.fold_parts import mean_se, relative_vols, switch_rule_values

__all__ = [
    "FUND_SIZES",
    "HALF_FUND_SIZES",
    "SYNTHETIC_CLASS",
    "deployed_switch",
    "disjoint_job",
    "rule_0067",
    "synthetic_features",
    "two_class_switch",
]

FUND_SIZES = (6, 10, 20)
"""Fund-universe sizes of the discriminant's fund class from all 20 stocks."""
HALF_FUND_SIZES = (4, 6, 8)
"""The same from a half of 10 stocks."""


def two_class_switch(
    model: Any,
    pretrained: Any,
    stock_folds: list,
    fund_folds: list,
    windows=(60, 120, 250),
    synthetic: Any = None,
    far_scale: float = 1.0,
) -> SwitchedModel:
    """``model`` with ``pretrained`` as its general network on the windows the
    discriminant of ``stock_folds``' and ``fund_folds``' windows calls funds
    (:class:`shrinklab.models.switched.SwitchedModel`, in eval mode); with ``synthetic``
    (features ``(N, F)``, decision 0068) a third class that must be less likely than the
    funds too; ``far_scale`` multiplies the pretrained network's α there (decision
    0069)."""
    a = window_features(stock_folds, windows)[list(FEATURE_NAMES)].to_numpy()
    b = window_features(fund_folds, windows)[list(FEATURE_NAMES)].to_numpy()
    others = () if synthetic is None else (np.asarray(synthetic, dtype=np.float64),)
    disc = FeatureDiscriminant.fit(a, b, *others)
    return SwitchedModel(model, pretrained, disc, 0.0, far_scale).eval()


SYNTHETIC_CLASS = ("diversified", "dominant_factor", "resampled")
"""Decision 0068's third class: the training worlds of the families 0067's switch called
fund-like in the validation worlds."""


def synthetic_features(training_set: Any, families: Sequence[str] = SYNTHETIC_CLASS) -> np.ndarray:
    """The features of the worlds of ``families`` in a stored training set."""
    names = np.array([training_set.family_names[i] for i in np.asarray(training_set.family)])
    keep = np.isin(names, list(families))
    if not keep.any():
        raise ValueError(f"no world of the families {list(families)} in the training set")
    return np.asarray(training_set.features, dtype=np.float64)[keep]


def disjoint_job(job: tuple) -> pd.DataFrame:
    """One asset-disjoint fit: ``job = (root, split, spec, fund_seed, out_dir)``. Fine-tunes
    the run's pretrained network (and the S&P expert's members) on ``split.fit`` by the
    deployed recipe, assembles it as ``final.pt`` is (``final_fit``), builds the switch
    from the fit half only (stock class: universes of the fit half as
    :func:`held_out_universes` builds them; fund class: :data:`HALF_FUND_SIZES` funds of
    the fit half, three draws, seeds from ``fund_seed``), and returns the fold rows of
    the classical estimators, ``final_fit`` and ``switch`` on the held-out half's
    universes and on funds of the held-out half (:data:`HALF_FUND_SIZES`, two draws,
    seeds ``fund_seed + 100`` on). A module-level function for
    :func:`shrinklab.training.parallel.map_in_processes`. An optional sixth item: the
    third class's features (decision 0068)."""
    root, split, spec, fund_seed, out_dir = job[:5]
    synthetic = job[5] if len(job) > 5 else None
    run = RunInputs.load(root)
    folder = Path(out_dir) / split.name
    net = run.finetune(list(split.fit), folder, DEPLOYED)
    experts = run.finetune_experts(list(split.fit), folder / "experts", DEPLOYED)
    model = deployed_structure(net, run.teacher, run.gate_mixing, experts)
    swapped = HalfSplit(f"{split.name}ref", split.held_out, split.fit)
    rng = np.random.default_rng([int(fund_seed), *map(ord, split.name)])
    fit_folds = held_out_universes(run.returns, swapped, spec, rng)
    fit = run.returns.loc[:, list(split.fit)]
    switch = two_class_switch(
        model,
        run.pretrained,
        fit_folds,
        fund_universes_of(fit, HALF_FUND_SIZES, 3, int(fund_seed)),
        spec.windows,
        synthetic,
    )
    models = {"final_fit": model, "switch": switch}
    rows = split_rows(run.returns, split, spec, models)
    held = run.returns.loc[:, list(split.held_out)]
    funds = fund_universes_of(held, HALF_FUND_SIZES, 2, int(fund_seed) + 100)
    estimators = {**backtest.classical_estimators()}
    estimators.update({k: backtest.learned_estimator(m) for k, m in models.items()})
    fund_rows = ub.fold_backtest(funds, estimators, spec.windows)
    fund_rows.insert(0, "split", split.name)
    return pd.concat([rows, fund_rows], ignore_index=True)


def _per_fold(rows: pd.DataFrame, cand: str, base: str) -> pd.Series:
    rel = relative_vols(rows.assign(fold=rows["split"] + " " + rows["fold"]), cand, base)
    return rel.groupby(level=["family", "fold"]).mean()


def rule_0067(
    funds: pd.DataFrame,
    disjoint: pd.DataFrame,
    folds: pd.DataFrame,
    french: pd.DataFrame,
    grids: pd.DataFrame,
    stress: pd.DataFrame,
    valid: tuple[float, float],
    base: str = "final",
    cand: str = "switch",
) -> dict[str, Any]:
    """The rule of docs/decisions/0067-two-class-fund-switch.md (``disjoint``: rows of
    :func:`disjoint_job`, base ``final_fit``; the others as in
    :func:`shrinklab.studies.domain_switch.rule_0066`):

    1. fresh funds: the per-universe mean of ``cand`` relative to ``base`` (%) below zero
       by more than one SE;
    2. asset-disjoint stock folds (every family but ``funds``): mean + SE of the per-fold
       relative volatility at most :data:`NON_INFERIORITY_MARGIN`; the held-out funds
       are reported;
    3. fresh in-sample folds: no new miss;
    4. French: not above zero by more than its SE;
    5. grids, 6. stress scenarios, 7. validation worlds: not more than one SE below zero."""
    v = switch_rule_values(funds, folds, french, grids, stress, valid, base, cand)
    per_fold = _per_fold(disjoint, cand, "final_fit")
    is_fund = per_fold.index.get_level_values("family") == "funds"
    d_m, d_se = mean_se(per_fold[~is_fund])
    h_m, h_se = mean_se(per_fold[is_fund])
    parts = {
        "rule1_funds": v["funds_rel_vol_pct"] + v["funds_rel_vol_se"] < 0,
        "rule2_disjoint": d_m + d_se <= NON_INFERIORITY_MARGIN,
        "rule3_folds": not v["folds_new_misses"],
        "rule4_french": v["french_rel_vol_pct"] <= v["french_rel_vol_se"],
        "rule5_grids": v["grids_gain"] >= -v["grids_se"],
        "rule6_stress": v["stress_gain"] >= -v["stress_se"],
        "rule7_valid": v["valid_delta"] >= -v["valid_se"],
    }
    return {
        **v, "disjoint_stock_rel_vol_pct": d_m, "disjoint_stock_rel_vol_se": d_se,
        "disjoint_stock_folds": int((~is_fund).sum()),
        "disjoint_funds_rel_vol_pct": h_m, "disjoint_funds_rel_vol_se": h_se,
        "disjoint_funds": int(is_fund.sum()),
        **{k: bool(x) for k, x in parts.items()}, "adopt": bool(all(parts.values())),
    }  # fmt: skip


def deployed_switch(
    final: Any,
    pretrained: Any,
    returns: pd.DataFrame,
    fund_seed: int,
    synthetic: Any = None,
    far_scale: float = 1.0,
) -> Any:
    """The candidate for ``final.pt``: :func:`two_class_switch` with the compress stage's
    stock-based folds (seed 2021, :class:`shrinklab.studies.deploy_rule.FoldSpec`'s) as
    the stock class and :data:`FUND_SIZES` funds of all the stocks (three draws, seeds
    from ``fund_seed``) as the fund class."""
    stock = universes.cross_universe_folds(returns, seed=2021)
    funds = fund_universes_of(returns, FUND_SIZES, 3, int(fund_seed))
    return two_class_switch(
        final, pretrained, stock, funds, synthetic=synthetic, far_scale=far_scale
    )
