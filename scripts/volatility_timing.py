"""Exploration: would recency-weighted volatilities lower out-of-sample GMV volatility?

The estimator family weights every day of the window equally. Real volatilities cluster
(RiskMetrics, J.P. Morgan 1996), and the learned peer rescales its cleaned correlations by
a marginal-volatility head (Bongiorno, Manolakis & Mantegna 2025). This script keeps an
estimator's correlations and replaces its volatilities by exponentially weighted ones
(the volatility/correlation split of Engle 2002, "Dynamic conditional correlation",
JBES 20(3)):

    Σ̂' = D Σ̂ D,   D = diag(exp(f · r_i / 2)),   r_i = log(σ̃²_i / s²_i),

with ``s²_i`` the window's equal-weight variance, ``σ̃²_i`` the exponentially weighted
one (half-life ``c · n`` days, weights summing to 1, the sample mean removed first) and
``f`` the rescaling's strength:

* ``plain``: ``f = 1``;
* ``pretest``: the positive-part James–Stein factor (James & Stein 1961; Efron & Morris
  1973, JASA 68) ``f = max(0, 1 − p·v₀ / Σ_i r_i²)``, which is 0 when the log-ratios are
  no larger than sampling noise. ``v₀ = (κ̂ − 1) Σ_t (w_t − 1/n)²`` is the delta-method
  variance of ``r_i`` for i.i.d. returns with kurtosis ``κ`` (``κ̂``: the mean over
  assets of ``m₄/m₂²``), so in a stationary world the rescaling switches itself off.

Two parts, validation data only (never 2016–2022, never the public grid):

* ``--folds SEED``: the cross-universe folds of that seed (:mod:`shrinklab.data.universes`,
  pre-2016), relative volatility to Ledoit–Wolf (%) of ``final.pt`` and Ledoit–Wolf with
  and without the rescaling, per fold family and window;
* ``--grid``: PRIAL on the selection and wide grids
  (:data:`shrinklab.studies.selection_grid.SELECTION_GRID`, ``WIDE_GRID``, 100
  replications, i.i.d. worlds): the rescaling's cost where volatility does not move.

    OMP_NUM_THREADS=1 python scripts/volatility_timing.py <run root> --folds 2055 --grid

About 2 min for the folds (two workers) and 1 min for the grids on the 2-vCPU VM.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

from shrinklab.data import universes
from shrinklab.evaluation import backtest, scenarios
from shrinklab.evaluation import universe_backtest as ub
from shrinklab.models.registry import load_model
from shrinklab.studies.deploy_rule import FoldSpec, load_rule_data
from shrinklab.studies.selection_grid import SELECTION_GRID, SELECTION_SEED, WIDE_GRID


def ewma_weights(n: int, half_life: float) -> torch.Tensor:
    """Weights ``(n,)`` of the days of a window, oldest first: ``2^(−age/half_life)``
    (age 0 for the last day), summing to 1."""
    if n < 2 or not half_life > 0:
        raise ValueError(f"need n >= 2 and half_life > 0, got {n}, {half_life}")
    age = torch.arange(n - 1, -1, -1, dtype=torch.float64)
    w = torch.pow(torch.tensor(0.5, dtype=torch.float64), age / float(half_life))
    return w / w.sum()


def log_variance_ratios(X: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(r (B, p), v0 (B, 1))``: ``log`` of weighted over equal-weight variance of each
    column of the demeaned ``X (B, n, p)`` (0 for a constant column) and its i.i.d.
    sampling variance ``(κ̂ − 1) Σ (w − 1/n)²`` (module docstring)."""
    Xc = X - X.mean(-2, keepdim=True)
    y = Xc.square()
    m2 = y.mean(-2)
    live = m2 > 0
    safe = torch.where(live, m2, torch.ones_like(m2))
    weighted = (w[:, None] * y).sum(-2)
    r = torch.where(live, torch.log(torch.where(live, weighted, safe) / safe), torch.zeros_like(m2))
    kurt = torch.where(live, y.square().mean(-2) / safe.square(), torch.full_like(m2, 3.0))
    n = X.shape[-2]
    v0 = (kurt.mean(-1, keepdim=True) - 1.0) * float((w - 1.0 / n).square().sum())
    return r, v0


def james_stein_factor(r: torch.Tensor, v0: torch.Tensor) -> torch.Tensor:
    """Positive-part James–Stein factor ``max(0, 1 − p·v0/Σ r²)`` per row, ``(B, 1)``."""
    ss = r.square().sum(-1, keepdim=True)
    p = r.shape[-1]
    return torch.where(ss > 0, (1.0 - p * v0 / ss.clamp_min(1e-300)).clamp_min(0.0), 0.0 * ss)


