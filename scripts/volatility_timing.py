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

``--rule``: decision 0047's rule (``docs/decisions/0047-pre-tested-volatility-timing.md``)
for ``c = 1`` with the pre-test: fresh folds of seeds 2069 and 2071, Ken French's
universes, the selection and wide grids; prints each part and the verdict.
``--rule48``: decision 0048's rule (``docs/decisions/0048-split-volatility-pretest.md``): the
split pre-test against 0047's pooled one, fresh folds of seeds 2073 and 2075.
``--rule49``: decision 0049's rule (``docs/decisions/0049-half-life-half-a-window.md``): the
split pre-test with half-life ½ window against 1 window, fresh folds of seeds 2077 and 2079.
``--rule50``: decision 0050's rule (``docs/decisions/0050-common-part-of-the-timing.md``):
per-asset variance forecasts (QLIKE) with and without the split pre-test's common part,
fresh folds of seeds 2081 and 2083.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from shrinklab.core.volatility_timing import (
    apply_volatility_timing,
    ewma_weights,
    log_variance_ratios,
)
from shrinklab.data import universes
from shrinklab.evaluation import backtest, scenarios
from shrinklab.evaluation import universe_backtest as ub
from shrinklab.evaluation.variance_forecast import holding_variances, qlike
from shrinklab.models.registry import load_model
from shrinklab.sklearn import without_volatility_timing
from shrinklab.studies.deploy_rule import FoldSpec, load_rule_data
from shrinklab.studies.selection_grid import SELECTION_GRID, SELECTION_SEED, WIDE_GRID


class VolatilityTiming:
    """Batched estimator (:func:`shrinklab.evaluation.backtest.batched` protocol):
    ``base``'s Σ̂ with its volatilities rescaled as in the module docstring."""

    batched = True
    wants_dates = False

    def __init__(self, base, c: float = 1.0, pretest: bool | str = True) -> None:
        # pretest: False (plain), True or "pooled" (decision 0047), "split" (0048)
        self.base, self.c = base, float(c)
        self.pretest = "pooled" if pretest is True else pretest

    def __call__(self, X) -> torch.Tensor:
        X = torch.as_tensor(X, dtype=torch.float64)
        S = torch.as_tensor(self.base(X), dtype=torch.float64)
        if self.pretest:
            return apply_volatility_timing(S, X, self.c, self.pretest)
        r, _, _ = log_variance_ratios(X, ewma_weights(X.shape[-2], self.c * X.shape[-2]))
        d = torch.exp(0.5 * r)
        return S * d[..., :, None] * d[..., None, :]


def untimed_final(root: str):
    """``final.pt`` without the volatility timing its file may carry (the base that the
    timing variants wrap)."""
    return without_volatility_timing(load_model(f"{root}/models/final.pt"))


def variants(name: str, base, cs: list[float]) -> dict:
    out = {}
    for c in cs:
        out[f"{name} c={c:g}"] = VolatilityTiming(base, c, pretest=False)
        out[f"{name} c={c:g} pretest"] = VolatilityTiming(base, c, pretest=True)
    return out


def seed_folds(data, seed: int):
    """``(FoldSpec, folds)``: the cross-universe folds of ``seed`` (``FoldSpec`` defaults)."""
    f = FoldSpec(seed=seed)
    folds = universes.cross_universe_folds(
        data.returns, data.factor_returns, data.market["index_return"],
        seed=f.seed, n_splits=f.n_splits, draws=f.draws, start=f.start,
    )  # fmt: skip
    return f, folds


def folds_part(root: str, seed: int, cs: list[float], workers: int) -> None:
    data = load_rule_data(f"{root}/data", cut_test=True)
    final = backtest.learned_estimator(untimed_final(root))
    lw = backtest.classical_estimators()["ledoit_wolf"]
    ests = {
        "ledoit_wolf": lw,
        "final": final,
        **variants("final", final, cs),
        **variants("LW", lw, cs),
    }
    f, folds = seed_folds(data, seed)
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
    model = untimed_final(root)
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


