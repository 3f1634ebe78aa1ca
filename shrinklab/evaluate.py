"""Synthetic evaluation: PRIAL on a public scenario grid, with standard errors.

Metric
------
PRIAL, the percentage relative improvement in average loss of Ledoit & Wolf
(2022, "Quadratic shrinkage for large covariance matrices", Bernoulli 28(3);
also Ledoit & Wolf 2012, Ann. Statist. 40(2)), with the squared Frobenius loss
``L(Σ̂) = ‖Σ̂ − Σ‖²_F`` and the rotation-equivariant oracle FSOPT
(:func:`shrinklab.estimators.fsopt`) as reference::

    PRIAL(Σ̂) = 100 · (E[L(S)] − E[L(Σ̂)]) / (E[L(S)] − E[L(FSOPT)])

so the sample covariance scores 0 and FSOPT 100 (exactly, by construction).
Expectations are means over ``n_reps`` Monte-Carlo replications of a scenario
(:func:`shrinklab.synthetic.make_scenario`), all estimators on the same draws.

Standard errors (delta method)
------------------------------
PRIAL is a ratio of means ``R = ā / b̄`` with per-replication ``a_i = L_i(S) −
L_i(Σ̂)`` and ``b_i = L_i(S) − L_i(FSOPT)``.  Its first-order (delta-method)
standard error is ``SE(R) = sd(a_i − R b_i) / (√N |b̄|)`` (sample s.d.,
``ddof = 1``), which accounts for the randomness of the denominator; e.g.
Cochran, *Sampling Techniques* (1977), §6.4, ratio estimators.  The difference
of two estimators' PRIALs on the same replications is a ratio of means too
(``a_i = L_i(E₂) − L_i(E₁)``), so it gets a *paired* standard error the same way;
that is the one to use for "is the learned model above the best classical one".
The tests check the delta-method SE against a bootstrap over replications and
its ``1/√N`` decay.

Estimators
----------
The classical estimators of :data:`ESTIMATORS` (sample, Ledoit–Wolf, OAS,
constant correlation, single factor, QIS; :mod:`shrinklab.estimators`), the
learned model (``"learned"``) and optionally its ensemble (``"ensemble"``) —
any object with ``predict(features, regime=None) -> ShrinkageOutput``, applied
as ``Σ̂ = S + Σ_k α π_k (T_k − S)`` — the multi-target oracle ``w*``
(``"oracle"``, the best member of the family for each draw, the limit of what a
network over these targets can reach) and FSOPT (``"fsopt"``, = 100).
Family members' losses come from the exact quadratic form
:func:`shrinklab.targets.quadratic_form` (``wᵀGw − 2cᵀw + d``), the classical
estimators' and FSOPT's from their matrices.

Everything is batched over the replications (in chunks bounded in memory); the
only Python loops are over estimators and chunks.

Error decomposition
-------------------
The learned model's shortfall from the oracle, ``L(ŵ) − L(w*)`` with
``ŵ = α̂ π̂`` and ``w* = α* π*``, splits exactly into an **intensity** part
``L(α̂ π*) − L(w*)`` (right mix, predicted strength) and a **mix** part
``L(α̂ π̂) − L(α̂ π*)`` (predicted strength, predicted mix), both expressed in
PRIAL points (divided by ``E[L(S)] − E[L(FSOPT)]``); where ``α* = 0`` the oracle
has no mix and ``π̂`` is used (the whole shortfall is then intensity).
:func:`error_decomposition` averages these over the scenarios of a family or of
a ``p/n`` bucket.

Feasibility: the best constant weights in hindsight
---------------------------------------------------
The multi-target oracle ``w*(Σ_i)`` is computed with each replication's own Σ.
:func:`constant_oracle` solves for the single ``w̄`` (``w ≥ 0``, ``Σw ≤ 1``) that
minimises the *summed* loss over a scenario's replications — one simplex QP on
``Σ_i G_i``, ``Σ_i c_i``.  It bounds from below the loss of every estimator of the
family that uses the same ``w`` on every replication (one that cannot tell the
replications apart), and it is chosen in hindsight, knowing Σ.  Comparing its PRIAL
with the oracle's (:func:`feasibility_table`) shows how much of the oracle's PRIAL
requires telling replications apart from their samples — the only route left to a
learned model, and the limit of what "≥ 90 % of the oracle" can ask of it.

Scenario seeds
--------------
Scenario ``s`` of a grid evaluated with ``seed`` uses the seed
``SeedSequence([seed, crc32(name_s)])``, so a scenario's draws do not depend on
its position in the grid or on the other scenarios.
"""

from __future__ import annotations

import math
import tempfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import torch

from shrinklab import estimators as _est
from shrinklab._validation import center
from shrinklab.features import extract_features
from shrinklab.network import MLShrinkageNetwork
from shrinklab.synthetic import make_scenario
from shrinklab.targets import TARGET_NAMES, combine, quadratic_form, shrinkage_targets
from shrinklab.train import TrainConfig, train

__all__ = [
    "ABLATION_COLUMNS",
    "CLASSICAL",
    "DEFAULT_GRID",
    "ESTIMATORS",
    "ablation_table",
    "capture_ratio",
    "constant_oracle",
    "constant_oracle_weights",
    "error_decomposition",
    "evaluate_grid",
    "evaluate_scenario",
    "example_matrices",
    "feasibility_summary",
    "feasibility_table",
    "feasibility_text",
    "headline_json",
    "headline_table",
    "per_replication",
    "pn_bucket",
    "prial_se",
    "scenario_name",
    "scenario_seed",
    "scenario_training_rows",
    "score_on_replications",
    "select_examples",
    "specialist_network",
    "specialist_table",
]

ESTIMATORS: dict[str, Callable[..., torch.Tensor]] = dict(_est.CLASSICAL_ESTIMATORS)
"""Classical estimators by report name: batched ``f(X (B, n, p)) -> (B, p, p)``."""

CLASSICAL: tuple[str, ...] = tuple(k for k in ESTIMATORS if k != "sample")
"""The classical estimators the learned model is compared with (all but the sample)."""

# The public scenario grid of issue 7 (``params.yaml`` ``evaluate.scenarios`` overrides it).
DEFAULT_GRID: tuple[dict[str, Any], ...] = (
    {"name": "1/3/10 p=200 n=100", "family": "spectrum_1_3_10", "p": 200, "n": 100},
    {"name": "1/3/10 p=200 n=400", "family": "spectrum_1_3_10", "p": 200, "n": 400},
    {"name": "1/3/10 p=200 n=1000", "family": "spectrum_1_3_10", "p": 200, "n": 1000},
    {"name": "lognormal p=100 n=300", "family": "lognormal", "p": 100, "n": 300},
    {"name": "3-factor p=150 n=120", "family": "factor", "p": 150, "n": 120, "n_factors": 3},
    {"name": "factor t6 p=50 n=100", "family": "factor", "p": 50, "n": 100, "df": 6},
    {"name": "Toeplitz 0.5 p=100 n=50", "family": "toeplitz", "p": 100, "n": 50, "rho": 0.5},
    {"name": "S&P p=20 n=40 t5", "family": "sp500", "p": 20, "n": 40, "df": 5},
)

