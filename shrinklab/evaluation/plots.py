"""Figures for the notebooks and reports (matplotlib and seaborn).

Every function returns a :class:`matplotlib.figure.Figure` and saves nothing unless
``path`` is given (then :func:`shrinklab.reporting.save_figure`, reproducible
bytes).  Inputs are plain arrays / DataFrames so that the figures can be redrawn
from the stored metrics without rerunning anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from shrinklab.evaluation.plot_style import (
    DEPLOYED_COLOUR,
    DEPLOYED_NAMES,
    MAX_FIGSIZE,
    MEMBER_COLOUR,
    PEER_COLOUR,
    SEABORN_STYLE,
    as_array,
    estimator_colours,
    finish,
    hbars,
    legend_outside,
)
from shrinklab.evaluation.portfolio_plots import (
    backtest_volatility,
    cumulative_variance,
    finetune_folds,
    fold_small_multiples,
)
from shrinklab.evaluation.reporting import save_figure

__all__ = [
    "AXIS_LABELS",
    "DEPLOYED_COLOUR",
    "DEPLOYED_NAMES",
    "FEASIBILITY_BARS",
    "MAX_FIGSIZE",
    "MEMBER_COLOUR",
    "PEER_COLOUR",
    "backtest_volatility",
    "cumulative_variance",
    "eigenvalue_spectra",
    "error_decomposition_bars",
    "family_ratio_bars",
    "feasibility_bars",
    "estimator_colours",
    "finetune_folds",
    "fold_small_multiples",
    "matrix_heatmaps",
    "predicted_vs_oracle",
    "prial_bars",
    "reliability_diagram",
    "training_curves",
    "tradeoff",
]


PRIAL_TITLE = "PRIAL by scenario (error bars: ±1 standard error)"
PRIAL_ABOVE_100 = (
    "PRIAL above 100: a lower average Frobenius loss than FSOPT, the best estimator that keeps "
    "the sample eigenvectors; shrinking towards structured targets changes the eigenvectors."
)


def prial_bars(
    df: pd.DataFrame,
    *,
    estimator_col: str = "estimator",
    scenario_col: str = "scenario",
    value_col: str = "prial",
    se_col: str = "se",
    estimators: Sequence[str] | None = None,
    exclude: Sequence[str] = ("sample", "fsopt"),
    highlight: Sequence[str] = DEPLOYED_NAMES,
    title: str | None = PRIAL_TITLE,
    path: str | Path | None = None,
) -> Figure:
    """PRIAL per scenario and estimator with ±1 SE error bars (seaborn bars).

    ``df`` is long (e.g. :func:`shrinklab.evaluation.scenarios.evaluate_grid`).  ``estimators``
    fixes which bars and in which order (default: order of appearance, without
    ``exclude`` — the sample covariance and FSOPT are 0 and 100 by definition).
    Layout by size: one scenario → one horizontal bar per estimator, best first;
    up to 6 estimators → bars grouped by scenario, legend outside the axes; more →
    small multiples, one panel of horizontal bars per scenario. Estimators named in
    ``highlight`` (the deployed model) are red, the learned peer purple, the oracles
    grey, the classical estimators blue (:func:`estimator_colours`).
    """
    for col in (estimator_col, scenario_col, value_col):
        if col not in df.columns:
            raise ValueError(f"column {col!r} not in the table ({list(df.columns)})")
    if estimators is None:
        estimators = [e for e in dict.fromkeys(df[estimator_col]) if e not in set(exclude)]
    scenarios = list(dict.fromkeys(df[scenario_col]))
    val = df.pivot(index=scenario_col, columns=estimator_col, values=value_col)
    se = (
        df.pivot(index=scenario_col, columns=estimator_col, values=se_col)
        if se_col in df.columns
        else val * 0.0
    )
    colours = estimator_colours(list(estimators), highlight)
    if len(scenarios) == 1 or len(estimators) > 6:
        fig = _prial_panels(val, se, scenarios, list(estimators), colours)
    else:
        fig = _prial_grouped(val, se, scenarios, list(estimators), colours)
    shown = val.loc[scenarios, list(estimators)].to_numpy(dtype=float)
    if np.nanmax(shown, initial=-np.inf) > 100:
        fig.text(0.01, 0.0, PRIAL_ABOVE_100, fontsize="small", va="top", wrap=True)
    has_se = bool(np.nansum(np.abs(se.loc[scenarios, list(estimators)].to_numpy(dtype=float))))
    if title and len(scenarios) == 1 and title == PRIAL_TITLE:
        title = f"PRIAL on {scenarios[0]}" + (" (bars: ±1 standard error)" if has_se else "")
    if title:
        fig.suptitle(title)
    return finish(fig, path)


def _prial_grouped(val, se, scenarios, estimators, colours) -> Figure:
    long = (
        val.loc[scenarios, estimators]
        .rename_axis(index="scenario", columns="estimator")
        .stack()
        .rename("prial")
        .reset_index()
    )
    # room for the legend outside the axes on the right
    fig, ax = plt.subplots(figsize=(min(max(5.0, 1.1 * len(scenarios) + 2) + 3.0, 15.0), 4.5))
    with sns.axes_style("ticks", SEABORN_STYLE):
        sns.barplot(
            long, x="scenario", y="prial", hue="estimator", order=scenarios,
            hue_order=estimators, palette=colours, errorbar=None, saturation=1, ax=ax,
        )  # fmt: skip
    for e, bars in zip(estimators, list(ax.containers), strict=True):
        x = [b.get_x() + b.get_width() / 2 for b in bars]
        ax.errorbar(
            x, val.loc[scenarios, e].to_numpy(dtype=float),
            yerr=se.loc[scenarios, e].to_numpy(dtype=float),
            fmt="none", ecolor="black", elinewidth=0.8, capsize=2,
        )  # fmt: skip
    ax.set_xticks(ax.get_xticks(), scenarios, rotation=30, ha="right")
    ax.set_xlabel("scenario")
    ax.set_ylabel("PRIAL (%; 100 = FSOPT)")
    ax.axhline(0, color="black", lw=0.8)
    ax.axhline(100, color="grey", lw=0.8, ls="--")
    legend_outside(ax, fontsize="small", title="estimator")
    return fig


PRIAL_FLOOR = -100.0
"""PRIAL axes start here at the lowest; a bar below it is cut and labelled with its value."""


def _clip_left(ax, values: np.ndarray, floor: float) -> None:
    """Start the x axis at ``floor`` when a bar goes below it, writing the cut bars'
    values at the left edge (one very bad estimator would otherwise squash the rest)."""
    if not np.nanmin(values, initial=0.0) < floor:
        return
    ax.set_xlim(floor, max(ax.get_xlim()[1], 0.0))
    for y, v in enumerate(values):
        if v < floor:
            ax.text(
                floor, y, f" {v:.0f} ◂", va="center", ha="left", fontsize="x-small", color="white"
            )


def _prial_panels(val, se, scenarios, estimators, colours) -> Figure:
    """One panel per scenario, one horizontal bar per estimator (sorted by PRIAL when
    there is a single scenario, else in the order of ``estimators``)."""
    n = len(scenarios)
    cols = min(n, 4)
    rows = -(-n // cols)
    height = 0.28 * len(estimators) + 1.2
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.4 * cols + 1.6, min(height * rows, MAX_FIGSIZE[1])),
        squeeze=False, sharey=True,
    )  # fmt: skip
    order = list(estimators)
    if n == 1:
        order = sorted(order, key=lambda e: -float(val.loc[scenarios[0], e]))
        fig.set_size_inches(7.5, height)
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.axis("off")
            continue
        s = scenarios[k]
        err = se.loc[s, order].to_numpy(dtype=float)
        hbars(ax, order, val.loc[s, order], colours, err if np.nansum(np.abs(err)) else None)
        ax.axvline(0, color="black", lw=0.8)
        ax.axvline(100, color="grey", lw=0.8, ls="--")
        _clip_left(ax, val.loc[s, order].to_numpy(dtype=float), PRIAL_FLOOR)
        ax.set_title(s if n > 1 else "", fontsize="medium")
        ax.set_ylabel("")
        if k // cols == rows - 1 or k + cols >= n:
            ax.set_xlabel("PRIAL (%; 100 = FSOPT)")
    for r in range(rows):
        axes[r, 0].tick_params(axis="y", labelsize="small")
    return fig


def predicted_vs_oracle(
    predicted: Any,
    oracle: Any,
    *,
    uncertainty: Any = None,
    groups: Sequence[Any] | None = None,
    label: str = "intensity α",
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Scatter of predicted against oracle values with the diagonal; the MAE and the
    correlation in the legend; optional ±1 predicted-s.d. error bars.

    With ``groups`` (one label per point, e.g. the scenario) each group is drawn in
    its own colour with its own MAE in the legend, and the pooled MAE and correlation
    go into the title line.
    """
    pred, orc = as_array(predicted).reshape(-1), as_array(oracle).reshape(-1)
    if pred.shape != orc.shape:
        raise ValueError(f"predicted {pred.shape} and oracle {orc.shape} differ in length")
    if groups is not None and len(groups) != pred.size:
        raise ValueError(f"groups has {len(groups)} labels for {pred.size} points")
    fig, ax = plt.subplots(figsize=(5, 5) if groups is None else (8.5, 5))
    unc = None if uncertainty is None else as_array(uncertainty).reshape(-1)
    mae = float(np.mean(np.abs(pred - orc)))
    corr = float(np.corrcoef(pred, orc)[0, 1]) if pred.size > 1 and np.std(pred) > 0 else np.nan
    if groups is None:
        if unc is not None:
            ax.errorbar(orc, pred, yerr=unc, fmt="none", alpha=0.2, lw=0.6)
        ax.scatter(orc, pred, s=8, alpha=0.6, label=f"MAE {mae:.3f}, corr {corr:.2f}")
    else:
        labels = np.asarray([str(g) for g in groups])
        cmap = plt.get_cmap("tab10")
        for j, g in enumerate(dict.fromkeys(labels)):
            m, colour = labels == g, cmap(j % cmap.N)
            if unc is not None:
                ax.errorbar(
                    orc[m], pred[m], yerr=unc[m], fmt="none", alpha=0.15, lw=0.6, color=colour
                )
            g_mae = float(np.mean(np.abs(pred[m] - orc[m])))
            ax.scatter(
                orc[m], pred[m], s=8, alpha=0.7, color=colour, label=f"{g} (MAE {g_mae:.3f})"
            )
        title = f"{title + ': ' if title else ''}pooled MAE {mae:.3f}, corr {corr:.2f}"
    lo = float(min(orc.min(), pred.min(), 0.0))
    hi = float(max(orc.max(), pred.max(), 1.0))
    ax.plot([lo, hi], [lo, hi], color="black", lw=0.8)
    ax.set_xlabel(f"oracle {label}")
    ax.set_ylabel(f"predicted {label}")
    if groups is None:
        ax.legend(loc="upper left")
    else:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small", frameon=False)
    if title:
        ax.set_title(title)
    return finish(fig, path)


