"""Study: pre-tested recency weighting of the whole window (correlations included)?

The deployed estimator times only the volatilities (decisions 0047–0050): its
correlations weigh every day of the window alike. This script weighs the days of the
window by ``w_t ∝ 2^(−age/h)`` (half-life ``h = c · n``, the same weights as the
volatility timing's) *before* the estimator sees them, and mixes the two estimates by
a pre-test of the correlation change:

    Σ̂' = Σ̂(X) + f · (Σ̂(X_w) − Σ̂(X)),   X_w = the rows (x_t − x̄_w) · √(n w_t),

with ``f`` the positive-part James–Stein factor (James & Stein 1961; Efron & Morris
1973, JASA 68) of the weighted-minus-equal sample correlations ``d_ij = r̃_ij − r_ij``:

    f = max(0, 1 − Σ_{i<j} v_ij / Σ_{i<j} d_ij²),   v_ij = s · mean_t ψ_tij²,

``s = Σ_t (w_t − 1/n)²`` and ``ψ_tij = u_ti u_tj − r_ij (u_ti² + u_tj²)/2`` the influence
function of the correlation (``u`` the demeaned returns over their equal-weight standard
deviations; Hampel et al. 1986, "Robust statistics", for the correlation's influence
function). ``v_ij`` is the delta-method variance of ``d_ij`` when the days are i.i.d.,
whatever their distribution, so in a stationary window ``f`` is small and ``Σ̂'`` stays
near ``Σ̂(X)``; after a regime shift in the correlations ``f`` approaches 1. A convex
combination of two covariance estimates, ``Σ̂'`` is positive semi-definite when they are.
Constant columns (zero variance) count in no pair. With ``h = n`` the weights vary by a
factor of two over the window (effective sample size ``1/Σw² ≈ 0.96 n``).

Decision 0052 (``docs/decisions/0052-pre-tested-correlation-timing.md``) declared its rule
before this script's ``--rule`` run; validation data only (never 2016–2022, never the
public grid):

* fresh cross-universe folds (seeds 2087 and 2089, pre-2016): relative volatility to
  Ledoit–Wolf (%) of ``final.pt`` with and without the correlation timing, paired;
* the selection and wide grids (100 replications, i.i.d. worlds): its cost where nothing
  moves;
* Ken French's monthly universes, a report (an exploration without the pre-test read
  them before the rule).

    OMP_NUM_THREADS=1 python scripts/correlation_timing.py <run root> --rule [--workers 2]

``--rule54``: decision 0054's rule (``docs/decisions/0054-correlation-only-timing.md``):
the same parts and rule for :class:`CorrelationOnlyTiming` (the recency weighting moves
only the correlations, by :func:`correlation_split_pretest`), on the fresh fold seeds
:data:`RULE54_SEEDS`.

About 3 min on the 2-vCPU VM (two workers).
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

from shrinklab.core.volatility_timing import COMMON_THRESHOLD, ewma_weights
from shrinklab.data import universes
from shrinklab.data.french_portfolios import french_universes
from shrinklab.evaluation import backtest, scenarios
from shrinklab.evaluation import universe_backtest as ub
from shrinklab.models.registry import load_model
from shrinklab.studies.deploy_rule import FoldSpec, load_rule_data
from shrinklab.studies.selection_grid import SELECTION_GRID, SELECTION_SEED, WIDE_GRID

RULE_SEEDS = (2087, 2089)
"""Decision 0052's fold seeds (never used before its rule was declared)."""
RULE54_SEEDS = (2095, 2097)
"""Decision 0054's fold seeds (never used before its rule was declared)."""


