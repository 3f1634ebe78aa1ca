"""studies.selection_grid: scenarios for model choices that the public grid must not make.

:data:`SELECTION_GRID` holds ten scenarios chosen to differ from the public grid of
``params.yaml`` (other p/n, spectra, factor counts, tails and correlations, and the
block and discrete families the public grid lacks), scored with 100 replications and
seed 2026; :data:`WIDE_GRID` adds four scenarios with ``p/n > 2`` (the p/n-range study
of docs/decisions/0011-training-ratio-max-4.md; declared before its first run, none a
public scenario). A model is scored as the evaluation's goal scores it: PRIAL (Ledoit &
Wolf, "The power of (non-)linear shrinking", J. Financial Econometrics 20, 2022) per
scenario, the paired difference to the scenario's best classical estimator with its
standard error, and ``fail``: more than one SE below it.

:func:`multi_target_table` is a diagnostic of one expert on the public grid (report
only, never a selection tool): multi-target shrinkage on its own (the ``mt_*`` features,
:func:`shrinklab.core.estimators.multi_target_weights`) next to QIS, the best classical
estimator and the oracle, on the replications and seeds of the evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from shrinklab.core import metrics
from shrinklab.core.features import FEATURE_NAMES, MULTI_TARGET_SOURCES, extract_features
from shrinklab.core.targets import TARGET_NAMES
from shrinklab.data import synthetic
from shrinklab.evaluation import scenarios
from shrinklab.evaluation.compression import grids_not_worse

__all__ = [
    "SELECTION_GRID",
    "SELECTION_SEED",
    "WIDE_GRID",
    "grid_comparison",
    "grid_scores",
    "multi_target_from_features",
    "multi_target_table",
    "score",
    "summary",
]

SELECTION_SEED = 2026
SELECTION_GRID: list[dict[str, Any]] = [
    {"name": "1/3/10 p100 n50", "family": "spectrum_1_3_10", "p": 100, "n": 50},
    {"name": "lognormal p200 n400", "family": "lognormal", "p": 200, "n": 400},
    {"name": "lognormal s.7 p60 n120", "family": "lognormal", "p": 60, "n": 120, "sigma_log": 0.7},
    {"name": "5-factor p100 n200", "family": "factor", "p": 100, "n": 200, "n_factors": 5},
    {"name": "3-factor t4 p80 n160", "family": "factor", "p": 80, "n": 160, "df": 4},
    {"name": "Toeplitz .3 p150 n100", "family": "toeplitz", "p": 150, "n": 100, "rho": 0.3},
    {"name": "Toeplitz .7 p60 n40", "family": "toeplitz", "p": 60, "n": 40, "rho": 0.7},
    {"name": "S&P p30 n60 t4", "family": "sp500", "p": 30, "n": 60, "df": 4},
    {"name": "block p100 n80", "family": "block", "p": 100, "n": 80},
    {"name": "discrete p120 n240", "family": "discrete", "p": 120, "n": 240},
]
WIDE_GRID: list[dict[str, Any]] = [
    {"name": "3-factor p200 n60", "family": "factor", "p": 200, "n": 60, "n_factors": 3},
    {"name": "lognormal p150 n40", "family": "lognormal", "p": 150, "n": 40},
    {"name": "Toeplitz .8 p120 n40", "family": "toeplitz", "p": 120, "n": 40, "rho": 0.8},
    {"name": "1/3/10 p200 n50", "family": "spectrum_1_3_10", "p": 200, "n": 50},
]


def score(
    model: Any,
    n_reps: int = 100,
    grid: Sequence[Mapping[str, Any]] | None = None,
    seed: int = SELECTION_SEED,
) -> pd.DataFrame:
    """One row per scenario of ``grid`` (default :data:`SELECTION_GRID`): ``prial``,
    ``se``, ``best_classical``, its PRIAL, ``diff`` (learned − best, paired),
    ``diff_se``, ``fail`` and the oracle's PRIAL."""
    grid = SELECTION_GRID if grid is None else list(grid)
    if not grid:
        raise ValueError("the grid has no scenario")
    if int(n_reps) < 2:
        raise ValueError(f"n_reps must be >= 2 (standard errors), got {n_reps}")
    df = scenarios.evaluate_grid(grid, model, n_reps=int(n_reps), seed=int(seed))
    learned = df[df.estimator == "learned"].set_index("scenario")
    prial = df.pivot(index="scenario", columns="estimator", values="prial")
    out = pd.DataFrame(
        {
            "prial": learned.prial,
            "se": learned.se,
            "best_classical": learned.best_classical,
            "prial_best_classical": pd.Series(
                {s: prial.loc[s, b] for s, b in learned.best_classical.items()}
            ),
            "diff": learned.diff_best_classical,
            "diff_se": learned.diff_se,
            "oracle": prial["oracle"],
        }
    ).loc[[s["name"] for s in grid]]
    out["fail"] = out["diff"] < -out["diff_se"]
    return out