RULE_SEEDS = (2069, 2071)
"""Decision 0047's fold seeds (never used before its rule was declared)."""
RULE48_SEEDS = (2073, 2075)
"""Decision 0048's fold seeds (never used before its rule was declared)."""
RULE49_SEEDS = (2077, 2079)
"""Decision 0049's fold seeds (never used before its rule was declared)."""


def _paired(diff: pd.Series) -> tuple[float, float]:
    return float(diff.mean()), float(diff.std(ddof=1) / len(diff) ** 0.5)


def fold_relative_volatility(data, ests: dict, seeds, workers: int) -> pd.DataFrame:
    """Volatility relative to Ledoit–Wolf's (%) of ``ests`` on the cross-universe folds of
    each seed (``FoldSpec`` defaults), rows ``(fold, family, window, seed)``."""
    parts = []
    for seed in seeds:
        f, folds = seed_folds(data, seed)
        rows = ub.fold_backtest(folds, ests, f.windows, workers=workers)
        rel = rows.pivot_table(index=["fold", "family", "window"], columns="estimator",
                               values="rel_vol")  # fmt: skip
        parts.append(rel.assign(seed=seed).set_index("seed", append=True))
    return pd.concat(parts)


def timing_tables(root: str, timings: dict, seeds, workers: int, reps: int):
    """The three parts of a timing rule for ``final.pt``'s networks (A: without timing)
    and each ``name: (c, pretest)`` of ``timings``: relative volatility to Ledoit–Wolf's
    (%) on the folds of ``seeds`` and on Ken French's universes, and the selection and wide
    grids' PRIAL with each estimator's failures (more than one SE below the best classical).
    Returns ``(rel, frel, prial, fails)``; the grid's ``learned`` column is A."""
    from shrinklab.evaluation.universe_backtest import french_portfolio_tables

    data = load_rule_data(f"{root}/data", cut_test=True)
    model = untimed_final(root)
    A = backtest.learned_estimator(model)
    timed = {name: VolatilityTiming(A, c, pretest=pt) for name, (c, pt) in timings.items()}
    ests = {**backtest.classical_estimators(), "A": A, **timed}
    rel = fold_relative_volatility(data, ests, seeds, workers)
    frows, _ = french_portfolio_tables(ests, ["A", *timed], workers=workers)
    frel = frows.pivot_table(index=["family", "window"], columns="estimator", values="rel_vol")
    return (rel, frel, *grid_tables(model, timed, reps))


def grid_tables(model, timed: dict, reps: int) -> tuple[pd.DataFrame, pd.Series]:
    """``(prial, fails)`` of ``model`` (column ``learned``) and the estimators ``timed`` on
    the selection and wide grids: PRIAL per scenario, and per estimator the number of
    scenarios more than one SE below the best classical estimator."""
    df = scenarios.evaluate_grid(
        SELECTION_GRID + WIDE_GRID, model, n_reps=reps, seed=SELECTION_SEED,
        extra_estimators=timed,
    )  # fmt: skip
    rows = df[df.estimator.isin(["learned", *timed])]
    fails = (rows.diff_best_classical < -rows.diff_se).groupby(rows.estimator).sum()
    return df.pivot(index="scenario", columns="estimator", values="prial"), fails


def _per_fold(d: pd.Series) -> pd.Series:
    return d.groupby(level=["seed", "fold"]).mean()


def _by_window(d: pd.Series) -> str:
    return ", ".join(f"{w}: {m:+.4f} ± {s:.4f}" for w, (m, s) in
                     ((w, _paired(x)) for w, x in d.groupby(level="window")))  # fmt: skip


def _holds(ok: bool) -> str:
    return "holds" if ok else "fails"


