"""Study: pretraining on the current world mix (A) versus the mix plus the market-like
families of :mod:`shrinklab.data.worlds_market` (B), on validation data only.

Protocol and decision rule: docs/decisions/0023-market-like-training-worlds.md. Per
repetition, each mix gets its own reduced training set and network (same seeds for
both mixes), then both networks are scored on (i) the synthetic validation worlds of
both mixes — PRIAL vs the oracle (Ledoit & Wolf 2022, "The power of (non-)linear
shrinking") with the paired difference B − A — and (ii) real GMV backtests on
pre-2016 windows (2010–2015) of the 20 stocks and of random long-only portfolios of
them: the realised out-of-sample GMV variance per window, B − A paired over windows.

Run: ``nice python -m shrinklab.studies.worlds --out build/studies/worlds`` (about
10 minutes on one core at the defaults); ``--smoke`` for a seconds-long check.

``--candidate FAMILY`` runs the comparison of docs/decisions/0026-diversified-training-worlds.md
instead: A is the pipeline's mix (``data_prep.family_weights`` of params.yaml), B is A plus
``FAMILY`` at weight 1, and the real backtests add *diversified* universes (long-only
portfolios of random 8–20 of the 20 stocks plus an equal-weight index asset,
:func:`diversified_returns_frame`); the summary applies that record's three-part rule.

``--train-override KEY=VALUE`` (repeatable) makes B differ from A in its
:class:`~shrinklab.training.config.TrainConfig` too (:func:`parse_overrides`). Without
``--candidate`` both arms use the pipeline's mix and the same training and validation
worlds, so the paired difference isolates the training setting; the real backtests
include the diversified universes and the summary applies the rule of
docs/decisions/0027-gmv-portfolio-variance-loss.md (e.g. ``--train-override
portfolio_weight=0.3``: the GMV portfolio-variance loss term, Engle & Colacito 2006;
docs/decisions/0028-stein-log-det-loss.md applies the same rule to ``log_det_weight``,
Stein's loss, Dey & Srinivasan 1985).
With ``--candidate`` as well, 0026's rule applies to B = mix + family + overrides.
``--candidate-weight W`` gives the family weight ``W`` in B instead of 1, which may raise
the weight of a family already in the mix (docs/decisions/0029-diversified-worlds-weight-3.md,
0026's rule).

``--hidden-dims 256,128,64`` gives B's network those hidden layers (the pretrain section's
otherwise); like ``--train-override``, both arms then share the pipeline's mix unless
``--candidate`` is given (docs/decisions/0031-wider-network.md).

``--rule 0030`` (with ``--candidate``, ``--train-override`` or ``--hidden-dims``) applies the rule of
docs/decisions/0030-factor-worlds-weight-3.md instead of 0026's: both arms are also scored
on the factor scenarios of the selection and wide grids (:func:`factor_scenario_gains`,
the same replications for both arms), and the rule asks for a PRIAL gain there without a
loss on the real universes.

``--hetero-all`` (with ``--rule 0051``) gives B training worlds whose heterogeneous
variances reach every synthetic family that can take them (all but ``sp500`` and
``resampled``, which carry real volatilities) with a log-volatility spread up to
``--hetero-tau-max`` (1.2) instead of 0.8 (:func:`hetero_worlds`; the pipeline's draws
are unchanged). The rule of docs/decisions/0051-heterogeneous-volatilities-everywhere.md
then scores both arms on :data:`HETERO_STRESS` (fresh replications, seed
:data:`STRESS_SEED`) and on the selection and wide grids, repetition by repetition, and
judges every part by the spread over the repetitions (training-seed noise), not only
over replications.

``--vol-paths PROB`` (with ``--rule 0053``) gives B training worlds whose returns carry a
common volatility path inside the window with probability ``PROB``
(:func:`volatility_path_worlds`, :func:`shrinklab.data.sampling.volatility_path`; the
truth stays the window's Σ). The rule of
docs/decisions/0053-volatility-paths-in-training-worlds.md is 0051's, with the selection
and wide grids' scenarios *with* volatility paths (fresh replications, seed
:data:`PATH_SEED`) in place of the stress scenarios.

``--candidate resampled_forward --rule 0062`` compares the pipeline's mix with the mix plus
the forward-resampled worlds (:func:`rule_0062`): the real universes must gain, by more
than one SE over the repetitions, with the selection and wide grids scored as in 0053
(docs/decisions/0062-forward-resampled-worlds.md). ``--candidate fund_portfolios --rule
0063`` asks the diversified universes to gain and the other real universes, the
validation worlds and the grids not to lose (:func:`rule_0063`,
docs/decisions/0063-fund-portfolio-worlds.md).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from shrinklab.core.estimators import CLASSICAL_ESTIMATORS
from shrinklab.core.metrics import prial_with_se, ratio_se
from shrinklab.core.targets import TARGET_NAMES, combine
from shrinklab.data import dataset, families, returns, sampling
from shrinklab.data.real_windows import build_windows, realised_gmv_variance
from shrinklab.data.synthetic import BASE_FAMILIES, REGULAR_FAMILIES
from shrinklab.data.worlds_market import MARKET_FAMILIES
from shrinklab.evaluation import scenarios
from shrinklab.models.network import MLShrinkageNetwork, predict_numpy
from shrinklab.studies.selection_grid import SELECTION_GRID, SELECTION_SEED, WIDE_GRID
from shrinklab.training.config import TrainConfig
from shrinklab.training.loop import train

MIXES: dict[str, dict[str, float]] = {
    "A": dict.fromkeys(BASE_FAMILIES, 1.0),
    "B": {**dict.fromkeys(BASE_FAMILIES, 1.0), **dict.fromkeys(MARKET_FAMILIES, 1.0)},
}

_TRAIN_KEYS = (
    "lr weight_decay intensity_weight matrix_weight spectrum_weight uncertainty_weight "
    "clip_norm loss_normaliser best_classical_weight gap_floor edge_weight"
).split()


def portfolio_returns_frame(ret: pd.DataFrame, k: int, seed: int) -> pd.DataFrame:
    """Daily returns of ``k`` random long-only portfolios (Dirichlet(0.5) weights)."""
    w = np.random.default_rng(seed).dirichlet(np.full(ret.shape[1], 0.5), size=k)
    return pd.DataFrame(ret.to_numpy() @ w.T, index=ret.index, columns=[f"P{i}" for i in range(k)])


def diversified_returns_frame(ret: pd.DataFrame, p: int, seed: int) -> pd.DataFrame:
    """Daily returns of a diversified universe of ``p`` assets: ``p - 1`` long-only
    portfolios, each of a random 8–20 of the stocks with Dirichlet(1) weights, and one
    equal-weight index of all of them (docs/decisions/0026-diversified-training-worlds.md)."""
    rng = np.random.default_rng(seed)
    q = ret.shape[1]
    if p < 2 or q < 8:
        raise ValueError(f"need p >= 2 assets from >= 8 stocks, got p={p}, {q} stocks")
    w = np.zeros((p, q))
    for i in range(p - 1):
        m = int(rng.integers(8, q + 1))
        w[i, rng.choice(q, m, replace=False)] = rng.dirichlet(np.ones(m))
    w[p - 1] = 1.0 / q
    cols = [f"F{i}" for i in range(p - 1)] + ["index"]
    return pd.DataFrame(ret.to_numpy() @ w.T, index=ret.index, columns=cols)


def real_universes(
    windows: tuple[int, ...],
    n_portfolio_draws: int,
    start: str,
    end: str,
    diversified: tuple[int, ...] = (),
    n_diversified_draws: int = 3,
):
    """``{name: [RealWindows per window length]}``: the 20 stocks, random portfolios and
    (for each size in ``diversified``) diversified universes ``diversified{p}_{j}``."""
    ret = returns.load_returns()
    ret = returns.before_test(ret)
    frames = {"stocks": ret}
    for j in range(n_portfolio_draws):
        frames[f"portfolios{j}"] = portfolio_returns_frame(ret, 15, seed=100 + j)
    for p in diversified:
        for j in range(n_diversified_draws):
            seed = 1000 + 10 * p + j
            frames[f"diversified{p}_{j}"] = diversified_returns_frame(ret, p, seed)
    return {
        name: [build_windows(f, w, 21, 21, start=start, end=end) for w in windows]
        for name, f in frames.items()
    }


def gmv_variances(model: Any, universes: dict) -> pd.DataFrame:
    """Realised GMV variance per window of the model's estimate and of Ledoit–Wolf's."""
    rows = []
    for name, items in universes.items():
        for rw in items:
            for g in rw:
                w = torch.as_tensor(predict_numpy(model, g.features.float()).intensities)
                S, T, R = g.S.double(), g.targets.double(), g.realised.double()
                v = realised_gmv_variance(combine(S, T, w.double()), R).numpy()
                rows += [
                    {"universe": name, "window": int(g.X.shape[1]), "i": i, "var": x}
                    for i, x in enumerate(v)
                ]
    return pd.DataFrame(rows)


def classical_vols(universes: dict, names=("sample", "single_factor")) -> pd.DataFrame:
    """Annualised realised GMV vol per universe and window of classical estimators
    (information beside the rule: Ledoit & Wolf 2003 for the single-factor shrinker)."""
    rows = []
    for name, items in universes.items():
        for rw in items:
            for g in rw:
                for est in names:
                    cov = CLASSICAL_ESTIMATORS[est](g.X.double())
                    v = realised_gmv_variance(cov, g.realised.double()).numpy()
                    rows += [
                        {"universe": name, "window": g.window, "est": est, "var": x} for x in v
                    ]
    d = pd.DataFrame(rows).groupby(["universe", "window", "est"])["var"].mean()
    return np.sqrt(252 * d).unstack("est")


def paired(diff: np.ndarray) -> tuple[float, float]:
    """Mean and standard error of paired differences."""
    return float(diff.mean()), float(diff.std(ddof=1) / math.sqrt(len(diff)))


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, float | int | str]:
    """``["portfolio_weight=0.3", ...]`` → ``{"portfolio_weight": 0.3}``: settings of
    :class:`TrainConfig` that arm B trains with. Numeric fields (not ``seed``: both arms
    share their seeds) take finite values, an ``int`` field an integer value; the choice
    fields ``optimizer``, ``amp`` and ``loss_normaliser`` take a word (not ``device``: the
    study runs on the CPU). Anything else, or a value :class:`TrainConfig` rejects, is a
    ``ValueError``."""
    kinds = {  # field -> its type: int, float or str (bool is not accepted here)
        f.name: type(f.default)
        for f in dataclasses.fields(TrainConfig)
        if type(f.default) in (int, float, str) and f.name not in ("seed", "device")
    }
    out: dict[str, float | int | str] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or key not in kinds or key in out:
            raise ValueError(
                f"train override {item!r}: want KEY=VALUE once per KEY, KEY one of the "
                f"numeric or choice TrainConfig fields {sorted(kinds)}"
            )
        if kinds[key] is str:
            out[key] = text.strip()
        else:
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"train override {item!r}: {text!r} is not a number") from None
            if not math.isfinite(value) or (kinds[key] is int and not value.is_integer()):
                raise ValueError(
                    f"train override {item!r}: {key} needs a finite {kinds[key].__name__}"
                )
            out[key] = kinds[key](value)
        try:
            TrainConfig(**{key: out[key]})
        except ValueError as e:
            raise ValueError(f"train override {item!r}: {e}") from None
    return out


def mixes(
    candidate: str | None, params: dict[str, Any], same: bool = False, weight: float = 1.0
) -> dict[str, dict[str, float]]:
    """Mixes A and B: 0023's (no ``candidate``), the pipeline's mix and the same mix with
    ``candidate`` at ``weight`` (0026: a family not in the mix, at weight 1; 0029: a
    family of the mix at a larger weight), or (``same``, no ``candidate``) the pipeline's
    mix for both (0027: B differs only in its training settings)."""
    if candidate is None and not same:
        return MIXES
    a = {k: float(v) for k, v in params["data_prep"]["family_weights"].items()}
    if candidate is None:
        return {"A": a, "B": dict(a)}
    if candidate not in REGULAR_FAMILIES:
        raise ValueError(f"candidate must be a regular world family, got {candidate!r}")
    if not (math.isfinite(weight) and weight > a.get(candidate, 0.0)):
        raise ValueError(
            f"the candidate weight must be above {candidate!r}'s weight in the pipeline mix "
            f"({a.get(candidate, 0.0):g}), got {weight!r}"
        )
    return {"A": a, "B": {**a, candidate: float(weight)}}


def prial_drop_on_a(synth: pd.DataFrame) -> float:
    """Mean PRIAL drop of B against A on mix A's validation worlds (points)."""
    return float(-synth[synth.valid == "A"].delta_B_minus_A.mean())


