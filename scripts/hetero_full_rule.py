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
validation worlds and the returns are read from the first ``A``. Writes ``<out>/*.csv``
and ``<out>/rule.json``.

    OMP_NUM_THREADS=1 python scripts/hetero_full_rule.py <root A> <root B> --out DIR

Decision 0060 (docs/decisions/0060-heterogeneous-volatilities-over-seeds.md) passes
several pairs, one per training-seed set, and its own seeds (2133 / 2135 / 2137): each
pair is scored as above, and the rule reads the mean of each part over the pairs with
its SE over the pairs::

    python scripts/hetero_full_rule.py A0 B0 A1 B1 A2 B2 --seeds 2133,2135,2137 --out DIR

Decision 0061 (docs/decisions/0061-module-rules-fold-margin.md) compares, per seed set,
the ``final.pt`` of the compress stage's module rules as they are (A) and with a fold
margin of 0.05 % (B) on the same four parts, with its own thresholds (``--rule 0061``,
:func:`verdict_0061`)::

    python scripts/hetero_full_rule.py F1 G1 F2 G2 F3 G3 --seeds 2139,2141,2143 --rule 0061 --out DIR
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from shrinklab.evaluation import backtest, compression
from shrinklab.models.network import predict_numpy
from shrinklab.models.registry import load_model
from shrinklab.studies import worlds
from shrinklab.studies.deploy_rule import FoldSpec, fold_rows, load_rule_data
from shrinklab.studies.selection_grid import SELECTION_GRID, WIDE_GRID

STRESS_SEED, FOLD_SEED, GRID_SEED = 2127, 2129, 2131  # fresh for 0059 (0060: 2133, 2135, 2137)
N_REPS = 100
MIN_STRESS_GAIN = 0.5  # PRIAL points: one full-size run per arm (see the record)


def verdict(res: dict) -> dict:
    """``res`` with the four parts of the rule (0059's, and 0060's on means over pairs)
    applied to its ``stress_gain``/``stress_se``, ``folds_delta``/``folds_se``,
    ``valid_delta`` and ``grids_gain``/``grids_se``, and ``adopt_B``."""
    res = dict(res)
    res["rule1"] = bool(
        res["stress_gain"] >= MIN_STRESS_GAIN and res["stress_gain"] > res["stress_se"]
    )
    res["rule2"] = bool(res["folds_delta"] <= res["folds_se"])
    res["rule3"] = bool(res["valid_delta"] >= -2.0)
    res["rule4"] = bool(res["grids_gain"] >= -res["grids_se"])
    res["adopt_B"] = all(res[f"rule{i}"] for i in range(1, 5))
    return res


FOLD_MARGIN = 0.05  # % of Ledoit–Wolf's volatility: 0061's non-inferiority margin


def verdict_0061(res: dict) -> dict:
    """0061's four parts on the same quantities as :func:`verdict` (B = the margin's
    ``final.pt``): folds non-inferior (mean + 1 SE at most :data:`FOLD_MARGIN`), grids
    gain by more than one SE, validation worlds and stress not more than one SE lower."""
    res = dict(res)
    res["rule1"] = bool(res["folds_delta"] + res["folds_se"] <= FOLD_MARGIN)
    res["rule2"] = bool(res["grids_gain"] > 0 and res["grids_gain"] > res["grids_se"])
    res["rule3"] = bool(res["valid_delta"] >= -res["valid_se"])
    res["rule4"] = bool(res["stress_gain"] >= -res["stress_se"])
    res["adopt_B"] = all(res[f"rule{i}"] for i in range(1, 5))
    return res


RULES = {"0059": verdict, "0061": verdict_0061}


def scenario_part(
    models: dict, specs: list[dict], seed: int, n_reps: int
) -> tuple[float, float, pd.DataFrame]:
    """Per-scenario paired PRIAL gain B − A (one pair) and its mean over the scenarios,
    whose SE combines the scenarios' independent SEs."""
    rows = worlds.scenario_gains_by_rep([(models["A"], models["B"])], specs, n_reps, seed)
    m = float(rows["prial_gain_B_minus_A"].mean())
    se = math.sqrt(float((rows["se"] ** 2).sum())) / len(rows)
    return m, se, rows.drop(columns="rep")


def score_pair(
    root_a: str,
    root_b: str,
    data,
    out: Path,
    n_reps: int,
    seeds: tuple[int, int, int],
    rule=verdict,
) -> dict:
    """0059's four parts for one pair of run roots (``data``: the returns and validation
    worlds, :func:`load_rule_data`); per-part tables written to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    stress_seed, fold_seed, grid_seed = seeds
    t0 = time.time()
    models = {k: load_model(f"{r}/models/final.pt") for k, r in (("A", root_a), ("B", root_b))}
    res: dict = {"A": root_a, "B": root_b}

    s_m, s_se, stress = scenario_part(models, worlds.HETERO_STRESS, stress_seed, n_reps)
    stress.to_csv(out / "stress.csv", index=False)
    print(stress.round(3).to_string(), flush=True)
    res.update(stress_gain=s_m, stress_se=s_se)
    print(f"1. stress: B - A = {s_m:+.3f} +- {s_se:.3f}", flush=True)

    lw = {"ledoit_wolf": backtest.classical_estimators()["ledoit_wolf"]}
    rows = fold_rows(data, models, folds=FoldSpec(seed=fold_seed), classical=lw)
    rows.to_csv(out / "folds.csv", index=False)
    f_m, f_se, n = compression.fold_delta(rows, "B", "A")
    res.update(folds_delta=f_m, folds_se=f_se, n_folds=n)
    print(rows.groupby(["window", "estimator"])["rel_vol"].mean().unstack().round(3).to_string())
    print(f"2. folds: B - A = {f_m:+.4f} +- {f_se:.4f} over {n} folds", flush=True)

    w = {k: predict_numpy(m, data.valid.features).intensities for k, m in models.items()}
    v_d, v_se = compression.normalised_prial_delta(w["B"], w["A"], data.valid)
    res.update(valid_delta=v_d, valid_se=v_se)
    print(f"3. validation worlds: B - A = {v_d:+.3f} +- {v_se:.3f}", flush=True)

    g_m, g_se, grids = scenario_part(models, SELECTION_GRID + WIDE_GRID, grid_seed, n_reps)
    grids.to_csv(out / "grids.csv", index=False)
    print(grids.round(3).to_string())
    res.update(grids_gain=g_m, grids_se=g_se)
    print(f"4. grids: B - A = {g_m:+.3f} +- {g_se:.3f}", flush=True)
    res["seconds"] = round(time.time() - t0)
    return rule(res)


def over_pairs(pairs: list[dict], rule=verdict) -> dict:
    """0060's rule (0061's with ``rule=verdict_0061``): ``rule`` on each part's mean over
    the pairs, SE over the pairs (:func:`shrinklab.studies.worlds.paired`)."""
    res: dict = {"pairs": len(pairs)}
    for value, se in (
        ("stress_gain", "stress_se"),
        ("folds_delta", "folds_se"),
        ("valid_delta", "valid_se"),
        ("grids_gain", "grids_se"),
    ):
        res[value], res[se] = worlds.paired(np.array([p[value] for p in pairs], dtype=float))
    return rule(res)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("roots", nargs="+", help="run roots, in pairs: A B [A B ...]")
    ap.add_argument("--out", required=True)
    ap.add_argument("--n-reps", type=int, default=N_REPS, help="replications (the rule: 100)")
    ap.add_argument(
        "--seeds",
        default=f"{STRESS_SEED},{FOLD_SEED},{GRID_SEED}",
        help="stress, fold and grid seeds (0059's by default)",
    )
    ap.add_argument("--rule", choices=sorted(RULES), default="0059", help="whose thresholds")
    args = ap.parse_args()
    if len(args.roots) % 2:
        ap.error("run roots come in pairs: A B [A B ...]")
    seeds = tuple(int(s) for s in args.seeds.split(","))
    if len(seeds) != 3:
        ap.error("--seeds takes three integers: stress, folds, grids")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rule = RULES[args.rule]
    data = load_rule_data(f"{args.roots[0]}/data", cut_test=True)
    pairs = []
    for i in range(0, len(args.roots), 2):
        sub = out if len(args.roots) == 2 else out / f"pair_{i // 2}"
        pairs.append(
            score_pair(args.roots[i], args.roots[i + 1], data, sub, args.n_reps, seeds, rule)
        )
        print(json.dumps(pairs[-1], indent=1), flush=True)
    res = pairs[0] if len(pairs) == 1 else {**over_pairs(pairs, rule), "by_pair": pairs}
    (out / "rule.json").write_text(json.dumps(res, indent=1) + "\n")
    if len(pairs) > 1:
        print(json.dumps({k: v for k, v in res.items() if k != "by_pair"}, indent=1))


if __name__ == "__main__":
    main()
