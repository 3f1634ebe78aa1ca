"""PRIAL of multi-target shrinkage on its own, on the public scenario grid.

Multi-target shrinkage (:func:`shrinklab.core.estimators.multi_target_weights`, the
network's sixth expert; features ``mt_<target>``) next to QIS, the best classical
estimator of each scenario and the multi-target oracle, on the same replications and
seeds as ``reports/metrics/evaluation.json`` (``params.yaml`` ``evaluate``). PRIAL
(Ledoit & Wolf 2022) with a delta-method standard error; the difference to the best
classical estimator is paired. This is a diagnostic of one expert, not one of the
issue's baselines (those are sample, LW, OAS, CC, SF and QIS)::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/multi_target_on_grid.py [--n-reps 100]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from shrinklab.core import metrics
from shrinklab.core.features import FEATURE_NAMES, MULTI_TARGET_SOURCES, extract_features
from shrinklab.core.targets import TARGET_NAMES
from shrinklab.data import synthetic
from shrinklab.evaluation import scenarios

ROOT = Path(__file__).resolve().parents[1]


def multi_target_from_features(feats: torch.Tensor) -> torch.Tensor:
    """Intensities ``(B, K)`` of multi-target shrinkage, read from the ``mt_*`` features."""
    w = torch.zeros(feats.shape[0], len(TARGET_NAMES), dtype=torch.float64)
    for target in MULTI_TARGET_SOURCES:
        w[:, TARGET_NAMES.index(target)] = feats[:, FEATURE_NAMES.index(f"mt_{target}")]
    return w


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-reps", type=int, default=None, help="default: params.yaml evaluate")
    args = ap.parse_args()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())["evaluate"]
    n_reps = int(args.n_reps or params["n_reps"])
    rows = []
    for spec in params["scenarios"]:
        res = scenarios.evaluate_scenario(
            spec, None, n_reps, scenarios.scenario_seed(int(params["seed"]), spec["name"])
        )
        sigma, X = synthetic.make_scenario(
            {k: v for k, v in spec.items() if k != "name"},
            n_reps,
            scenarios.scenario_seed(int(params["seed"]), spec["name"]),
        )
        w = multi_target_from_features(extract_features(X))
        G, c = torch.as_tensor(res["G"]), torch.as_tensor(res["c"])
        loss_mt = metrics.quadratic_form_loss(w, G, c, torch.as_tensor(res["losses"]["sample"])).numpy()
        L, best = res["losses"], res["best_classical"]
        b = L["sample"] - L["fsopt"]
        prial, se = metrics.ratio_se(L["sample"] - loss_mt, b)
        diff, diff_se = metrics.ratio_se(L[best] - loss_mt, b)
        rows.append(
            {
                "scenario": res["scenario"],
                "qis": res["prial"]["qis"],
                "best_classical": f"{best} {res['prial'][best]:.2f}",
                "multi_target": prial,
                "se": se,
                "minus_best": diff,
                "minus_best_se": diff_se,
                "oracle": res["prial"]["oracle"],
            }
        )
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    print(f"\n{n_reps} replications per scenario (seeds of params.yaml evaluate)")
    print(table.round(2).to_string(index=False))
    print(f"average multi_target {table.multi_target.mean():.2f}", np.round(table.oracle.mean(), 2))


if __name__ == "__main__":
    main()
