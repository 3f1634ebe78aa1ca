"""The learned peer and our recipe on stocks neither has seen (validation data, pre-2016)::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/peer_disjoint.py <root> --seed 2151 \
        --out build/studies/peer_disjoint [--workers 2]

The 2016–2022 test period scores both learned models on the 20 stocks they were trained
on (before 2016). Here decision 0038's asset-disjoint folds
(:mod:`shrinklab.studies.disjoint_finetune`) hold both out: for each of the
``2 · n_splits`` fits, on one half of the stocks

* ``final_fit``: the pretrained network fine-tuned by the ``finetune`` section's recipe
  and assembled as ``final.pt`` is (family experts, the S&P expert fine-tuned by the same
  recipe, the pooled non-market server, the soft mixture), with ``final.pt``'s volatility
  timing (not its guarded Toeplitz expert);
* ``peer_fit``: the learned peer (RIEnet, Bongiorno, Manolakis & Mantegna 2025) trained by
  the ``peer`` section's recipe (:func:`shrinklab.training.rie_network.train_rie_network`);

and every estimator is backtested (GMV, rebalanced every 21 days, up to 2015-12-31) on
universes of the *other* half: the half, derived long-only portfolios of its stocks,
mixtures of both. ``final`` and ``peer_all`` are the run's own ``final.pt`` and
``rie_network.pt``, trained on all 20 stocks: in-sample here, for contrast. ``root`` is a
pipeline run's repository root (``params.yaml``, ``data/processed/``, ``models/``).
Writes ``<out>/rows.csv`` (a rerun reads it back) and prints the family × window table and
the paired differences per fold (mean over the windows of the volatility relative to
Ledoit–Wolf's, %), SE over the folds (they share dates and stocks: a rough guide), then
the same per fit, with the mean and SE over the fits (the peer's fits differ widely). About
22 minutes with two workers on the 2-vCPU VM at the default three permutations.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from shrinklab.core.params import load_section
from shrinklab.evaluation import backtest, compression
from shrinklab.evaluation import universe_backtest as ub
from shrinklab.models.registry import load_model
from shrinklab.studies.disjoint_finetune import (
    DEPLOYED,
    DisjointSpec,
    HalfSplit,
    RunInputs,
    deployed_structure,
    half_splits,
    split_rows,
)
from shrinklab.training.parallel import map_in_processes
from shrinklab.training.rie_network import peer_config, train_rie_network

PAIRS = [
    ("final_fit", "peer_fit"),
    ("final_fit", "ledoit_wolf"),
    ("peer_fit", "ledoit_wolf"),
    ("final_fit", "ensemble"),
    ("final", "peer_all"),
]
"""The paired differences printed (model, reference)."""


def fit_models(
    run: RunInputs, root: str, split: HalfSplit, out: str, final: Any
) -> tuple[Any, Any]:
    """``(final_fit, peer_fit)`` of ``split``'s fit half (module docstring), ``run`` the
    inputs of the pipeline run at ``root`` and ``final`` its ``final.pt`` (whose volatility
    timing ``final_fit`` takes); the fine-tunings' checkpoints in ``out/<split>/final_fit``."""
    folder = Path(out) / split.name / "final_fit"
    network = run.finetune(list(split.fit), folder, DEPLOYED)
    tuned = run.finetune_experts(list(split.fit), folder / "experts", DEPLOYED)
    final_fit = deployed_structure(network, run.teacher, run.gate_mixing, tuned)
    final_fit.extra = dict(final.extra)
    config = peer_config(load_section("peer", Path(root) / "params.yaml"))
    peer_fit = train_rie_network(run.returns.loc[:, list(split.fit)], config).model
    return final_fit, peer_fit


