"""Decision 0076's study (validation data only)::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/devol_rule.py <root> [--workers 2] [--out DIR]

``root`` is a pipeline run's repository root whose ``final.pt`` is decision 0068's switch.
The candidate devolatilises the windows whose spread of log sample variances exceeds a
threshold (:class:`shrinklab.studies.devol.Devolatilised`).

1. Selection (:func:`shrinklab.studies.devol.select_0076`): every threshold of
   ``--thresholds`` on the multi-scale universes (fresh folds with the ETF fold and fund
   universes, half of each universe's assets deleveraged; :func:`~shrinklab.studies.devol.
   deleveraged`) and on :data:`~shrinklab.studies.devol.HETERO_MAP`, at the selection seeds.
2. Judgement at fresh seeds (:func:`shrinklab.studies.devol.rule_0076`): the multi-scale
   universes, the folds, funds and Ken French's universes as they are, the selection and
   wide grids (and their failures at the grids' own seed), stress scenarios and the
   hetero map.

Writes ``<out>/*.csv`` and ``summary.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from shrinklab.core.features import FEATURE_NAMES
from shrinklab.core.metrics import ratio_se
from shrinklab.data.universes import cross_universe_folds
from shrinklab.evaluation import backtest
from shrinklab.evaluation import universe_backtest as ub
from shrinklab.evaluation.scenarios import evaluate_scenario, scenario_name, scenario_seed
from shrinklab.studies import worlds
from shrinklab.studies.devol import (
    HETERO_MAP,
    Devolatilised,
    deleveraged,
    rule_0076,
    select_0076,
)
from shrinklab.studies.domain_switch import fund_universes_of
from shrinklab.studies.fold_parts import fold_means, mean_se, scenario_mean
from shrinklab.studies.fund_switch import FUND_SIZES
from shrinklab.studies.selection_grid import SELECTION_GRID, SELECTION_SEED, WIDE_GRID
from shrinklab.studies.switch_parts import load_switched_run


def universes(data, fold_seed, fund_seed):
    """Folds with the ETF fold (two splits, one draw) and fund universes (two draws)."""
    folds = cross_universe_folds(
        data.returns, data.factor_returns, data.market["index_return"], seed=fold_seed,
        n_splits=2, draws=1,
    )  # fmt: skip
    return folds, fund_universes_of(data.returns, FUND_SIZES, 2, fund_seed)


def backtest_rows(unis, final, cands, workers):
    ests = {**backtest.classical_estimators(), "final": backtest.learned_estimator(final)}
    ests |= {k: backtest.batched(c) for k, c in cands.items()}
    return ub.fold_backtest(unis, ests, workers=workers)


def scenario_gains(final, cand, specs, reps, seed, per_scenario_seed=True):
    """Paired PRIAL gain of ``cand`` (an extra estimator) over ``final.pt`` per scenario,
    and the two's failure counts against the best classical estimator."""
    rows, fails = [], [0, 0]
    for i, spec in enumerate(specs):
        name = scenario_name(spec)
        s = scenario_seed(seed, name) if per_scenario_seed else seed + i
        r = evaluate_scenario(spec, final, reps, s, extra_estimators={"cand": cand})
        L = r["losses"]
        d = np.asarray(L["sample"])
        gain, se = ratio_se(
            np.asarray(L["learned"]) - np.asarray(L["cand"]), d - np.asarray(L["fsopt"])
        )
        rows.append({"scenario": name, "prial_gain_B_minus_A": gain, "se": se})
        for j, k in enumerate(("learned", "cand")):
            fails[j] += int(r["diff_best"][k] < -r["diff_best_se"][k])
    return pd.DataFrame(rows), tuple(fails)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--thresholds", default="1.0,1.25,1.5,2.0")
    ap.add_argument("--select-seed", type=int, default=2631)
    ap.add_argument("--fold-seed", type=int, default=2633)
    ap.add_argument("--fund-seed", type=int, default=2635)
    ap.add_argument("--lever-seed", type=int, default=2637)
    ap.add_argument("--map-seed", type=int, default=2639)
    ap.add_argument("--grid-seed", type=int, default=2641)
    ap.add_argument("--stress-seed", type=int, default=2643)
    ap.add_argument("--reps", type=int, default=100, help="replications per scenario")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="build/studies/devol")
    a = ap.parse_args(argv)
    t0, out = time.time(), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    pd.set_option("display.width", 200)
    final, data = load_switched_run(Path(a.root))

    # 1. selection: multi-scale universes and the hetero map at the selection seeds
    s = a.select_seed
    folds, funds = universes(data, s, s + 1000)
    multi = deleveraged(folds + funds, s + 2000)
    thresholds = [float(t) for t in a.thresholds.split(",")]
    cands = {f"t{t:g}": Devolatilised(final, t) for t in thresholds}
    rows = backtest_rows(multi, final, cands, a.workers)
    rows.to_csv(out / "selection_multi.csv", index=False)
    table = []
    for t in thresholds:
        gains, _ = scenario_gains(final, cands[f"t{t:g}"], HETERO_MAP, a.reps, s, False)
        g, g_se = scenario_mean(gains)
        m, m_se = mean_se(fold_means(rows, f"t{t:g}", "final"))
        table.append({"threshold": t, "multi": m, "multi_se": m_se, "map_gain": g, "map_se": g_se})
        print(table[-1], f"{time.time() - t0:.0f} s", flush=True)
    table = pd.DataFrame(table)
    table.to_csv(out / "selection.csv", index=False)
    choice = select_0076(table)
    print(f"selection -> {None if choice is None else dict(choice)}", flush=True)
    summary = {**{k: v for k, v in vars(a).items() if k.endswith("seed")}, "reps": a.reps,
               "choice": None if choice is None else float(choice["threshold"])}  # fmt: skip
    if choice is None:
        summary["adopt"] = False
    else:
        cand = Devolatilised(final, float(choice["threshold"]))
        folds, funds = universes(data, a.fold_seed, a.fund_seed)
        multi = deleveraged(folds + funds, a.lever_seed)
        parts = {}
        for name, unis in (("multi", multi), ("folds", folds), ("funds", funds)):
            parts[name] = backtest_rows(unis, final, {"switch": cand}, a.workers)
            parts[name].to_csv(out / f"{name}.csv", index=False)
            print(f"{time.time() - t0:.0f} s: {name}", flush=True)
        ests = {**backtest.classical_estimators(), "final": backtest.learned_estimator(final),
                "switch": backtest.batched(cand)}  # fmt: skip
        parts["french"], _ = ub.french_portfolio_tables(ests, ["final"], workers=a.workers)
        parts["french"].to_csv(out / "french.csv", index=False)
        grids, _ = scenario_gains(final, cand, SELECTION_GRID + WIDE_GRID, a.reps, a.grid_seed)
        _, fails = scenario_gains(final, cand, SELECTION_GRID + WIDE_GRID, a.reps, SELECTION_SEED)
        stress, _ = scenario_gains(final, cand, worlds.HETERO_STRESS, a.reps, a.stress_seed)
        hetero, _ = scenario_gains(final, cand, HETERO_MAP, a.reps, a.map_seed, False)
        for name, frame in (("grids", grids), ("stress", stress), ("hetero", hetero)):
            frame.to_csv(out / f"{name}.csv", index=False)
            print(frame.round(3).to_string(index=False), flush=True)
        spread = np.asarray(data.valid.features)[:, FEATURE_NAMES.index("logvar_std")]
        summary["valid_fired"] = float(np.mean(spread > float(choice["threshold"])))
        summary |= rule_0076(
            parts["multi"], parts["folds"], parts["funds"], parts["french"], grids, fails,
            stress, hetero,
        )  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    print(json.dumps(summary, indent=2, default=float))
    print(f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
