"""evaluation.tables."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shrinklab.evaluation.scenarios import CLASSICAL, ESTIMATORS, LEARNED, ORACLE, capture_ratio
from shrinklab.evaluation.universe_backtest import cell_summary

__all__ = [
    "ABLATION_COLUMNS",
    "ablation_table",
    "RIVAL_COLUMNS",
    "headline_json",
    "headline_table",
    "universe_headline_rows",
]


# --------------------------------------------------------------------------- ablations
ABLATION_COLUMNS: tuple[str, ...] = (
    "study", "variant", "prial", "prial_se", "delta_prial", "delta_prial_se",
    "norm_loss", "norm_loss_se",
)  # fmt: skip


def _pm_or_dash(v: float, se: float, digits: int) -> str:
    if not math.isfinite(v):
        return "—"
    return _pm(v, se, digits) if math.isfinite(se) else f"{v:.{digits}f}"


def ablation_table(path: str | Path) -> pd.DataFrame | None:
    """The ablation table of the model-selection run (notebook 07), formatted for the
    evaluation report; ``None`` when ``path`` does not exist (not run yet).

    Reads the CSV written by :func:`shrinklab.studies.ablation.run_ablation` (notebook 07).
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
        "Ablations: each row changes one thing against the full model. "
        + _ablation_base(raw)
        + " PRIAL on the synthetic validation set ± SE; Δ with a paired SE; L/L(S) the mean "
        "normalised Frobenius loss (every world weighted equally); real volatility of GMV "
        "portfolios on the last walk-forward fold's validation windows (overlapping windows: "
        "SE optimistic)."
    )
    return table