LEARNED, ENSEMBLE, ORACLE, FSOPT = "learned", "ensemble", "oracle", "fsopt"
_KIND = {**{k: "classical" for k in ESTIMATORS}, LEARNED: "learned", ENSEMBLE: "learned"}
_KIND.update({ORACLE: "oracle", FSOPT: "reference"})
_MEMORY_BUDGET = 1 << 30  # bytes of temporaries per chunk of replications
PN_EDGES: tuple[float, ...] = (0.25, 0.75, 1.5)


# --------------------------------------------------------------------------- helpers
def scenario_name(spec: Mapping[str, Any]) -> str:
    """``spec["name"]``, else ``"<family> p=<p> n=<n>"`` (plus ``" t<df>"`` for Student-t)."""
    if spec.get("name"):
        return str(spec["name"])
    name = f"{spec['family']} p={spec['p']} n={spec['n']}"
    df = spec.get("df")
    if df is not None and math.isfinite(float(df)):
        name += f" t{float(df):g}"
    return name


def scenario_seed(seed: int, name: str) -> int:
    """Seed of scenario ``name`` in a grid evaluated with ``seed`` (see module docstring)."""
    ss = np.random.SeedSequence([int(seed), zlib.crc32(name.encode())])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(2))


def pn_bucket(p: int, n: int, edges: Sequence[float] = PN_EDGES) -> str:
    """Label of the ``p/n`` bucket: ``"p/n ≤ e₁"``, ``"e₁ < p/n ≤ e₂"``, …, ``"p/n > e_last"``."""
    r = p / n
    edges = sorted(float(e) for e in edges)
    if r <= edges[0]:
        return f"p/n ≤ {edges[0]:g}"
    for lo, hi in zip(edges, edges[1:]):
        if r <= hi:
            return f"{lo:g} < p/n ≤ {hi:g}"
    return f"p/n > {edges[-1]:g}"


def prial_se(loss: Any, loss_sample: Any, loss_fsopt: Any) -> tuple[float, float]:
    """PRIAL (%) and its delta-method standard error over replications (module docstring)."""
    L, d, f = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (loss, loss_sample, loss_fsopt))
    return _ratio_se(d - L, d - f)


def _ratio_se(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """``100 ā/b̄`` and its delta-method SE ``100 sd(a − R b)/(√N |b̄|)``."""
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"need two equal-length non-empty loss vectors; got {a.shape}, {b.shape}")
    bbar = b.mean()
    if bbar == 0:
        raise ValueError("PRIAL undefined: mean sample loss equals mean FSOPT loss")
    R = a.mean() / bbar
    if a.size < 2:
        return float(100 * R), math.nan
    se = np.std(a - R * b, ddof=1) / (math.sqrt(a.size) * abs(bbar))
    return float(100 * R), float(100 * se)