class VolatilityTiming:
    """Batched estimator (:func:`shrinklab.evaluation.backtest.batched` protocol):
    ``base``'s Σ̂ with its volatilities rescaled as in the module docstring."""

    batched = True
    wants_dates = False

    def __init__(self, base, c: float = 1.0, pretest: bool = True) -> None:
        self.base, self.c, self.pretest = base, float(c), bool(pretest)

    def __call__(self, X) -> torch.Tensor:
        X = torch.as_tensor(X, dtype=torch.float64)
        S = torch.as_tensor(self.base(X), dtype=torch.float64)
        r, v0 = log_variance_ratios(X, ewma_weights(X.shape[-2], self.c * X.shape[-2]))
        f = james_stein_factor(r, v0) if self.pretest else torch.ones_like(v0)
        d = torch.exp(0.5 * f * r)
        return S * d[..., :, None] * d[..., None, :]


def variants(name: str, base, cs: list[float]) -> dict:
    out = {}
    for c in cs:
        out[f"{name} c={c:g}"] = VolatilityTiming(base, c, pretest=False)
        out[f"{name} c={c:g} pretest"] = VolatilityTiming(base, c, pretest=True)
    return out


def folds_part(root: str, seed: int, cs: list[float], workers: int) -> None:
    data = load_rule_data(f"{root}/data", cut_test=True)
    final = backtest.learned_estimator(load_model(f"{root}/models/final.pt"))
    lw = backtest.classical_estimators()["ledoit_wolf"]
    ests = {
        "ledoit_wolf": lw,
        "final": final,
        **variants("final", final, cs),
        **variants("LW", lw, cs),
    }
    f = FoldSpec(seed=seed)
    folds = universes.cross_universe_folds(
        data.returns, data.factor_returns, data.market["index_return"],
        seed=f.seed, n_splits=f.n_splits, draws=f.draws, start=f.start,
    )  # fmt: skip
    rows = ub.fold_backtest(folds, ests, f.windows, workers=workers)
    rel = rows[rows.estimator != "equal_weight"]
    print(f"cross-universe folds, seed {seed}: relative volatility to Ledoit–Wolf, %")
    print(rel.groupby(["estimator", "family", "window"])["rel_vol"].mean().unstack([1, 2]).round(2))
    # paired against the un-rescaled base, over the folds (SE across folds)
    for base in ("final", "LW"):
        ref = rel[rel.estimator == ("final" if base == "final" else "ledoit_wolf")]
        ref = ref.set_index(["fold", "window"])["rel_vol"]
        for name in (n for n in ests if n.startswith(f"{base} c=")):
            d = rel[rel.estimator == name].set_index(["fold", "window"])["rel_vol"] - ref
            by_w = d.groupby(level="window").agg(["mean", "sem"])
            cells = ", ".join(f"{w}: {m:+.3f} ± {s:.3f}" for w, (m, s) in by_w.iterrows())
            print(f"{name} − {base}: {cells}")


def grid_part(root: str, cs: list[float], reps: int) -> None:
    model = load_model(f"{root}/models/final.pt")
    final = backtest.learned_estimator(model)
    extra = {k: v for k, v in variants("final", final, cs).items()}
    df = scenarios.evaluate_grid(
        SELECTION_GRID + WIDE_GRID, model, n_reps=reps, seed=SELECTION_SEED, extra_estimators=extra
    )
    prial = df.pivot(index="scenario", columns="estimator", values="prial")
    cols = ["learned", *extra, "oracle"]
    print(f"selection and wide grids, PRIAL (%), {reps} replications")
    print(prial[cols].round(2).to_string())
    print("mean:", prial[cols].mean().round(2).to_dict())
    rows = df[df.estimator.isin(["learned", *extra])]
    fails = (rows.diff_best_classical < -rows.diff_se).groupby(rows.estimator).sum()
    print("failures (more than one SE below the best classical estimator):", fails.to_dict())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root")
    ap.add_argument("--folds", type=int, action="append", default=[])
    ap.add_argument("--grid", action="store_true")
    ap.add_argument("--c", default="0.5,1")
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    cs = [float(c) for c in a.c.split(",")]
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 40)
    t0 = time.time()
    for seed in a.folds:
        folds_part(a.root, seed, cs, a.workers)
    if a.grid:
        grid_part(a.root, cs, a.reps)
    print(f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
