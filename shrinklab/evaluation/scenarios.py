"""Synthetic evaluation: PRIAL on a public scenario grid, with standard errors.

Metric
------
PRIAL, the percentage relative improvement in average loss of Ledoit & Wolf
(2022, "Quadratic shrinkage for large covariance matrices", Bernoulli 28(3);
also Ledoit & Wolf 2012, Ann. Statist. 40(2)), with the squared Frobenius loss
``L(Σ̂) = ‖Σ̂ − Σ‖²_F`` and the rotation-equivariant oracle FSOPT
(:func:`shrinklab.core.estimators.fsopt`) as reference::

    PRIAL(Σ̂) = 100 · (E[L(S)] − E[L(Σ̂)]) / (E[L(S)] − E[L(FSOPT)])

so the sample covariance scores 0 and FSOPT 100 (exactly, by construction).
Expectations are means over ``n_reps`` Monte-Carlo replications of a scenario
(:func:`shrinklab.data.synthetic.make_scenario`), all estimators on the same draws.

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
constant correlation, single factor, QIS; :mod:`shrinklab.core.estimators`), the
learned model (``"learned"``) and optionally its ensemble (``"ensemble"``) —
any object with ``predict(features, regime=None) -> ShrinkageOutput``, applied
as ``Σ̂ = S + Σ_k α π_k (T_k − S)`` — the multi-target oracle ``w*``
(``"oracle"``, the best member of the family for each draw, the limit of what a
network over these targets can reach) and FSOPT (``"fsopt"``, = 100).
Further batched estimators (``extra_estimators``, e.g. the learned peer of
:mod:`shrinklab.models.rie_network`) are scored from their matrices, kind ``"peer"``.
Family members' losses come from the exact quadratic form
:func:`shrinklab.core.targets.quadratic_form` (``wᵀGw − 2cᵀw + d``), the classical
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
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from shrinklab.core import estimators as classical_estimators
from shrinklab.core import metrics
from shrinklab.core.features import extract_features
from shrinklab.core.metrics import quadratic_form_loss, ratio_se
from shrinklab.core.progress import report
from shrinklab.core.targets import TARGET_NAMES, combine, quadratic_form, shrinkage_targets
from shrinklab.core.validation import center
from shrinklab.core.volatility_timing import finish_covariance, volatility_timing_of
from shrinklab.data.synthetic import make_scenario

__all__ = [
    "CLASSICAL",
    "DEFAULT_GRID",
    "ESTIMATORS",
    "capture_ratio",
    "error_decomposition",
    "evaluate_grid",
    "evaluate_scenario",
    "per_replication",
    "pn_bucket",
    "scenario_name",
    "scenario_seed",
]


ESTIMATORS: dict[str, Callable[..., torch.Tensor]] = dict(classical_estimators.CLASSICAL_ESTIMATORS)


"""Classical estimators by report name: batched ``f(X (B, n, p)) -> (B, p, p)``."""


CLASSICAL: tuple[str, ...] = tuple(k for k in ESTIMATORS if k != "sample")


"""The classical estimators the learned model is compared with (all but the sample)."""


# The public scenario grid (``params.yaml`` ``evaluate.scenarios`` overrides it).
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


def replication_chunk_size(n: int, p: int, K: int) -> int:
    per_rep = 8 * (8 * n * p + (3 * K + 12) * p * p)
    return max(1, _MEMORY_BUDGET // per_rep)


def predict_outputs(model: Any, feats: torch.Tensor) -> tuple[torch.Tensor, ...]:
    out = model.predict(feats)
    return tuple(torch.as_tensor(v).detach().to("cpu", torch.float64) for v in out)


def model_target_names(model: Any) -> tuple[str, ...]:
    names = tuple(getattr(model, "target_names", None) or TARGET_NAMES)
    if names != TARGET_NAMES:
        raise ValueError(
            f"the evaluation uses the targets {TARGET_NAMES}; the model was trained on {names}"
        )
    return names


def sample_and_targets(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(S (R, p, p), T (R, K, p, p))``: the sample covariance and the shrinkage targets of
    a batch of replications ``X (R, n, p)``."""
    _, S = center(X)
    return S, shrinkage_targets(X)


