"""A model on synthetic scenarios outside every grid and outside the training ranges::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/stress_scenarios.py [models/final.pt] \
        [--n-reps 100] [--seed 4243]

Validation data, as the selection grid (never the public grid): p/n = 10, log-volatility
spreads above the training worlds' 0.8 and in families drawn without them, Student-t(3)
returns, eight factors at p = 300, and the six scenarios of decision 0051
(:data:`shrinklab.studies.worlds.HETERO_STRESS`). The research log ("Exploration:
scenarios outside the grids and the training ranges") reads this table.

Two measures per scenario, learned model against the best classical estimator of that
measure, with paired standard errors over the replications:

``prial``
    the PRIAL of the grids (Ledoit & Wolf 2022): a ratio of *mean* losses, so the
    replications with the largest losses weigh most;
``ratio``
    the *mean* of each replication's loss relative to the sample covariance's, which
    weighs every replication alike, as the network's training loss does (decision 0009);
    lower is better.

Where the two disagree, a few replications decide the PRIAL (see the research log).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from shrinklab.evaluation import scenarios
from shrinklab.models.registry import load_model
from shrinklab.studies.worlds import HETERO_STRESS

#: Scenarios outside the grids and the training ranges (the exploration's twelve).
OUTSIDE_GRIDS: list[dict[str, Any]] = [
    {"name": "factor hetero1.2 p60 n120", "family": "factor", "p": 60, "n": 120, "hetero": 1.2},
    {"name": "block hetero1.0 p50 n100", "family": "block", "p": 50, "n": 100, "hetero": 1.0},
    {"name": "Toeplitz .9 p100 n50", "family": "toeplitz", "p": 100, "n": 50, "rho": 0.9},
    {"name": "1/3/10 p400 n40", "family": "spectrum_1_3_10", "p": 400, "n": 40},
    {"name": "dominant t3 p100 n60", "family": "dominant_factor", "p": 100, "n": 60, "df": 3},
    {"name": "lognormal p50 n500", "family": "lognormal", "p": 50, "n": 500},
    {"name": "8-factor p300 n150", "family": "factor", "p": 300, "n": 150, "n_factors": 8},
    {"name": "near-singular p80 n40", "family": "near_singular", "p": 80, "n": 40},
    {"name": "diversified hetero1.0 p30 n60", "family": "diversified", "p": 30, "n": 60,
     "hetero": 1.0},
    {"name": "market+sectors t4 p150 n250", "family": "market_sectors", "p": 150, "n": 250,
     "df": 4},
    {"name": "regime shift p40 n120", "family": "regime_shift", "p": 40, "n": 120},
    {"name": "1/3/10 p20 n15", "family": "spectrum_1_3_10", "p": 20, "n": 15},
]  # fmt: skip


def stress_grid() -> list[dict[str, Any]]:
    """:data:`OUTSIDE_GRIDS` and the scenarios of 0051 that are not among them."""
    names = {s["name"] for s in OUTSIDE_GRIDS}
    return OUTSIDE_GRIDS + [s for s in HETERO_STRESS if s["name"] not in names]


def compare(result: Mapping[str, Any]) -> dict[str, Any]:
    """One scenario's row from :func:`shrinklab.evaluation.scenarios.evaluate_scenario`'s
    ``result``: its PRIAL comparison as that function computes it (the learned model, the
    best classical estimator by PRIAL and the paired difference learned − best with its
    SE), and the mean per-replication loss ratio to the sample covariance of the learned
    model and of the best classical estimator by that ratio, with the paired difference
    best − learned and its SE (positive: the learned model ahead on both measures)."""
    learned = scenarios.LEARNED
    best_p = result["best_classical"]
    L = {
        k: np.asarray(result["losses"][k], dtype=np.float64)
        for k in (learned, *scenarios.CLASSICAL)
    }
    d = np.asarray(result["losses"]["sample"], dtype=np.float64)
    if np.any(d <= 0):
        raise ValueError("the sample covariance's loss must be positive in every replication")
    ratio = {k: float(np.mean(v / d)) for k, v in L.items()}
    best_r = min(scenarios.CLASSICAL, key=ratio.get)
    r = (L[best_r] - L[learned]) / d
    return {
        "prial": result["prial"][learned], "prial_best": best_p,
        "prial_best_value": result["prial"][best_p],
        "prial_diff": result["diff_best"][learned], "prial_diff_se": result["diff_best_se"][learned],
        "ratio": ratio[learned], "ratio_best": best_r, "ratio_best_value": ratio[best_r],
        "ratio_diff": float(r.mean()), "ratio_diff_se": float(r.std(ddof=1) / math.sqrt(len(r))),
    }  # fmt: skip


def score(model: Any, specs: Sequence[Mapping[str, Any]], n_reps: int, seed: int) -> pd.DataFrame:
    """:func:`compare` for each scenario of ``specs`` (replications seeded as the grids'),
    with ``miss_prial`` / ``miss_ratio``: the learned model more than one SE behind."""
    if int(n_reps) < 2:
        raise ValueError(f"n_reps must be >= 2 (standard errors), got {n_reps}")
    rows = {}
    for spec in specs:
        name = scenarios.scenario_name(spec)
        res = scenarios.evaluate_scenario(
            spec, model, int(n_reps), scenarios.scenario_seed(seed, name)
        )
        rows[name] = compare(res)
    out = pd.DataFrame.from_dict(rows, orient="index")
    out["miss_prial"] = out["prial_diff"] < -out["prial_diff_se"]
    out["miss_ratio"] = out["ratio_diff"] < -out["ratio_diff_se"]
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="models/final.pt")
    ap.add_argument("--n-reps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=4243)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    table = score(load_model(a.model), stress_grid(), a.n_reps, a.seed)
    pd.set_option("display.width", 250)
    print(table.round(4).to_string())
    print(f"misses by PRIAL: {int(table.miss_prial.sum())} of {len(table)}; "
          f"by the mean loss ratio: {int(table.miss_ratio.sum())} of {len(table)}")  # fmt: skip


if __name__ == "__main__":
    main()