def _folds_gain(d: pd.Series, label: str, seeds) -> bool:
    """The fold condition of rules 0047 and 0049 for the paired differences ``d`` (% of
    Ledoit–Wolf's volatility): the mean over folds of each fold's mean over windows is
    below −max(1 SE, 0.01), and no window's mean is above +1 SE."""
    m, s = _paired(_per_fold(d))
    ok_mean = m < -max(s, 0.01)
    ok_windows = all(mw <= sw for mw, sw in (_paired(x) for _, x in d.groupby(level="window")))
    print(f"1. folds, seeds {seeds} ({len(_per_fold(d))} folds), % of Ledoit–Wolf's volatility:")
    print(f"   {label} {m:+.4f} ± {s:.4f} (below {-max(s, 0.01):+.4f}): {_holds(ok_mean)}")
    print(f"   {label} by window: {_by_window(d)}; none above +1 SE: {_holds(ok_windows)}")
    return ok_mean and ok_windows


def _french_at_most(d: pd.Series, label: str, tolerance: bool) -> bool:
    """Part 2: the mean of ``d`` over the French cells is at most +max(1 SE, 0.01) when
    ``tolerance``, else at most 0."""
    m, s = _paired(d)
    bound = max(s, 0.01) if tolerance else 0.0
    ok = m <= bound
    print(f"2. French universes ({len(d)} cells): {label} {m:+.4f} ± {s:.4f} "
          f"(at most {bound:+.4f}): {_holds(ok)}")  # fmt: skip
    return ok


def _grids_keep(
    prial: pd.DataFrame, fails: pd.Series, base: str, new: str, max_drop: float
) -> bool:
    """Part 3: ``new`` fails in no more grid scenarios than ``base`` and its mean PRIAL is
    at most ``max_drop`` below ``base``'s."""
    drop = float(prial[base].mean() - prial[new].mean())
    ok = int(fails[new]) <= int(fails[base]) and drop <= max_drop
    cols = list(dict.fromkeys(["learned", base, new, "oracle"]))
    print(prial[cols].round(2).to_string())
    print(f"3. grids: failures {', '.join(f'{c} {int(fails[c])}' for c in cols[:-1])}; mean PRIAL "
          f"{base} {prial[base].mean():.3f}, {new} {prial[new].mean():.3f} (drop {drop:+.3f}, "
          f"at most {max_drop:.2f}): {_holds(ok)}")  # fmt: skip
    return ok


def _verdict(ok: bool, adopt: str, keep: str) -> bool:
    print(f"verdict: {'adopt ' + adopt if ok else 'keep ' + keep}")
    return ok


def rule_part(root: str, workers: int, reps: int, seeds: tuple[int, ...] = RULE_SEEDS) -> bool:
    """Decision 0047's three conditions for V = ``final.pt`` with pre-tested timing, c = 1,
    against A = ``final.pt``; prints them and returns whether all hold."""
    rel, frel, prial, fails = timing_tables(root, {"V": (1.0, "pooled")}, seeds, workers, reps)
    d = rel["V"] - rel["A"]
    ok1 = _folds_gain(d, "V − A", seeds)
    print(d.groupby(level=["family", "window"]).agg(["mean", "sem"]).round(4).to_string())
    ok2 = _french_at_most(frel["V"] - frel["A"], "V − A", tolerance=False)
    print((frel["V"] - frel["A"]).round(4).to_string())
    ok3 = _grids_keep(prial, fails, "learned", "V", 0.25)
    return _verdict(ok1 and ok2 and ok3, "V", "A")


