"""Decision 0059's rule (docs/decisions/0059-heterogeneous-volatilities-full-size.md):
two pipeline runs' ``models/final.pt``, A and B, on four parts of validation data at
seeds no earlier study read:

1. 0051's stress scenarios (``worlds.HETERO_STRESS``), seed 2127, 100 replications:
   paired PRIAL gain B − A, mean over the six (SE = √(Σ SEᵢ²) / 6);
2. cross-universe folds (``FoldSpec(seed=2129)``, pre-2016): per-fold volatility relative
   to Ledoit–Wolf, B − A, mean ± SE over the folds (``compression.fold_delta``);
3. A's synthetic validation worlds: normalised PRIAL of B minus A;
4. the selection and wide grids, seed 2131, 100 replications: paired PRIAL gain B − A,
   mean over the 14 (SE = √(Σ SEᵢ²) / 14).

Never reads 2016–2022 or the public grid. ``A`` and ``B`` are pipeline run roots; the
validation worlds and the returns are read from ``A``. Writes ``<out>/*.csv`` and
``<out>/rule.json``.

    OMP_NUM_THREADS=1 python scripts/hetero_full_rule.py <root A> <root B> --out DIR
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import pandas as pd

from shrinklab.evaluation import backtest, compression
from shrinklab.models.network import predict_numpy
from shrinklab.models.registry import load_model
from shrinklab.studies import worlds
from shrinklab.studies.deploy_rule import FoldSpec, fold_rows, load_rule_data
from shrinklab.studies.selection_grid import SELECTION_GRID, WIDE_GRID

STRESS_SEED, FOLD_SEED, GRID_SEED = 2127, 2129, 2131  # fresh for 0059
N_REPS = 100
MIN_STRESS_GAIN = 0.5  # PRIAL points: one full-size run per arm (see the record)


def scenario_part(
    models: dict, specs: list[dict], seed: int, n_reps: int
) -> tuple[float, float, pd.DataFrame]:
    """Per-scenario paired PRIAL gain B − A (one pair) and its mean over the scenarios,
    whose SE combines the scenarios' independent SEs."""
    rows = worlds.scenario_gains_by_rep([(models["A"], models["B"])], specs, n_reps, seed)
    m = float(rows["prial_gain_B_minus_A"].mean())
    se = math.sqrt(float((rows["se"] ** 2).sum())) / len(rows)
    return m, se, rows.drop(columns="rep")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root_a")
    ap.add_argument("root_b")
    ap.add_argument("--out", required=True)
    ap.add_argument("--n-reps", type=int, default=N_REPS, help="replications (the rule: 100)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    models = {
        k: load_model(f"{r}/models/final.pt") for k, r in (("A", args.root_a), ("B", args.root_b))
    }
    res: dict = {}

    s_m, s_se, stress = scenario_part(models, worlds.HETERO_STRESS, STRESS_SEED, args.n_reps)
    stress.to_csv(out / "stress.csv", index=False)
    print(stress.round(3).to_string(), flush=True)
    res.update(
        stress_gain=s_m, stress_se=s_se, rule1=bool(s_m >= MIN_STRESS_GAIN and s_m - s_se > 0)
    )
    print(
        f"1. stress: B - A = {s_m:+.3f} +- {s_se:.3f} -> {res['rule1']}  ({time.time() - t0:.0f} s)",
        flush=True,
    )

    data = load_rule_data(f"{args.root_a}/data", cut_test=True)
    lw = {"ledoit_wolf": backtest.classical_estimators()["ledoit_wolf"]}
    rows = fold_rows(data, models, folds=FoldSpec(seed=FOLD_SEED), classical=lw)
    rows.to_csv(out / "folds.csv", index=False)
    f_m, f_se, n = compression.fold_delta(rows, "B", "A")
    res.update(folds_delta=f_m, folds_se=f_se, n_folds=n, rule2=bool(f_m <= f_se))
    print(rows.groupby(["window", "estimator"])["rel_vol"].mean().unstack().round(3).to_string())
    print(
        f"2. folds: B - A = {f_m:+.4f} +- {f_se:.4f} over {n} folds -> {res['rule2']}  ({time.time() - t0:.0f} s)",
        flush=True,
    )

    w = {k: predict_numpy(m, data.valid.features).intensities for k, m in models.items()}
    v_d, v_se = compression.normalised_prial_delta(w["B"], w["A"], data.valid)
    res.update(valid_delta=v_d, valid_se=v_se, rule3=bool(v_d >= -2.0))
    print(f"3. validation worlds: B - A = {v_d:+.3f} +- {v_se:.3f} -> {res['rule3']}", flush=True)

    g_m, g_se, grids = scenario_part(models, SELECTION_GRID + WIDE_GRID, GRID_SEED, args.n_reps)
    grids.to_csv(out / "grids.csv", index=False)
    print(grids.round(3).to_string())
    res.update(grids_gain=g_m, grids_se=g_se, rule4=bool(g_m >= -g_se))
    print(f"4. grids: B - A = {g_m:+.3f} +- {g_se:.3f} -> {res['rule4']}", flush=True)

    res["adopt_B"] = all(res[f"rule{i}"] for i in range(1, 5))
    res["seconds"] = round(time.time() - t0)
    (out / "rule.json").write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
