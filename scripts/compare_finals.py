"""Two deployed models, A and B, on every validation measure of decisions 0036 and 0037
(docs/decisions/0037-diversified-family-expert.md): the paired differences B − A on

1. the cross-universe folds of the compression stage (seed 2021) and on fresh folds
   (seed 2027): per-fold relative volatility, mean ± SE over the 25 folds
   (``compression.fold_delta``);
2. the six real diversified universes of decision 0026 (``studies.worlds.real_universes``,
   p = 6 and 10, 2010–2015, windows 60/120/250): realised GMV variance per window,
   pooled, mean ± SE (and in annualised volatility per universe and window);
3. the synthetic validation worlds: normalised PRIAL (``compression.normalised_prial_delta``);
4. the selection and wide grids: failures and mean PRIAL (``studies.selection_grid``).

Never reads 2016–2022. ``A`` and ``B`` are pipeline run roots (``models/final.pt`` and
``data/processed/``); the validation worlds are read from ``A`` (both runs share them).

    OMP_NUM_THREADS=1 python scripts/compare_finals.py <root A> <root B>
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd

from shrinklab.evaluation import backtest, compression
from shrinklab.evaluation import universe_backtest as ub
from shrinklab.models.network import predict_numpy
from shrinklab.models.registry import load_model
from shrinklab.studies import selection_grid, worlds
from shrinklab.studies.deploy_rule import FoldSpec, RuleData, fold_rows, load_rule_data


def folds_part(data: RuleData, models: dict, seed: int) -> tuple[float, float, int, pd.DataFrame]:
    lw = {"ledoit_wolf": backtest.classical_estimators()["ledoit_wolf"]}
    rows = fold_rows(data, models, folds=FoldSpec(seed=seed), classical=lw)
    return (*compression.fold_delta(rows, "B", "A"), ub.fold_table(rows)["mean"])


def diversified_part(models: dict) -> tuple[float, float, int, pd.DataFrame]:
    u = worlds.real_universes((60, 120, 250), 0, "2010-01-01", "2015-12-31", (6, 10), 3)
    u = {k: v for k, v in u.items() if k.startswith("diversified")}
    var = {k: worlds.gmv_variances(m, u) for k, m in models.items()}
    diff = var["B"]["var"].to_numpy() - var["A"]["var"].to_numpy()
    m, se = worlds.paired(diff)
    vol = {
        k: np.sqrt(252 * v.groupby(["universe", "window"])["var"].mean()) * 100
        for k, v in var.items()
    }
    return m, se, len(diff), pd.DataFrame(vol)


def main(root_a: str, root_b: str) -> None:
    t0 = time.time()
    models = {"A": load_model(f"{root_a}/models/final.pt"), "B": load_model(f"{root_b}/models/final.pt")}
    pd.set_option("display.width", 200)
    data = load_rule_data(f"{root_a}/data", cut_test=True)
    for seed in (2021, 2027):
        m, se, n, table = folds_part(data, models, seed)
        print(table.round(3).to_string())
        print(f"1. folds seed {seed}: B - A = {m:+.4f} +- {se:.4f} over {n} folds "
              f"-> {'holds' if compression.not_worse(m, se) else 'fails'}")  # fmt: skip
    m, se, n, vol = diversified_part(models)
    print(vol.round(3).to_string())
    print(f"2. diversified universes: B - A GMV variance = {m:+.3e} +- {se:.3e} over {n} windows "
          f"-> {'holds' if m < 0 and m + se < 0 else 'fails'}")  # fmt: skip
    w = {k: predict_numpy(m, data.valid.features).intensities for k, m in models.items()}
    d, dse = compression.normalised_prial_delta(w["B"], w["A"], data.valid)
    print(f"3. validation worlds: normalised PRIAL B - A = {d:+.3f} +- {dse:.3f} "
          f"-> {'holds' if compression.gains(d, dse) else 'fails'}")  # fmt: skip
    ga, _ = selection_grid.grid_scores(models["A"])
    gb, table_b = selection_grid.grid_scores(models["B"])
    ok = compression.grids_not_worse(ga, gb)
    print(table_b.round(3).to_string())
    print(f"4. grids: failures {ga['grid_fails']} -> {gb['grid_fails']}, mean PRIAL "
          f"{ga['grid_mean_prial']:.2f} -> {gb['grid_mean_prial']:.2f} -> {'holds' if ok else 'fails'}")  # fmt: skip
    print(f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