def rule48_part(root: str, workers: int, reps: int, seeds: tuple[int, ...] = RULE48_SEEDS) -> bool:
    """Decision 0048's three conditions for S (the split pre-test) against P (0047's pooled
    pre-test, deployed), both c = 1 on ``final.pt``'s networks (A: without timing)."""
    timings = {"P": (1.0, "pooled"), "S": (1.0, "split")}
    rel, frel, prial, fails = timing_tables(root, timings, seeds, workers, reps)
    d_sp = rel["S"] - rel["P"]
    d_sa = rel["S"] - rel["A"]
    m_sp, s_sp = _paired(_per_fold(d_sp))
    m_sa, s_sa = _paired(_per_fold(d_sa))
    m_pa, s_pa = _paired(_per_fold(rel["P"] - rel["A"]))
    ok1a = m_sp <= max(s_sp, 0.01)
    ok1b = m_sa < -max(s_sa, 0.01)
    print(f"1. folds, seeds {seeds} ({len(_per_fold(d_sp))} folds), % of Ledoit–Wolf's volatility:")
    print(f"   S − P {m_sp:+.4f} ± {s_sp:.4f} (at most {max(s_sp, 0.01):+.4f}): {_holds(ok1a)}")
    print(f"   S − A {m_sa:+.4f} ± {s_sa:.4f} (below {-max(s_sa, 0.01):+.4f}): "
          f"{_holds(ok1b)}; P − A {m_pa:+.4f} ± {s_pa:.4f}")  # fmt: skip
    for name, d in (("S − P", d_sp), ("S − A", d_sa)):
        print(f"   {name} by window: {_by_window(d)}")
    print(pd.concat({"S − P": d_sp, "S − A": d_sa}, axis=1)
          .groupby(level=["family", "window"]).mean().round(4).to_string())  # fmt: skip
    ok2 = _french_at_most(frel["S"] - frel["P"], "S − P", tolerance=True)
    ok3 = _grids_keep(prial, fails, "P", "S", 0.0)
    return _verdict(ok1a and ok1b and ok2 and ok3, "S", "P")


def rule49_part(root: str, workers: int, reps: int, seeds: tuple[int, ...] = RULE49_SEEDS) -> bool:
    """Decision 0049's three conditions for H (split pre-test, half-life ½ window) against
    C (split pre-test, half-life one window, deployed) on ``final.pt``'s networks."""
    timings = {"C": (1.0, "split"), "H": (0.5, "split")}
    rel, frel, prial, fails = timing_tables(root, timings, seeds, workers, reps)
    d_hc = rel["H"] - rel["C"]
    ok1 = _folds_gain(d_hc, "H − C", seeds)
    for name in ("C", "H"):
        m, s = _paired(_per_fold(rel[name] - rel["A"]))
        print(f"   {name} − A {m:+.4f} ± {s:.4f}; by window: {_by_window(rel[name] - rel['A'])}")
    print(pd.concat({"H − C": d_hc, "C − A": rel["C"] - rel["A"]}, axis=1)
          .groupby(level=["family", "window"]).mean().round(4).to_string())  # fmt: skip
    ok2 = _french_at_most(frel["H"] - frel["C"], "H − C", tolerance=True)
    ok3 = _grids_keep(prial, fails, "C", "H", 0.10)
    return _verdict(ok1 and ok2 and ok3, "H", "C")


RULE50_SEEDS = (2081, 2083)
"""Decision 0050's fold seeds (never used before its rule was declared)."""


def forecast_losses(universe, base, timings: dict, window: int, rebalance: int) -> dict:
    """Mean per-asset QLIKE (:func:`shrinklab.evaluation.variance_forecast.qlike`) of each
    timing's variance forecasts (the diagonal of the timed ``base`` estimate from the
    ``window`` days before each rebalance date) against the mean squared return of the
    following ``rebalance`` periods, over the universe's backtest dates (from
    ``universe.start``)."""
    R = universe.returns.to_numpy(dtype=np.float64)
    lo = max(int(universe.returns.index.searchsorted(universe.start)), window)
    pos = np.arange(lo, len(R), rebalance)
    X = torch.as_tensor(np.stack([R[t - window : t] for t in pos]))
    realised = holding_variances(R, pos, len(R))
    cov = torch.as_tensor(base(X), dtype=torch.float64)
    out = {}
    for name, (c, pretest) in timings.items():
        timed = apply_volatility_timing(cov, X, c, pretest) if c else cov
        h = torch.diagonal(timed, dim1=-2, dim2=-1).numpy()
        out[name] = float(np.nanmean(qlike(h, realised)))
    return out