def three_part_rule(
    first: np.ndarray, second: np.ndarray, synth: pd.DataFrame
) -> tuple[dict[str, float], tuple[bool, bool, bool]]:
    """The rule shared by 0026 and 0027 on paired real GMV-variance differences B − A:
    (1) ``first`` at least 1 SE below zero, (2) ``second`` not more than 1 SE above zero,
    (3) B's PRIAL on A's validation worlds at most 2 points below A's."""
    m1, se1 = paired(first)
    m2, se2 = paired(second)
    drop = prial_drop_on_a(synth)
    numbers = {"m1": m1, "se1": se1, "m2": m2, "se2": se2, "drop": drop}
    return numbers, (m1 < 0 and m1 + se1 < 0, m2 <= se2, drop <= 2.0)


def rule_0026(d: pd.DataFrame, synth: pd.DataFrame) -> dict[str, Any]:
    """The rule of docs/decisions/0026-diversified-training-worlds.md."""
    div = d["universe"].str.startswith("diversified")
    x, (r1, r2, r3) = three_part_rule(
        d.loc[div, "diff"].to_numpy(), d.loc[~div, "diff"].to_numpy(), synth
    )
    return {
        "diversified_var_diff_B_minus_A": x["m1"], "diversified_var_diff_se": x["se1"],
        "diversified_windows": int(div.sum()),
        "universes_0023_var_diff_B_minus_A": x["m2"], "universes_0023_var_diff_se": x["se2"],
        "universes_0023_windows": int((~div).sum()),
        "prial_drop_on_A_valid": x["drop"],
        "rule1_diversified": bool(r1), "rule2_0023_universes": bool(r2),
        "rule3_synthetic": bool(r3), "adopt_B": bool(r1 and r2 and r3),
    }  # fmt: skip