def summary(table: pd.DataFrame, prefix: str = "sel") -> dict[str, float]:
    """``<prefix>_fails``, ``<prefix>_mean_prial`` and each scenario's difference to the
    best classical estimator (``<prefix>_diff_<scenario>``) of a :func:`score` table."""
    out = {
        f"{prefix}_fails": int(table["fail"].sum()),
        f"{prefix}_mean_prial": float(table["prial"].mean()),
    }
    return out | {f"{prefix}_diff_{s}": float(v) for s, v in table["diff"].items()}


def grid_scores(model: Any, n_reps: int = 100) -> tuple[dict[str, float], pd.DataFrame]:
    """Failures and mean PRIAL over :data:`SELECTION_GRID` plus :data:`WIDE_GRID`
    (``grid_fails``, ``grid_mean_prial``, ``sel_fails``, ``wide_grid_fails`` and each
    scenario's difference), and the two tables stacked."""
    sel = score(model, n_reps)
    wide = score(model, n_reps, grid=WIDE_GRID)
    both = pd.concat([sel, wide])
    out = {
        "grid_fails": int(both["fail"].sum()),
        "grid_mean_prial": float(both["prial"].mean()),
        "sel_fails": int(sel["fail"].sum()),
        "wide_grid_fails": int(wide["fail"].sum()),
    }
    return out | {f"diff_{s}": float(v) for s, v in both["diff"].items()}, both


def grid_comparison(
    models: Mapping[str, Any], before: str, after: str, n_reps: int = 100
) -> tuple[pd.DataFrame, bool, str]:
    """Two models of ``models`` (names ``before`` and ``after``) on the selection and wide
    grids (:func:`grid_scores`): the scenarios side by side (PRIAL, difference to the best
    classical estimator, its SE, fail), whether the rules' grid part holds
    (:func:`shrinklab.evaluation.compression.grids_not_worse`) and a one-line summary."""
    grids = {k: grid_scores(models[k], n_reps) for k in (before, after)}
    table = pd.DataFrame(
        {k: g[1][["prial", "diff", "diff_se", "fail"]].stack() for k, g in grids.items()}
    ).unstack()
    (b, _), (a, _) = grids[before], grids[after]
    holds = grids_not_worse(b, a)
    summary = (
        f"failures {b['grid_fails']} -> {a['grid_fails']}, mean PRIAL "
        f"{b['grid_mean_prial']:.2f} -> {a['grid_mean_prial']:.2f}"
    )
    return table, holds, summary


def multi_target_from_features(feats: torch.Tensor) -> torch.Tensor:
    """Intensities ``(B, K)`` of multi-target shrinkage, read from the ``mt_*`` features
    (zero on the targets that are not multi-target sources)."""
    feats = torch.as_tensor(feats)
    if feats.dim() != 2 or feats.shape[1] != len(FEATURE_NAMES):
        raise ValueError(f"features must be (B, {len(FEATURE_NAMES)}), got {tuple(feats.shape)}")
    w = torch.zeros(feats.shape[0], len(TARGET_NAMES), dtype=torch.float64)
    for target in MULTI_TARGET_SOURCES:
        w[:, TARGET_NAMES.index(target)] = feats[:, FEATURE_NAMES.index(f"mt_{target}")].double()
    return w


def multi_target_table(grid: Sequence[Mapping[str, Any]], n_reps: int, seed: int) -> pd.DataFrame:
    """PRIAL of multi-target shrinkage on each scenario of ``grid`` (the evaluation's
    replications: :func:`shrinklab.evaluation.scenarios.scenario_seed` of ``seed``), with
    its delta-method SE, QIS's PRIAL, the best classical estimator and the paired
    difference to it, and the oracle's PRIAL."""
    rows = []
    for spec in grid:
        s_seed = scenarios.scenario_seed(int(seed), spec["name"])
        res = scenarios.evaluate_scenario(spec, None, int(n_reps), s_seed)
        _, X = synthetic.make_scenario(
            {k: v for k, v in spec.items() if k != "name"}, int(n_reps), s_seed
        )
        w = multi_target_from_features(extract_features(X))
        L, best = res["losses"], res["best_classical"]
        loss_mt = metrics.quadratic_form_loss(
            w, torch.as_tensor(res["G"]), torch.as_tensor(res["c"]), torch.as_tensor(L["sample"])
        ).numpy()
        gap = L["sample"] - L["fsopt"]
        prial, se = metrics.ratio_se(L["sample"] - loss_mt, gap)
        diff, diff_se = metrics.ratio_se(L[best] - loss_mt, gap)
        rows.append(
            {
                "scenario": res["scenario"],
                "qis": res["prial"]["qis"],
                "best_classical": best,
                "prial_best_classical": res["prial"][best],
                "multi_target": prial,
                "se": se,
                "minus_best": diff,
                "minus_best_se": diff_se,
                "oracle": res["prial"]["oracle"],
            }
        )
    return pd.DataFrame(rows)
