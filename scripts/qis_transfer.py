"""Decision 0064's study (validation data only)::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/qis_transfer.py <root> [--lam 0.5] \
        [--fold-seed 2159] [--fund-seed 2165] [--grid-seed 2163] [--workers 2] [--out DIR]

``root`` is a pipeline run's repository root (``models/final.pt``, ``data/processed/``).
Compares ``final.pt`` with :class:`shrinklab.studies.qis_transfer.QisTransfer` (``lam`` of
its linear intensities moved to QIS where the gate sees a diversified universe) on fresh
universes of funds, fresh cross-universe folds, Ken French's universes and the selection
and wide grids at a fresh seed, and applies :func:`shrinklab.studies.qis_transfer.rule_0064`.
Writes ``<out>/{funds,folds,french}.csv``, ``grids.csv`` and ``summary.json``. About 6 min
with two workers on the 2-vCPU VM.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from shrinklab.data import universes
from shrinklab.evaluation import backtest, scenarios
from shrinklab.evaluation import universe_backtest as ub
from shrinklab.models.registry import load_model
from shrinklab.studies.deploy_rule import load_rule_data
from shrinklab.studies.qis_transfer import QisTransfer, fund_universes, rule_0064
from shrinklab.studies.selection_grid import SELECTION_GRID, WIDE_GRID


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--lam", type=float, default=0.5)
    ap.add_argument("--fold-seed", type=int, default=2159)
    ap.add_argument("--fund-seed", type=int, default=2165)
    ap.add_argument("--grid-seed", type=int, default=2163)
    ap.add_argument("--reps", type=int, default=100, help="replications per grid scenario")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="build/studies/qis_transfer")
    a = ap.parse_args(argv)
    t0, out = time.time(), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    final = load_model(Path(a.root) / "models" / "final.pt")
    learned = {"final": final, "transfer": QisTransfer(final, a.lam)}
    ests = {**backtest.classical_estimators()}
    ests.update({k: backtest.learned_estimator(m) for k, m in learned.items()})
    pd.set_option("display.width", 200)

    funds = ub.fold_backtest(fund_universes(a.fund_seed), ests, workers=a.workers)
    funds.to_csv(out / "funds.csv", index=False)
    print(funds.groupby(["family", "window", "estimator"])["ann_vol"].mean().unstack().round(3))
    print(f"{time.time() - t0:.0f} s: funds", flush=True)

    data = load_rule_data(Path(a.root) / "data", cut_test=True)
    folds = universes.cross_universe_folds(
        data.returns, data.factor_returns, data.market["index_return"], seed=a.fold_seed
    )
    fold_rows = ub.fold_backtest(folds, ests, workers=a.workers)
    fold_rows.to_csv(out / "folds.csv", index=False)
    print(fold_rows.groupby(["family", "window", "estimator"])["rel_vol"].mean().unstack().round(2))
    print(f"{time.time() - t0:.0f} s: folds", flush=True)

    french, _ = ub.french_portfolio_tables(ests, ["final"], workers=a.workers)
    french.to_csv(out / "french.csv", index=False)
    print(ub.cell_summary(french, list(learned)).round(3))
    print(f"{time.time() - t0:.0f} s: French", flush=True)

    extra = {k: backtest.learned_estimator(m) for k, m in learned.items()}
    df = scenarios.evaluate_grid(
        SELECTION_GRID + WIDE_GRID, final, n_reps=a.reps, seed=a.grid_seed, extra_estimators=extra
    )
    grids = df.pivot(index="scenario", columns="estimator", values="prial")
    grids["best_classical"] = df[df.kind == "classical"].groupby("scenario")["prial"].max()
    grids.to_csv(out / "grids.csv")
    print(grids[[*learned, "best_classical", "oracle"]].round(2))

    summary = {"lam": a.lam, "fold_seed": a.fold_seed, "fund_seed": a.fund_seed,
               "grid_seed": a.grid_seed, "reps": a.reps,
               **rule_0064(funds, fold_rows, french, grids)}  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