def family_statistics(
    X: torch.Tensor,
    sigma: torch.Tensor,
    sample_targets: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, ...]:
    """``G, c, d`` of the family's quadratic form, the oracle ``w*`` and FSOPT's loss
    for a batch of replications ``X (R, n, p)`` with true ``sigma (R, p, p)``
    (``sample_targets``: :func:`sample_and_targets` of ``X`` when the caller has them)."""
    S, T = sample_and_targets(X) if sample_targets is None else sample_targets
    G, c, d = quadratic_form(S, T, sigma)
    w_star = classical_estimators.solve_simplex_qp(G, c)
    return G, c, d, w_star, metrics.frobenius_loss(classical_estimators.fsopt(X, sigma), sigma)


# --------------------------------------------------------------------------- one scenario
def evaluate_scenario(
    spec: Mapping[str, Any],
    model: Any,
    n_reps: int,
    seed: int,
    ensemble: Any = None,
    extra_estimators: Mapping[str, Callable[..., torch.Tensor]] | None = None,
) -> dict[str, Any]:
    """PRIAL of every estimator on ``n_reps`` replications of one scenario.

    ``spec`` is a :func:`shrinklab.data.synthetic.make_scenario` scenario spec, optionally with a
    ``name``; ``seed`` is passed to ``make_scenario`` as is (``evaluate_grid``
    derives it per scenario).  ``model`` (may be ``None``: classical estimators
    only) and ``ensemble`` have ``predict(features) -> ShrinkageOutput``.
    A model file that carries the volatility timing (decision 0047;
    :func:`shrinklab.core.volatility_timing.finish_covariance`) is scored from its finished
    matrices; ``gap_intensity`` and ``gap_mix`` then describe its shrinkage part.
    ``extra_estimators`` adds batched estimators ``f(X (B, n, p)) -> (B, p, p)`` by name
    (e.g. the learned peer, :meth:`shrinklab.models.rie_network.RIENetwork.estimate`),
    scored from their matrices like the classical ones; kind ``"peer"``, with a paired
    difference to the best classical estimator as for the learned model.

    Returns a dict: ``scenario``, ``spec``, ``family``, ``p``, ``n``, ``df``,
    ``n_reps``, ``seed``; ``losses`` ``{estimator: (R,) ndarray}``; ``prial`` and
    ``se`` ``{estimator: float}``; ``diff_best`` / ``diff_best_se`` (paired PRIAL
    difference of each learned estimator to the best classical one, named in
    ``best_classical``); for the model ``alpha``, ``weights`` (R, K), ``uncertainty``
    (predicted s.d. of α), ``alpha_oracle``, ``oracle_weights`` (w*, (R, K)), the
    quadratic forms ``G`` (R, K, K) and ``c`` (R, K) of every replication
    (:func:`shrinklab.core.targets.quadratic_form`; ``d`` is ``losses["sample"]``) and the
    decomposition ``gap``, ``gap_intensity``, ``gap_mix`` (PRIAL points).
    """
    if int(n_reps) < 2:
        raise ValueError(f"n_reps must be >= 2 for a standard error; got {n_reps}")
    spec = dict(spec)
    name = scenario_name(spec)
    make_spec = {k: v for k, v in spec.items() if k != "name"}
    for m in (model, ensemble):
        if m is not None:
            model_target_names(m)
    sigma_all, X_all = make_scenario(make_spec, int(n_reps), int(seed))
    R, n, p = X_all.shape
    K = len(TARGET_NAMES)
    peers = _extra_estimators(extra_estimators)
    direct = {**ESTIMATORS, **peers}
    names = [*direct, FSOPT, ORACLE]
    learned = {LEARNED: model, ENSEMBLE: ensemble}
    learned = {k: m for k, m in learned.items() if m is not None}
    timed = {k for k, m in learned.items() if volatility_timing_of(m) is not None}
    names += list(learned)
    losses: dict[str, list[torch.Tensor]] = {k: [] for k in names}
    extra: dict[str, list[torch.Tensor]] = {
        k: []
        for k in ("w_oracle", "G", "c", "alpha_only", "mix_pred", "alpha", "weights", "log_var")
    }
    if ensemble is not None:
        extra.update(ens_alpha=[], ens_log_var=[])
    step = replication_chunk_size(n, p, K)
    for s in range(0, R, step):
        X, sigma = X_all[s : s + step], sigma_all[s : s + step]
        # the timed models are scored from their matrices: S and T computed once for both
        S_T = sample_and_targets(X) if timed else None
        G, c, d, w_star, loss_fsopt = family_statistics(X, sigma, S_T)
        for k, fn in direct.items():
            losses[k].append(d if k == "sample" else metrics.frobenius_loss(fn(X), sigma))
        losses[FSOPT].append(loss_fsopt)
        losses[ORACLE].append(quadratic_form_loss(w_star, G, c, d))
        extra["w_oracle"].append(w_star)
        extra["G"].append(G)
        extra["c"].append(c)
        if learned:
            feats = extract_features(X)
        for k, m in learned.items():
            alpha, weights, log_var = predict_outputs(m, feats)
            w = alpha[:, None] * weights
            if k in timed:  # not a quadratic form of w: scored from its matrices
                S, T = S_T
                cov = finish_covariance(m, combine(S, T, w.to(S.dtype)), X)
                losses[k].append(metrics.frobenius_loss(cov, sigma))
            else:
                losses[k].append(quadratic_form_loss(w, G, c, d))
            if k == LEARNED:
                a_star = w_star.sum(-1)
                pos = a_star > 0
                pi_star = torch.where(
                    pos[:, None], w_star / torch.where(pos, a_star, 1.0)[:, None], weights
                )
                extra["alpha_only"].append(quadratic_form_loss(alpha[:, None] * pi_star, G, c, d))
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
        prial[k], se[k] = ratio_se(d - L[k], b)
    prial["sample"], se["sample"] = 0.0, 0.0  # exact: a_i = 0
    prial[FSOPT], se[FSOPT] = 100.0, 0.0  # exact: a_i = b_i
    best = max(CLASSICAL, key=lambda k: prial[k])
    diff, diff_se = {}, {}
    for k in [*learned, *peers]:
        diff[k], diff_se[k] = ratio_se(L[best] - L[k], b)
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
                "kind": _KIND.get(k, PEER_KIND),
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


