"""Decision 0038: does fine-tuning help on stocks it never saw?
(docs/decisions/0038-fine-tuning-on-unseen-stocks.md; :mod:`shrinklab.studies.disjoint_finetune`).

Reads ``<root>/params.yaml``, ``<root>/data/processed/`` and
``<root>/models/{pretrained,ensemble,final}.pt`` (``root``: a pipeline run's repository
root). For each of the ``2 · n_splits`` fits, fine-tunes the pretrained network on one half
of the 20 stocks as the finetune stage does and backtests it, assembled as ``final.pt``
is, on universes built from the other half only (dates before 2016). Writes the fold rows
to ``<out>/rows.csv`` (a rerun reads them back) and prints the per-family tables and the
rule's paired difference F_fit − E.

    OMP_NUM_THREADS=1 python scripts/disjoint_finetune.py <root> [out, default
        build/studies/disjoint_finetune] [workers, default 2]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from shrinklab.evaluation import compression
from shrinklab.evaluation import universe_backtest as ub
from shrinklab.studies.disjoint_finetune import DisjointSpec, half_splits, run_split
from shrinklab.training.parallel import map_in_processes

CLASSICAL = ["sample", "ledoit_wolf", "oas", "constant_correlation", "single_factor", "qis"]


def main(root: str, out: str = "build/studies/disjoint_finetune", workers: int = 2) -> None:
    t0 = time.time()
    spec = DisjointSpec()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows_file = out_dir / "rows.csv"
    if rows_file.exists():
        rows = pd.read_csv(rows_file)
    else:
        columns = pd.read_parquet(f"{root}/data/processed/sp500_returns.parquet").columns
        splits = half_splits(columns, spec.n_splits, np.random.default_rng(spec.seed))
        for s in splits:
            print(f"{s.name}: fit {', '.join(s.fit)} | held out {', '.join(s.held_out)}")
        jobs = [(root, s, spec, str(out_dir)) for s in splits]
        rows = pd.concat(map_in_processes(run_split, jobs, workers), ignore_index=True)
        rows.to_csv(rows_file, index=False)
    pd.set_option("display.width", 200)
    vol = ub.fold_table(rows)["mean"]
    print("\nOut-of-sample GMV volatility (annualised %), mean over the held-out folds:")
    print(vol[CLASSICAL + ["ensemble", "finetuned_fit", "final_fit", "final"]].round(2).to_string())
    for model in ("final_fit", "ensemble"):
        print(f"\n{model} against the best classical estimator (paired over folds):")
        print(ub.best_classical_table(rows, model, CLASSICAL).round(3).to_string())
    print("\nPer fold, mean over windows of the volatility relative to Ledoit–Wolf (%), paired:")
    for model, ref in (
        ("final_fit", "ensemble"),
        ("finetuned_fit", "ensemble"),
        ("final", "final_fit"),
    ):
        d, se, k = compression.fold_delta(rows, model, ref)
        print(f"  {model} − {ref}: {d:+.4f} ± {se:.4f} ({k} folds)")
    d, se, k = compression.fold_delta(rows, "final_fit", "ensemble")
    tol = max(se, 0.01)
    verdict = (
        "fine-tuning costs on unseen stocks"
        if d > tol
        else "fine-tuning helps on unseen stocks"
        if d < -tol
        else "within the tolerance: fine-tuning's gain is not shown on unseen stocks"
    )
    print(f"\nrule 0038: F_fit − E = {d:+.4f} ± {se:.4f}, tolerance {tol:.4f}: {verdict}")
    print(f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main(*sys.argv[1:2], *sys.argv[2:3], *(int(a) for a in sys.argv[3:4]))
