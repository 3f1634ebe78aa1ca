"""Decision 0067's study (validation data only)::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/fund_switch_rule.py <root> [--workers 2] [--out DIR]

``root`` is a pipeline run's repository root (``params.yaml``, ``data/processed/``,
``models/{pretrained,ensemble,final}.pt``). Compares ``final.pt`` (F) with the two-class
switch (S, :func:`shrinklab.studies.fund_switch.deployed_switch`: windows that a
quadratic discriminant calls fund-like rather than stock-like get ``final.pt`` with the
pretrained general network). Parts, at the seeds of the decision record: fresh fund
universes; asset-disjoint fits (:func:`shrinklab.studies.fund_switch.disjoint_job`, in
``--workers`` processes); fresh cross-universe folds; Ken French's universes; the
selection and wide grids and the stress scenarios; the synthetic validation worlds. Then
:func:`shrinklab.studies.fund_switch.rule_0067` (decision 0068 runs the same rule with
``--synthetic-class diversified,dominant_factor,resampled``: those training worlds as a
third class that must be less likely than the funds too). Writes ``<out>/*.csv`` and
``summary.json``. About 15 min with two workers on the 2-vCPU VM.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from shrinklab.core.features import FEATURE_NAMES
from shrinklab.data.dataset import TrainingSet
from shrinklab.models.registry import load_model
from shrinklab.models.switched import before_switch
from shrinklab.studies.deploy_rule import load_rule_data
from shrinklab.studies.disjoint_finetune import DisjointSpec, half_splits
from shrinklab.studies.domain_switch import window_features
from shrinklab.studies.fund_switch import (
    deployed_switch,
    disjoint_job,
    rule_0067,
    synthetic_features,
)
from shrinklab.studies.switch_parts import fresh_universes, score_switch
from shrinklab.training.parallel import map_in_processes


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--class-seed", type=int, default=2311, help="the discriminant's funds")
    ap.add_argument("--fund-seed", type=int, default=2301)
    ap.add_argument("--disjoint-seed", type=int, default=2303)
    ap.add_argument("--disjoint-splits", type=int, default=2)
    ap.add_argument("--disjoint-fund-seed", type=int, default=2313)
    ap.add_argument("--fold-seed", type=int, default=2305)
    ap.add_argument("--grid-seed", type=int, default=2307)
    ap.add_argument("--stress-seed", type=int, default=2309)
    ap.add_argument(
        "--synthetic-class",
        default="",
        help="comma-separated training-world families as a third class (decision 0068)",
    )
    ap.add_argument("--reps", type=int, default=100, help="replications per scenario")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="build/studies/fund_switch")
    a = ap.parse_args(argv)
    t0, out, root = time.time(), Path(a.out), Path(a.root)
    out.mkdir(parents=True, exist_ok=True)
    pd.set_option("display.width", 200)

    final = before_switch(load_model(root / "models" / "final.pt"))
    pretrained = load_model(root / "models" / "pretrained.pt")
    data = load_rule_data(root / "data", cut_test=True)
    synthetic = None
    if a.synthetic_class:
        train = TrainingSet.load(root / "data" / "processed" / "synthetic_train.pt")
        synthetic = synthetic_features(train, a.synthetic_class.split(","))
        print(f"third class: {len(synthetic)} training worlds of {a.synthetic_class}")
    switch = deployed_switch(final, pretrained, data.returns, a.class_seed, synthetic)

    spec = DisjointSpec(seed=a.disjoint_seed, n_splits=a.disjoint_splits)
    splits = half_splits(
        list(data.returns.columns), spec.n_splits, np.random.default_rng(spec.seed)
    )
    jobs = [
        (str(root), s, spec, a.disjoint_fund_seed, str(out / "disjoint"), synthetic) for s in splits
    ]
    disjoint = pd.concat(map_in_processes(disjoint_job, jobs, a.workers), ignore_index=True)
    disjoint.to_csv(out / "disjoint.csv", index=False)
    piv = disjoint.pivot_table(
        index=["family", "window", "split", "fold"], columns="estimator", values="ann_vol"
    )
    rel = (piv["switch"] / piv["final_fit"] - 1.0) * 100.0
    print(rel.groupby(level=["family", "window"]).agg(["mean", "sem", "count"]).round(3))
    print(f"{time.time() - t0:.0f} s: disjoint fits", flush=True)

    funds_u, folds_u = fresh_universes(data, a.fund_seed, a.fold_seed)
    shares = window_features(funds_u + folds_u)
    shares["fund"] = switch.is_far(shares[list(FEATURE_NAMES)].to_numpy()).numpy()
    print("share of windows served by the pretrained network:")
    print(shares.groupby(["family", "window"])["fund"].mean().unstack().round(3))

    p = score_switch(
        final, switch, funds_u, folds_u, data.valid, grid_seed=a.grid_seed,
        stress_seed=a.stress_seed, reps=a.reps, workers=a.workers, out=out,
    )  # fmt: skip
    funds, folds, french, grids, stress, valid = (
        p[k] for k in ("funds", "folds", "french", "grids", "stress", "valid")
    )
    far_valid = p["valid_switched"]

    summary = {**{k: v for k, v in vars(a).items() if k.endswith("seed")}, "reps": a.reps,
               "synthetic_class": a.synthetic_class,
               "valid_fund_share": far_valid,
               **rule_0067(funds, disjoint, folds, french, grids, stress, valid)}  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
