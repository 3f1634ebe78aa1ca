"""Decision 0066's study (validation data only)::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/domain_switch_rule.py <final.pt> <pretrained.pt> \
        <data dir> [--quantile 0.95] [--fold-seed 2269] [--fund-seed 2271] [--grid-seed 2289] \
        [--stress-seed 2291] [--workers 2] [--out DIR]

Compares ``final.pt`` (F) with :class:`shrinklab.studies.domain_switch.DomainSwitch` (S):
windows whose features lie farther from the stock-based folds' windows (the compress
stage's folds, seed 2021, windows 60 / 120 / 250 every 21 days from 1991) than the
``quantile`` of those windows' own distances are served by ``final.pt`` with
``pretrained.pt`` as its general network. Parts: fresh fund universes, fresh
cross-universe folds, Ken French's universes, the selection and wide grids and the stress
scenarios at fresh seeds, the synthetic validation worlds of ``data dir``
(``processed/``); then :func:`shrinklab.studies.domain_switch.rule_0066`. Writes
``<out>/{funds,folds,french,grids,stress}.csv`` and ``summary.json``. About 8 min with
two workers on the 2-vCPU VM.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from shrinklab.core.features import FEATURE_NAMES
from shrinklab.data import universes
from shrinklab.models.registry import load_model
from shrinklab.models.switched import before_switch
from shrinklab.studies.deploy_rule import FoldSpec, load_rule_data
from shrinklab.studies.domain_switch import (
    DomainSwitch,
    FeatureDistance,
    rule_0066,
    window_features,
    with_general,
)
from shrinklab.studies.qis_transfer import fund_universes
from shrinklab.studies.switch_parts import score_switch


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("final")
    ap.add_argument("pretrained")
    ap.add_argument("data", help="a run's data/ folder (processed/ inside)")
    ap.add_argument("--quantile", type=float, default=0.95)
    ap.add_argument("--fold-seed", type=int, default=2269)
    ap.add_argument("--fund-seed", type=int, default=2271)
    ap.add_argument("--fund-draws", type=int, default=4)
    ap.add_argument("--grid-seed", type=int, default=2289)
    ap.add_argument("--stress-seed", type=int, default=2291)
    ap.add_argument("--reps", type=int, default=100, help="replications per scenario")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="build/studies/domain_switch")
    a = ap.parse_args(argv)
    if not 0.5 <= a.quantile < 1:
        ap.error("--quantile must be in [0.5, 1)")
    t0, out = time.time(), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    pd.set_option("display.width", 200)

    final = before_switch(load_model(a.final))
    far = with_general(final, load_model(a.pretrained))
    data = load_rule_data(a.data, cut_test=True)
    spec = FoldSpec()  # the compress stage's folds: the reference of the distance
    reference = universes.cross_universe_folds(
        data.returns, seed=spec.seed, n_splits=spec.n_splits, draws=spec.draws
    )
    ref = window_features(reference, spec.windows)[list(FEATURE_NAMES)].to_numpy()
    distance = FeatureDistance(ref)
    tau = float(np.quantile(distance(ref), a.quantile))
    switch = DomainSwitch(final, far, distance, tau)
    print(f"reference: {len(ref)} windows of {len(reference)} stock-based folds; tau = {tau:.2f}")

    funds_u = fund_universes(a.fund_seed, draws=a.fund_draws)
    folds_u = universes.cross_universe_folds(
        data.returns, data.factor_returns, data.market["index_return"], seed=a.fold_seed
    )
    shares = window_features(funds_u + folds_u, spec.windows)
    shares["far"] = switch.is_far(shares[list(FEATURE_NAMES)].to_numpy()).numpy()
    print("share of windows served by the pretrained network:")
    print(shares.groupby(["family", "window"])["far"].mean().unstack().round(3))

    p = score_switch(
        final, switch, funds_u, folds_u, data.valid, grid_seed=a.grid_seed,
        stress_seed=a.stress_seed, reps=a.reps, workers=a.workers, out=out,
    )  # fmt: skip
    funds, folds, french, grids, stress, valid = (
        p[k] for k in ("funds", "folds", "french", "grids", "stress", "valid")
    )
    far_valid = p["valid_switched"]

    summary = {"quantile": a.quantile, "tau": tau, "fold_seed": a.fold_seed,
               "fund_seed": a.fund_seed, "fund_draws": a.fund_draws, "grid_seed": a.grid_seed,
               "stress_seed": a.stress_seed, "reps": a.reps, "valid_far_share": far_valid,
               **rule_0066(funds, folds, french, grids, stress, valid)}  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
