"""Decisions 0071 and 0072's study (validation data only)::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/stock_shrink_rule.py <root> [--workers 2] [--out DIR]
        [--stock-class folds|single --class-seed S]

``root`` is a pipeline run's repository root whose ``final.pt`` is decision 0068's switch.
The candidate adds :func:`shrinklab.models.switched.towards_diagonal` (``Σ̂ ← (1 − c) Σ̂ +
c·diag(S)``) on the windows that :func:`shrinklab.studies.stock_shrink.stock_discriminant`
(stock class: the compress stage's seed-2021 stock-based folds; other classes: each
family of the training worlds) scores above ``tau``. With ``--stock-class single``
(decision 0072) the stock class is single-stock universes only
(:func:`shrinklab.studies.stock_shrink.single_stock_class`, seed ``--class-seed``), in the
unseen-stock part built from the fit half's stocks.

1. Selection: every ``(c, tau)`` of ``--strengths`` × ``--taus`` whose drop of the
   synthetic validation worlds' normalised PRIAL is at most
   :data:`~shrinklab.studies.stock_shrink.VALID_MARGIN`; among them the one with the
   lowest mean, over the stock-based folds of seed ``--select-seed``, of each fold's
   volatility relative to ``final.pt`` (%, mean over 60 / 120 / 250 days); if none is
   admissible or below zero, stop (keep ``final.pt``).
2. Judgement at fresh seeds: :func:`shrinklab.studies.switch_parts.score_switch` (fresh
   funds, cross-universe folds, Ken French's universes, grids, stress scenarios,
   validation worlds), universes of stocks the gate never saw (``--splits`` random
   half-splits of seed ``--disjoint-seed``: the stock class rebuilt from universes of one
   half, judged on universes of the other; decision 0038's layout), and
   :func:`shrinklab.studies.stock_shrink.rule_0071`.

Writes ``<out>/*.csv`` and ``summary.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from shrinklab.data import dataset, universes
from shrinklab.evaluation import backtest, compression
from shrinklab.evaluation import universe_backtest as ub
from shrinklab.models.network import predict_numpy
from shrinklab.studies.disjoint_finetune import (
    DisjointSpec,
    HalfSplit,
    half_splits,
    held_out_universes,
    split_rows,
)
from shrinklab.studies.fold_parts import fold_means, relative_vols
from shrinklab.studies.stock_shrink import (
    VALID_MARGIN,
    rule_0071,
    single_stock_class,
    stock_discriminant,
    with_stock_shrinkage,
)
from shrinklab.studies.switch_parts import fresh_universes, load_switched_run, score_switch


def select(final, disc, returns, valid, strengths, taus, seed, workers):
    """Step 1: ``((c, tau) or None, table)``."""
    w0 = predict_numpy(final, valid.features).intensities
    cands, rows = {}, []  # cands: row of the table -> its model, for the admissible pairs
    for c in strengths:
        for tau in taus:
            m = with_stock_shrinkage(final, disc, tau, c)
            d, se = compression.normalised_prial_delta(
                predict_numpy(m, valid.features).intensities, w0, valid
            )
            fired = float(m.is_stock(valid.features).double().mean())
            if -d <= VALID_MARGIN:
                cands[len(rows)] = m
            rows.append(
                {"c": c, "tau": tau, "valid_delta": d, "valid_se": se, "valid_fired": fired}
            )
    table = pd.DataFrame(rows)
    table["folds_rel_vol_pct"] = np.nan
    if not cands:
        return None, table
    folds = universes.cross_universe_folds(returns, seed=seed)
    ests = {"ledoit_wolf": backtest.classical_estimators()["ledoit_wolf"]}
    ests |= {"final": backtest.learned_estimator(final)}
    ests |= {f"cand{i}": backtest.learned_estimator(m) for i, m in cands.items()}
    fr = ub.fold_backtest(folds, ests, workers=workers)
    for i in cands:
        table.loc[i, "folds_rel_vol_pct"] = fold_means(fr, f"cand{i}", "final").mean()
    best = table.loc[table["folds_rel_vol_pct"].idxmin()]
    if not best["folds_rel_vol_pct"] < 0:
        return None, table
    return (float(best["c"]), float(best["tau"])), table


def disjoint_rows(final, train_set, returns, c, tau, seed, n_splits, class_seed=None):
    """Step 2's unseen-stock part: per split, the stock class from the fit half's
    universes only (``class_seed`` given: its single-stock subsets, decision 0072); rows
    of ``final`` and ``switch`` on the held-out half's universes."""
    spec = DisjointSpec(seed=seed, n_splits=n_splits)
    out = []
    for split in half_splits(list(returns.columns), n_splits, np.random.default_rng(seed)):
        swapped = HalfSplit(f"{split.name}ref", split.held_out, split.fit)
        if class_seed is None:
            rng = np.random.default_rng([seed, *map(ord, split.name)])
            ref = held_out_universes(returns, swapped, spec, rng)
        else:
            fit = returns.loc[:, list(split.fit)]
            ref = single_stock_class(fit, [class_seed, *map(ord, split.name)])
        cand = with_stock_shrinkage(final, stock_discriminant(train_set, ref), tau, c)
        classical = {"ledoit_wolf": backtest.classical_estimators()["ledoit_wolf"]}
        out.append(
            split_rows(returns, split, spec, {"final": final, "switch": cand}, classical=classical)
        )
    return pd.concat(out, ignore_index=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--strengths", default="0.05,0.1,0.15,0.2,0.3")
    ap.add_argument("--taus", default="5,10,15")
    ap.add_argument("--select-seed", type=int, default=2429)
    ap.add_argument("--fold-seed", type=int, default=2431)
    ap.add_argument("--disjoint-seed", type=int, default=2433)
    ap.add_argument("--splits", type=int, default=2, help="random half-splits (2 fits each)")
    ap.add_argument("--fund-seed", type=int, default=2435)
    ap.add_argument("--grid-seed", type=int, default=2437)
    ap.add_argument("--stress-seed", type=int, default=2439)
    ap.add_argument("--stock-class", choices=("folds", "single"), default="folds")
    ap.add_argument("--class-seed", type=int, default=2441, help="with --stock-class single")
    ap.add_argument("--reps", type=int, default=100, help="replications per scenario")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="build/studies/stock_shrink")
    a = ap.parse_args(argv)
    t0, out, root = time.time(), Path(a.out), Path(a.root)
    out.mkdir(parents=True, exist_ok=True)
    pd.set_option("display.width", 200)

    final, data = load_switched_run(root)
    train_set = dataset.TrainingSet.load(root / "data" / "processed" / "synthetic_train.pt")
    single = a.stock_class == "single"
    klass = (
        single_stock_class(data.returns, a.class_seed)
        if single
        else universes.cross_universe_folds(data.returns, seed=2021)
    )
    disc = stock_discriminant(train_set, klass)
    strengths = [float(c) for c in a.strengths.split(",")]
    taus = [float(t) for t in a.taus.split(",")]
    choice, table = select(
        final, disc, data.returns, data.valid, strengths, taus, a.select_seed, a.workers
    )
    table.to_csv(out / "selection.csv", index=False)
    print(table.round(4).to_string(index=False))
    print(f"{time.time() - t0:.0f} s: selection -> {choice}", flush=True)
    summary = {**{k: v for k, v in vars(a).items() if k.endswith("seed")}, "reps": a.reps,
               "splits": a.splits, "choice": choice, "stock_class": a.stock_class,
               "class_seed": a.class_seed if single else None}  # fmt: skip
    if choice is not None:
        c, tau = choice
        cand = with_stock_shrinkage(final, disc, tau, c)
        funds_u, folds_u = fresh_universes(data, a.fund_seed, a.fold_seed)
        p = score_switch(
            final, cand, funds_u, folds_u, data.valid, grid_seed=a.grid_seed,
            stress_seed=a.stress_seed, reps=a.reps, workers=a.workers, out=out,
        )  # fmt: skip
        dis = disjoint_rows(
            final, train_set, data.returns, c, tau, a.disjoint_seed, a.splits,
            a.class_seed if single else None,
        )  # fmt: skip
        dis.to_csv(out / "disjoint.csv", index=False)
        print(
            relative_vols(dis, "switch", "final")
            .groupby(level=["family", "window"])
            .agg(["mean", "sem"])
            .round(3)
        )
        summary |= {
            "valid_delta": p["valid"][0], "valid_se": p["valid"][1],
            "valid_fired": float(cand.is_stock(data.valid.features).double().mean()),
            **rule_0071(p["folds"], dis, p["funds"], p["french"], p["grids"], p["stress"]),
        }  # fmt: skip
    else:
        summary["adopt"] = False
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
