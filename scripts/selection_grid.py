"""The selection grid: scenarios for model choices that the public grid must not make.

Ten scenarios chosen to differ from the public grid of ``params.yaml`` (other p/n,
spectra, factor counts, tails and correlations, and the block and discrete families
the public grid lacks), 100 replications, seed 2026. A model is scored as the
evaluation's goal scores it: PRIAL (Ledoit & Wolf 2022) per scenario, the paired
difference to the scenario's best classical estimator with its standard error, and
``fails``, the number of scenarios more than one SE below it.
:mod:`compare_training_variants` uses it to choose between training variants; run
on its own it scores a model file (network or ensemble)::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/selection_grid.py [models/final.pt]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

from shrinklab import MLShrinkageCovariance
from shrinklab.evaluation import scenarios as evaluate

ROOT = Path(__file__).resolve().parents[1]
SELECTION_SEED = 2026
SELECTION_GRID: list[dict[str, Any]] = [
    {"name": "1/3/10 p100 n50", "family": "spectrum_1_3_10", "p": 100, "n": 50},
    {"name": "lognormal p200 n400", "family": "lognormal", "p": 200, "n": 400},
    {"name": "lognormal s.7 p60 n120", "family": "lognormal", "p": 60, "n": 120, "sigma_log": 0.7},
    {"name": "5-factor p100 n200", "family": "factor", "p": 100, "n": 200, "n_factors": 5},
    {"name": "3-factor t4 p80 n160", "family": "factor", "p": 80, "n": 160, "df": 4},
    {"name": "Toeplitz .3 p150 n100", "family": "toeplitz", "p": 150, "n": 100, "rho": 0.3},
    {"name": "Toeplitz .7 p60 n40", "family": "toeplitz", "p": 60, "n": 40, "rho": 0.7},
    {"name": "S&P p30 n60 t4", "family": "sp500", "p": 30, "n": 60, "df": 4},
    {"name": "block p100 n80", "family": "block", "p": 100, "n": 80},
    {"name": "discrete p120 n240", "family": "discrete", "p": 120, "n": 240},
]


def score(model: Any, n_reps: int = 100, grid: list[dict[str, Any]] | None = None) -> pd.DataFrame:
    """One row per scenario of ``grid`` (default :data:`SELECTION_GRID`): ``prial``,
    ``se``, ``best_classical``, its PRIAL, ``diff`` (learned − best, paired),
    ``diff_se``, ``fail`` and the oracle's PRIAL."""
    grid = SELECTION_GRID if grid is None else grid
    df = evaluate.evaluate_grid(grid, model, n_reps=n_reps, seed=SELECTION_SEED)
    learned = df[df.estimator == "learned"].set_index("scenario")
    prial = df.pivot(index="scenario", columns="estimator", values="prial")
    out = pd.DataFrame(
        {
            "prial": learned.prial,
            "se": learned.se,
            "best_classical": learned.best_classical,
            "prial_best_classical": pd.Series(
                {s: prial.loc[s, b] for s, b in learned.best_classical.items()}
            ),
            "diff": learned.diff_best_classical,
            "diff_se": learned.diff_se,
            "oracle": prial["oracle"],
        }
    ).loc[[s["name"] for s in grid]]
    out["fail"] = out["diff"] < -out["diff_se"]
    return out


def summary(table: pd.DataFrame) -> dict[str, float]:
    """``sel_fails``, ``sel_mean_prial`` and each scenario's difference to the best."""
    out = {"sel_fails": int(table["fail"].sum()), "sel_mean_prial": float(table["prial"].mean())}
    return out | {f"sel_diff_{s}": float(v) for s, v in table["diff"].items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", nargs="?", default="models/final.pt")
    ap.add_argument("--n-reps", type=int, default=100)
    args = ap.parse_args()
    model = MLShrinkageCovariance.from_pretrained(ROOT / args.model).model_
    table = score(model, args.n_reps)
    print(table.round(3).to_string())
    best, oracle = table["prial_best_classical"].mean(), table["oracle"].mean()
    print(
        f"\n{args.model}: {int(table['fail'].sum())} of {len(table)} scenarios more than one SE "
        f"below the best classical estimator; mean PRIAL {table['prial'].mean():.2f} "
        f"(best classical {best:.2f}, oracle {oracle:.2f}, "
        f"{table['prial'].mean() / oracle:.1%} of the oracle); {args.n_reps} replications"
    )


if __name__ == "__main__":
    main()
