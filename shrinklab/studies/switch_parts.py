"""The validation parts that decisions 0066–0068 score a switched model on, against the
deployed model (``final``), computed once for both studies' scripts
(``scripts/domain_switch_rule.py``, ``scripts/fund_switch_rule.py``; decisions 0069-0071's
scripts load their inputs with :func:`load_switched_run`):

fund universes and cross-universe folds (:func:`shrinklab.evaluation.universe_backtest.
fold_backtest` rows), Ken French's universes, the selection and wide grids and 0051's
stress scenarios (:func:`shrinklab.studies.worlds.scenario_gains_by_rep`, A = final,
B = switch) and the synthetic validation worlds (normalised PRIAL difference and its SE).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from shrinklab.data.universes import cross_universe_folds
from shrinklab.evaluation import backtest, compression
from shrinklab.evaluation import universe_backtest as ub
from shrinklab.models.network import predict_numpy
from shrinklab.models.registry import load_model
from shrinklab.models.switched import SwitchedModel
from shrinklab.studies import worlds
from shrinklab.studies.deploy_rule import RuleData, load_rule_data
from shrinklab.studies.domain_switch import fund_universes_of, rule_0066
from shrinklab.studies.fold_parts import relative_vols
from shrinklab.studies.fund_switch import FUND_SIZES
from shrinklab.studies.selection_grid import SELECTION_GRID, WIDE_GRID

__all__ = [
    "fresh_universes",
    "fund_selection_means",
    "judge_by_rule_0066",
    "load_switched_run",
    "score_switch",
]


def load_switched_run(root: Path | str) -> tuple[SwitchedModel, RuleData]:
    """A pipeline run's ``models/final.pt``, which must be decision 0068's switched model
    (else ``ValueError``), and its validation data before 2016
    (:func:`shrinklab.studies.deploy_rule.load_rule_data`)."""
    root = Path(root)
    final = load_model(root / "models" / "final.pt")
    if not isinstance(final, SwitchedModel):
        raise ValueError(f"{root}/models/final.pt is not decision 0068's switched model")
    return final, load_rule_data(root / "data", cut_test=True)


def fresh_universes(data: RuleData, fund_seed: int, fold_seed: int) -> tuple[list, list]:
    """The real parts' universes at fresh seeds: fund universes of the stocks
    (:data:`~shrinklab.studies.fund_switch.FUND_SIZES`, four draws each, ``fund_seed``)
    and the cross-universe folds with the ETF fold (``fold_seed``)."""
    funds = fund_universes_of(data.returns, FUND_SIZES, 4, fund_seed)
    folds = cross_universe_folds(
        data.returns, data.factor_returns, data.market["index_return"], seed=fold_seed
    )
    return funds, folds


def score_switch(
    final: Any,
    switch: Any,
    funds: list,
    folds: list,
    valid: Any,
    *,
    grid_seed: int,
    stress_seed: int,
    reps: int,
    workers: int,
    out: Path,
) -> dict[str, Any]:
    """Every part for ``final`` and ``switch`` (a :class:`~shrinklab.studies.domain_switch.
    DomainSwitch`): ``funds``, ``folds``, ``french``, ``grids``, ``stress`` (frames, also
    written to ``out/<part>.csv``), ``valid`` (difference, SE) and ``valid_switched`` (the
    share of the validation worlds the switch serves with its other model). Prints each
    part's table as it goes."""
    t0 = time.time()
    learned = {"final": final, "switch": switch}
    ests = {**backtest.classical_estimators()}
    ests.update({k: backtest.learned_estimator(m) for k, m in learned.items()})
    parts: dict[str, Any] = {}
    for name, universes, value in (("funds", funds, "ann_vol"), ("folds", folds, "rel_vol")):
        rows = ub.fold_backtest(universes, ests, workers=workers)
        rows.to_csv(out / f"{name}.csv", index=False)
        print(rows.groupby(["family", "window", "estimator"])[value].mean().unstack().round(3))
        print(f"{time.time() - t0:.0f} s: {name}", flush=True)
        parts[name] = rows
    french, _ = ub.french_portfolio_tables(ests, ["final"], workers=workers)
    french.to_csv(out / "french.csv", index=False)
    print(ub.cell_summary(french, list(learned)).round(3))
    parts["french"] = french
    for name, specs, seed in (
        ("grids", SELECTION_GRID + WIDE_GRID, grid_seed),
        ("stress", worlds.HETERO_STRESS, stress_seed),
    ):
        rows = worlds.scenario_gains_by_rep([(final, switch)], specs, reps, seed)
        rows.to_csv(out / f"{name}.csv", index=False)
        print(rows.drop(columns="rep").round(3).to_string(index=False))
        parts[name] = rows
    print(f"{time.time() - t0:.0f} s: French, grids and stress", flush=True)
    w = {k: predict_numpy(m, valid.features).intensities for k, m in learned.items()}
    parts["valid"] = compression.normalised_prial_delta(w["switch"], w["final"], valid)
    parts["valid_switched"] = float(switch.is_far(valid.features).double().mean())
    return parts


def fund_selection_means(
    final: Any,
    candidates: Mapping[str, Any],
    returns: pd.DataFrame,
    seed: int,
    workers: int,
    draws: int = 4,
) -> pd.Series:
    """The selection step of decisions 0069 and 0074: for each named candidate, the mean
    over ``len(FUND_SIZES) × draws`` fund universes of the stocks (seed ``seed``) of each
    universe's volatility relative to ``final`` (%, mean over the windows 60 / 120 / 250),
    indexed by the candidates' names."""
    funds = fund_universes_of(returns, FUND_SIZES, draws, seed)
    ests = {"final": backtest.learned_estimator(final)}
    ests |= {name: backtest.learned_estimator(m) for name, m in candidates.items()}
    rows = ub.fold_backtest(funds, {**backtest.classical_estimators(), **ests}, workers=workers)
    return pd.Series(
        {
            name: relative_vols(rows, name, "final").groupby(level="fold").mean().mean()
            for name in candidates
        }  # fmt: skip
    )


def judge_by_rule_0066(
    final: Any,
    cand: Any,
    data: RuleData,
    *,
    fund_seed: int,
    fold_seed: int,
    grid_seed: int,
    stress_seed: int,
    reps: int,
    workers: int,
    out: Path,
) -> dict[str, Any]:
    """The judgement step of decisions 0069 and 0074: every part of :func:`score_switch`
    at the fresh seeds (:func:`fresh_universes`) and
    :func:`shrinklab.studies.domain_switch.rule_0066`'s verdict, with the share of the
    validation worlds the switch serves with its other model (``valid_switched``)."""
    funds, folds = fresh_universes(data, fund_seed, fold_seed)
    p = score_switch(
        final, cand, funds, folds, data.valid, grid_seed=grid_seed,
        stress_seed=stress_seed, reps=reps, workers=workers, out=out,
    )  # fmt: skip
    parts = [p[k] for k in ("funds", "folds", "french", "grids", "stress", "valid")]
    return {"valid_switched": p["valid_switched"], **rule_0066(*parts)}