def _ablation_base(raw: pd.DataFrame) -> str:
    """The caption's sentence on the base configuration, epochs and training samples of
    an ablation table (from its ``base``, ``epochs``, ``n_train`` columns)."""
    if not {"base", "epochs", "n_train"} <= set(raw.columns):
        return "(The table does not record its base configuration and epochs.)"
    full = raw.iloc[0]
    label = str(full["base"]) if pd.notna(full["base"]) and str(full["base"]) else "not named"
    text = (
        f"Full model: {label}, trained {int(full['epochs'])} epochs on "
        f"{int(full['n_train'])} synthetic samples, as is every trained row"
    )
    ft = raw.loc[raw["epochs"] != full["epochs"], "epochs"].unique()
    if len(ft):
        text += " (fine-tuning rows: " + ", ".join(str(int(e)) for e in sorted(ft)) + " epochs)"
    return text + "."


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
    peers: Sequence[str] = (),
    universe_rows: pd.DataFrame | None = None,
    universe_setting: str = "GMV other universes",
) -> pd.DataFrame:
    """The README's headline: one row per synthetic scenario, an average row, and
    (with ``backtest_table``, :func:`shrinklab.evaluation.backtest.summarise`'s ``table``) one
    row per backtest window, and (with ``universe_rows``) the rows of
    :func:`universe_headline_rows` for ``universe_setting``.  Cells are formatted strings.

    Columns: ``setting``, ``metric``, ``best classical``, ``learned``,
    ``learned − best``, ``oracle``, ``goal met``.  Synthetic: PRIAL % ± SE, the
    paired difference to the best classical estimator ± its SE, the oracle's PRIAL
    and "yes" when the learned PRIAL is at or above the best classical one within
    one (paired) standard error.  The average row also states the capture ratio
    (goal ≥ 90 %).  Backtest: annualised out-of-sample volatility (%), the learned
    model's difference to ``benchmark`` with its bootstrap interval, and "yes"
    when the learned model has the lowest volatility, every estimator of the table
    counted, learned peers included, with the margin to its closest rival and that
    margin's bootstrap interval (the table's :data:`RIVAL_COLUMNS`). Each of ``peers`` (learned
    competitors, e.g. the RIEnet peer) gets its own row per window after the learned
    model's, with its volatility and interval, so that the headline shows what the
    learned model is judged against.
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
        rows += _backtest_rows(backtest_table, backtest_learned, benchmark, peers)
    if universe_rows is not None:
        rows += universe_headline_rows(
            universe_rows, universe_setting, backtest_learned, peers, benchmark
        )
    table = pd.DataFrame(rows)
    table.attrs["caption"] = (
        "PRIAL (Ledoit & Wolf 2022; 0 = sample covariance, 100 = FSOPT) ± standard error over "
        f"{int(grid['n_reps'].iloc[0])} replications (delta method; differences paired); "
        "goal: learned ≥ best classical within one SE in every scenario, above it on average, "
        "≥ 90 % of the multi-target oracle's PRIAL."
        + (
            " Backtest: annualised out-of-sample volatility (%) of global minimum-variance "
            f"portfolios, test period; difference to {benchmark} with a stationary-bootstrap "
            "95 % interval; goal: the lowest volatility of every estimator in the table, learned "
            "peers included, with the margin to the closest rival (learned minus rival, "
            "points, paired bootstrap 95 % interval)."
            if backtest_table is not None
            else ""
        )
        + (
            f" {universe_setting}: the volatility relative to {benchmark}'s (%), mean over the "
            "universe × window cells ± SE over cells (the cells share months: a rough guide); "
            "goal: at or below the best classical estimator in every cell."
            if universe_rows is not None
            else ""
        )
    )
    return table


def universe_headline_rows(
    rows: pd.DataFrame,
    setting: str,
    learned: str,
    peers: Sequence[str] = (),
    benchmark: str = "ledoit_wolf",
) -> list[dict[str, str]]:
    """Headline rows for a set of real universes backtested by
    :func:`shrinklab.evaluation.universe_backtest.fold_backtest` (``rows``; e.g. Ken French's
    portfolios): ``learned`` and each of ``peers`` as
    :func:`shrinklab.evaluation.universe_backtest.cell_summary` measures them (mean
    volatility relative to ``benchmark``'s over the cells ± SE, the classical estimator with
    the lowest mean, the paired difference to it, the cells won)."""
    summary = cell_summary(rows, [learned, *peers])

    def pm(v: float, se: float) -> str:
        return _pm(v, se, 2) if math.isfinite(se) else f"{v:+.2f}"

    out = []
    for name, r in summary.iterrows():
        out.append(
            {
                "setting": f"{setting}: {name}" + (" (learned peer)" if name != learned else ""),
                "metric": f"vol vs {benchmark} %",
                "best classical": f"{r['best classical']} {r['best mean']:+.2f}",
                "learned": pm(r["mean"], r["se"]),
                "learned − best": pm(r["difference"], r["difference se"]),
                "oracle": "",
                "goal met": (
                    ("yes" if r["cells won"] == r["cells"] else "no")
                    + f" ({r['cells won']} of {r['cells']} cells)"
                    if name == learned
                    else "(a competitor)"
                ),
            }
        )
    return out


#: Columns of :func:`shrinklab.evaluation.backtest.summarise`'s table that the goal of a
#: backtest row reads: the margin to the closest rival and its bootstrap interval.
RIVAL_COLUMNS = ("rival", "diff_vs_rival", "rival_ci_low", "rival_ci_high")


def _rival_margin(r: pd.Series, lowest: bool) -> str:
    """The goal's evidence: the learned model minus its closest rival (the lowest of the
    other estimators), in volatility points, with the paired bootstrap interval, e.g.
    ``"RIEnet peer lower: +0.19 [-0.05, +0.43]"`` or ``"next qis: -0.05 [-0.20, +0.09]"``."""
    d, lo, hi = (100 * float(r[k]) for k in ("diff_vs_rival", "rival_ci_low", "rival_ci_high"))
    label = f"next {r['rival']}" if lowest else f"{r['rival']} lower"
    return f"{label}: {d:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def _backtest_rows(
    table: pd.DataFrame, learned: str, benchmark: str, peers: Sequence[str] = ()
) -> list[dict[str, str]]:
    missing = [c for c in RIVAL_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(
            f"the backtest table lacks {missing}: build it with "
            "shrinklab.evaluation.backtest.summarise"
        )
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
                "goal met": ("yes" if lowest else "no") + f" ({_rival_margin(r, lowest)})",
            }
        )
        for peer in peers:
            if peer not in sub.index:
                raise ValueError(f"peer {peer!r} is not in the backtest table ({list(sub.index)})")
            q = sub.loc[peer]
            rows.append(
                {
                    "setting": f"GMV S&P 500, window {int(window)}: {peer} (learned peer)",
                    "metric": "ann. vol %",
                    "best classical": f"{best} {100 * sub.loc[best, 'ann_vol']:.2f}",
                    "learned": f"{100 * q['ann_vol']:.2f}",
                    "learned − best": (
                        f"{100 * q['diff_vs_benchmark']:+.2f} vs {benchmark} "
                        f"[{100 * q['ci_low']:+.2f}, {100 * q['ci_high']:+.2f}]"
                    ),
                    "oracle": "",
                    "goal met": "(a competitor)",
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
