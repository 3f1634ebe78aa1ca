"""evaluation.feasibility."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from shrinklab.core import estimators as _est
from shrinklab.core.metrics import prial_se, quadratic_form_loss, ratio_se
from shrinklab.core.targets import TARGET_NAMES
from shrinklab.evaluation.scenarios import FSOPT, LEARNED, ORACLE

__all__ = [
    "SPECIALIST_COLUMNS",
    "constant_oracle",
    "constant_oracle_weights",
    "feasibility_summary",
    "feasibility_table",
    "feasibility_text",
    "read_specialist_table",
    "write_specialist_table",
]


# --------------------------------------------------------------------------- feasibility
def constant_oracle_weights(G: Any, c: Any) -> torch.Tensor:
    """The best constant weights in hindsight: ``w̄ = argmin Σ_i L_i(w)`` over
    ``w ≥ 0, Σw ≤ 1``, with ``L_i(w) = wᵀG_iw − 2c_iᵀw + d_i`` the Frobenius loss of
    replication ``i`` (:func:`shrinklab.core.targets.quadratic_form`).

    ``G`` is ``(R, K, K)``, ``c`` is ``(R, K)``; returns ``w̄`` of shape ``(K,)``.
    The summed loss is again a quadratic form, ``wᵀ(Σ G_i)w − 2(Σ c_i)ᵀw + Σ d_i``,
    so ``w̄`` is the exact solution of one simplex QP
    (:func:`shrinklab.core.estimators.solve_simplex_qp`, on the means, which have the
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
    loss = quadratic_form_loss(w.expand(G.shape[0], -1), G, c, d).numpy()
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
            diff, diff_se = ratio_se(co["losses"] - L[learned], b)
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


# --------------------------------------------------------------------------- specialists
SPECIALIST_COLUMNS = ("prial_specialist", "se_specialist", "n_draws", "seed", "n_reps")
"""Columns of a scenario-specialist table (index ``scenario``), as
:func:`shrinklab.studies.specialists.specialist_table` returns it: PRIAL ± SE, the
training draws, and the seed and replications of the scenario it was scored on."""


def write_specialist_table(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a scenario-specialist table as CSV with 17 significant digits, so that
    :func:`read_specialist_table` reads back the same float64 values bit for bit."""
    missing = [c for c in SPECIALIST_COLUMNS if c not in table.columns]
    if table.index.name != "scenario" or missing:
        raise ValueError(
            f"need a table indexed by 'scenario' with columns {list(SPECIALIST_COLUMNS)}; "
            f"index {table.index.name!r}, missing {missing}"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table[list(SPECIALIST_COLUMNS)].to_csv(path, float_format="%.17g")
    return path


def read_specialist_table(path: str | Path, results: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The scenario-specialist table written by :func:`write_specialist_table` (the
    specialists study, notebook 11), checked against the evaluation grid's
    :func:`shrinklab.evaluation.scenarios.evaluate_scenario` ``results``: exactly one row
    per scenario, scored on the same seed and number of replications. Returned in the
    grid's order, with the float64 values that were written (tested)."""
    path = Path(path)
    rerun = "rerun the specialists study (`dvc repro studies/dvc.yaml:specialists`)"
    if not path.is_file():
        raise FileNotFoundError(f"no scenario-specialist table {path}: {rerun}")
    # the floats as text, parsed by Python's float(): exact for any pandas version
    exact = ("prial_specialist", "se_specialist")
    table = pd.read_csv(path, index_col="scenario", dtype=dict.fromkeys(exact, str))
    for col in set(exact) & set(table.columns):
        table[col] = table[col].map(float).astype(np.float64)
    absent = [c for c in SPECIALIST_COLUMNS if c not in table.columns]
    if absent:
        raise ValueError(f"the scenario-specialist table {path} lacks the columns {absent}")
    names = [str(r["scenario"]) for r in results]
    rows = [str(s) for s in table.index]
    missing, extra = sorted(set(names) - set(rows)), sorted(set(rows) - set(names))
    if missing or extra or len(rows) != len(set(rows)):
        raise ValueError(
            f"the scenario-specialist table {path} does not cover exactly the evaluation's "
            f"scenarios (missing {missing}, not in the grid {extra}, {len(rows)} rows): "
            f"{rerun} after changing evaluate.scenarios"
        )
    table = table.loc[names, list(SPECIALIST_COLUMNS)]
    stale = [
        r["scenario"]
        for r in results
        if (int(table.at[r["scenario"], "seed"]), int(table.at[r["scenario"], "n_reps"]))
        != (int(r["seed"]), int(r["n_reps"]))
    ]
    if stale:
        raise ValueError(
            f"the scenario-specialist table {path} was scored on other replications "
            f"(seed or n_reps) for {stale}: {rerun} after changing evaluate.seed or n_reps"
        )
    return table
