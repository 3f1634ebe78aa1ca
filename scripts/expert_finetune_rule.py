"""Decision 0045's rule (docs/decisions/0045-fine-tuned-sp500-expert.md): should the S&P
expert of ``final.pt`` be fine-tuned on real returns, as its general network is?

A = ``<root>/models/final.pt``; E = the same model with its ``sp500`` expert's members each
fine-tuned on all 20 stocks before 2016 with the finetune section's recipe
(:func:`shrinklab.training.finetune_stage.stage_finetune_expert`, checkpoints in
``<out>/full``). Prints the rule's parts and the verdict:

1. held-out folds: the paired fold difference E − A of ``<rows>`` (the rows.csv of
   ``scripts/disjoint_finetune.py --variant A= --variant E=:::sp500``; per fold, mean over
   the windows of the volatility relative to Ledoit–Wolf) below −max(1 SE, 0.01);
2. the synthetic holdout's S&P worlds (seed 777): E keeps at least 90 % of A's normalised
   PRIAL gain over Ledoit–Wolf (``gain_kept`` with A as the reference);
3. the selection and wide grids: E fails in no more scenarios than A.

    OMP_NUM_THREADS=1 python scripts/expert_finetune_rule.py <root> \\
        --rows build/studies/disjoint_2061/rows.csv --out build/studies/expert_0045
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from shrinklab.data.dataset import classical_intensities
from shrinklab.evaluation import compression
from shrinklab.models.network import predict_numpy
from shrinklab.models.registry import load_model
from shrinklab.models.switched import before_switch
from shrinklab.studies import selection_grid
from shrinklab.studies.deploy_rule import rule_holdout
from shrinklab.studies.disjoint_finetune import RunInputs, Variant

FAMILY = "sp500"


def main(root: str, rows_file: str, out: str) -> None:
    t0 = time.time()
    torch.set_num_threads(1)
    rows = pd.read_csv(rows_file)
    d, se, k = compression.fold_delta(rows, "E", "A")
    tol = max(se, 0.01)
    folds_ok = d < -tol
    print(
        f"1. held-out folds: E - A = {d:+.4f} +- {se:.4f} over {k} folds, threshold -{tol:.4f}"
        f" -> {'holds' if folds_ok else 'fails'}"
    )

    run = RunInputs.load(root, workers=2)
    expert = run.finetune_experts(
        run.returns.columns, Path(out) / "full", Variant(experts=(FAMILY,))
    )
    final = before_switch(load_model(f"{root}/models/final.pt")).eval()
    models = {"A": final, "E": compression.with_experts_replaced(final, expert).eval()}
    print(f"   expert fine-tuned on all stocks ({time.time() - t0:.0f} s)")

    holdout = rule_holdout(root)
    own = holdout.subset(np.flatnonzero(np.asarray(holdout.families) == FAMILY).tolist())
    lw = classical_intensities(own)["ledoit_wolf"]
    table = compression.tradeoff_table(models, own, lw_intensities=lw, reference="A", repeats=1)
    print(table[["norm_prial", "prial", "gain_kept"]].round(4).to_string())
    kept = float(table.loc["E", "gain_kept"])
    synth_ok = kept >= 0.9
    print(
        f"2. holdout {FAMILY} worlds ({len(own.d)}): gain_kept {kept:.3f}"
        f" -> {'holds' if synth_ok else 'fails'}"
    )
    for name, worlds in (("holdout (all)", holdout), (f"holdout {FAMILY}", own)):
        w = {n: predict_numpy(m, worlds.features).intensities for n, m in models.items()}
        delta, delta_se = compression.normalised_prial_delta(w["E"], w["A"], worlds)
        print(f"   {name}: normalised PRIAL E - A = {delta:+.3f} +- {delta_se:.3f}")

    grids = {n: selection_grid.grid_scores(m)[0] for n, m in models.items()}
    grid_ok = grids["E"]["grid_fails"] <= grids["A"]["grid_fails"]
    print(
        f"3. grids: failures {grids['A']['grid_fails']} -> {grids['E']['grid_fails']}, mean PRIAL"
        f" {grids['A']['grid_mean_prial']:.2f} -> {grids['E']['grid_mean_prial']:.2f}"
        f" -> {'holds' if grid_ok else 'fails'}"
    )
    deploy = folds_ok and synth_ok and grid_ok
    print(f"verdict: {'deploy E' if deploy else 'keep A'} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", default=".")
    parser.add_argument("--rows", required=True)
    parser.add_argument("--out", default="build/studies/expert_0045")
    args = parser.parse_args()
    main(args.root, args.rows, args.out)
