"""The fold part of decision 0036 on fresh cross-universe folds
(docs/decisions/0036-ensemble-for-non-market-families-without-block.md).

Reads ``<root>/data/processed/{sp500_returns,sp500_market}.parquet`` and
``<root>/models/{final,ensemble}.pt`` (``root``: a pipeline run's repository root),
builds G = ``final.pt`` without a server for the families of
:data:`shrinklab.evaluation.compression.NON_MARKET_FAMILIES` (today's ``final.pt`` has one,
0036 having adopted it) and E' = G with the ensemble's general model serving them,
backtests both with
Ledoit–Wolf on ``cross_universe_folds(seed)`` (windows 60/120/250, 1991-01-02 to
2015-12-31; never 2016–2022) and prints the per-family table and the paired fold
difference E' − G with its SE and verdict (at most max(1 SE, 0.01) above zero).

    OMP_NUM_THREADS=1 python scripts/server_rule_folds.py <root> [seed, default 2027]
"""

from __future__ import annotations

import sys
import time

import pandas as pd

from shrinklab.evaluation import backtest, compression
from shrinklab.evaluation import universe_backtest as ub
from shrinklab.models.experts import GatedExpertModel
from shrinklab.models.registry import load_model
from shrinklab.models.switched import before_switch
from shrinklab.studies.deploy_rule import FoldSpec, fold_rows, load_rule_data


def without_non_market_server(model: GatedExpertModel) -> GatedExpertModel:
    """``model`` with the modules serving :data:`compression.NON_MARKET_FAMILIES` removed
    (the family experts of 0033 stay)."""
    kept = {f: m for f, m in model.expert_map().items() if f not in compression.NON_MARKET_FAMILIES}
    return GatedExpertModel(model.general, kept, model.gate, threshold=model.threshold)


def main(root: str, seed: int = 2027) -> None:
    t0 = time.time()
    final = without_non_market_server(before_switch(load_model(f"{root}/models/final.pt")))
    final = final.eval()
    ensemble = load_model(f"{root}/models/ensemble.pt")
    # E' as 0036 defined it: one family's probability (final.pt pools them since 0043)
    served = compression.with_ensemble_for_non_market(final, ensemble, pooled=False).eval()
    rows = fold_rows(
        load_rule_data(f"{root}/data", cut_test=True),
        {"without": final, "served": served},
        folds=FoldSpec(seed=seed),
        classical={"ledoit_wolf": backtest.classical_estimators()["ledoit_wolf"]},
    )
    pd.set_option("display.width", 200)
    print(ub.fold_table(rows)["mean"].round(3).to_string())
    mean, se, n = compression.fold_delta(rows, "served", "without")
    ok = compression.not_worse(mean, se)
    print(
        f"seed {seed}: served - without = {mean:+.4f} +- {se:.4f} points of relative volatility "
        f"over {n} folds -> {'holds' if ok else 'fails'} ({time.time() - t0:.0f} s)"
    )


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0] if args else ".", int(args[1]) if len(args) > 1 else 2027)