def rule_0027(d: pd.DataFrame, synth: pd.DataFrame) -> dict[str, Any]:
    """The rule of docs/decisions/0027-gmv-portfolio-variance-loss.md, for any
    ``--train-override`` (also docs/decisions/0028-stein-log-det-loss.md's)."""
    stocks = d["universe"] == "stocks"
    x, (r1, r2, r3) = three_part_rule(d["diff"].to_numpy(), d.loc[stocks, "diff"].to_numpy(), synth)
    return {
        "pooled_real_var_diff_B_minus_A": x["m1"], "pooled_real_var_diff_se": x["se1"],
        "pooled_real_windows": int(len(d)),
        "stocks_var_diff_B_minus_A": x["m2"], "stocks_var_diff_se": x["se2"],
        "stocks_windows": int(stocks.sum()),
        "prial_drop_on_A_valid": x["drop"],
        "rule1_pooled": bool(r1), "rule2_stocks": bool(r2),
        "rule3_synthetic": bool(r3), "adopt_B": bool(r1 and r2 and r3),
    }  # fmt: skip


FACTOR_SCENARIOS: list[dict[str, Any]] = [
    s for s in SELECTION_GRID + WIDE_GRID if s["family"] == "factor"
]  # 0030: the validation scenarios where final.pt is furthest below the oracle


def _paired_losses(
    models: list[tuple[Any, Any]], spec: dict[str, Any], n_reps: int, seed: int
) -> tuple[str, list[np.ndarray], np.ndarray]:
    """``(name, gains, b)`` of one scenario: per ``(A, B)`` pair of ``models`` the loss
    difference A − B per replication, and the oracle gain (sample − FSOPT loss) ``b`` of
    the replications, the same draws (seed ``scenario_seed(seed, name)``) for every pair."""
    name = scenarios.scenario_name(spec)
    s = scenarios.scenario_seed(seed, name)
    gains, b = [], np.zeros(0)
    for a_model, b_model in models:
        L = scenarios.evaluate_scenario(spec, a_model, n_reps, s, ensemble=b_model)["losses"]
        gains.append(np.asarray(L[scenarios.LEARNED]) - np.asarray(L[scenarios.ENSEMBLE]))
        b = np.asarray(L["sample"]) - np.asarray(L[scenarios.FSOPT])
    return name, gains, b


