"""Decision 0046's rule (docs/decisions/0046-ensemble-members-30-epochs.md): may the
ensemble stage train its members for 30 epochs instead of 70 without a loss in the
deployed model's validation metrics beyond their seed-to-seed spread?

A and B are pipeline run roots (``models/final.pt``, ``data/processed/``, the synthetic
holdout under ``build/studies``); B differs from A only in ``ensemble.member_epochs``.
Prints the rule's parts and the verdict (B is a non-inferiority candidate):

1. the synthetic holdout (6,000 worlds, seed 777): normalised PRIAL of ``final.pt``,
   B − A ≥ −``--holdout-spread`` (the standard deviation over A's five ensemble members);
2. the cross-universe folds of the compression stage (seed 2021) and fresh folds
   (``--fresh-seed``): per-fold relative volatility B − A at most max(1 SE, 0.01) points
   (:func:`shrinklab.evaluation.compression.not_worse`);
3. the selection and wide grids: B fails in no more scenarios than A and its mean PRIAL
   is at least A's − ``--grid-spread`` (the members' standard deviation).

Never reads 2016–2022 or the public grid.

    OMP_NUM_THREADS=1 python scripts/member_epochs_rule.py <root A> <root B> \\
        --fresh-seed 2067 --holdout-spread 0.0221 --grid-spread 0.0487
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

from shrinklab.evaluation import backtest, compression
from shrinklab.evaluation import universe_backtest as ub
from shrinklab.models.network import predict_numpy
from shrinklab.models.registry import load_model
from shrinklab.studies import selection_grid
from shrinklab.studies.deploy_rule import FoldSpec, fold_rows, load_rule_data, rule_holdout


def main(
    root_a: str, root_b: str, fresh_seed: int, holdout_spread: float, grid_spread: float
) -> bool:
    t0 = time.time()
    torch.set_num_threads(1)
    pd.set_option("display.width", 200)
    models = {
        k: load_model(f"{r}/models/final.pt").eval() for k, r in (("A", root_a), ("B", root_b))
    }

    holdout = rule_holdout(root_a)
    w = {k: predict_numpy(m, holdout.features).intensities for k, m in models.items()}
    d, dse = compression.normalised_prial_delta(w["B"], w["A"], holdout)
    ok_holdout = d >= -holdout_spread
    print(f"1. holdout ({len(holdout.d)} worlds): normalised PRIAL B - A = {d:+.4f} +- {dse:.4f},"
          f" bar -{holdout_spread:.4f} -> {'holds' if ok_holdout else 'fails'}")  # fmt: skip

    data = load_rule_data(f"{root_a}/data", cut_test=True)
    lw = {"ledoit_wolf": backtest.classical_estimators()["ledoit_wolf"]}
    ok_folds = True
    for seed in (2021, fresh_seed):
        rows = fold_rows(data, models, folds=FoldSpec(seed=seed), classical=lw)
        m, se, n = compression.fold_delta(rows, "B", "A")
        ok = compression.not_worse(m, se)
        ok_folds &= ok
        print(ub.fold_table(rows)["mean"].round(3).to_string())
        print(f"2. folds seed {seed}: B - A = {m:+.4f} +- {se:.4f} over {n} folds"
              f" -> {'holds' if ok else 'fails'}")  # fmt: skip

    ga, _ = selection_grid.grid_scores(models["A"])
    gb, table_b = selection_grid.grid_scores(models["B"])
    ok_grid = gb["grid_fails"] <= ga["grid_fails"] and (
        gb["grid_mean_prial"] >= ga["grid_mean_prial"] - grid_spread
    )
    print(table_b.round(3).to_string())
    print(f"3. grids: failures {ga['grid_fails']} -> {gb['grid_fails']}, mean PRIAL"
          f" {ga['grid_mean_prial']:.3f} -> {gb['grid_mean_prial']:.3f} (bar -{grid_spread:.4f})"
          f" -> {'holds' if ok_grid else 'fails'}")  # fmt: skip
    adopt = ok_holdout and ok_folds and ok_grid
    print(f"verdict: {'adopt B' if adopt else 'keep A'} ({time.time() - t0:.0f} s)")
    return adopt


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root_a")
    parser.add_argument("root_b")
    parser.add_argument("--fresh-seed", type=int, required=True)
    parser.add_argument("--holdout-spread", type=float, required=True)
    parser.add_argument("--grid-spread", type=float, required=True)
    a = parser.parse_args()
    main(a.root_a, a.root_b, a.fresh_seed, a.holdout_spread, a.grid_spread)
