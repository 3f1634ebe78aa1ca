"""A model on synthetic scenarios outside every grid and outside the training ranges::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/stress_scenarios.py [models/final.pt] \
        [--n-reps 100] [--seed 4243]

Validation data, as the selection grid (never the public grid): p/n = 10, log-volatility
spreads above the training worlds' 0.8 and in families drawn without them, Student-t(3)
returns, eight factors at p = 300, and the six scenarios of decision 0051
(:data:`shrinklab.studies.worlds.HETERO_STRESS`). The research log ("Exploration:
scenarios outside the grids and the training ranges") reads this table.

Two measures per scenario, learned model against the best classical estimator of that
measure, with paired standard errors over the replications:

``prial``
    the PRIAL of the grids (Ledoit & Wolf 2022): a ratio of *mean* losses, so the
    replications with the largest losses weigh most;
``ratio``
    the *mean* of each replication's loss relative to the sample covariance's, which
    weighs every replication alike, as the network's training loss does (decision 0009);
    lower is better.

Where the two disagree, a few replications decide the PRIAL (see the research log).
``loss_vs_best`` is the learned model's mean loss over the best classical estimator's (by
PRIAL): 1.5 means half as much loss again, however close both PRIALs are to 100.

``--map`` scores one family over a grid of one parameter and of the sizes instead, e.g.
the near-identity Toeplitz worlds of the research log ("Exploration: Toeplitz worlds
near p = n")::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/stress_scenarios.py models/final.pt \
        --map toeplitz --param rho=0.1,0.2,0.3,0.4,0.5 --p 100 --n 70,100,130 --seed 2099 \
        [--plot map.png]

and prints ``loss_vs_best`` as a table of parameter × (p, n), with the misses by PRIAL.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from shrinklab.data.families import FAMILIES
from shrinklab.evaluation import scenarios
from shrinklab.models.registry import load_model
from shrinklab.studies.worlds import HETERO_STRESS

#: Scenarios outside the grids and the training ranges (the exploration's twelve).
OUTSIDE_GRIDS: list[dict[str, Any]] = [
    {"name": "factor hetero1.2 p60 n120", "family": "factor", "p": 60, "n": 120, "hetero": 1.2},
    {"name": "block hetero1.0 p50 n100", "family": "block", "p": 50, "n": 100, "hetero": 1.0},
    {"name": "Toeplitz .9 p100 n50", "family": "toeplitz", "p": 100, "n": 50, "rho": 0.9},
    {"name": "1/3/10 p400 n40", "family": "spectrum_1_3_10", "p": 400, "n": 40},
    {"name": "dominant t3 p100 n60", "family": "dominant_factor", "p": 100, "n": 60, "df": 3},
    {"name": "lognormal p50 n500", "family": "lognormal", "p": 50, "n": 500},
    {"name": "8-factor p300 n150", "family": "factor", "p": 300, "n": 150, "n_factors": 8},
    {"name": "near-singular p80 n40", "family": "near_singular", "p": 80, "n": 40},
    {"name": "diversified hetero1.0 p30 n60", "family": "diversified", "p": 30, "n": 60,
     "hetero": 1.0},
    {"name": "market+sectors t4 p150 n250", "family": "market_sectors", "p": 150, "n": 250,
     "df": 4},
    {"name": "regime shift p40 n120", "family": "regime_shift", "p": 40, "n": 120},
    {"name": "1/3/10 p20 n15", "family": "spectrum_1_3_10", "p": 20, "n": 15},
]  # fmt: skip


def stress_grid() -> list[dict[str, Any]]:
    """:data:`OUTSIDE_GRIDS` and the scenarios of 0051 that are not among them."""
    names = {s["name"] for s in OUTSIDE_GRIDS}
    return OUTSIDE_GRIDS + [s for s in HETERO_STRESS if s["name"] not in names]


def compare(result: Mapping[str, Any]) -> dict[str, Any]:
    """One scenario's row from :func:`shrinklab.evaluation.scenarios.evaluate_scenario`'s
    ``result``: its PRIAL comparison as that function computes it (the learned model, the
    best classical estimator by PRIAL and the paired difference learned − best with its
    SE), and the mean per-replication loss ratio to the sample covariance of the learned
    model and of the best classical estimator by that ratio, with the paired difference
    best − learned and its SE (positive: the learned model ahead on both measures)."""
    learned = scenarios.LEARNED
    best_p = result["best_classical"]
    L = {
        k: np.asarray(result["losses"][k], dtype=np.float64)
        for k in (learned, *scenarios.CLASSICAL)
    }
    d = np.asarray(result["losses"]["sample"], dtype=np.float64)
    if np.any(d <= 0):
        raise ValueError("the sample covariance's loss must be positive in every replication")
    ratio = {k: float(np.mean(v / d)) for k, v in L.items()}
    best_r = min(scenarios.CLASSICAL, key=ratio.get)
    r = (L[best_r] - L[learned]) / d
    return {
        "prial": result["prial"][learned], "prial_best": best_p,
        "prial_best_value": result["prial"][best_p],
        "loss_vs_best": float(L[learned].mean() / L[best_p].mean()),
        "prial_diff": result["diff_best"][learned], "prial_diff_se": result["diff_best_se"][learned],
        "ratio": ratio[learned], "ratio_best": best_r, "ratio_best_value": ratio[best_r],
        "ratio_diff": float(r.mean()), "ratio_diff_se": float(r.std(ddof=1) / math.sqrt(len(r))),
    }  # fmt: skip


def score(model: Any, specs: Sequence[Mapping[str, Any]], n_reps: int, seed: int) -> pd.DataFrame:
    """:func:`compare` for each scenario of ``specs`` (replications seeded as the grids'),
    with ``miss_prial`` / ``miss_ratio``: the learned model more than one SE behind."""
    if int(n_reps) < 2:
        raise ValueError(f"n_reps must be >= 2 (standard errors), got {n_reps}")
    rows = {}
    for spec in specs:
        name = scenarios.scenario_name(spec)
        res = scenarios.evaluate_scenario(
            spec, model, int(n_reps), scenarios.scenario_seed(seed, name)
        )
        rows[name] = compare(res)
    out = pd.DataFrame.from_dict(rows, orient="index")
    out["miss_prial"] = out["prial_diff"] < -out["prial_diff_se"]
    out["miss_ratio"] = out["ratio_diff"] < -out["ratio_diff_se"]
    return out


def map_specs(
    family: str,
    param: str,
    values: Sequence[float],
    p_values: Sequence[int],
    n_values: Sequence[int],
) -> list[dict[str, Any]]:
    """The scenarios of a map: ``family`` with ``param`` at each of ``values``, at every
    ``(p, n)`` of ``p_values`` × ``n_values``, named ``"<family> <param>=<v> p<p> n<n>"``."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; one of {FAMILIES}")
    if not param.isidentifier():
        raise ValueError(f"the parameter must be a keyword of the family, got {param!r}")
    for label, xs in (("values", values), ("p", p_values), ("n", n_values)):
        if len(xs) == 0:
            raise ValueError(f"the map needs at least one {label}")
    if min(p_values) < 2 or min(n_values) < 2:
        raise ValueError(f"p and n must be at least 2, got p={p_values}, n={n_values}")
    return [
        {"name": f"{family} {param}={v:g} p{p} n{n}", "family": family, "p": int(p),
         "n": int(n), param: float(v)}
        for v in values for p in p_values for n in n_values
    ]  # fmt: skip