def factor_scenario_gains(
    models: list[tuple[Any, Any]], specs: list[dict[str, Any]], n_reps: int
) -> pd.DataFrame:
    """Paired PRIAL gain B − A (points) per scenario of ``specs``, for ``models`` =
    ``[(A, B), ...]`` (one pair per repetition). Every pair is scored on the same
    ``n_reps`` replications (seed ``scenario_seed(SELECTION_SEED, name)``, as the
    selection grid); the per-replication loss difference A − B is averaged over the
    pairs, and its PRIAL and delta-method SE come from :func:`ratio_se` against the
    oracle gain (sample − FSOPT loss) of the same replications."""
    if not models:
        raise ValueError("factor_scenario_gains needs at least one (A, B) model pair")
    rows = []
    for spec in specs:
        name, gains, b = _paired_losses(models, spec, n_reps, SELECTION_SEED)
        diff, se = ratio_se(np.mean(gains, axis=0), b)
        rows.append({"scenario": name, "prial_gain_B_minus_A": diff, "se": se, "n_reps": n_reps})
    return pd.DataFrame(rows)


def rule_0030(d: pd.DataFrame, synth: pd.DataFrame, factor: pd.DataFrame) -> dict[str, Any]:
    """The rule of docs/decisions/0030-factor-worlds-weight-3.md: (1) the mean PRIAL gain
    B − A over the factor scenarios at least 1 SE above zero (scenarios independent:
    SE = √Σse² / count); (2) pooled real GMV variance B − A over every real universe not
    more than 1 SE above zero; (3) B's PRIAL on A's validation worlds at most 2 points
    below A's."""
    gain = float(factor["prial_gain_B_minus_A"].mean())
    gain_se = float(np.sqrt((factor["se"] ** 2).sum()) / len(factor))
    m, se = paired(d["diff"].to_numpy())
    drop = prial_drop_on_a(synth)
    r1, r2, r3 = gain > 0 and gain - gain_se > 0, m <= se, drop <= 2.0
    return {
        "factor_prial_gain_B_minus_A": gain, "factor_prial_gain_se": gain_se,
        "factor_scenarios": factor["scenario"].tolist(),
        "pooled_real_var_diff_B_minus_A": m, "pooled_real_var_diff_se": se,
        "pooled_real_windows": int(len(d)),
        "prial_drop_on_A_valid": drop,
        "rule1_factor_scenarios": bool(r1), "rule2_real": bool(r2),
        "rule3_synthetic": bool(r3), "adopt_B": bool(r1 and r2 and r3),
    }  # fmt: skip


#: Synthetic families whose worlds can take heterogeneous variances (Σ ← DΣD) beyond the
#: pipeline's :data:`shrinklab.data.families.HETERO_FAMILIES`: every family except the two
#: that carry real volatilities (``sp500``, ``resampled``).
HETERO_ALL: tuple[str, ...] = tuple(f for f in families.FAMILIES if f not in ("sp500", "resampled"))

#: Scenarios outside every grid and outside the training range of heterogeneous variances
#: (log-volatility spread τ up to 1.2, families the pipeline draws without it): the first
#: part of 0051's rule (declared with it, scored at :data:`STRESS_SEED`).
HETERO_STRESS: list[dict[str, Any]] = [
    {"name": "factor hetero1.2 p60 n120", "family": "factor", "p": 60, "n": 120, "hetero": 1.2},
    {"name": "block hetero1.0 p50 n100", "family": "block", "p": 50, "n": 100, "hetero": 1.0},
    {"name": "diversified hetero1.0 p30 n60", "family": "diversified", "p": 30, "n": 60,
     "hetero": 1.0},
    {"name": "market+sectors hetero0.8 p60 n120", "family": "market_sectors", "p": 60,
     "n": 120, "hetero": 0.8},
    {"name": "Toeplitz .5 hetero1.0 p100 n50", "family": "toeplitz", "p": 100, "n": 50,
     "rho": 0.5, "hetero": 1.0},
    {"name": "lognormal hetero1.2 p80 n160", "family": "lognormal", "p": 80, "n": 160,
     "hetero": 1.2},
]  # fmt: skip

#: Seed of :data:`HETERO_STRESS`'s replications (fresh for 0051).
STRESS_SEED = 2085


@contextlib.contextmanager
def hetero_worlds(family_names: tuple[str, ...], tau_max: float):
    """Within the block, synthetic worlds of ``family_names`` get heterogeneous variances
    (with the configured ``hetero_prob``) with ``τ ~ U(0.2, tau_max)``: the module settings
    :data:`shrinklab.data.families.HETERO_FAMILIES` and ``HETERO_TAU`` are swapped and put
    back afterwards. For a study's arm in one process (the training-set builder with one
    worker), never for the pipeline."""
    unknown = set(family_names) - set(HETERO_ALL)
    if unknown:
        raise ValueError(f"families without heterogeneous variances: {sorted(unknown)}")
    lo = families.HETERO_TAU[0]
    if not (math.isfinite(tau_max) and lo <= tau_max <= 3.0):
        raise ValueError(f"tau_max must be in [{lo}, 3], got {tau_max!r}")
    saved = families.HETERO_FAMILIES, families.HETERO_TAU
    families.HETERO_FAMILIES, families.HETERO_TAU = tuple(family_names), (lo, float(tau_max))
    try:
        yield
    finally:
        families.HETERO_FAMILIES, families.HETERO_TAU = saved