def weighted_rows(X: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``(x_t − x̄_w) · √(n w_t)`` for returns ``X (…, n, p)`` and day weights ``w (n,)``
    summing to 1: rows whose equal-weight second moment is the weighted covariance."""
    n = X.shape[-2]
    mean = (w[:, None] * X).sum(-2, keepdim=True)
    return (X - mean) * (n * w).sqrt()[:, None]


def _standardised(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(u, live, r)``: the demeaned returns over their equal-weight standard deviations
    (zero for constant columns), which columns are live, and their sample correlations."""
    n = X.shape[-2]
    Xc = X - X.mean(-2, keepdim=True)
    m2 = (Xc * Xc).mean(-2)
    scale = Xc.abs().amax((-2, -1), keepdim=True).squeeze(-2)
    live = m2.sqrt() > n * torch.finfo(X.dtype).eps * scale.clamp_min(1e-300)
    u = Xc / torch.where(live, m2, torch.ones_like(m2)).sqrt()[..., None, :]
    u = torch.where(live[..., None, :], u, torch.zeros_like(u))
    return u, live, u.transpose(-1, -2) @ u / n


def _weighted_change(u: torch.Tensor, r: torch.Tensor, live: torch.Tensor, w: torch.Tensor):
    """``(d, pair)``: the weighted-minus-equal correlations ``d_ij`` and the mask of the
    live pairs ``i < j``."""
    uw = u * w.sqrt()[:, None]
    mw = (w[:, None] * u).sum(-2)
    cw = uw.transpose(-1, -2) @ uw - mw[..., :, None] * mw[..., None, :]
    dw = torch.diagonal(cw, dim1=-2, dim2=-1).clamp_min(1e-300).sqrt()
    rw = cw / (dw[..., :, None] * dw[..., None, :])
    pair = torch.triu(live[..., :, None] & live[..., None, :], diagonal=1)
    return torch.where(pair, rw - r, torch.zeros_like(r)), pair


def _shift(
    u: torch.Tensor, live: torch.Tensor, r: torch.Tensor, w: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(d, Σ d², Σ v)`` from :func:`_standardised`'s output: the weighted-minus-equal
    correlations of the live pairs and the two sums of :func:`correlation_shift`."""
    n = u.shape[-2]
    d, pair = _weighted_change(u, r, live, w)
    u2 = u * u
    a = u2.transpose(-1, -2) @ u2 / n  # mean u_i² u_j²
    b = (u2 * u).transpose(-1, -2) @ u / n  # mean u_i³ u_j
    q = (u2 * u2).mean(-2)  # mean u_i⁴
    psi2 = (
        a - r * (b + b.transpose(-1, -2)) + r * r / 4 * (q[..., :, None] + q[..., None, :] + 2 * a)
    )
    s = float(((w - 1.0 / n) ** 2).sum())
    v = s * torch.where(pair, psi2, torch.zeros_like(r)).sum((-2, -1))
    return d, (d * d).sum((-2, -1)), v


def correlation_shift(X: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Σ d², Σ v)`` over the live pairs ``i < j`` (module docstring), each ``(…,)``."""
    _, ss, v = _shift(*_standardised(X), w)
    return ss, v


def correlation_pretest(X: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The James–Stein factor ``f`` ``(…,)`` of the module docstring (0 without live pairs)."""
    ss, v = correlation_shift(X, w)
    f = (1.0 - v / ss.clamp_min(1e-300)).clamp_min(0.0)
    return torch.where(ss > 0, f, torch.zeros_like(f))


def correlation_split_pretest(
    X: torch.Tensor, w: torch.Tensor, threshold: float = COMMON_THRESHOLD
) -> torch.Tensor:
    """The *split* pre-test ``f`` ``(…,)`` (decision 0054): the common part of the change,
    ``d̄`` (the mean of ``d_ij`` over the live pairs), and the pair-specific part
    ``e_ij = d_ij − d̄`` pass by their own positive-part James–Stein factors,

        f_c = max(0, 1 − threshold · v_c / d̄²),   f_e = max(0, 1 − V_e / Σ e²),

    with the i.i.d. null variances from the per-day influence functions, ``v_c = s ·
    mean_t ψ̄_t²`` and ``V_e = s · (Σ_ij mean_t ψ_tij² − m · mean_t ψ̄_t²)`` (``ψ̄_t`` the
    mean of ``ψ_tij`` over the ``m`` live pairs): they include the pairs' co-movement,
    which the pooled test (:func:`correlation_pretest`) ignores, as decision 0048's split
    test does for the volatilities (and with its ``threshold``, 4). The estimate takes the
    share of the squared change that passes, ``f = (f_c · m d̄² + f_e · Σ e²) / Σ d²``."""
    n = X.shape[-2]
    u, live, r = _standardised(X)
    k = live.sum(-1).to(X.dtype)
    m = (k * (k - 1) / 2).clamp_min(1.0)
    eye = torch.eye(r.shape[-1], dtype=r.dtype)
    c = (r * (1 - eye)).sum(-1)  # Σ_{j≠i} r_ij (zero for constant columns)
    u2 = u * u
    pair_products = (u.sum(-1) ** 2 - u2.sum(-1)) / 2  # Σ_{i<j} u_ti u_tj
    psi_bar = (pair_products - 0.5 * (u2 * c[..., None, :]).sum(-1)) / m[..., None]  # (…, n)
    d, ss, v = _shift(u, live, r, w)  # the change, Σ d², s Σ mean ψ²
    d_bar = d.sum((-2, -1)) / m
    s = float(((w - 1.0 / n) ** 2).sum())
    v_c = s * (psi_bar**2).mean(-1)
    common_ss = m * d_bar**2
    e_ss = (ss - common_ss).clamp_min(0.0)
    v_e = (v - m * v_c).clamp_min(0.0)
    f_c = (1.0 - threshold * v_c / (d_bar**2).clamp_min(1e-300)).clamp_min(0.0)
    f_e = (1.0 - v_e / e_ss.clamp_min(1e-300)).clamp_min(0.0)
    f_c = torch.where(d_bar != 0, f_c, torch.zeros_like(f_c))
    f_e = torch.where(e_ss > 0, f_e, torch.zeros_like(f_e))
    f = (f_c * common_ss + f_e * e_ss) / ss.clamp_min(1e-300)
    return torch.where(ss > 0, f.clamp(0.0, 1.0), torch.zeros_like(f))


class CorrelationTiming:
    """Batched estimator (:func:`shrinklab.evaluation.backtest.batched` protocol):
    ``base`` on the equal-weight and on the recency-weighted rows, mixed by the pre-test
    (module docstring). ``pretest=False``: ``f = 1`` (the weighted rows alone)."""

    batched = True
    wants_dates = False

    def __init__(self, base, c: float = 1.0, pretest: bool = True) -> None:
        if pretest not in (True, False):
            raise ValueError(f"pretest must be True or False, got {pretest!r}")
        self.base, self.c, self.pretest = base, float(c), bool(pretest)

    def __call__(self, X) -> torch.Tensor:
        X = torch.as_tensor(X, dtype=torch.float64)
        w = ewma_weights(X.shape[-2], self.c * X.shape[-2], like=X)
        timed = torch.as_tensor(self.base(weighted_rows(X, w)), dtype=torch.float64)
        if not self.pretest:
            return timed
        f = correlation_pretest(X, w)[..., None, None]
        equal = torch.as_tensor(self.base(X), dtype=torch.float64)
        return equal + f * (timed - equal)


def _correlation(S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(R, sd)`` of covariances ``S (…, p, p)`` (zero-variance columns: zero rows)."""
    sd = torch.diagonal(S, dim1=-2, dim2=-1).clamp_min(0.0).sqrt()
    inv = torch.where(sd > 0, 1.0 / torch.where(sd > 0, sd, torch.ones_like(sd)), sd)
    return S * inv[..., :, None] * inv[..., None, :], sd


class CorrelationOnlyTiming:
    """Decision 0054's estimator (batched protocol): the deployed model's volatilities,
    and correlations moved from those of its network on the equal-weight rows towards
    those on the recency-weighted rows by :func:`correlation_split_pretest`,

        Σ̂' = D R D,   R = R(U(X)) + f · (R(U(X_w)) − R(U(X))),   D = diag(Σ̂(X))^½,

    ``Σ̂`` the deployed model (its volatility timing included, once) and ``U`` the same
    model without its volatility timing (:func:`shrinklab.sklearn.without_volatility_timing`).
    The recency weighting then touches the correlations only; with ``f = 0`` the estimate
    is ``Σ̂(X)`` (the timing keeps ``U``'s correlations). ``R`` is a convex combination of
    two correlation matrices, so ``Σ̂'`` is positive semi-definite."""

    batched = True
    wants_dates = False

    def __init__(self, timed, untimed, c: float = 1.0) -> None:
        self.timed, self.untimed, self.c = timed, untimed, float(c)

    def __call__(self, X) -> torch.Tensor:
        X = torch.as_tensor(X, dtype=torch.float64)
        w = ewma_weights(X.shape[-2], self.c * X.shape[-2], like=X)
        deployed = torch.as_tensor(self.timed(X), dtype=torch.float64)
        r0, _ = _correlation(torch.as_tensor(self.untimed(X), dtype=torch.float64))
        r1, _ = _correlation(
            torch.as_tensor(self.untimed(weighted_rows(X, w)), dtype=torch.float64)
        )
        f = correlation_split_pretest(X, w)[..., None, None]
        _, sd = _correlation(deployed)
        return (r0 + f * (r1 - r0)) * sd[..., :, None] * sd[..., None, :]


def _b_estimator(model, pretest: bool | str):
    """Arm B of decision 0052 (``pretest=True``) or 0054 (``"split"``) for ``model``."""
    from shrinklab.sklearn import without_volatility_timing

    final = backtest.learned_estimator(model)
    if pretest == "split":
        return CorrelationOnlyTiming(
            final, backtest.learned_estimator(without_volatility_timing(model)), 1.0
        )
    return CorrelationTiming(final, 1.0, pretest=pretest)


def _paired(diff: pd.Series) -> tuple[float, float]:
    return float(diff.mean()), float(diff.std(ddof=1) / len(diff) ** 0.5)


def folds_part(root: str, seeds: tuple[int, ...], workers: int, pretest: bool | str = True) -> dict:
    """Paired ``B − A`` relative volatility (% of Ledoit–Wolf's) on the folds of ``seeds``:
    overall and per window, SE over folds."""
    data = load_rule_data(f"{root}/data", cut_test=True)
    model = load_model(f"{root}/models/final.pt")
    ests = {
        "ledoit_wolf": backtest.classical_estimators()["ledoit_wolf"],
        "A": backtest.learned_estimator(model),
        "B": _b_estimator(model, pretest),
    }
    parts = []
    for seed in seeds:
        f = FoldSpec(seed=seed)
        folds = universes.cross_universe_folds(
            data.returns, data.factor_returns, data.market["index_return"],
            seed=f.seed, n_splits=f.n_splits, draws=f.draws, start=f.start,
        )  # fmt: skip
        rows = ub.fold_backtest(folds, ests, f.windows, workers=workers)
        parts.append(rows.assign(fold=rows.fold + f" (seed {seed})"))
    rows = pd.concat(parts, ignore_index=True)
    rel = rows.set_index(["estimator", "family", "fold", "window"])["rel_vol"]
    d = (rel["B"] - rel["A"]).reset_index()
    print("fresh folds, B − A, % of Ledoit–Wolf's volatility (mean ± SE over folds):")
    print(d.groupby(["family", "window"])["rel_vol"].agg(["mean", "sem", "count"]).round(3))
    out = {"all": _paired(d["rel_vol"])}
    for window, g in d.groupby("window"):
        out[int(window)] = _paired(g["rel_vol"])
    print({k: (round(m, 4), round(s, 4)) for k, (m, s) in out.items()})
    return out


def grid_part(root: str, reps: int, pretest: bool | str = True) -> dict:
    """Selection and wide grids: failures and mean PRIAL of A and B."""
    model = load_model(f"{root}/models/final.pt")
    extra = {"B": _b_estimator(model, pretest)}
    df = scenarios.evaluate_grid(
        SELECTION_GRID + WIDE_GRID, model, n_reps=reps, seed=SELECTION_SEED, extra_estimators=extra
    )
    prial = df.pivot(index="scenario", columns="estimator", values="prial")
    print(f"selection and wide grids, PRIAL (%), {reps} replications")
    print(prial[["learned", "B", "oracle"]].round(2).to_string())
    rows = df[df.estimator.isin(["learned", "B"])]
    fails = (rows.diff_best_classical < -rows.diff_se).groupby(rows.estimator).sum()
    out = {
        "fails A": int(fails["learned"]), "fails B": int(fails["B"]),
        "mean A": float(prial["learned"].mean()), "mean B": float(prial["B"].mean()),
    }  # fmt: skip
    print(out)
    return out


def french_part(root: str, workers: int, pretest: bool | str = True) -> None:
    """A report: Ken French's universes, B − A and each against Ledoit–Wolf."""
    model = load_model(f"{root}/models/final.pt")
    ests = backtest.classical_estimators() | {
        "A": backtest.learned_estimator(model),
        "B": _b_estimator(model, pretest),
    }
    rows = ub.fold_backtest(french_universes(), ests, (36, 60, 120), rebalance=1, workers=workers)
    rel = rows[rows.estimator != "equal_weight"]
    table = rel.groupby(["estimator", "family", "window"])["rel_vol"].mean().unstack([1, 2])
    pd.set_option("display.width", 250)
    print("Ken French's universes (a report), % of Ledoit–Wolf's volatility:")
    print(table.round(2).to_string())
    best = table.drop(index=["A", "B"]).min()
    for name in ("A", "B"):
        print(f"{name}: above the best classical in {int((table.loc[name] > best).sum())} of 12")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", help="a run directory after `make repro`")
    ap.add_argument("--rule", action="store_true", help="decision 0052's rule")
    ap.add_argument(
        "--rule54", action="store_true", help="decision 0054's rule (the split pre-test)"
    )
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    if not (args.rule or args.rule54):
        ap.error("nothing to do: pass --rule or --rule54")
    seeds, pretest = (RULE54_SEEDS, "split") if args.rule54 else (RULE_SEEDS, True)
    folds = folds_part(args.root, seeds, args.workers, pretest)
    grid = grid_part(args.root, args.reps, pretest)
    french_part(args.root, args.workers, pretest)
    m, se = folds["all"]
    windows_ok = all(folds[w][0] <= folds[w][1] for w in (60, 120, 250))
    rule1 = m < 0 and -m >= se and windows_ok
    rule2 = grid["fails B"] <= grid["fails A"] and grid["mean B"] >= grid["mean A"] - 0.1
    print(f"rule 1 (folds): {rule1}; rule 2 (grids): {rule2}; adopt B: {rule1 and rule2}")
    print(f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