def rule50_part(root: str, workers: int, reps: int, seeds: tuple[int, ...] = RULE50_SEEDS) -> bool:
    """Decision 0050's conditions: does the split pre-test's common part (T, deployed)
    improve real variance forecasts over the relative pre-test (E, no common part)?"""
    from shrinklab.data.french_portfolios import french_universes

    timings = {"A": (None, None), "T": (0.5, "split"), "E": (0.5, "relative")}
    data = load_rule_data(f"{root}/data", cut_test=True)
    model = untimed_final(root)
    base = backtest.learned_estimator(model)
    rows = []
    for seed in seeds:
        f, folds = seed_folds(data, seed)
        for k, u in enumerate(folds):
            for w in f.windows:
                q = forecast_losses(u, base, timings, w, 21)
                rows.append({"seed": seed, "fold": k, "family": u.family, "window": w, **q})
    q = pd.DataFrame(rows).set_index(["seed", "fold", "family", "window"])
    d = q["T"] - q["E"]
    m1, s1 = _paired(_per_fold(d))
    ok1 = m1 < -max(s1, 0.001)
    print(f"1. folds, seeds {seeds} ({len(_per_fold(d))} folds), per-asset variance QLIKE:")
    print(f"   T − E {m1:+.5f} ± {s1:.5f} (below {-max(s1, 0.001):+.5f}): {_holds(ok1)}")
    print(f"   T − E by window: {_by_window(d)}")
    for name in ("T", "E"):
        m, s = _paired(_per_fold(q[name] - q["A"]))
        print(f"   {name} − A {m:+.5f} ± {s:.5f}; mean QLIKE {q[name].mean():.4f}")
    print(pd.concat({"T − E": d, "E − A": q["E"] - q["A"]}, axis=1)
          .groupby(level=["family", "window"]).mean().round(5).to_string())  # fmt: skip
    frows = []
    for u in french_universes():
        for w in (36, 60, 120):
            frows.append({"family": u.family, "window": w,
                          **forecast_losses(u, base, timings, w, 1)})  # fmt: skip
    fq = pd.DataFrame(frows).set_index(["family", "window"])
    m2, s2 = _paired(fq["T"] - fq["E"])
    ok2 = m2 <= 0
    print(f"2. French universes ({len(fq)} cells): T − E {m2:+.5f} ± {s2:.5f} (at most 0): "
          f"{_holds(ok2)}")  # fmt: skip
    print((fq["T"] - fq["E"]).round(5).to_string())
    keep_t = ok1 and ok2
    timed = {n: VolatilityTiming(base, c, pretest=pt) for n, (c, pt) in timings.items() if c}
    prial, fails = grid_tables(model, timed, reps)
    ok3 = _grids_keep(prial, fails, "T", "E", 0.0)
    return _verdict(not keep_t and ok3, "E", "T")


def _seeds(arg: str, default: tuple[int, ...]) -> tuple[int, ...]:
    """``--rule-seeds`` for a rule whose own seeds are ``default`` (the flag's default is
    0047's seeds, so an unchanged flag means the rule's own)."""
    if arg == ",".join(map(str, RULE_SEEDS)):
        return default
    return tuple(int(x) for x in arg.split(","))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root")
    ap.add_argument("--folds", type=int, action="append", default=[])
    ap.add_argument("--grid", action="store_true")
    ap.add_argument("--rule", action="store_true", help="decision 0047's rule")
    ap.add_argument("--rule48", action="store_true", help="decision 0048's rule")
    ap.add_argument("--rule49", action="store_true", help="decision 0049's rule")
    ap.add_argument("--rule50", action="store_true", help="decision 0050's rule")
    ap.add_argument(
        "--rule-seeds",
        default=",".join(map(str, RULE_SEEDS)),
        help="fold seeds of --rule (a dry run on other seeds decides nothing)",
    )
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
    if a.rule48:
        rule48_part(a.root, a.workers, a.reps, _seeds(a.rule_seeds, RULE48_SEEDS))
    if a.rule49:
        rule49_part(a.root, a.workers, a.reps, _seeds(a.rule_seeds, RULE49_SEEDS))
    if a.rule50:
        rule50_part(a.root, a.workers, a.reps, _seeds(a.rule_seeds, RULE50_SEEDS))
    if a.rule:
        rule_part(a.root, a.workers, a.reps, tuple(int(x) for x in a.rule_seeds.split(",")))
    print(f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
