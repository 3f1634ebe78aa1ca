"""Decision 0075's study (validation data only)::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/factor_sole_rule.py <root> [--workers 2] [--out DIR]

``root`` is a pipeline run's repository root whose ``final.pt`` is decision 0068's switch.
The candidate lets the factor expert serve alone where the gate's probability of
``factor`` exceeds a threshold and p/n is at most 4
(:func:`shrinklab.studies.factor_sole.with_factor_sole`).

1. Selection (:func:`shrinklab.studies.factor_sole.select_0075`): every threshold of
   ``--thresholds`` scored on the synthetic validation worlds (normalised PRIAL against
   ``final.pt``) and on :data:`~shrinklab.studies.factor_sole.FACTOR_MAP` at
   ``--select-seed`` (mean PRIAL gain).
2. Judgement at fresh seeds (:func:`shrinklab.studies.factor_sole.rule_0075`): the
   factor map, the selection and wide grids (fresh replications, and their failures at
   the grids' own seed), stress scenarios, cross-universe folds with the ETF fold, fund
   universes, Ken French's universes and the validation worlds.

Writes ``<out>/*.csv`` and ``summary.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from shrinklab.evaluation import compression
from shrinklab.models.network import predict_numpy
from shrinklab.studies import selection_grid, worlds
from shrinklab.studies.factor_sole import (
    FACTOR_MAP,
    rule_0075,
    select_0075,
    sole_share,
    with_factor_sole,
)
from shrinklab.studies.gaussian_move import map_misses
from shrinklab.studies.switch_parts import fresh_universes, load_switched_run, score_switch


def select(final, valid, thresholds, reps, seed):
    """Step 1: ``(chosen row or None, table, final.pt's map table)``."""
    w0 = predict_numpy(final, valid.features).intensities
    base = selection_grid.score(final, reps, grid=FACTOR_MAP, seed=seed)
    rows = []
    for t in thresholds:
        m = with_factor_sole(final, t)
        d, d_se = compression.normalised_prial_delta(
            predict_numpy(m, valid.features).intensities, w0, valid
        )
        tab = selection_grid.score(m, reps, grid=FACTOR_MAP, seed=seed)
        rows.append({
            "threshold": t, "valid_delta": d, "valid_se": d_se,
            "valid_sole": sole_share(m, valid.features),
            "misses": map_misses(tab), "gain": float((tab["prial"] - base["prial"]).mean()),
        })  # fmt: skip
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    return select_0075(table), table, base


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--thresholds", default="0.5,0.6,0.7,0.8")
    ap.add_argument("--select-seed", type=int, default=2577)
    ap.add_argument("--map-seed", type=int, default=2579)
    ap.add_argument("--grid-seed", type=int, default=2581)
    ap.add_argument("--stress-seed", type=int, default=2583)
    ap.add_argument("--fold-seed", type=int, default=2585)
    ap.add_argument("--fund-seed", type=int, default=2587)
    ap.add_argument("--reps", type=int, default=100, help="replications per scenario")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="build/studies/factor_sole")
    a = ap.parse_args(argv)
    t0, out = time.time(), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    pd.set_option("display.width", 200)

    final, data = load_switched_run(Path(a.root))
    thresholds = [float(t) for t in a.thresholds.split(",")]
    choice, table, base_map = select(final, data.valid, thresholds, a.reps, a.select_seed)
    table.to_csv(out / "selection.csv", index=False)
    base_map.to_csv(out / "selection_map_final.csv")
    print(table.round(4).to_string(index=False))
    print(f"{time.time() - t0:.0f} s: selection -> {None if choice is None else dict(choice)}")
    summary = {**{k: v for k, v in vars(a).items() if k.endswith("seed")}, "reps": a.reps,
               "choice": None if choice is None else float(choice["threshold"])}  # fmt: skip
    if choice is not None:
        cand = with_factor_sole(final, float(choice["threshold"]))
        rows = worlds.scenario_gains_by_rep([(final, cand)], FACTOR_MAP, a.reps, a.map_seed)
        rows.to_csv(out / "factor.csv", index=False)
        print(rows.drop(columns="rep").round(3).to_string(index=False), flush=True)
        misses = tuple(
            map_misses(selection_grid.score(m, a.reps, grid=FACTOR_MAP, seed=a.map_seed))
            for m in (final, cand)
        )
        fails = [map_misses(selection_grid.grid_scores(m, a.reps)[1]) for m in (final, cand)]
        print(f"{time.time() - t0:.0f} s: map; misses {misses}, grid fails {fails}", flush=True)
        funds_u, folds_u = fresh_universes(data, a.fund_seed, a.fold_seed)
        p = score_switch(
            final, cand, funds_u, folds_u, data.valid, grid_seed=a.grid_seed,
            stress_seed=a.stress_seed, reps=a.reps, workers=a.workers, out=out,
        )  # fmt: skip
        summary |= rule_0075(
            rows, misses, p["grids"], tuple(fails), p["stress"],
            p["folds"], p["funds"], p["french"], p["valid"],
        )  # fmt: skip
        summary["valid_sole"] = sole_share(cand, data.valid.features)
    else:
        summary["adopt"] = False
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    print(json.dumps(summary, indent=2, default=float))
    print(f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
