"""Decision 0073's study (validation data only)::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/gaussian_move_rule.py <root> [--workers 2] [--out DIR]

``root`` is a pipeline run's repository root whose ``final.pt`` is decision 0068's switch.
The candidate moves a share ``s`` of the identity target's intensity to the QIS target on
the windows whose kurtosis pre-test statistic is at most ``z`` and its normal-theory SE at
most ``se``
(:func:`shrinklab.studies.gaussian_move.with_gaussian_move`).

1. Selection (:func:`shrinklab.studies.gaussian_move.select_0073`): every ``(s, z, se)``
   of ``--shares`` × ``--zs`` × ``--ses`` scored on the synthetic validation worlds (normalised PRIAL
   against ``final.pt``) and on :data:`~shrinklab.studies.gaussian_move.GAUSSIAN_MAP`
   at ``--select-seed`` (misses against the best classical estimator, mean PRIAL gain).
2. Judgement at fresh seeds (:func:`shrinklab.studies.gaussian_move.rule_0073`): the
   Gaussian map and :data:`~shrinklab.studies.gaussian_move.TAILED_MAP`, the selection
   and wide grids (fresh replications, and their failures at the grids' own seed),
   stress scenarios, cross-universe folds with the ETF fold, fund universes, Ken French's
   universes and the validation worlds.

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
from shrinklab.studies.gaussian_move import (
    GAUSSIAN_MAP,
    TAILED_MAP,
    fired_share,
    map_misses,
    rule_0073,
    select_0073,
    with_gaussian_move,
)
from shrinklab.studies.switch_parts import fresh_universes, load_switched_run, score_switch


def map_table(model, specs, reps, seed):
    """:func:`selection_grid.score` of ``model`` on ``specs``."""
    return selection_grid.score(model, reps, grid=specs, seed=seed)


def select(final, valid, shares, zs, ses, reps, seed):
    """Step 1: ``(chosen row or None, table, final.pt's map table)``."""
    w0 = predict_numpy(final, valid.features).intensities
    base = map_table(final, GAUSSIAN_MAP, reps, seed)
    rows = []
    for s, z, se_max in ((s, z, e) for s in shares for z in zs for e in ses):
        m = with_gaussian_move(final, s, z, se_max)
        d, d_se = compression.normalised_prial_delta(
            predict_numpy(m, valid.features).intensities, w0, valid
        )
        t = map_table(m, GAUSSIAN_MAP, reps, seed)
        rows.append({
            "share": s, "z": z, "se": se_max, "valid_delta": d, "valid_se": d_se,
            "valid_fired": fired_share(m, valid.features),
            "misses": map_misses(t), "gain": float((t["prial"] - base["prial"]).mean()),
        })  # fmt: skip
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    return select_0073(table, map_misses(base)), table, base


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--shares", default="0.25,0.5,0.75")
    ap.add_argument("--zs", default="2")
    ap.add_argument("--ses", default="0.025,0.05")
    ap.add_argument("--select-seed", type=int, default=2471)
    ap.add_argument("--map-seed", type=int, default=2473)
    ap.add_argument("--tailed-seed", type=int, default=2475)
    ap.add_argument("--grid-seed", type=int, default=2477)
    ap.add_argument("--stress-seed", type=int, default=2479)
    ap.add_argument("--fold-seed", type=int, default=2481)
    ap.add_argument("--fund-seed", type=int, default=2483)
    ap.add_argument("--reps", type=int, default=100, help="replications per scenario")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="build/studies/gaussian_move")
    a = ap.parse_args(argv)
    t0, out = time.time(), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    pd.set_option("display.width", 200)

    final, data = load_switched_run(Path(a.root))
    shares = [float(s) for s in a.shares.split(",")]
    zs = [float(z) for z in a.zs.split(",")]
    ses = [float(se) for se in a.ses.split(",")]
    choice, table, base_map = select(final, data.valid, shares, zs, ses, a.reps, a.select_seed)
    table.to_csv(out / "selection.csv", index=False)
    base_map.to_csv(out / "selection_map_final.csv")
    print(table.round(4).to_string(index=False))
    print(f"{time.time() - t0:.0f} s: selection -> {None if choice is None else dict(choice)}")
    summary = {**{k: v for k, v in vars(a).items() if k.endswith("seed")}, "reps": a.reps,
               "choice": None if choice is None else
               {k: float(choice[k]) for k in ("share", "z", "se")}}  # fmt: skip
    if choice is not None:
        cand = with_gaussian_move(final, *(float(choice[k]) for k in ("share", "z", "se")))
        maps = {}
        for name, specs, seed in (("gaussian", GAUSSIAN_MAP, a.map_seed),
                                  ("tailed", TAILED_MAP, a.tailed_seed)):  # fmt: skip
            rows = worlds.scenario_gains_by_rep([(final, cand)], specs, a.reps, seed)
            rows.to_csv(out / f"{name}.csv", index=False)
            print(rows.drop(columns="rep").round(3).to_string(index=False), flush=True)
            maps[name] = rows
        misses = tuple(
            map_misses(map_table(m, GAUSSIAN_MAP, a.reps, a.map_seed)) for m in (final, cand)
        )
        fails = [map_misses(selection_grid.grid_scores(m, a.reps)[1]) for m in (final, cand)]
        print(f"{time.time() - t0:.0f} s: maps; misses {misses}, grid fails {fails}", flush=True)
        funds_u, folds_u = fresh_universes(data, a.fund_seed, a.fold_seed)
        p = score_switch(
            final, cand, funds_u, folds_u, data.valid, grid_seed=a.grid_seed,
            stress_seed=a.stress_seed, reps=a.reps, workers=a.workers, out=out,
        )  # fmt: skip
        summary |= rule_0073(
            maps["gaussian"], misses, maps["tailed"], p["grids"], tuple(fails), p["stress"],
            p["folds"], p["funds"], p["french"], p["valid"],
        )  # fmt: skip
        summary["valid_fired"] = fired_share(cand, data.valid.features)
    else:
        summary["adopt"] = False
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    print(json.dumps(summary, indent=2, default=float))
    print(f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
