"""Decision 0021's rule at full size on existing pipeline outputs, without the
compression candidates (docs/decisions/0021-deploy-rule-cross-universe-folds.md).

Reads ``<root>/processed/{sp500_returns,sp500_market}.parquet``,
``<root>/processed/synthetic_valid.pt`` and ``<root>/models/{ensemble,finetuned}.pt``
(``root`` is the first argument: a folder with processed/ and models/), runs the
cross-universe fold backtest (25 folds, windows 60/120/250) and ``choose_final``
with the ensemble as the incumbent, and prints the tables. Never reads 2016–2022.

    OMP_NUM_THREADS=1 nice python scripts/deploy_rule_folds.py <root>
"""

from __future__ import annotations

import sys
import time

import pandas as pd

from shrinklab.evaluation import backtest, compression
from shrinklab.evaluation import universe_backtest as ub
from shrinklab.models.registry import load_model
from shrinklab.studies.deploy_rule import load_rule_data, rule_inputs


def main(root: str) -> None:
    t0 = time.time()
    ens, ft = load_model(f"{root}/models/ensemble.pt"), load_model(f"{root}/models/finetuned.pt")
    models = {"ensemble": ens, "finetuned": ft}
    table, rows = rule_inputs(load_rule_data(root), models, models, repeats=5)
    print(table[["norm_prial", "gain_kept", "gain_kept_worst_family"]].round(3).to_string())
    pd.set_option("display.width", 250)
    for value in ("ann_vol", "rel_vol"):
        t = ub.fold_table(rows, value)
        print(
            value, "mean\n", t["mean"].round(2).to_string(), "\nse\n", t["se"].round(2).to_string()
        )
    chosen, reason, scores = compression.choose_final(
        rows, "ensemble", ["finetuned"], table["gain_kept"].to_dict(), min_gain_kept=0.9
    )
    print(scores.round(3).to_string())
    print("CHOSEN:", chosen, "-", reason)
    for m in ("ensemble", "finetuned"):
        print(
            ub.best_classical_table(rows, m, list(backtest.classical_estimators()))
            .round(2)
            .to_string()
        )
    print(f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