PEER_KIND = "peer"


"""The ``kind`` of the rows of ``extra_estimators``."""


def _extra_estimators(
    extra: Mapping[str, Callable[..., torch.Tensor]] | None,
) -> dict[str, Callable[..., torch.Tensor]]:
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(_KIND))
    if clash:
        raise ValueError(f"extra estimator names {clash} are taken by built-in estimators")
    for k, fn in extra.items():
        if not callable(fn):
            raise ValueError(f"extra estimator {k!r} must be callable f(X (B, n, p)) -> (B, p, p)")
    return extra


def evaluate_grid(
    grid: Sequence[Mapping[str, Any]],
    model: Any,
    n_reps: int = 100,
    seed: int = 0,
    ensemble: Any = None,
    return_results: bool = False,
    extra_estimators: Mapping[str, Callable[..., torch.Tensor]] | None = None,
) -> pd.DataFrame | tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Evaluate every scenario of ``grid``; a long table, one row per (scenario, estimator).

    Columns: ``scenario``, ``estimator``, ``prial``, ``se``, ``n_reps``, ``kind``
    (classical / learned / oracle / reference), ``family``, ``p``, ``n``, ``df``,
    ``mean_loss``, ``diff_best_classical`` and ``diff_se`` (paired PRIAL difference
    of a learned estimator to the scenario's best classical one, NaN otherwise),
    ``best_classical``.  ``extra_estimators``: see :func:`evaluate_scenario` (their rows
    follow the classical ones).  Scenario names must be unique.  With ``return_results``
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
    extra = _extra_estimators(extra_estimators)
    results = []
    for i, (s, name) in enumerate(zip(grid, names), start=1):
        seed_s = scenario_seed(seed, name)
        results.append(evaluate_scenario(s, model, n_reps, seed_s, ensemble, extra))
        report(f"scenario grid: {i}/{len(grid)} {name} ({n_reps} replications)")
    df = pd.DataFrame([row for res in results for row in _rows(res)])
    order = [*ESTIMATORS, *extra, *_ORDER[len(ESTIMATORS) :]]
    df["estimator"] = pd.Categorical(df["estimator"], [e for e in order if e in set(df.estimator)])
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


"""Columns an ablation table (:func:`shrinklab.studies.ablation.run_ablation`) must have."""