def split_job(job: tuple[str, HalfSplit, DisjointSpec, str]) -> pd.DataFrame:
    """The fold rows of one fit (for :func:`map_in_processes`); the run's inputs read once."""
    root, split, spec, out = job
    torch.set_num_threads(1)
    run = RunInputs.load(root)
    final = load_model(run.models_dir / "final.pt")
    final_fit, peer_fit = fit_models(run, root, split, out, final)
    peer_all = load_model(run.models_dir / "rie_network.pt")
    estimators = {
        **backtest.classical_estimators(),
        "peer_fit": backtest.batched(peer_fit.estimate),
        "peer_all": backtest.batched(peer_all.estimate),
    }
    models = {"final_fit": final_fit, "ensemble": run.teacher, "final": final}
    return split_rows(run.returns, split, spec, models, classical=estimators)


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """The paired differences of :data:`PAIRS` (``delta`` ± ``se`` over ``folds``)."""
    out = []
    for model, ref in PAIRS:
        d, se, k = compression.fold_delta(rows, model, ref)
        out.append({"model": model, "reference": ref, "delta": d, "se": se, "folds": k})
    return pd.DataFrame(out)


NEEDED = ("models/pretrained.pt", "models/ensemble.pt", "models/final.pt", "models/rie_network.pt")
"""The run's files the fits read besides ``params.yaml`` and ``data/processed/``."""


def missing_files(root: str | Path) -> list[str]:
    """Which of :data:`NEEDED` (and ``params.yaml``) ``root`` lacks: checked before the
    fits, which take minutes each."""
    return [f for f in ("params.yaml", *NEEDED) if not (Path(root) / f).is_file()]


FIT_PAIRS = {
    "ours_minus_peer": ("final_fit", "peer_fit"),
    "ours_minus_lw": ("final_fit", "ledoit_wolf"),
    "peer_minus_lw": ("peer_fit", "ledoit_wolf"),
}
"""The per-fit columns of :func:`by_fit`: ``{column: (model, reference)}``."""


def by_fit(rows: pd.DataFrame) -> pd.DataFrame:
    """Per fit (``split``) the paired differences of :data:`FIT_PAIRS`
    (:func:`compression.fold_delta` over the fit's folds): the peer's fits vary far more
    than the folds' SEs show (research log, "The learned peer on stocks it has not
    seen")."""
    out = []
    for split, g in rows.groupby("split", sort=True):
        res = {"split": split}
        res |= {k: compression.fold_delta(g, m, ref)[0] for k, (m, ref) in FIT_PAIRS.items()}
        out.append(res)
    return pd.DataFrame(out).set_index("split")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--seed", type=int, default=DisjointSpec.seed)
    ap.add_argument("--out", default="build/studies/peer_disjoint")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_file = out / "rows.csv"
    if rows_file.exists():
        rows = pd.read_csv(rows_file)
    else:
        if missing := missing_files(args.root):
            ap.error(f"{args.root} lacks {', '.join(missing)} (run the pipeline's stages first)")
        spec = DisjointSpec(seed=args.seed)
        columns = pd.read_parquet(f"{args.root}/data/processed/sp500_returns.parquet").columns
        splits = half_splits(columns, spec.n_splits, np.random.default_rng(spec.seed))
        jobs = [(args.root, s, spec, str(out)) for s in splits]
        rows = pd.concat(map_in_processes(split_job, jobs, args.workers), ignore_index=True)
        rows.to_csv(rows_file, index=False)
    pd.set_option("display.width", 220)
    print("Out-of-sample GMV volatility (annualised %), mean over the held-out folds:")
    print(ub.fold_table(rows)["mean"].round(2).to_string())
    by = rows.pivot_table(index=["family", "window"], columns="estimator", values="rel_vol")
    print("\nfinal_fit − peer_fit, % of Ledoit–Wolf's volatility, mean over the folds:")
    print((by["final_fit"] - by["peer_fit"]).round(2).to_string())
    print("\nPer fold, mean over windows (%), paired:")
    print(summary(rows).round(3).to_string(index=False))
    fits = by_fit(rows)
    print("\nPer fit (mean over its folds and windows, %), and over the fits (mean ± SE):")
    print(fits.round(2).to_string())
    se = fits.std(ddof=1) / np.sqrt(len(fits))
    print(" ".join(f"{k} {fits[k].mean():+.2f} ± {se[k]:.2f};" for k in fits))
    print(f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
