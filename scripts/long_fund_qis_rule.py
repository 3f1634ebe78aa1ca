"""Decision 0074's study (validation data only)::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/long_fund_qis_rule.py <root> [--workers 2] [--out DIR]

``root`` is a pipeline run's repository root whose ``final.pt`` is decision 0068's switch
(a :class:`shrinklab.models.switched.SwitchedModel`). The candidate moves a share ``s`` of
every target weight to the QIS target on the windows the switch calls fund-like that
are at least ``n0`` observations long (``SwitchedModel(long_n=n0, long_share=s)``,
:func:`shrinklab.models.switched.share_to_qis`): on long windows of diversified
universes QIS and the sample covariance, which shrink less than the linear targets, are
the best classical estimators.

1. Selection (seed ``--select-seed``): ``(n0, s)`` from ``--lengths`` × ``--shares`` with
   the lowest mean, over ``3 × --select-draws`` fund universes of the stocks (12 by
   default), of each universe's volatility relative to ``final.pt`` (%, mean over the
   windows 60 / 120 / 250); if none is below zero, stop (keep ``final.pt``).
2. Judgement at fresh seeds: :func:`shrinklab.studies.switch_parts.score_switch` (fresh
   funds, cross-universe folds, Ken French's universes, grids, stress scenarios,
   validation worlds) and :func:`shrinklab.studies.domain_switch.rule_0066`'s rule.

Writes ``<out>/*.csv`` and ``summary.json``. About 5 min with two workers on the 2-vCPU VM.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from shrinklab.models.switched import SwitchedModel
from shrinklab.studies.switch_parts import (
    fund_selection_means,
    judge_by_rule_0066,
    load_switched_run,
)


def candidate(final: SwitchedModel, n0: float, share: float) -> SwitchedModel:
    """``final`` with decision 0074's step (every other part and ``extra`` kept)."""
    return final.with_changes(long_n=n0, long_share=share)


def select_long(
    final: SwitchedModel,
    returns: pd.DataFrame,
    pairs: list[tuple[float, float]],
    seed: int,
    workers: int,
    draws: int = 4,
) -> tuple[tuple[float, float] | None, pd.Series]:
    """Step 1: the ``(n0, share)`` with the lowest mean relative volatility on
    ``3 × draws`` fund universes of seed ``seed`` (``None`` where none is below zero) and
    every pair's mean, named ``n<n0>_s<share>``
    (:func:`shrinklab.studies.switch_parts.fund_selection_means`)."""
    names = {f"n{n0:g}_s{share:g}": (n0, share) for n0, share in pairs}
    cands = {name: candidate(final, *pair) for name, pair in names.items()}
    means = fund_selection_means(final, cands, returns, seed, workers, draws)
    best = means.idxmin()
    return (names[best] if means[best] < 0 else None), means


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--lengths", default="200")
    ap.add_argument("--shares", default="0.5,1")
    ap.add_argument("--select-seed", type=int, default=2501)
    ap.add_argument("--select-draws", type=int, default=4, help="fund draws per size")
    ap.add_argument("--fund-seed", type=int, default=2503)
    ap.add_argument("--fold-seed", type=int, default=2505)
    ap.add_argument("--grid-seed", type=int, default=2507)
    ap.add_argument("--stress-seed", type=int, default=2509)
    ap.add_argument("--reps", type=int, default=100, help="replications per scenario")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="build/studies/long_fund_qis")
    a = ap.parse_args(argv)
    t0, out, root = time.time(), Path(a.out), Path(a.root)
    out.mkdir(parents=True, exist_ok=True)
    pd.set_option("display.width", 200)

    final, data = load_switched_run(root)
    pairs = [(float(n), float(s)) for n in a.lengths.split(",") for s in a.shares.split(",")]
    pair, means = select_long(final, data.returns, pairs, a.select_seed, a.workers, a.select_draws)
    print("selection: mean volatility relative to final.pt (%) by (n0, share)")
    print(means.round(4).to_string())
    print(f"{time.time() - t0:.0f} s: selection -> {pair}", flush=True)
    summary = {**{k: v for k, v in vars(a).items() if k.endswith("seed")}, "reps": a.reps,
               "selection": {k: float(v) for k, v in means.items()},
               "choice": None if pair is None else {"n0": pair[0], "share": pair[1]}}  # fmt: skip
    if pair is not None:
        cand = candidate(final, *pair)
        summary |= judge_by_rule_0066(
            final, cand, data, fund_seed=a.fund_seed, fold_seed=a.fold_seed,
            grid_seed=a.grid_seed, stress_seed=a.stress_seed, reps=a.reps,
            workers=a.workers, out=out,
        )  # fmt: skip
        summary["valid_moved"] = float(cand.is_long_fund(data.valid.features).double().mean())
    else:
        summary["adopt"] = False
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
