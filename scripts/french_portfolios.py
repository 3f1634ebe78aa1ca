"""Score model files on Ken French's monthly portfolios (real universes not built from the
20 stocks; :mod:`shrinklab.data.french_portfolios`, notebook 6, section 6.7)::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/french_portfolios.py models/final.pt [other.pt ...]
        [--windows 36,60,120] [--start 1959-01-01] [--workers 2]

GMV portfolios rebalanced monthly up to 2015-12 (pre-2016: validation data). Prints, for
each model, its difference to the best classical estimator of each universe and window
(± the stationary bootstrap's SE over months) and its mean volatility relative to
Ledoit–Wolf's over the cells, so that a decision can read the universes that share
nothing with the training data. About a minute per model at the full size on the 2-vCPU VM.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from shrinklab.data.french_portfolios import FRENCH_START
from shrinklab.evaluation import backtest, universe_backtest
from shrinklab.models.registry import load_model


def score(
    models: dict[str, object],
    windows: tuple[int, ...] = (36, 60, 120),
    start: str | pd.Timestamp = FRENCH_START,
    workers: int = 1,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(table, summary)``: each model against the best classical estimator per universe
    and window (rows ``(model, family, window)``), and per model
    :func:`shrinklab.evaluation.universe_backtest.cell_summary` (mean volatility relative to
    Ledoit–Wolf's over the cells, the cells where it is at or below the best classical)."""
    if not models:
        raise ValueError("no model to score")
    estimators = backtest.classical_estimators() | {
        name: backtest.learned_estimator(m) for name, m in models.items()
    }
    rows, tables = universe_backtest.french_portfolio_tables(
        estimators, list(models), windows, start=start, workers=workers
    )
    table = pd.concat(
        {name: t[[name, "best classical", "best classical vol", "difference", "difference se"]]
         .rename(columns={name: "model vol"}) for name, t in tables.items()},
        names=["model"],
    )  # fmt: skip
    summary = universe_backtest.cell_summary(rows, list(models))
    return table, summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", help="model files (e.g. models/final.pt)")
    ap.add_argument("--windows", default="36,60,120", help="estimation windows in months")
    ap.add_argument("--start", default=str(FRENCH_START.date()), help="first backtest month")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)
    names = [Path(m).stem for m in args.models]
    if len(set(names)) != len(names):
        names = list(args.models)
    models = {n: load_model(m) for n, m in zip(names, args.models, strict=True)}
    windows = tuple(int(w) for w in args.windows.split(","))
    table, summary = score(models, windows, args.start, args.workers)
    pd.set_option("display.width", 200)
    print(table.round(3).to_string())
    print(summary.round(3).to_string())


if __name__ == "__main__":
    main()
