"""Decision 0043's rule (docs/decisions/0043-pooled-non-market-server.md): does the
non-market server of ``final.pt`` do better when it fires on the gate's *pooled*
non-market probability?

Reads ``<root>/data/processed/{sp500_returns,sp500_market}.parquet`` and
``synthetic_valid.pt``, ``<root>/models/final.pt`` (``root``: a pipeline run's repository
root), builds E' = ``final.pt`` as deployed (the server serves where one non-market
family's probability exceeds the threshold) and P = the same modules where the four
families' total does (:func:`shrinklab.models.experts.choose_expert`), and prints the
rule's three parts and the verdict:

1. the paired fold difference P − E' (per-fold volatility relative to Ledoit–Wolf) on
   the compress stage's folds (``params.yaml``) and on fresh folds of ``--fresh-seed``,
   each at most max(1 SE, 0.01) above zero;
2. the normalised PRIAL difference P − E' on the synthetic validation worlds, positive
   and above its SE;
3. the selection and wide grids: no more failures, mean PRIAL not lower.

    OMP_NUM_THREADS=1 python scripts/pooled_server_rule.py <root> --fresh-seed 2049
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
from shrinklab.studies.deploy_rule import FoldSpec, fold_rows, load_rule_data


def pooled_twin(model: GatedExpertModel) -> GatedExpertModel:
    """``model`` with its shared non-market server firing on the pooled probability (the
    same modules, gate and threshold). Refuses a model without that server, or one that
    pools already."""
    if not isinstance(model, GatedExpertModel) or model.pool_shared:
        raise ValueError("expected final.pt with a non-pooled server (decision 0036)")
    experts = model.expert_map()
    if not set(compression.NON_MARKET_FAMILIES) <= set(experts):
        raise ValueError("final.pt has no server for the non-market families")
    return GatedExpertModel(
        model.general, experts, model.gate, threshold=model.threshold, pool_shared=True
    )


def main(root: str, fresh_seed: int) -> None:
    t0 = time.time()
    single = before_switch(load_model(f"{root}/models/final.pt")).eval()
    pooled = pooled_twin(single).eval()
    models = {"single": single, "pooled": pooled}
    rule_data = load_rule_data(f"{root}/data", cut_test=True)
    valid = rule_data.valid
    share = {
        k: round(sum(m.expert_share(valid.features)[f] for f in compression.NON_MARKET_FAMILIES), 4)
        for k, m in models.items()
    }
    print("share of the validation worlds the server takes:", share)

    stage = FoldSpec.from_section(load_section("compress", f"{root}/params.yaml"))
    fold_ok = []
    lw = {"ledoit_wolf": backtest.classical_estimators()["ledoit_wolf"]}
    for spec in (stage, dataclasses.replace(stage, seed=fresh_seed)):
        rows = fold_rows(rule_data, models, folds=spec, classical=lw)
        print(ub.fold_table(rows)["mean"].round(3).to_string())
        mean, se, n = compression.fold_delta(rows, "pooled", "single")
        ok = compression.not_worse(mean, se)
        fold_ok.append(ok)
        print(
            f"1. folds seed {spec.seed}: P - E' = {mean:+.4f} +- {se:.4f} points over {n} folds "
            f"-> {'holds' if ok else 'fails'} ({time.time() - t0:.0f} s)"
        )

    w = {k: predict_numpy(m, valid.features).intensities for k, m in models.items()}
    delta, delta_se = compression.normalised_prial_delta(w["pooled"], w["single"], valid)
    valid_ok = compression.gains(delta, delta_se)
    print(
        f"2. validation worlds: normalised PRIAL P - E' = {delta:+.3f} +- {delta_se:.3f} "
        f"-> {'holds' if valid_ok else 'fails'}"
    )

    table, grid_ok, summary = selection_grid.grid_comparison(models, "single", "pooled")
    pd.set_option("display.width", 200)
    print(table.round(3).to_string())
    print(f"3. grids: {summary} -> {'holds' if grid_ok else 'fails'}")
    deploy = all(fold_ok) and valid_ok and grid_ok
    print(f"verdict: {'deploy P' if deploy else 'keep E'} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", default=".")
    parser.add_argument("--fresh-seed", type=int, default=2049)
    args = parser.parse_args()
    main(args.root, args.fresh_seed)