def eigenvalue_spectra(
    true: Any,
    sample: Any = None,
    estimates: Mapping[str, Any] | None = None,
    *,
    log: bool = True,
    title: str | None = "eigenvalues (descending)",
    path: str | Path | None = None,
) -> Figure:
    """Sorted eigenvalues of the true Σ, the sample covariance and estimates ``{name: (p,p)}``."""
    curves = {"true Σ": true}
    if sample is not None:
        curves["sample"] = sample
    curves.update(dict(estimates or {}))
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, M in curves.items():
        M = as_array(M)
        ev = np.sort(np.linalg.eigvalsh(0.5 * (M + M.T)))[::-1]
        ax.plot(np.arange(1, ev.size + 1), ev, label=name, lw=2.0 if name == "true Σ" else 1.2)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("rank")
    ax.set_ylabel("eigenvalue")
    ax.legend()
    if title:
        ax.set_title(title)
    return finish(fig, path)


def matrix_heatmaps(
    true: Any,
    estimates: Mapping[str, Any],
    *,
    difference: bool = True,
    cmap: str = "RdBu_r",
    path: str | Path | None = None,
) -> Figure:
    """Heat maps of the true matrix and each estimate on one symmetric colour scale;
    with ``difference`` a second row shows ``estimate − true`` (own symmetric scale)."""
    T = as_array(true)
    est = {k: as_array(v) for k, v in estimates.items()}
    for k, v in est.items():
        if v.shape != T.shape:
            raise ValueError(f"estimate {k!r} has shape {v.shape}, the true matrix {T.shape}")
    cols = 1 + len(est)
    rows = 2 if difference and est else 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    vmax = max(np.abs(T).max(), *(np.abs(v).max() for v in est.values()))
    panels = [("true Σ", T), *est.items()]
    for j, (name, M) in enumerate(panels):
        im = axes[0, j].imshow(M, cmap=cmap, vmin=-vmax, vmax=vmax)
        axes[0, j].set_title(name)
    fig.colorbar(im, ax=axes[0, :].tolist(), shrink=0.8)
    if rows == 2:
        dmax = max(np.abs(v - T).max() for v in est.values()) or 1.0
        axes[1, 0].axis("off")
        for j, (name, M) in enumerate(est.items(), start=1):
            im = axes[1, j].imshow(M - T, cmap=cmap, vmin=-dmax, vmax=dmax)
            axes[1, j].set_title(f"{name} − true")
        fig.colorbar(im, ax=axes[1, :].tolist(), shrink=0.8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if path is not None:
        save_figure(fig, path)
    return fig


CURVE_LABELS = {
    "train_loss": "training loss",
    "valid_loss": "validation loss",
    "valid_frobenius": "validation Frobenius loss",
    "valid_intensity_mse": "validation intensity MSE",
}
"""History keys → legend labels of :func:`training_curves`."""


def training_curves(
    history: Mapping[str, Any],
    *,
    keys: Sequence[str] | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Loss curves per epoch from a trainer history dict (``epoch`` and per-epoch lists);
    the learning rate in a second panel when the history has ``lr``."""
    if keys is None:
        keys = [
            k
            for k in ("train_loss", "valid_loss", "valid_frobenius", "valid_intensity_mse")
            if k in history
        ]
    keys = [k for k in keys if len(history.get(k) or []) > 0]
    if not keys:
        raise ValueError(f"history has none of the curves to plot; keys: {sorted(history)}")
    n = len(history[keys[0]])
    epochs = list(history.get("epoch") or range(1, n + 1))
    has_lr = len(history.get("lr") or []) == n
    fig, axes = plt.subplots(1, 2 if has_lr else 1, figsize=(10 if has_lr else 6, 4), squeeze=False)
    ax = axes[0, 0]
    for k in keys:
        y = np.asarray(history[k], dtype=float)
        ax.plot(epochs[: len(y)], y, label=CURVE_LABELS.get(k, k))
    best = history.get("best_epoch")
    if isinstance(best, int | np.integer) and best >= 0:
        ax.axvline(best, color="grey", ls="--", lw=0.8, label=f"best epoch {best}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (lower is better)")
    ax.set_title("Training and validation loss by epoch", fontsize="medium")
    ax.legend(fontsize="small", frameon=False)
    if has_lr:
        axes[0, 1].plot(epochs, history["lr"])
        axes[0, 1].set_xlabel("epoch")
        axes[0, 1].set_ylabel("learning rate")
        axes[0, 1].set_yscale("log")
    return finish(fig, path)


def reliability_diagram(
    curves: pd.DataFrame | Mapping[str, pd.DataFrame],
    *,
    title: str | None = "Do the predicted intervals cover as often as they claim?",
    path: str | Path | None = None,
) -> Figure:
    """Observed against nominal coverage of the predicted intervals (the diagonal is
    perfect calibration); ``curves`` are :func:`shrinklab.models.calibration.reliability_curve`
    frames (columns ``nominal``, ``observed``), one or ``{name: frame}``. Names
    ``"model (method)"`` (:func:`shrinklab.evaluation.selection.reliability_curves`) give
    one small panel per model with a line per interval method."""
    if isinstance(curves, pd.DataFrame):
        curves = {"model": curves}
    panels: dict[str, dict[str, pd.DataFrame]] = {}
    for name, c in curves.items():
        model, _, method = str(name).partition(" (")
        panels.setdefault(model, {})[method.rstrip(")") or "interval"] = c
    n = len(panels)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(2.8 * cols + 1.6, 2.8 * rows + 0.6), squeeze=False,
        sharex=True, sharey=True,
    )  # fmt: skip
    methods = list(dict.fromkeys(m for p in panels.values() for m in p))
    colours = dict(zip(methods, ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd"), strict=False))
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.axis("off")
            continue
        model, lines = list(panels.items())[k]
        ax.plot([0, 1], [0, 1], color="black", lw=0.8, ls="--")
        for method, c in lines.items():
            ax.plot(
                c["nominal"], c["observed"], marker="o", ms=3, color=colours[method], label=method
            )
        ax.set_title(model, fontsize="medium")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    for ax in axes[-1, :]:
        ax.set_xlabel("nominal coverage")
    for ax in axes[:, 0]:
        ax.set_ylabel("observed coverage")
    handles = [plt.Line2D([], [], color=colours[m], marker="o", ms=3, label=m) for m in methods]
    handles.append(plt.Line2D([], [], color="black", lw=0.8, ls="--", label="calibrated"))
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 0.95), frameon=False)
    if title:
        fig.suptitle(title)
    return finish(fig, path)


def error_decomposition_bars(
    decomposition: pd.DataFrame,
    *,
    title: str | None = "learned model's PRIAL shortfall from the oracle",
    path: str | Path | None = None,
) -> Figure:
    """Stacked bars of ``gap_intensity`` and ``gap_mix`` per group
    (:func:`shrinklab.evaluation.scenarios.error_decomposition`)."""
    for col in ("gap_intensity", "gap_mix"):
        if col not in decomposition.columns:
            raise ValueError(f"column {col!r} not in the decomposition table")
    groups = [str(g) for g in decomposition.index]
    a = decomposition["gap_intensity"].to_numpy(dtype=float)
    b = decomposition["gap_mix"].to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.0 * len(groups)), 4))
    x = np.arange(len(groups))
    ax.bar(x, a, label="intensity α")
    ax.bar(x, b, bottom=np.where(b >= 0, np.maximum(a, 0), np.minimum(a, 0)), label="target mix π")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, groups, rotation=30, ha="right")
    ax.set_ylabel("PRIAL points below the oracle")
    legend_outside(ax, title="shortfall due to")
    if title:
        ax.set_title(title)
    return finish(fig, path)


FEASIBILITY_BARS: dict[str, str] = {
    "best_classical": "best classical",
    "learned": "learned",
    "constant_oracle": "best constant w̄ (hindsight)",
    "oracle": "oracle w*(Σ) per replication",
}


"""Bars of :func:`feasibility_bars`: column stem of the table → legend label."""


def family_ratio_bars(
    table: pd.DataFrame,
    *,
    highlight: Sequence[str] = ("gated", *DEPLOYED_NAMES),
    title: str | None = "Loss relative to the best classical estimator, by world family",
    path: str | Path | None = None,
) -> Figure:
    """Grouped seaborn bars of the ``ratio_<family>`` columns of ``table`` (one row per
    model, e.g. :func:`shrinklab.evaluation.selection.family_loss_table`), with the parity
    line at 1 (below 1: better than every classical estimator in that family); models in
    ``highlight`` in the deployed model's colour."""
    cols = [c for c in table.columns if c.startswith("ratio_")]
    if not cols:
        raise ValueError("table has no ratio_<family> columns")
    fams = [c.removeprefix("ratio_") for c in cols]
    names = [str(n) for n in table.index]
    long = pd.DataFrame(
        {
            "family": np.tile(fams, len(names)),
            "model": np.repeat(names, len(fams)),
            "ratio": table[cols].to_numpy(float).reshape(-1),
        }
    )
    colours = estimator_colours(names, highlight)
    fig, ax = plt.subplots(figsize=(min(max(6.0, 0.9 * len(fams) + 2), 14.0), 3.8))
    with sns.axes_style("ticks", SEABORN_STYLE):
        sns.barplot(
            long, x="family", y="ratio", hue="model", order=fams, hue_order=names,
            palette=colours, errorbar=None, saturation=1, ax=ax,
        )  # fmt: skip
    ax.axhline(1.0, color="black", lw=0.8, ls="--")
    ax.set_xticks(ax.get_xticks(), fams, rotation=30, ha="right")
    ax.set_xlabel("world family")
    ax.set_ylabel("loss / best classical loss (lower is better)")
    lo = float(np.nanmin(long["ratio"]))
    ax.set_ylim(max(0.0, lo - 0.05), None)
    legend_outside(ax, title="model")
    if title:
        ax.set_title(title)
    return finish(fig, path)


def feasibility_bars(
    table: pd.DataFrame,
    *,
    title: str | None = "How much of the oracle do the best constant weights reach? (±1 SE)",
    path: str | Path | None = None,
) -> Figure:
    """PRIAL per scenario of the best classical estimator, the learned model, the best
    constant weights in hindsight and the per-replication oracle, with ±1 SE bars
    (:func:`shrinklab.evaluation.feasibility.feasibility_table`; bars whose columns are missing are
    left out)."""
    stems = [k for k in FEASIBILITY_BARS if f"prial_{k}" in table.columns]
    if not stems:
        raise ValueError(f"no prial_<estimator> columns in the table ({list(table.columns)})")
    long = pd.concat(
        [
            pd.DataFrame(
                {
                    "scenario": [str(i) for i in table.index],
                    "estimator": FEASIBILITY_BARS[k],
                    "prial": table[f"prial_{k}"].to_numpy(dtype=float),
                    "se": table[f"se_{k}"].to_numpy(dtype=float)
                    if f"se_{k}" in table.columns
                    else 0.0,
                }
            )
            for k in stems
        ],
        ignore_index=True,
    )
    return prial_bars(long, exclude=(), title=title, path=path)


AXIS_LABELS = {
    "latency_b1_s": "latency, one matrix (s, log scale)",
    "latency_b1024_s": "latency, 1024 matrices (s, log scale)",
    "prial": "PRIAL on the synthetic test worlds (%)",
    "norm_prial": "PRIAL of normalised losses (%)",
    "parameters": "parameters",
    "nonzero_parameters": "non-zero parameters",
    "file_bytes": "file size (bytes)",
}
"""Axis labels in words for the columns the figures plot."""


def tradeoff(
    table: pd.DataFrame,
    *,
    x: str = "latency_b1_s",
    y: str = "prial",
    highlight: Sequence[str] = (),
    title: str | None = "Smaller, faster models: how much accuracy do they keep?",
    path: str | Path | None = None,
) -> Figure:
    """Speed against accuracy of model variants (:func:`shrinklab.evaluation.compression.tradeoff_table`),
    one labelled point per row (index = model name); ``highlight`` rows in red."""
    for col in (x, y):
        if col not in table.columns:
            raise ValueError(f"column {col!r} not in the table ({list(table.columns)})")
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    xs, ys = table[x].to_numpy(dtype=float), table[y].to_numpy(dtype=float)
    colours = [DEPLOYED_COLOUR if str(n) in highlight else "#1f77b4" for n in table.index]
    ax.scatter(xs, ys, c=colours)
    for name, xi, yi in zip(table.index, xs, ys):
        ax.annotate(str(name), (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if np.all(xs > 0):
        ax.set_xscale("log")
    ax.set_xlabel(AXIS_LABELS.get(x, x))
    ax.set_ylabel(AXIS_LABELS.get(y, y))
    if title:
        ax.set_title(title)
    return finish(fig, path)