def _quad(w: torch.Tensor, G: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """``wᵀGw − 2cᵀw + d`` per replication (the Frobenius loss of ``Σ̂(w)``)."""
    return torch.einsum("bk,bkl,bl->b", w, G, w) - 2 * (c * w).sum(-1) + d


def _chunk_size(n: int, p: int, K: int) -> int:
    per_rep = 8 * (8 * n * p + (3 * K + 12) * p * p)
    return max(1, _MEMORY_BUDGET // per_rep)


def _predict(model: Any, feats: torch.Tensor) -> tuple[torch.Tensor, ...]:
    out = model.predict(feats)
    return tuple(torch.as_tensor(v).detach().to("cpu", torch.float64) for v in out)


def _target_names(model: Any) -> tuple[str, ...]:
    names = tuple(getattr(model, "target_names", None) or TARGET_NAMES)
    if names != TARGET_NAMES:
        raise ValueError(
            f"the evaluation uses the targets {TARGET_NAMES}; the model was trained on {names}"
        )
    return names


def _family_statistics(X: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``G, c, d`` of the family's quadratic form, the oracle ``w*`` and FSOPT's loss
    for a batch of replications ``X (R, n, p)`` with true ``sigma (R, p, p)``."""
    _, S = center(X)
    G, c, d = quadratic_form(S, shrinkage_targets(X), sigma)
    w_star = _est.solve_simplex_qp(G, c)
    return G, c, d, w_star, _est.frobenius_loss(_est.fsopt(X, sigma), sigma)


# --------------------------------------------------------------------------- one scenario
def evaluate_scenario(
    spec: Mapping[str, Any],
    model: Any,
    n_reps: int,
    seed: int,
    ensemble: Any = None,
) -> dict[str, Any]:
    """PRIAL of every estimator on ``n_reps`` replications of one scenario.

    ``spec`` is a :func:`shrinklab.synthetic.make_scenario` spec, optionally with a
    ``name``; ``seed`` is passed to ``make_scenario`` as is (``evaluate_grid``
    derives it per scenario).  ``model`` (may be ``None``: classical estimators
    only) and ``ensemble`` have ``predict(features) -> ShrinkageOutput``.

    Returns a dict: ``scenario``, ``spec``, ``family``, ``p``, ``n``, ``df``,
    ``n_reps``, ``seed``; ``losses`` ``{estimator: (R,) ndarray}``; ``prial`` and
    ``se`` ``{estimator: float}``; ``diff_best`` / ``diff_best_se`` (paired PRIAL
    difference of each learned estimator to the best classical one, named in
    ``best_classical``); for the model ``alpha``, ``weights`` (R, K), ``uncertainty``
    (predicted s.d. of α), ``alpha_oracle``, ``oracle_weights`` (w*, (R, K)), the
    quadratic forms ``G`` (R, K, K) and ``c`` (R, K) of every replication
    (:func:`shrinklab.targets.quadratic_form`; ``d`` is ``losses["sample"]``) and the
    decomposition ``gap``, ``gap_intensity``, ``gap_mix`` (PRIAL points).
    """
    if int(n_reps) < 2:
        raise ValueError(f"n_reps must be >= 2 for a standard error; got {n_reps}")
    spec = dict(spec)
    name = scenario_name(spec)
    make_spec = {k: v for k, v in spec.items() if k != "name"}
    for m in (model, ensemble):
        if m is not None:
            _target_names(m)
    sigma_all, X_all = make_scenario(make_spec, int(n_reps), int(seed))
    R, n, p = X_all.shape
    K = len(TARGET_NAMES)
    names = [*ESTIMATORS, FSOPT, ORACLE]
    learned = {LEARNED: model, ENSEMBLE: ensemble}
    learned = {k: m for k, m in learned.items() if m is not None}
    names += list(learned)
    losses: dict[str, list[torch.Tensor]] = {k: [] for k in names}
    extra: dict[str, list[torch.Tensor]] = {
        k: []
        for k in ("w_oracle", "G", "c", "alpha_only", "mix_pred", "alpha", "weights", "log_var")
    }
    if ensemble is not None:
        extra.update(ens_alpha=[], ens_log_var=[])
    step = _chunk_size(n, p, K)
    for s in range(0, R, step):
        X, sigma = X_all[s : s + step], sigma_all[s : s + step]
        G, c, d, w_star, loss_fsopt = _family_statistics(X, sigma)
        for k, fn in ESTIMATORS.items():
            losses[k].append(d if k == "sample" else _est.frobenius_loss(fn(X), sigma))
        losses[FSOPT].append(loss_fsopt)
        losses[ORACLE].append(_quad(w_star, G, c, d))
        extra["w_oracle"].append(w_star)
        extra["G"].append(G)
        extra["c"].append(c)
        if learned:
            feats = extract_features(X)
        for k, m in learned.items():
            alpha, weights, log_var = _predict(m, feats)
            w = alpha[:, None] * weights
            losses[k].append(_quad(w, G, c, d))
            if k == LEARNED:
                a_star = w_star.sum(-1)
                pos = a_star > 0
                pi_star = torch.where(
                    pos[:, None], w_star / torch.where(pos, a_star, 1.0)[:, None], weights
                )
                extra["alpha_only"].append(_quad(alpha[:, None] * pi_star, G, c, d))
                extra["alpha"].append(alpha)
                extra["weights"].append(weights)
                extra["log_var"].append(log_var)
            else:
                extra["ens_alpha"].append(alpha)
                extra["ens_log_var"].append(log_var)
    L = {k: torch.cat(v).numpy() for k, v in losses.items()}
    ex = {k: torch.cat(v).numpy() for k, v in extra.items() if v}
    d, f = L["sample"], L[FSOPT]
    b = d - f
    prial, se = {}, {}
    for k in names:
        prial[k], se[k] = _ratio_se(d - L[k], b)
    prial["sample"], se["sample"] = 0.0, 0.0  # exact: a_i = 0
    prial[FSOPT], se[FSOPT] = 100.0, 0.0  # exact: a_i = b_i
    best = max(CLASSICAL, key=lambda k: prial[k])
    diff, diff_se = {}, {}
    for k in learned:
        diff[k], diff_se[k] = _ratio_se(L[best] - L[k], b)
    df = make_spec.get("df")
    out: dict[str, Any] = {
        "scenario": name,
        "spec": spec,
        "family": str(make_spec["family"]),
        "p": int(p),
        "n": int(n),
        "df": math.inf if df is None else float(df),
        "n_reps": int(R),
        "seed": int(seed),
        "losses": L,
        "prial": prial,
        "se": se,
        "best_classical": best,
        "diff_best": diff,
        "diff_best_se": diff_se,
        "alpha_oracle": ex["w_oracle"].sum(-1),
        "oracle_weights": ex["w_oracle"],
        "G": ex["G"],
        "c": ex["c"],
    }
    if model is not None:
        scale = 100.0 / b.mean()
        out.update(
            alpha=ex["alpha"],
            weights=ex["weights"],
            uncertainty=np.exp(0.5 * ex["log_var"]),
            gap=float(scale * (L[LEARNED] - L[ORACLE]).mean()),
            gap_intensity=float(scale * (ex["alpha_only"] - L[ORACLE]).mean()),
            gap_mix=float(scale * (L[LEARNED] - ex["alpha_only"]).mean()),
        )
    if ensemble is not None:
        out.update(
            ensemble_alpha=ex["ens_alpha"], ensemble_uncertainty=np.exp(0.5 * ex["ens_log_var"])
        )
    return out


# --------------------------------------------------------------------------- the grid
def _rows(res: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for k in res["prial"]:
        rows.append(
            {
                "scenario": res["scenario"],
                "estimator": k,
                "prial": res["prial"][k],
                "se": res["se"][k],
                "n_reps": res["n_reps"],
                "kind": _KIND[k],
                "family": res["family"],
                "p": res["p"],
                "n": res["n"],
                "df": res["df"],
                "mean_loss": float(np.mean(res["losses"][k])),
                "diff_best_classical": res["diff_best"].get(k, math.nan),
                "diff_se": res["diff_best_se"].get(k, math.nan),
                "best_classical": res["best_classical"],
            }
        )
    return rows


_ORDER = [*ESTIMATORS, LEARNED, ENSEMBLE, ORACLE, FSOPT]


def evaluate_grid(
    grid: Sequence[Mapping[str, Any]],
    model: Any,
    n_reps: int = 100,
    seed: int = 0,
    ensemble: Any = None,
    return_results: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Evaluate every scenario of ``grid``; a long table, one row per (scenario, estimator).

    Columns: ``scenario``, ``estimator``, ``prial``, ``se``, ``n_reps``, ``kind``
    (classical / learned / oracle / reference), ``family``, ``p``, ``n``, ``df``,
    ``mean_loss``, ``diff_best_classical`` and ``diff_se`` (paired PRIAL difference
    of a learned estimator to the scenario's best classical one, NaN otherwise),
    ``best_classical``.  Scenario names must be unique.  With ``return_results``
    also the list of :func:`evaluate_scenario` dicts (for plots and
    :func:`error_decomposition`).
    """
    grid = [dict(s) for s in grid]
    if not grid:
        raise ValueError("the scenario grid is empty")
    names = [scenario_name(s) for s in grid]
    dup = sorted({x for x in names if names.count(x) > 1})
    if dup:
        raise ValueError(f"scenario names must be unique; repeated: {dup}")
    results = [
        evaluate_scenario(s, model, n_reps, scenario_seed(seed, name), ensemble)
        for s, name in zip(grid, names)
    ]
    df = pd.DataFrame([row for res in results for row in _rows(res)])
    df["estimator"] = pd.Categorical(df["estimator"], [e for e in _ORDER if e in set(df.estimator)])
    df["scenario"] = pd.Categorical(df["scenario"], names)
    df = df.sort_values(["scenario", "estimator"]).reset_index(drop=True)
    df["estimator"] = df["estimator"].astype(str)
    df["scenario"] = df["scenario"].astype(str)
    return (df, results) if return_results else df


def capture_ratio(df: pd.DataFrame, learned: str = LEARNED, oracle: str = ORACLE) -> pd.Series:
    """Per scenario ``PRIAL(learned) / PRIAL(oracle)``, plus an ``"average"`` entry:
    the ratio of the average PRIALs over scenarios (robust to scenarios where the
    oracle's PRIAL is near 0; NaN per scenario where it is 0)."""
    piv = df.pivot(index="scenario", columns="estimator", values="prial")
    for k in (learned, oracle):
        if k not in piv.columns:
            raise ValueError(f"estimator {k!r} is not in the table ({list(piv.columns)})")
    piv = piv.loc[list(dict.fromkeys(df["scenario"]))]
    o = piv[oracle].where(piv[oracle] != 0)
    ratio = piv[learned] / o
    ratio.loc["average"] = piv[learned].mean() / piv[oracle].mean()
    ratio.name = "capture_ratio"
    return ratio


def error_decomposition(
    results: Sequence[Mapping[str, Any]], by: str = "family", edges: Sequence[float] = PN_EDGES
) -> pd.DataFrame:
    """The learned model's PRIAL shortfall from the oracle, split into intensity and
    mix parts (module docstring), averaged over the scenarios of each group.

    ``by`` is ``"family"`` (groups in order of appearance) or ``"pn_bucket"``
    (:func:`pn_bucket` with ``edges``; groups in increasing ``p/n``).
    Columns: ``n_scenarios``, ``prial_learned``, ``prial_oracle``, ``gap``
    (= ``prial_oracle − prial_learned``), ``gap_intensity``, ``gap_mix``
    (``gap_intensity + gap_mix = gap``).
    """
    if by not in ("family", "pn_bucket"):
        raise ValueError(f"by must be 'family' or 'pn_bucket', got {by!r}")
    rows = []
    for r in results:
        if "gap" not in r:
            raise ValueError("the results have no learned model (evaluate with a model)")
        key = r["family"] if by == "family" else pn_bucket(r["p"], r["n"], edges)
        rows.append(
            {
                by: key,
                "prial_learned": r["prial"][LEARNED],
                "prial_oracle": r["prial"][ORACLE],
                "gap": r["gap"],
                "gap_intensity": r["gap_intensity"],
                "gap_mix": r["gap_mix"],
            }
        )
    if not rows:
        raise ValueError("no results to decompose")
    frame = pd.DataFrame(rows)
    if by == "pn_bucket":  # buckets in increasing p/n, not in order of appearance
        ratio = pd.Series([r["p"] / r["n"] for r in results])
        frame = frame.iloc[np.argsort(ratio.to_numpy(), kind="stable")]
    out = frame.groupby(by, sort=False).mean()
    out.insert(0, "n_scenarios", frame.groupby(by, sort=False).size())
    return out


def per_replication(results: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per (scenario, replication): ``scenario``, ``family``, ``p``, ``n``,
    ``rep``, the loss of every estimator (``loss_<name>``) and, with a model,
    ``alpha``, ``alpha_oracle``, ``uncertainty`` (for the predicted-vs-oracle
    scatter and calibration plots)."""
    frames = []
    for r in results:
        cols: dict[str, Any] = {"rep": np.arange(r["n_reps"])}
        cols.update({f"loss_{k}": v for k, v in r["losses"].items()})
        cols["alpha_oracle"] = r["alpha_oracle"]
        for k in ("alpha", "uncertainty"):
            if k in r:
                cols[k] = r[k]
        f = pd.DataFrame(cols)
        for k in ("n", "p", "family", "scenario"):
            f.insert(0, k, r[k])
        frames.append(f)
    if not frames:
        raise ValueError("no results")
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------- feasibility
def constant_oracle_weights(G: Any, c: Any) -> torch.Tensor:
    """The best constant weights in hindsight: ``w̄ = argmin Σ_i L_i(w)`` over
    ``w ≥ 0, Σw ≤ 1``, with ``L_i(w) = wᵀG_iw − 2c_iᵀw + d_i`` the Frobenius loss of
    replication ``i`` (:func:`shrinklab.targets.quadratic_form`).

    ``G`` is ``(R, K, K)``, ``c`` is ``(R, K)``; returns ``w̄`` of shape ``(K,)``.
    The summed loss is again a quadratic form, ``wᵀ(Σ G_i)w − 2(Σ c_i)ᵀw + Σ d_i``,
    so ``w̄`` is the exact solution of one simplex QP
    (:func:`shrinklab.estimators.solve_simplex_qp`, on the means, which have the
    same minimiser).
    """
    Gt = torch.as_tensor(G, dtype=torch.float64)
    ct = torch.as_tensor(c, dtype=torch.float64)
    if Gt.ndim != 3 or ct.ndim != 2 or Gt.shape[0] == 0 or Gt.shape[:2] != ct.shape:
        raise ValueError(
            f"need G (R, K, K) and c (R, K) with R >= 1; got {tuple(Gt.shape)}, {tuple(ct.shape)}"
        )
    if Gt.shape[1] != Gt.shape[2]:
        raise ValueError(f"G must be (R, K, K); got {tuple(Gt.shape)}")
    return _est.solve_simplex_qp(Gt.mean(0), ct.mean(0))


def constant_oracle(result: Mapping[str, Any]) -> dict[str, Any]:
    """The best constant weights in hindsight for one scenario and their PRIAL.

    ``result`` is an :func:`evaluate_scenario` dict.  Returns ``weights`` (K,),
    ``alpha`` (their sum), per-replication ``losses`` (R,), ``prial`` and ``se``
    (delta method, same replications and FSOPT reference as the other estimators).

    Why it matters: the multi-target oracle ``w*(Σ_i)`` uses each replication's own
    Σ; ``w̄`` is the single weight vector that is best for the scenario as a whole,
    so its summed loss is a lower bound for every estimator of the family that uses
    one ``w`` for all replications — any estimator that cannot tell the
    replications of a scenario apart.  The share of the oracle's PRIAL that ``w̄``
    reaches says how much of the oracle's advantage needs per-replication
    information; the rest can only come from what the sample reveals about its own
    Σ.  It is in-sample (``w̄`` is fitted on the replications it is scored on), so
    it is slightly optimistic for a constant chosen in advance.
    """
    for key in ("G", "c", "losses"):
        if key not in result:
            raise ValueError(f"result has no {key!r}: pass an evaluate_scenario dict")
    G = torch.as_tensor(result["G"], dtype=torch.float64)
    c = torch.as_tensor(result["c"], dtype=torch.float64)
    d = torch.as_tensor(result["losses"]["sample"], dtype=torch.float64)
    w = constant_oracle_weights(G, c)
    loss = _quad(w.expand(G.shape[0], -1), G, c, d).numpy()
    prial, se = prial_se(loss, d.numpy(), result["losses"][FSOPT])
    return {"weights": w.numpy(), "alpha": float(w.sum()), "losses": loss, "prial": prial, "se": se}


def feasibility_table(
    results: Sequence[Mapping[str, Any]],
    learned: str = LEARNED,
    specialist: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per scenario, the per-replication oracle next to the best constant weights in
    hindsight (:func:`constant_oracle`), the learned model and the best classical
    estimator; index ``scenario``.

    Columns: ``family``, ``p``, ``n``, ``prial_oracle``, ``se_oracle``,
    ``prial_constant_oracle``, ``se_constant_oracle``, ``constant_share``
    (= PRIAL(w̄) / PRIAL(oracle)), ``prial_best_classical``, ``se_best_classical``,
    ``best_classical``; with a learned model ``prial_learned``, ``se_learned`` and
    ``learned_minus_constant`` with its paired SE ``learned_minus_constant_se``;
    ``alpha_oracle_mean`` and ``alpha_oracle_sd`` (spread of ``α*`` over the
    replications), ``alpha_constant`` and the constant weights ``w_<target>``; with a
    :func:`specialist_table` also ``prial_specialist``, ``se_specialist`` and
    ``specialist_share`` (of the oracle's PRIAL).
    """
    if not results:
        raise ValueError("no results")
    if specialist is not None:
        missing = sorted({r["scenario"] for r in results} - set(specialist.index))
        if missing:
            raise ValueError(f"specialist table has no row for {missing}")
    rows = []
    for r in results:
        co = constant_oracle(r)
        L, best = r["losses"], r["best_classical"]
        b = L["sample"] - L[FSOPT]
        row: dict[str, Any] = {
            "scenario": r["scenario"],
            "family": r["family"],
            "p": r["p"],
            "n": r["n"],
            "prial_oracle": r["prial"][ORACLE],
            "se_oracle": r["se"][ORACLE],
            "prial_constant_oracle": co["prial"],
            "se_constant_oracle": co["se"],
            "constant_share": co["prial"] / r["prial"][ORACLE] if r["prial"][ORACLE] else math.nan,
            "prial_best_classical": r["prial"][best],
            "se_best_classical": r["se"][best],
            "best_classical": best,
        }
        if learned in L:
            diff, diff_se = _ratio_se(co["losses"] - L[learned], b)
            row.update(
                prial_learned=r["prial"][learned],
                se_learned=r["se"][learned],
                learned_minus_constant=diff,
                learned_minus_constant_se=diff_se,
            )
        a_star = np.asarray(r["alpha_oracle"], dtype=np.float64)
        row.update(
            alpha_oracle_mean=float(a_star.mean()),
            alpha_oracle_sd=float(a_star.std(ddof=1)) if a_star.size > 1 else math.nan,
            alpha_constant=co["alpha"],
        )
        row.update({f"w_{k}": float(v) for k, v in zip(TARGET_NAMES, co["weights"])})
        if specialist is not None:
            sp = specialist.loc[r["scenario"]]
            row.update(
                prial_specialist=float(sp["prial_specialist"]),
                se_specialist=float(sp["se_specialist"]),
                specialist_share=float(sp["prial_specialist"]) / r["prial"][ORACLE]
                if r["prial"][ORACLE]
                else math.nan,
            )
        rows.append(row)
    return pd.DataFrame(rows).set_index("scenario")


def feasibility_summary(table: pd.DataFrame, goal: float = 0.9) -> dict[str, float]:
    """Averages over the scenarios of a :func:`feasibility_table`: mean PRIAL of the
    oracle, the constant oracle, the best classical estimator and (if present) the
    learned model (and the scenario specialists, ``prial_specialist`` and
    ``specialist_capture``, when the table has them); ``constant_capture`` and
    ``learned_capture`` (ratio of average
    PRIALs to the oracle's, the convention of :func:`capture_ratio`);
    ``learned_minus_constant`` (mean PRIAL of the learned model minus that of the
    constant oracle);
    ``goal_prial`` (= ``goal`` × mean oracle PRIAL, what the learned model must
    average for the goal) and ``n_scenarios``."""
    for col in ("prial_oracle", "prial_constant_oracle", "prial_best_classical"):
        if col not in table.columns:
            raise ValueError(f"column {col!r} not in the table: pass a feasibility_table")
    if table.empty:
        raise ValueError("the feasibility table is empty")
    oracle = float(table["prial_oracle"].mean())
    out = {
        "n_scenarios": float(len(table)),
        "prial_oracle": oracle,
        "prial_constant_oracle": float(table["prial_constant_oracle"].mean()),
        "prial_best_classical": float(table["prial_best_classical"].mean()),
        "goal_prial": goal * oracle,
    }
    out["constant_capture"] = out["prial_constant_oracle"] / oracle if oracle else math.nan
    if "prial_specialist" in table.columns:
        out["prial_specialist"] = float(table["prial_specialist"].mean())
        out["specialist_capture"] = out["prial_specialist"] / oracle if oracle else math.nan
    if "prial_learned" in table.columns:
        out["prial_learned"] = float(table["prial_learned"].mean())
        out["learned_capture"] = out["prial_learned"] / oracle if oracle else math.nan
        out["learned_minus_constant"] = out["prial_learned"] - out["prial_constant_oracle"]
    return out


def feasibility_text(summary: Mapping[str, float], goal: float = 0.9) -> str:
    """One paragraph stating a :func:`feasibility_summary` in words: the oracle's,
    the constant oracle's, the best classical and the learned average PRIAL, what
    the goal asks for, and whether a non-adaptive weight could meet it."""
    s = summary
    text = (
        f"Averaged over {s['n_scenarios']:.0f} scenarios the per-replication oracle reaches a "
        f"PRIAL of {s['prial_oracle']:.1f}; the best constant weights in hindsight reach "
        f"{s['prial_constant_oracle']:.1f} ({100 * s['constant_capture']:.0f} % of the oracle) "
        f"and the best classical estimator {s['prial_best_classical']:.1f}."
    )
    if "prial_learned" in s:
        side = "above" if s["learned_minus_constant"] >= 0 else "below"
        text += (
            f" The learned model reaches {s['prial_learned']:.1f} "
            f"({100 * s['learned_capture']:.0f} % of the oracle), "
            f"{abs(s['learned_minus_constant']):.1f} points {side} the best constant weights."
        )
    text += f" The goal of {100 * goal:.0f} % of the oracle asks for {s['goal_prial']:.1f}: "
    if s["goal_prial"] > s["prial_constant_oracle"]:
        text += (
            "more than any estimator that uses one weight vector per scenario can reach, so it "
            "can only be met by telling replications apart from their samples."
        )
    else:
        text += "within reach of a well-chosen constant weight vector per scenario."
    if "prial_specialist" in s:
        reach = "meets" if s["prial_specialist"] >= s["goal_prial"] else "misses"
        text += (
            f" Networks trained on each scenario alone (they know the scenario, which a "
            f"general model cannot) reach {s['prial_specialist']:.1f} "
            f"({100 * s['specialist_capture']:.0f} % of the oracle): with knowledge of the "
            f"scenario a sample-based estimator {reach} the goal."
        )
    return text


def scenario_training_rows(spec: Mapping[str, Any], n_draws: int, seed: int) -> SimpleNamespace:
    """Training rows drawn from one scenario (``make_scenario(spec, n_draws, seed)``,
    in chunks): ``features``, oracle weights ``oracle_w``, the quadratic form ``G``,
    ``c``, ``d`` and ``loss_fsopt`` — the fields :func:`shrinklab.train.train` reads,
    computed exactly as in :func:`evaluate_scenario`."""
    if int(n_draws) < 2:
        raise ValueError(f"n_draws must be >= 2, got {n_draws}")
    make_spec = {k: v for k, v in dict(spec).items() if k != "name"}
    p, n = int(make_spec["p"]), int(make_spec["n"])
    step = _chunk_size(n, p, len(TARGET_NAMES))
    parts: dict[str, list[torch.Tensor]] = {
        k: [] for k in ("features", "G", "c", "d", "oracle_w", "loss_fsopt")
    }
    for i, s in enumerate(range(0, int(n_draws), step)):
        # each chunk its own seed stream (make_scenario derives the replications from it)
        chunk_seed = np.random.SeedSequence([int(seed), i]).generate_state(1, dtype=np.uint64)[0]
        sigma, X = make_scenario(make_spec, min(step, int(n_draws) - s), int(chunk_seed >> 2))
        G, c, d, w_star, loss_fsopt = _family_statistics(X, sigma)
        for k, v in zip(parts, (extract_features(X), G, c, d, w_star, loss_fsopt)):
            parts[k].append(v)
    return SimpleNamespace(**{k: torch.cat(v) for k, v in parts.items()})


def specialist_network(
    spec: Mapping[str, Any],
    n_draws: int,
    seed: int,
    epochs: int = 60,
    hidden_dims: Sequence[int] = (64, 32),
) -> Any:
    """A *scenario specialist*: the network of :mod:`shrinklab.network` trained only on
    ``n_draws`` worlds of one scenario (plus ``n_draws // 4`` for early stopping),
    with the normalised Frobenius loss alone.

    It answers "how much of the per-replication oracle can an estimator that reads
    only the sample reach, if it *knows the scenario* (its family, p, n, tails and the
    distribution of its Σ)?" — the Bayes rule under that narrow prior, approximated by
    a network. A general model, trained over all worlds, cannot know which scenario
    it is in, so the specialist is an optimistic yardstick for it, and a pessimistic
    one for the oracle (which knows each Σ).
    """
    train_rows = scenario_training_rows(spec, n_draws, seed)
    valid_rows = scenario_training_rows(spec, max(int(n_draws) // 4, 2), seed + 1)
    torch.manual_seed(int(seed))
    model = MLShrinkageNetwork(
        input_dim=train_rows.features.shape[1],
        num_targets=len(TARGET_NAMES),
        hidden_dims=list(hidden_dims),
        dropout_rate=0.1,
        input_dropout=0.0,
    )
    cfg = TrainConfig(
        lr=3e-3,
        epochs=int(epochs),
        batch_size=min(256, int(n_draws)),
        patience=30,
        intensity_weight=0.0,
        matrix_weight=1.0,
        uncertainty_weight=0.0,
        device="cpu",
        seed=int(seed),
    )
    with tempfile.TemporaryDirectory() as tmp:
        train(model, train_rows, valid_rows, cfg, out_dir=tmp)
    return model.eval()


def score_on_replications(model: Any, result: Mapping[str, Any]) -> tuple[float, float]:
    """PRIAL ± SE of ``model`` on the replications of an :func:`evaluate_scenario`
    result, without evaluating the classical estimators again: the draws are
    regenerated from the result's spec and seed for their features, and the losses come
    from the stored quadratic forms (``G``, ``c``, ``d``) and FSOPT losses."""
    for key in ("G", "c", "losses", "spec", "seed", "n_reps"):
        if key not in result:
            raise ValueError(f"result has no {key!r}: pass an evaluate_scenario dict")
    _target_names(model)
    make_spec = {k: v for k, v in dict(result["spec"]).items() if k != "name"}
    _, X_all = make_scenario(make_spec, int(result["n_reps"]), int(result["seed"]))
    G = torch.as_tensor(result["G"], dtype=torch.float64)
    c = torch.as_tensor(result["c"], dtype=torch.float64)
    d = np.asarray(result["losses"]["sample"], dtype=np.float64)
    n, p = X_all.shape[1:]
    step = _chunk_size(n, p, len(TARGET_NAMES))
    losses = []
    for s in range(0, X_all.shape[0], step):
        alpha, weights, _ = _predict(model, extract_features(X_all[s : s + step]))
        w = alpha[:, None] * weights
        losses.append(_quad(w, G[s : s + step], c[s : s + step], torch.as_tensor(d[s : s + step])))
    loss = torch.cat(losses).numpy()
    return _ratio_se(d - loss, d - np.asarray(result["losses"][FSOPT], dtype=np.float64))


def specialist_table(
    results: Sequence[Mapping[str, Any]], n_draws: int, epochs: int = 60
) -> pd.DataFrame:
    """PRIAL ± SE of a :func:`specialist_network` per scenario of :func:`evaluate_grid`'s
    ``results``, scored on the same replications (:func:`score_on_replications`); its
    training draws come from seeds derived from, and distinct from, the scenario's.
    Index ``scenario``; columns ``prial_specialist``, ``se_specialist``, ``n_draws``."""
    rows = []
    for r in results:
        # numpy-compatible (32-bit) training seed, independent of the evaluation draws
        train_seed = int(np.random.SeedSequence([int(r["seed"]), 1]).generate_state(1)[0]) >> 1
        model = specialist_network(r["spec"], n_draws, train_seed, epochs=epochs)
        prial, se = score_on_replications(model, r)
        rows.append(
            {
                "scenario": r["scenario"],
                "prial_specialist": prial,
                "se_specialist": se,
                "n_draws": int(n_draws),
            }
        )
    return pd.DataFrame(rows).set_index("scenario")


def select_examples(
    results: Sequence[Mapping[str, Any]], names: Sequence[str] = (), max_n: int = 3
) -> list[Mapping[str, Any]]:
    """The scenarios to draw spectra and heat maps for: those named in ``names`` (in
    that order; an unknown name is a ``ValueError``), or, when ``names`` is empty,
    the first scenario of each family, at most ``max_n``."""
    by_name = {r["scenario"]: r for r in results}
    if names:
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ValueError(f"scenarios {unknown} are not in the grid ({list(by_name)})")
        return [by_name[n] for n in names]
    if max_n < 1:
        raise ValueError(f"max_n must be >= 1, got {max_n}")
    first: dict[str, Mapping[str, Any]] = {}
    for r in results:
        first.setdefault(r["family"], r)
    return list(first.values())[:max_n]


def example_matrices(
    result: Mapping[str, Any],
    model: Any = None,
    estimators: Sequence[str] | None = None,
    rep: int = 0,
) -> dict[str, np.ndarray]:
    """The matrices of replication ``rep`` of an evaluated scenario, for spectra and
    heat maps: ``{"sigma": Σ, "sample": S, <estimator>: Σ̂, ...}`` as ``(p, p)`` arrays.

    The replication is regenerated from the scenario's spec and seed (the draws of
    :func:`shrinklab.synthetic.make_scenario` do not depend on ``n_reps``), so the
    matrices are those :func:`evaluate_scenario` scored.  ``estimators`` may name
    any of :data:`ESTIMATORS`, ``"learned"`` (needs ``model``), ``"oracle"``
    (``w*`` of that replication), ``"constant_oracle"`` (:func:`constant_oracle`)
    and ``"fsopt"``; default: Ledoit–Wolf, QIS, the learned model if given, the
    oracle.
    """
    rep = int(rep)
    if not 0 <= rep < int(result["n_reps"]):
        raise ValueError(f"rep must be in [0, {result['n_reps']}); got {rep}")
    if estimators is None:
        estimators = ["ledoit_wolf", "qis", *([LEARNED] if model is not None else []), ORACLE]
    known = {*ESTIMATORS, LEARNED, ORACLE, FSOPT, "constant_oracle"}
    unknown = [e for e in estimators if e not in known]
    if unknown:
        raise ValueError(f"unknown estimators {unknown}; choose from {sorted(known)}")
    if LEARNED in estimators and model is None:
        raise ValueError("'learned' needs a model")
    spec = {k: v for k, v in dict(result["spec"]).items() if k != "name"}
    sigma, X = make_scenario(spec, rep + 1, int(result["seed"]))
    sigma, X = sigma[rep : rep + 1], X[rep : rep + 1]
    _, S = center(X)
    T = shrinkage_targets(X)
    out = {"sigma": sigma[0].numpy(), "sample": S[0].numpy()}
    for e in estimators:
        if e in ESTIMATORS:
            M = ESTIMATORS[e](X)
        elif e == FSOPT:
            M = _est.fsopt(X, sigma)
        else:
            if e == LEARNED:
                _target_names(model)
                alpha, weights, _ = _predict(model, extract_features(X))
                w = alpha[:, None] * weights
            elif e == ORACLE:
                w = torch.as_tensor(result["oracle_weights"][rep : rep + 1], dtype=torch.float64)
            else:
                w = torch.as_tensor(constant_oracle(result)["weights"])[None]
            M = combine(S, T, w.to(S.dtype))
        out[e] = M[0].numpy()
    return out


# --------------------------------------------------------------------------- ablations
ABLATION_COLUMNS: tuple[str, ...] = (
    "study", "variant", "prial", "prial_se", "delta_prial", "delta_prial_se",
    "norm_loss", "norm_loss_se",
)  # fmt: skip
"""Columns an ablation table (:func:`shrinklab.ablation.run_ablation`) must have."""


def _pm_or_dash(v: float, se: float, digits: int) -> str:
    if not math.isfinite(v):
        return "—"
    return _pm(v, se, digits) if math.isfinite(se) else f"{v:.{digits}f}"


def ablation_table(path: str | Path) -> pd.DataFrame | None:
    """The ablation table of the model-selection run (issue 8), formatted for the
    evaluation report; ``None`` when ``path`` does not exist (not run yet).

    Reads the CSV written by :func:`shrinklab.ablation.run_ablation` (notebook 07).
    Columns: ``study``, ``variant``, ``PRIAL %`` (± SE), ``Δ PRIAL vs full``
    (paired SE), ``beyond 2 SE`` ("yes" when ``|Δ| > 2 SE``), ``L/L(S)`` (mean
    normalised Frobenius loss ± SE) and, when the run had real windows, ``real
    vol %`` (± SE over windows) and ``vol / LW``.
    """
    path = Path(path)
    if not path.exists():
        return None
    raw = pd.read_csv(path)
    missing = [c for c in ABLATION_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"{path} is not an ablation table: missing columns {missing}")
    rows = []
    for r in raw.to_dict("records"):
        delta, dse = float(r["delta_prial"]), float(r["delta_prial_se"])
        is_ref = delta == 0.0 and dse == 0.0
        row = {
            "study": str(r["study"]),
            "variant": str(r["variant"]),
            "PRIAL %": _pm_or_dash(float(r["prial"]), float(r["prial_se"]), 1),
            "Δ PRIAL vs full": "—" if is_ref else f"{delta:+.1f} ± {dse:.1f}",
            "beyond 2 SE": "—" if is_ref else ("yes" if abs(delta) > 2 * dse else "no"),
            "L/L(S)": _pm_or_dash(float(r["norm_loss"]), float(r["norm_loss_se"]), 3),
        }
        if "real_vol" in raw.columns:
            vol, vse = float(r["real_vol"]), float(r.get("real_vol_se", math.nan))
            row["real vol %"] = _pm_or_dash(100 * vol, 100 * vse, 2)
            ratio = float(r.get("real_ratio_lw", math.nan))
            row["vol / LW"] = f"{ratio:.3f}" if math.isfinite(ratio) else "—"
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs["caption"] = (
        "Ablations: each row changes one thing against the full model. PRIAL on the synthetic "
        "validation set ± SE; Δ with a paired SE; L/L(S) the mean normalised Frobenius loss "
        "(every world weighted equally); real volatility of GMV portfolios on the last "
        "walk-forward fold's validation windows (overlapping windows: SE optimistic)."
    )
    return table


# --------------------------------------------------------------------------- headline
def _pm(v: float, se: float, digits: int = 1) -> str:
    return f"{v:.{digits}f} ± {se:.{digits}f}"


def _pm_resolved(v: float, se: float) -> str:
    """``v ± se`` with enough decimals (1 to 3) for two significant digits of ``se``, so
    that a near-tie such as ``-0.017 ± 0.027`` is not printed as ``-0.0 ± 0.0``."""
    digits = 1 if se <= 0 else min(3, max(1, 1 - math.floor(math.log10(se))))
    return _pm(v, se, digits)


def headline_table(
    grid: pd.DataFrame,
    backtest_table: pd.DataFrame | None = None,
    *,
    learned: str = LEARNED,
    backtest_learned: str = "ML (final)",
    benchmark: str = "ledoit_wolf",
) -> pd.DataFrame:
    """The README's headline: one row per synthetic scenario, an average row, and
    (with ``backtest_table``, :func:`shrinklab.backtest.summarise`'s ``table``) one
    row per backtest window.  Cells are formatted strings.

    Columns: ``setting``, ``metric``, ``best classical``, ``learned``,
    ``learned − best``, ``oracle``, ``goal met``.  Synthetic: PRIAL % ± SE, the
    paired difference to the best classical estimator ± its SE, the oracle's PRIAL
    and "yes" when the learned PRIAL is at or above the best classical one within
    one (paired) standard error.  The average row also states the capture ratio
    (goal ≥ 90 %).  Backtest: annualised out-of-sample volatility (%), the learned
    model's difference to ``benchmark`` with its bootstrap interval, and "yes"
    when the learned model has the lowest volatility (significance stated).
    """
    rows: list[dict[str, str]] = []
    piv = grid.pivot(index="scenario", columns="estimator", values="prial")
    piv_se = grid.pivot(index="scenario", columns="estimator", values="se")
    scen = list(dict.fromkeys(grid["scenario"]))
    classical = [c for c in CLASSICAL if c in piv.columns]
    if learned not in piv.columns:
        raise ValueError(f"estimator {learned!r} is not in the grid table")
    diffs = []
    for s in scen:
        sub = grid[(grid.scenario == s) & (grid.estimator == learned)].iloc[0]
        best = max(classical, key=lambda c: piv.loc[s, c])
        diff, dse = float(sub["diff_best_classical"]), float(sub["diff_se"])
        if sub["best_classical"] != best:  # the table came from elsewhere: recompute plainly
            diff, dse = piv.loc[s, learned] - piv.loc[s, best], math.nan
        diffs.append(diff)
        ok = diff >= -(dse if math.isfinite(dse) else piv_se.loc[s, learned])
        rows.append(
            {
                "setting": s,
                "metric": "PRIAL %",
                "best classical": f"{best} {_pm(piv.loc[s, best], piv_se.loc[s, best])}",
                "learned": _pm(piv.loc[s, learned], piv_se.loc[s, learned]),
                "learned − best": _pm_resolved(diff, dse) if math.isfinite(dse) else f"{diff:+.1f}",
                "oracle": _pm(piv.loc[s, ORACLE], piv_se.loc[s, ORACLE])
                if ORACLE in piv.columns
                else "",
                "goal met": "yes" if ok else "no",
            }
        )
    mean_best = float(np.mean([piv.loc[s, classical].max() for s in scen]))
    mean_learned = float(piv.loc[scen, learned].mean())
    mean_diff = float(np.mean(diffs))
    cap = capture_ratio(grid, learned)["average"] if ORACLE in piv.columns else math.nan
    rows.append(
        {
            "setting": f"average over {len(scen)} scenarios",
            "metric": "PRIAL %",
            "best classical": f"{mean_best:.1f}",
            "learned": f"{mean_learned:.1f}",
            "learned − best": f"{mean_diff:+.1f}",
            "oracle": f"{piv.loc[scen, ORACLE].mean():.1f} (captured {100 * cap:.0f} %)"
            if ORACLE in piv.columns
            else "",
            "goal met": "yes" if (mean_diff > 0 and cap >= 0.9) else "no",
        }
    )
    if backtest_table is not None:
        rows += _backtest_rows(backtest_table, backtest_learned, benchmark)
    table = pd.DataFrame(rows)
    table.attrs["caption"] = (
        "PRIAL (Ledoit & Wolf 2022; 0 = sample covariance, 100 = FSOPT) ± standard error over "
        f"{int(grid['n_reps'].iloc[0])} replications (delta method; differences paired); "
        "goal: learned ≥ best classical within one SE in every scenario, above it on average, "
        "≥ 90 % of the multi-target oracle's PRIAL."
        + (
            " Backtest: annualised out-of-sample volatility (%) of global minimum-variance "
            f"portfolios, test period; difference to {benchmark} with a stationary-bootstrap "
            "95 % interval."
            if backtest_table is not None
            else ""
        )
    )
    return table


def _backtest_rows(table: pd.DataFrame, learned: str, benchmark: str) -> list[dict[str, str]]:
    t = table.reset_index() if isinstance(table.index, pd.MultiIndex) else table
    rows = []
    for window, sub in t.groupby("window", sort=True):
        sub = sub.set_index("estimator")
        if learned not in sub.index:
            raise ValueError(f"{learned!r} is not in the backtest table ({list(sub.index)})")
        classical = [e for e in sub.index if e in ESTIMATORS]
        best = min(classical, key=lambda e: sub.loc[e, "ann_vol"])
        r = sub.loc[learned]
        lowest = bool(r["ann_vol"] <= sub["ann_vol"].min())
        sig = "significant" if bool(r["significant"]) else "not significant"
        rows.append(
            {
                "setting": f"GMV S&P 500, window {int(window)}: {learned}",
                "metric": "ann. vol %",
                "best classical": f"{best} {100 * sub.loc[best, 'ann_vol']:.2f}",
                "learned": f"{100 * r['ann_vol']:.2f}",
                "learned − best": (
                    f"{100 * r['diff_vs_benchmark']:+.2f} vs {benchmark} "
                    f"[{100 * r['ci_low']:+.2f}, {100 * r['ci_high']:+.2f}]"
                ),
                "oracle": "",
                "goal met": ("yes" if lowest else "no") + f" ({sig})",
            }
        )
    return rows


def headline_json(table: pd.DataFrame) -> dict[str, Any]:
    """``{"columns", "rows", "caption"}`` of a :func:`headline_table` for the metrics
    file (the README's headline is generated from it by :mod:`shrinklab.reporting`)."""
    return {
        "columns": [str(c) for c in table.columns],
        "rows": [[str(v) for v in row] for row in table.itertuples(index=False)],
        "caption": str(table.attrs.get("caption", "")),
    }
