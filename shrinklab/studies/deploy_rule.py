"""Decision 0021's two measurements outside the pipeline, for the scripts that replay or
extend its rule (``scripts/deploy_rule_folds.py``, ``scripts/replay_study.py``).

The rule (docs/decisions/0021-deploy-rule-cross-universe-folds.md) compares models on
(i) ``gain_kept``, their share of the ensemble's normalised-PRIAL gain over Ledoit–Wolf
on the synthetic validation worlds (:func:`shrinklab.evaluation.compression.tradeoff_table`),
and (ii) the out-of-sample GMV backtest on the pre-2016 cross-universe folds
(:func:`shrinklab.data.universes.cross_universe_folds`,
:func:`shrinklab.evaluation.universe_backtest.fold_backtest`). :func:`load_rule_data`
reads their inputs from a folder of pipeline outputs, :func:`rule_inputs` computes both,
and :func:`shrinklab.evaluation.compression.choose_final` applies the rule. Notebook 05
runs the same steps inside the compression stage.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from shrinklab.core.params import load_section
from shrinklab.data import dataset, universes
from shrinklab.data import returns as data
from shrinklab.evaluation import backtest, compression, universe_backtest
from shrinklab.studies.holdout import holdout_set

__all__ = ["FoldSpec", "RuleData", "fold_rows", "load_rule_data", "rule_holdout", "rule_inputs"]


@dataclass(frozen=True)
class FoldSpec:
    """The cross-universe folds and backtest windows (the defaults of
    :func:`shrinklab.data.universes.cross_universe_folds`, windows 60 / 120 / 250)."""

    seed: int = 2021
    n_splits: int = 4
    draws: int = 2
    windows: tuple[int, ...] = (60, 120, 250)
    start: Any = universes.STOCK_START

    @classmethod
    def from_section(cls, section: Any) -> FoldSpec:
        """From the ``fold_*`` keys of the ``compress`` section of ``params.yaml``."""
        return cls(
            seed=section.fold_seed,
            n_splits=section.fold_splits,
            draws=section.fold_draws,
            windows=tuple(section.fold_windows),
            start=section.fold_start,
        )


@dataclass(frozen=True)
class RuleData:
    """What the rule reads: the 20 stocks' returns, the market frame (``index_return``),
    the factor ETFs' returns and the synthetic validation worlds."""

    returns: pd.DataFrame
    market: pd.DataFrame
    factor_returns: pd.DataFrame
    valid: Any


def rule_holdout(root: str | Path) -> dataset.TrainingSet:
    """The independent synthetic holdout (6,000 worlds, seed 777) of the pipeline run at
    ``root``, with the sizes of its ``selection_grid`` section as notebook 09 draws it,
    cached under ``root/build/studies``: the holdout the rule scripts of decisions 0044
    and 0045 read (:func:`shrinklab.studies.holdout.holdout_set`)."""
    settings = load_section("selection_grid", Path(root) / "params.yaml")
    return holdout_set(
        Path(root) / "build" / "studies",
        settings.p_max,
        settings.batch_size,
        n=settings.holdout_size,
    )


def load_rule_data(root: str | Path, *, cut_test: bool = False) -> RuleData:
    """Read ``<root>/processed/{sp500_returns,sp500_market}.parquet``, the factor ETFs'
    returns and ``<root>/processed/synthetic_valid.pt``; with ``cut_test`` every return
    series is cut before 2016 on reading (the folds never use later dates either way)."""
    processed = Path(root) / "processed"
    r = pd.read_parquet(processed / "sp500_returns.parquet")
    mk = pd.read_parquet(processed / "sp500_market.parquet")
    factors = data.load_factor_returns()
    if cut_test:
        r, mk, factors = data.before_test(r), data.before_test(mk), data.before_test(factors)
    valid = dataset.TrainingSet.load(processed / "synthetic_valid.pt")
    return RuleData(r, mk, factors, valid)


def rule_inputs(
    rule_data: RuleData,
    table_models: Mapping[str, Any],
    fold_models: Mapping[str, Any],
    *,
    folds: FoldSpec | None = None,
    reference: str = "ensemble",
    repeats: int = 5,
    rows_file: str | Path | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(table, rows)``: :func:`~shrinklab.evaluation.compression.tradeoff_table` of
    ``table_models`` on the validation worlds (``gain_kept`` against ``reference``,
    Ledoit–Wolf from the worlds' classical intensities; ``repeats`` latency repeats) and
    the :func:`~shrinklab.evaluation.universe_backtest.fold_backtest` rows of the
    classical estimators and ``fold_models`` on the folds of ``folds``.

    With ``rows_file``, the fold rows are read from it when it exists, else computed and
    written there (the backtest is the slow part).
    """
    if reference not in table_models:
        raise ValueError(f"reference {reference!r} is not one of {list(table_models)}")
    folds = FoldSpec() if folds is None else folds
    valid = rule_data.valid
    lw = dataset.classical_intensities(valid)["ledoit_wolf"]
    table = compression.tradeoff_table(
        table_models, valid, lw_intensities=lw, reference=reference, repeats=repeats
    )
    if rows_file is not None and Path(rows_file).exists():
        return table, pd.read_csv(rows_file)
    rows = fold_rows(rule_data, fold_models, folds=folds)
    if rows_file is not None:
        rows.to_csv(rows_file, index=False)
    return table, rows


def fold_rows(
    rule_data: RuleData,
    fold_models: Mapping[str, Any],
    *,
    folds: FoldSpec | None = None,
    classical: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """:func:`~shrinklab.evaluation.universe_backtest.fold_backtest` rows of the
    ``classical`` estimators (default: all of them; Ledoit–Wolf, the benchmark, must be
    one) and ``fold_models`` on the cross-universe folds of ``folds``."""
    folds = FoldSpec() if folds is None else folds
    universe_folds = universes.cross_universe_folds(
        rule_data.returns,
        rule_data.factor_returns,
        rule_data.market["index_return"],
        seed=folds.seed,
        n_splits=folds.n_splits,
        draws=folds.draws,
        start=folds.start,
    )
    estimators = {
        **(backtest.classical_estimators() if classical is None else classical),
        **{name: backtest.learned_estimator(m) for name, m in fold_models.items()},
    }
    return universe_backtest.fold_backtest(universe_folds, estimators, folds.windows)
