"""Decision 0044's rule (docs/decisions/0044-soft-gate-mixture.md): is ``final.pt``
better as a soft mixture of its gated modules than with the hard switch?

Reads ``<root>/data/processed/`` (returns, ``synthetic_valid.pt``), ``<root>/models/final.pt``
and the synthetic holdout (6,000 worlds, seed 777; :func:`shrinklab.studies.holdout.holdout_set`,
drawn once into ``<root>/build/studies``). H = ``final.pt`` with its switch, S = the same
modules mixed softly (:func:`shrinklab.evaluation.compression.with_mixing`). Prints the
rule's parts and the verdict:

1. the paired fold difference S − H (per-fold volatility relative to Ledoit–Wolf, mean
   over the windows) on fresh folds of ``--fresh-seed`` and on the compress stage's
   folds, each at most max(1 SE, 0.01) above zero;
2. the normalised PRIAL difference S − H on the holdout and on the validation worlds,
   each positive and above its SE;
3. the selection and wide grids: no more failures, mean PRIAL not lower.

    OMP_NUM_THREADS=1 python scripts/soft_mixture_rule.py <root> --fresh-seed 2057
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import pandas as pd

from shrinklab.core.params import load_section
from shrinklab.evaluation import backtest, compression
from shrinklab.evaluation import universe_backtest as ub
from shrinklab.models.experts import GatedExpertModel
from shrinklab.models.network import predict_numpy
from shrinklab.models.registry import load_model
from shrinklab.models.switched import before_switch
from shrinklab.studies import selection_grid
from shrinklab.studies.deploy_rule import FoldSpec, fold_rows, load_rule_data, rule_holdout


def soft_twin(model: GatedExpertModel) -> GatedExpertModel:
    """``model`` (the hard switch) with its modules mixed softly; refuses anything else."""
    if not isinstance(model, GatedExpertModel) or model.mixing != "hard":
        raise ValueError("expected final.pt with the hard switch of its gated modules")
    return compression.with_mixing(model, "soft")


def main(root: str, fresh_seed: int) -> None:
    t0 = time.time()
    hard = before_switch(load_model(f"{root}/models/final.pt")).eval()
    soft = soft_twin(hard).eval()
    models = {"hard": hard, "soft": soft}
    rule_data = load_rule_data(f"{root}/data", cut_test=True)

    stage = FoldSpec.from_section(load_section("compress", f"{root}/params.yaml"))
    fold_ok = []
    lw = {"ledoit_wolf": backtest.classical_estimators()["ledoit_wolf"]}
    for spec in (dataclasses.replace(stage, seed=fresh_seed), stage):
        rows = fold_rows(rule_data, models, folds=spec, classical=lw)
        print(ub.fold_table(rows)["mean"].round(3).to_string())
        mean, se, n = compression.fold_delta(rows, "soft", "hard")
        ok = compression.not_worse(mean, se)
        fold_ok.append(ok)
        print(
            f"1. folds seed {spec.seed}: S - H = {mean:+.4f} +- {se:.4f} points over {n} folds "
            f"-> {'holds' if ok else 'fails'} ({time.time() - t0:.0f} s)"
        )

    holdout = rule_holdout(root)
    synth_ok = []
    for name, worlds in (("holdout", holdout), ("validation worlds", rule_data.valid)):
        w = {k: predict_numpy(m, worlds.features).intensities for k, m in models.items()}
        delta, delta_se = compression.normalised_prial_delta(w["soft"], w["hard"], worlds)
        ok = compression.gains(delta, delta_se)
        synth_ok.append(ok)
        print(
            f"2. {name} ({len(worlds.d)}): normalised PRIAL S - H = {delta:+.3f} +- "
            f"{delta_se:.3f} -> {'holds' if ok else 'fails'}"
        )

    table, grid_ok, summary = selection_grid.grid_comparison(models, "hard", "soft")
    pd.set_option("display.width", 200)
    print(table.round(3).to_string())
    print(f"3. grids: {summary} -> {'holds' if grid_ok else 'fails'}")
    deploy = all(fold_ok) and all(synth_ok) and grid_ok
    print(f"verdict: {'deploy S' if deploy else 'keep H'} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", default=".")
    parser.add_argument("--fresh-seed", type=int, default=2057)
    args = parser.parse_args()
    main(args.root, args.fresh_seed)
