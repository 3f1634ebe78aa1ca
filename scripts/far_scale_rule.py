"""Decision 0069's study (validation data only)::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/far_scale_rule.py <root> [--workers 2] [--out DIR]

``root`` is a pipeline run's repository root whose ``final.pt`` is decision 0068's switch
(a :class:`shrinklab.models.switched.SwitchedModel`). The candidate multiplies the
intensity ``α`` of the pretrained network on the windows the switch calls fund-like by
a scale ``c`` (``far_scale``): those universes' best classical estimator at long windows
is QIS or the sample covariance, which shrink less.

1. Selection (seed ``--select-seed``): ``c`` from ``--scales`` with the lowest mean, over
   ``3 × --select-draws`` fund universes of the stocks (12 by default), of each
   universe's volatility relative to ``final.pt`` (%, mean over the windows 60 / 120 /
   250); if none is below zero, stop (keep ``final.pt``). Decision 0070 reran it on a
   ``final.pt`` that already carries 0069's scale: the candidates replace it.
2. Judgement at fresh seeds: :func:`shrinklab.studies.switch_parts.score_switch` (fresh
   funds, cross-universe folds, Ken French's universes, grids, stress scenarios,
   validation worlds) and :func:`shrinklab.studies.domain_switch.rule_0066`'s rule.

Writes ``<out>/*.csv`` and ``summary.json``. About 10 min with two workers on the
2-vCPU VM.
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


def scaled(final: SwitchedModel, c: float) -> SwitchedModel:
    """``final`` with ``far_scale = c`` (every other part and ``extra`` kept)."""
    return final.with_changes(far_scale=c)


def select_scale(
    final: SwitchedModel,
    returns: pd.DataFrame,
    scales: list[float],
    seed: int,
    workers: int,
    draws: int = 4,
) -> tuple[float | None, pd.Series]:
    """Step 1: the scale with the lowest mean relative volatility on ``3 × draws`` fund
    universes of seed ``seed`` (``None`` where none is below zero) and every scale's
    mean (:func:`shrinklab.studies.switch_parts.fund_selection_means`)."""
    means = fund_selection_means(
        final, {f"c{c:g}": scaled(final, c) for c in scales}, returns, seed, workers, draws
    )
    means.index = scales
    best = float(means.idxmin())
    return (best if means[best] < 0 else None), means


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--scales", default="0.25,0.5,0.75")
    ap.add_argument("--select-seed", type=int, default=2337)
    ap.add_argument("--select-draws", type=int, default=4, help="fund draws per size")
    ap.add_argument("--fund-seed", type=int, default=2339)
    ap.add_argument("--fold-seed", type=int, default=2341)
    ap.add_argument("--grid-seed", type=int, default=2343)
    ap.add_argument("--stress-seed", type=int, default=2345)
    ap.add_argument("--reps", type=int, default=100, help="replications per scenario")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="build/studies/far_scale")
    a = ap.parse_args(argv)
    t0, out, root = time.time(), Path(a.out), Path(a.root)
    out.mkdir(parents=True, exist_ok=True)
    pd.set_option("display.width", 200)

    final, data = load_switched_run(root)
    scales = [float(c) for c in a.scales.split(",")]
    c, means = select_scale(final, data.returns, scales, a.select_seed, a.workers, a.select_draws)
    print("selection: mean volatility relative to final.pt (%) by scale")
    print(means.round(4).to_string())
    print(f"{time.time() - t0:.0f} s: selection -> {c}", flush=True)
    summary = {**{k: v for k, v in vars(a).items() if k.endswith("seed")}, "reps": a.reps,
               "selection": {f"{k:g}": float(v) for k, v in means.items()}, "scale": c}  # fmt: skip
    if c is not None:
        summary |= judge_by_rule_0066(
            final, scaled(final, c), data, fund_seed=a.fund_seed, fold_seed=a.fold_seed,
            grid_seed=a.grid_seed, stress_seed=a.stress_seed, reps=a.reps,
            workers=a.workers, out=out,
        )  # fmt: skip
    else:
        summary["adopt"] = False
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