def map_table(table: pd.DataFrame, specs: Sequence[Mapping[str, Any]], param: str) -> pd.DataFrame:
    """``loss_vs_best`` of :func:`score`'s ``table`` for the ``specs`` of :func:`map_specs`,
    as parameter value × ``"p<p> n<n>"``; a trailing ``*`` in :func:`format_map` marks the
    misses by PRIAL."""
    rows = [
        {param: s[param], "size": f"p{s['p']} n{s['n']}", "value": table.loc[s["name"], "loss_vs_best"]}
        for s in specs
    ]  # fmt: skip
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    out = pd.DataFrame(rows).pivot(index=param, columns="size", values="value")[sizes]
    out.columns.name = None
    return out


def format_map(table: pd.DataFrame, specs: Sequence[Mapping[str, Any]], param: str) -> str:
    """:func:`map_table` as text, two decimals, ``*`` after a miss by PRIAL."""
    grid = map_table(table, specs, param)
    text = grid.map(lambda v: f"{v:.2f}")
    for s in specs:
        if table.loc[s["name"], "miss_prial"]:
            text.loc[s[param], f"p{s['p']} n{s['n']}"] += "*"
    return text.to_string()


def plot_map(
    table: pd.DataFrame, specs: Sequence[Mapping[str, Any]], param: str, path: str
) -> None:
    """A heat map of :func:`map_table` (log colour scale centred on 1: red where the
    learned model's loss is above the best classical estimator's), misses outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    grid = map_table(table, specs, param)
    logs = np.log2(grid.to_numpy(dtype=float))
    span = max(float(np.abs(logs).max()), 0.1)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * grid.shape[1] + 2.0), 0.6 * grid.shape[0] + 2.0))
    im = ax.imshow(logs, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -span, span), aspect="auto")
    for i, v in enumerate(grid.index):
        for j, size in enumerate(grid.columns):
            name = next(
                s["name"] for s in specs if s[param] == v and f"p{s['p']} n{s['n']}" == size
            )
            miss = bool(table.loc[name, "miss_prial"])
            ax.text(
                j,
                i,
                f"{grid.iloc[i, j]:.2f}" + ("*" if miss else ""),
                ha="center",
                va="center",
                fontsize=8,
                fontweight="bold" if miss else "normal",
                color="white" if abs(logs[i, j]) > 0.6 * span else "black",
            )
    ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=30, ha="right")
    ax.set_yticks(range(grid.shape[0]), [f"{v:g}" for v in grid.index])
    ax.set(
        ylabel=param,
        title="mean loss: learned / best classical",
        xlabel="* = behind the best classical PRIAL by more than one SE",
    )
    fig.colorbar(im, ax=ax, label="log2 of the ratio")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _numbers(text: str, kind: type) -> list[Any]:
    return [kind(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="models/final.pt")
    ap.add_argument("--n-reps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=4243)
    ap.add_argument("--map", metavar="FAMILY", help="score one family over a parameter and sizes")
    ap.add_argument("--param", metavar="NAME=V1,V2,...", help="the map's parameter and values")
    ap.add_argument("--p", default="100", help="the map's p values, comma-separated")
    ap.add_argument("--n", default="50,100,200", help="the map's n values, comma-separated")
    ap.add_argument("--plot", metavar="PNG", help="with --map: a heat map of the table")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    pd.set_option("display.width", 250)
    if a.map is None:
        if a.param or a.plot:
            ap.error("--param and --plot need --map")
        specs = stress_grid()
    else:
        if not a.param or "=" not in a.param:
            ap.error("--map needs --param NAME=V1,V2,...")
        param, values = a.param.split("=", 1)
        specs = map_specs(a.map, param, _numbers(values, float), _numbers(a.p, int),
                          _numbers(a.n, int))  # fmt: skip
    table = score(load_model(a.model), specs, a.n_reps, a.seed)
    print(table.round(4).to_string())
    print(f"misses by PRIAL: {int(table.miss_prial.sum())} of {len(table)}; "
          f"by the mean loss ratio: {int(table.miss_ratio.sum())} of {len(table)}")  # fmt: skip
    if a.map is not None:
        print("\nmean loss, learned / best classical by PRIAL (* = a miss by PRIAL):")
        print(format_map(table, specs, param))
        if a.plot:
            plot_map(table, specs, param, a.plot)
            print(f"heat map: {a.plot}")


if __name__ == "__main__":
    main()