def scenario_gains_by_rep(
    models: list[tuple[Any, Any]], specs: list[dict[str, Any]], n_reps: int, seed: int
) -> pd.DataFrame:
    """Paired PRIAL gain B − A (points) per repetition and scenario of ``specs``, for
    ``models = [(A, B), ...]``: both arms on the same ``n_reps`` replications (seed
    ``scenario_seed(seed, name)``), the SE over the replications by :func:`ratio_se`."""
    if not models:
        raise ValueError("scenario_gains_by_rep needs at least one (A, B) model pair")
    rows = []
    for spec in specs:
        name, gains, b = _paired_losses(models, spec, n_reps, seed)
        for rep, gain in enumerate(gains):
            diff, se = ratio_se(gain, b)
            rows.append({"rep": rep, "scenario": name, "prial_gain_B_minus_A": diff, "se": se})
    return pd.DataFrame(rows)


def _rel_var_by_rep(d: pd.DataFrame) -> pd.Series:
    """Per repetition, the mean over ``d``'s windows of (B − A) / A, in %."""
    return (d["diff"] / d["A"]).groupby(d["rep"]).mean() * 100.0


def _grids_and_drop_by_rep(synth: pd.DataFrame, grids: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Per repetition, the mean PRIAL gain B − A over the grids' scenarios and B's PRIAL
    drop against A on A's validation worlds."""
    g_grids = grids.groupby("rep")["prial_gain_B_minus_A"].mean()
    drop = -synth[synth["valid"] == "A"].groupby("rep")["delta_B_minus_A"].mean()
    return g_grids, drop


def four_part_rule(
    d: pd.DataFrame, synth: pd.DataFrame, target: pd.DataFrame, grids: pd.DataFrame, name: str
) -> dict[str, Any]:
    """Decisions 0051's and 0053's rule, each part on per-repetition values with the SE
    over the repetitions: (1) the mean PRIAL gain B − A over the ``target`` scenarios
    (keys ``{name}_…``) at least 1 SE above zero; (2) the real universes' mean relative GMV
    variance change (B − A) / A not more than 1 SE above zero; (3) B's PRIAL on A's
    validation worlds at most 2 points below A's; (4) the mean PRIAL gain over the
    selection and wide grids not more than 1 SE below zero."""
    g_target = target.groupby("rep")["prial_gain_B_minus_A"].mean()
    g_grids, drop = _grids_and_drop_by_rep(synth, grids)
    rel = _rel_var_by_rep(d)
    (s_m, s_se), (r_m, r_se), (g_m, g_se) = (
        paired(v.to_numpy()) for v in (g_target, rel, g_grids)
    )  # over the repetitions
    drop_m = float(drop.mean())
    r1, r2, r3, r4 = s_m - s_se > 0, r_m <= r_se, drop_m <= 2.0, g_m >= -g_se
    return {
        f"{name}_prial_gain_B_minus_A": s_m, f"{name}_prial_gain_se": s_se,
        f"{name}_gain_by_rep": g_target.tolist(),
        "real_rel_var_pct_B_minus_A": r_m, "real_rel_var_pct_se": r_se,
        "real_rel_var_by_rep": rel.tolist(),
        "prial_drop_on_A_valid": drop_m,
        "grids_prial_gain_B_minus_A": g_m, "grids_prial_gain_se": g_se,
        "grids_gain_by_rep": g_grids.tolist(),
        f"rule1_{name}": bool(r1), "rule2_real": bool(r2), "rule3_synthetic": bool(r3),
        "rule4_grids": bool(r4), "adopt_B": bool(r1 and r2 and r3 and r4),
    }  # fmt: skip


def rule_0051(
    d: pd.DataFrame, synth: pd.DataFrame, stress: pd.DataFrame, grids: pd.DataFrame
) -> dict[str, Any]:
    """The rule of docs/decisions/0051-heterogeneous-volatilities-everywhere.md:
    :func:`four_part_rule` on :data:`HETERO_STRESS` (keys ``stress_…``)."""
    return four_part_rule(d, synth, stress, grids, "stress")


#: Seed of decision 0053's path scenarios (fresh for 0053).
PATH_SEED = 2091


@contextlib.contextmanager
def volatility_path_worlds(prob: float):
    """Within the block, each synthetic world's returns carry a common volatility path
    with probability ``prob`` (:func:`shrinklab.data.sampling.volatility_path`; resampled
    real returns keep their own): the module setting
    :data:`shrinklab.data.sampling.VOLATILITY_PATH_PROB` is swapped and put back
    afterwards. For a study's arm or scenarios in one process, never for the pipeline."""
    if not (math.isfinite(prob) and 0.0 < prob <= 1.0):
        raise ValueError(f"prob must be in (0, 1], got {prob!r}")
    saved = sampling.VOLATILITY_PATH_PROB
    sampling.VOLATILITY_PATH_PROB = float(prob)
    try:
        yield
    finally:
        sampling.VOLATILITY_PATH_PROB = saved


def rule_0053(
    d: pd.DataFrame, synth: pd.DataFrame, paths: pd.DataFrame, grids: pd.DataFrame
) -> dict[str, Any]:
    """The rule of docs/decisions/0053-volatility-paths-in-training-worlds.md:
    :func:`four_part_rule` on the path scenarios (the selection and wide grids' scenarios
    whose returns carry a volatility path; keys ``paths_…``)."""
    return four_part_rule(d, synth, paths, grids, "paths")


def rule_0062(d: pd.DataFrame, synth: pd.DataFrame, grids: pd.DataFrame) -> dict[str, Any]:
    """The rule of docs/decisions/0062-forward-resampled-worlds.md, each part on
    per-repetition values with the SE over the repetitions: (1) the real universes' mean
    relative GMV variance change (B − A) / A at least 1 SE *below* zero (a gain);
    (2) B's PRIAL on A's validation worlds at most 2 points below A's; (3) the mean PRIAL
    gain over the selection and wide grids not more than 1 SE below zero."""
    rel = _rel_var_by_rep(d)
    g_grids, drop = _grids_and_drop_by_rep(synth, grids)
    own = synth[synth["valid"] == "B"].groupby("rep")["delta_B_minus_A"].mean()
    (r_m, r_se), (g_m, g_se) = (paired(v.to_numpy()) for v in (rel, g_grids))
    drop_m = float(drop.mean())
    r1, r2, r3 = r_m + r_se < 0, drop_m <= 2.0, g_m >= -g_se
    return {
        "real_rel_var_pct_B_minus_A": r_m, "real_rel_var_pct_se": r_se,
        "real_rel_var_by_rep": rel.tolist(),
        "prial_drop_on_A_valid": drop_m, "prial_drop_by_rep": drop.tolist(),
        "prial_gain_on_B_valid_by_rep": own.tolist(),
        "grids_prial_gain_B_minus_A": g_m, "grids_prial_gain_se": g_se,
        "grids_gain_by_rep": g_grids.tolist(),
        "rule1_real": bool(r1), "rule2_synthetic": bool(r2), "rule3_grids": bool(r3),
        "adopt_B": bool(r1 and r2 and r3),
    }  # fmt: skip


def rule_0063(d: pd.DataFrame, synth: pd.DataFrame, grids: pd.DataFrame) -> dict[str, Any]:
    """The rule of docs/decisions/0063-fund-portfolio-worlds.md, each part on
    per-repetition values with the SE over the repetitions: (1) the diversified universes'
    mean relative GMV variance change (B − A) / A at least 1 SE below zero; (2) that of
    the other real universes (the stocks and their portfolios) not more than 1 SE above
    zero; (3) B's PRIAL on A's validation worlds at most 2 points below A's; (4) the mean
    PRIAL gain over the selection and wide grids not more than 1 SE below zero."""
    div = d["universe"].str.startswith("diversified")
    rel_div, rel_other = _rel_var_by_rep(d[div]), _rel_var_by_rep(d[~div])
    g_grids, drop = _grids_and_drop_by_rep(synth, grids)
    (v_m, v_se), (o_m, o_se), (g_m, g_se) = (
        paired(v.to_numpy()) for v in (rel_div, rel_other, g_grids)
    )  # over the repetitions
    drop_m = float(drop.mean())
    r1, r2, r3, r4 = v_m + v_se < 0, o_m <= o_se, drop_m <= 2.0, g_m >= -g_se
    return {
        "diversified_rel_var_pct_B_minus_A": v_m, "diversified_rel_var_pct_se": v_se,
        "diversified_rel_var_by_rep": rel_div.tolist(),
        "other_rel_var_pct_B_minus_A": o_m, "other_rel_var_pct_se": o_se,
        "other_rel_var_by_rep": rel_other.tolist(),
        "prial_drop_on_A_valid": drop_m, "prial_drop_by_rep": drop.tolist(),
        "grids_prial_gain_B_minus_A": g_m, "grids_prial_gain_se": g_se,
        "grids_gain_by_rep": g_grids.tolist(),
        "rule1_diversified": bool(r1), "rule2_other_real": bool(r2),
        "rule3_synthetic": bool(r3), "rule4_grids": bool(r4),
        "adopt_B": bool(r1 and r2 and r3 and r4),
    }  # fmt: skip


def run(
    out: Path,
    n_train: int = 10_000,
    n_valid: int = 1_500,
    epochs: int = 15,
    reps: int = 2,
    p_max: int = 200,
    windows: tuple[int, ...] = (60, 120, 250),
    n_portfolio_draws: int = 3,
    params_file: str = "params.yaml",
    candidate: str | None = None,
    candidate_weight: float = 1.0,
    diversified: tuple[int, ...] = (6, 10),
    n_diversified_draws: int = 3,
    train_overrides: dict[str, float | int | str] | None = None,
    rule: str | None = None,
    factor_specs: list[dict[str, Any]] | None = None,
    factor_reps: int = 200,
    hidden_dims_b: list[int] | None = None,
    hetero_b: tuple[tuple[str, ...], float] | None = None,
    stress_specs: list[dict[str, Any]] | None = None,
    stress_reps: int = 100,
    paths_b: float | None = None,
) -> dict[str, Any]:
    """The study; ``train_overrides`` (:func:`parse_overrides`) are arm B's
    :class:`TrainConfig` settings beside the pretrain section's. Where both arms have the
    same mix they share their training and validation worlds (built once). ``rule="0030"``
    (needs arms that differ) scores both arms on ``factor_specs`` (default
    :data:`FACTOR_SCENARIOS`, ``factor_reps`` replications each) and applies
    :func:`rule_0030`. ``hidden_dims_b`` are B's hidden layers (default the pretrain
    section's). ``hetero_b = (families, tau_max)`` builds B's training worlds under
    :func:`hetero_worlds`; ``rule="0051"`` (needs it) scores :data:`HETERO_STRESS` (or
    ``stress_specs``, ``stress_reps`` replications) and the selection and wide grids by
    repetition and applies :func:`rule_0051`. ``paths_b`` (a probability) builds B's
    training worlds under :func:`volatility_path_worlds`; ``rule="0053"`` (needs it)
    scores the selection and wide grids with volatility paths in every replication (seed
    :data:`PATH_SEED`, ``stress_reps`` replications) and without (``factor_reps``), by
    repetition, and applies :func:`rule_0053`."""
    overrides = dict(train_overrides or {})
    hidden_b = [int(h) for h in hidden_dims_b] if hidden_dims_b else None
    if hidden_b is not None and not all(h > 0 for h in hidden_b):
        raise ValueError(f"hidden_dims_b must be positive layer widths, got {hidden_dims_b!r}")
    differ = (
        candidate is not None or bool(overrides) or hidden_b is not None or bool(hetero_b)
        or paths_b is not None
    )  # fmt: skip
    if rule not in (None, "0030", "0051", "0053", "0062", "0063"):
        raise ValueError(
            f"rule must be None, '0030', '0051', '0053', '0062' or '0063', got {rule!r}"
        )
    if rule in ("0062", "0063") and candidate is None:
        raise ValueError(f"rule {rule} compares the mix with a candidate family (candidate)")
    if (rule == "0051") != bool(hetero_b):
        raise ValueError("rule 0051 goes with B's heterogeneous worlds (hetero_b), and only it")
    if (rule == "0053") != (paths_b is not None):
        raise ValueError("rule 0053 goes with B's volatility paths (paths_b), and only it")
    if rule == "0030" and not differ:
        raise ValueError(
            "rule 0030 needs arms that differ: a candidate family, a train override or "
            "B's hidden dims"
        )
    out.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load(Path(params_file).read_text())
    pre = params["pretrain"]
    mix = mixes(candidate, params, same=differ and candidate is None, weight=candidate_weight)
    base = {"p_max": p_max, "batch_size": 32, "ratio_max": 4.0}
    own = [m for m, f in mix.items() if m == "A" or f != mix["A"]]  # arms with own worlds
    valid = {
        m: dataset.build_training_set(n_valid, 777, {**base, "family_weights": mix[m]}, False, 1)
        for m in own
    }
    if hetero_b or paths_b is not None:
        own = ["A", "B"]  # B's training worlds differ; both are judged on A's validation worlds

    def worlds_of(m: str):
        if m == "B" and hetero_b:
            return hetero_worlds(*hetero_b)
        if m == "B" and paths_b is not None:
            return volatility_path_worlds(paths_b)
        return contextlib.nullcontext()

    universes = real_universes(
        windows, n_portfolio_draws, "2010-01-01", "2015-12-31",
        diversified if differ else (), n_diversified_draws,
    )  # fmt: skip
    results: list[dict[str, Any]] = []
    real: dict[tuple[int, str], pd.DataFrame] = {}
    pairs: list[tuple[Any, Any]] = []
    for rep in range(reps):
        models = {}
        sets = {}
        for m in own:
            with worlds_of(m):
                sets[m] = dataset.build_training_set(
                    n_train, 10 + rep, {**base, "family_weights": mix[m]}, False, 1
                )
        for m in mix:
            ts, vs = sets.get(m, sets["A"]), valid.get(m, valid["A"])
            settings = {
                **{k: pre[k] for k in _TRAIN_KEYS}, "epochs": epochs, "batch_size": 256,
                "patience": epochs, "seed": 20 + rep, "device": "cpu",
            }  # fmt: skip
            cfg = TrainConfig(**{**settings, **(overrides if m == "B" else {})})
            torch.manual_seed(20 + rep)
            hidden = hidden_b if m == "B" and hidden_b is not None else pre["hidden_dims"]
            model = MLShrinkageNetwork(
                input_dim=ts.features.shape[1], num_targets=len(TARGET_NAMES),
                hidden_dims=hidden, dropout=pre["dropout"], gate=pre["gate"],
            )  # fmt: skip
            train(model, ts, vs, cfg, out_dir=out / f"ck_{m}{rep}")
            print(f"{time.strftime('%H:%M:%S')} rep {rep} mix {m} trained", flush=True)
            models[m] = model.cpu().eval()
            real[(rep, m)] = gmv_variances(models[m], universes)
        pairs.append((models["A"], models["B"]))
        for vm, vs in valid.items():
            wa = predict_numpy(models["A"], vs.features).intensities
            wb = predict_numpy(models["B"], vs.features).intensities
            pb, seb, delta, dse = prial_with_se(wb, vs, reference_w=wa)
            results.append(
                {"rep": rep, "valid": vm, "prial_B": pb, "se_B": seb, "prial_A": pb - delta,
                 "delta_B_minus_A": delta, "delta_se": dse}
            )  # fmt: skip
    synth = pd.DataFrame(results)
    diffs = []
    for rep in range(reps):
        a, b = real[(rep, "A")], real[(rep, "B")]
        diffs.append(b.assign(A=a["var"].to_numpy(), B=b["var"].to_numpy(), rep=rep))
    d = pd.concat(diffs)
    d["diff"] = d["B"] - d["A"]
    by = d.groupby(["universe", "window"]).apply(
        lambda x: pd.Series({"vol_A": math.sqrt(252 * x.A.mean()), "vol_B": math.sqrt(252 * x.B.mean()),
                             "diff_mean": x["diff"].mean(), "diff_se": x["diff"].std(ddof=1) / math.sqrt(len(x)),
                             "n": len(x)}), include_groups=False,
    )  # fmt: skip
    pooled_mean, pooled_se = paired(d["diff"].to_numpy())
    prial_a_drop = prial_drop_on_a(synth)
    rule1 = pooled_mean < 0 and pooled_mean + pooled_se < 0
    rule2 = prial_a_drop <= 3.0
    summary = {
        "pooled_real_var_diff_B_minus_A": pooled_mean,
        "pooled_real_var_diff_se": pooled_se,
        "pooled_real_windows": int(len(d)),
        "prial_drop_on_A_valid": prial_a_drop,
        "rule1_real": bool(rule1),
        "rule2_synthetic": bool(rule2),
        "adopt_B": bool(rule1 and rule2),
    }
    if rule == "0051":
        stress = scenario_gains_by_rep(
            pairs, stress_specs or HETERO_STRESS, stress_reps, STRESS_SEED
        )
        grids = scenario_gains_by_rep(
            pairs, SELECTION_GRID + WIDE_GRID, factor_reps, SELECTION_SEED
        )
        stress.to_csv(out / "stress_scenarios.csv", index=False)
        grids.to_csv(out / "grid_scenarios.csv", index=False)
        decision = rule_0051(d, synth, stress, grids)
        summary = {"rule": "0051", "hetero_families_B": list(hetero_b[0]),
                   "hetero_tau_max_B": hetero_b[1], "mixes": mix, **decision}  # fmt: skip
        by = by.join(classical_vols(universes))
    elif rule == "0053":
        with volatility_path_worlds(1.0):
            paths = scenario_gains_by_rep(
                pairs, stress_specs or SELECTION_GRID + WIDE_GRID, stress_reps, PATH_SEED
            )
        grids = scenario_gains_by_rep(
            pairs, SELECTION_GRID + WIDE_GRID, factor_reps, SELECTION_SEED
        )
        paths.to_csv(out / "path_scenarios.csv", index=False)
        grids.to_csv(out / "grid_scenarios.csv", index=False)
        decision = rule_0053(d, synth, paths, grids)
        summary = {"rule": "0053", "volatility_path_prob_B": paths_b, "mixes": mix, **decision}
        by = by.join(classical_vols(universes))
    elif rule in ("0062", "0063"):
        grids = scenario_gains_by_rep(
            pairs, SELECTION_GRID + WIDE_GRID, factor_reps, SELECTION_SEED
        )
        grids.to_csv(out / "grid_scenarios.csv", index=False)
        decision = (rule_0062 if rule == "0062" else rule_0063)(d, synth, grids)
        summary = {"rule": rule, "candidate": candidate, "train_overrides": overrides,
                   "mixes": mix, **decision}  # fmt: skip
        by = by.join(classical_vols(universes))
    elif rule == "0030":
        factor = factor_scenario_gains(pairs, factor_specs or FACTOR_SCENARIOS, factor_reps)
        factor.to_csv(out / "factor_scenarios.csv", index=False)
        decision = rule_0030(d, synth, factor)
        summary = {"rule": "0030", "candidate": candidate, "train_overrides": overrides,
                   "hidden_dims_B": hidden_b, "mixes": mix, **decision}  # fmt: skip
        by = by.join(classical_vols(universes))
    elif differ:  # 0026's or 0027's rule replaces 0023's
        decision = rule_0026(d, synth) if candidate is not None else rule_0027(d, synth)
        summary = {"candidate": candidate, "train_overrides": overrides, "mixes": mix, **decision}
        by = by.join(classical_vols(universes))
    synth.to_csv(out / "synthetic.csv", index=False)
    by.to_csv(out / "real_by_universe.csv")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return {"synthetic": synth, "real": by, "summary": summary}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="build/studies/worlds")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    ap.add_argument("--candidate", default=None, help="0026: pipeline mix vs mix + FAMILY")
    ap.add_argument(
        "--candidate-weight", type=float, default=1.0,
        help="0029: FAMILY's weight in B (above its weight in the pipeline mix)",
    )  # fmt: skip
    ap.add_argument(
        "--train-override", action="append", default=[], metavar="KEY=VALUE",
        help="0027: B trains with this TrainConfig setting (repeatable)",
    )  # fmt: skip
    ap.add_argument(
        "--rule", choices=["0030", "0051", "0053", "0062", "0063"], default=None,
        help="0030: score the factor scenarios too and apply that record's rule; "
        "0051: with --hetero-all, the stress scenarios and the grids by repetition; "
        "0053: with --vol-paths, the grids with and without volatility paths by repetition",
    )  # fmt: skip
    ap.add_argument(
        "--vol-paths", type=float, default=None, metavar="PROB",
        help="0053: B's worlds carry a volatility path inside the window with this probability",
    )  # fmt: skip
    ap.add_argument(
        "--hetero-all", action="store_true",
        help="0051: B's worlds get heterogeneous variances in every family that can take them",
    )  # fmt: skip
    ap.add_argument("--hetero-tau-max", type=float, default=1.2)
    ap.add_argument(
        "--hidden-dims", default=None, metavar="W1,W2,...",
        help="0031: B's hidden layer widths (the pretrain section's otherwise)",
    )  # fmt: skip
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--params", default="params.yaml", help="the params file to read")
    a = ap.parse_args(argv)
    overrides = parse_overrides(a.train_override)
    torch.set_num_threads(1)
    kw = (
        {"n_train": 200, "n_valid": 100, "epochs": 1, "p_max": 30,
         "windows": (60,), "n_portfolio_draws": 1, "diversified": (6,), "n_diversified_draws": 1,
         "factor_reps": 4, "stress_reps": 4}
        if a.smoke else {}
    )  # fmt: skip
    if a.hetero_all:
        kw["hetero_b"] = (HETERO_ALL, a.hetero_tau_max)
    res = run(
        Path(a.out), reps=a.reps, candidate=a.candidate, candidate_weight=a.candidate_weight,
        train_overrides=overrides, params_file=a.params, rule=a.rule, paths_b=a.vol_paths,
        hidden_dims_b=[int(x) for x in a.hidden_dims.split(",")] if a.hidden_dims else None, **kw,
    )  # fmt: skip
    pd.set_option("display.width", 200)
    print(res["synthetic"].round(3).to_string())
    print(res["real"].to_string())
    print(json.dumps(res["summary"], indent=2))


if __name__ == "__main__":
    main()
