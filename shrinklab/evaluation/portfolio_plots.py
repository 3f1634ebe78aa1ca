"""Figures of the real-return portfolios: GMV volatility against Ledoit–Wolf with
bootstrap intervals, the cross-universe fold small multiples, cumulative variance over
the test period and the fine-tuning folds (re-exported by :mod:`shrinklab.evaluation.plots`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from shrinklab.evaluation.plot_style import (
    DEPLOYED_NAMES,
    ESTIMATOR_WORDS,
    MAX_FIGSIZE,
    OTHER_COLOUR,
    SEABORN_STYLE,
    estimator_colours,
    finish,
    hbars,
    legend_outside,
)

__all__ = [
    "FOLD_SCORES",
    "backtest_volatility",
    "cumulative_variance",
    "finetune_folds",
    "fold_small_multiples",
]


def cumulative_variance(
    cum: pd.DataFrame,
    *,
    title: str | None = None,
    highlight: Sequence[str] = (),
    path: str | Path | None = None,
) -> Figure:
    """Cumulative out-of-sample variance ``Σ_{s ≤ t} r_s²`` over time, one line per
    estimator (columns of ``cum``, indexed by date); lower is better."""
    if cum.empty:
        raise ValueError("the cumulative-variance table is empty")
    fig, ax = plt.subplots(figsize=(9, 4.5))
    names = [str(c) for c in cum.columns]
    bold = set(highlight) | set(DEPLOYED_NAMES)
    colours = estimator_colours(names, tuple(bold))
    for col, name in zip(cum.columns, names, strict=True):
        ax.plot(cum.index, cum[col].to_numpy(dtype=float), label=name, color=colours[name],
                lw=2.2 if name in bold else 1.2)  # fmt: skip
    ax.set_xlabel("date")
    ax.set_ylabel("cumulative squared daily return (lower is better)")
    legend_outside(ax, fontsize="small", title="estimator")
    if title:
        ax.set_title(title)
    fig.autofmt_xdate()
    return finish(fig, path)


def backtest_volatility(
    table: pd.DataFrame,
    *,
    benchmark: str = "ledoit_wolf",
    highlight: Sequence[str] = DEPLOYED_NAMES,
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Out-of-sample GMV volatility of each estimator minus the benchmark's, in
    percentage points, with the stationary-bootstrap interval (Politis & Romano 1994)
    of the difference: one panel per estimation window, estimators ranked by the first
    window (best at the top). ``table`` is :attr:`shrinklab.evaluation.backtest.BacktestSummary.table`
    (index ``(window, estimator)``; columns ``diff_vs_benchmark``, ``ci_low``, ``ci_high``
    as fractions, and ``ann_vol``)."""
    need = ("diff_vs_benchmark", "ci_low", "ci_high")
    missing = [c for c in need if c not in table.columns]
    if missing or table.index.nlevels != 2:
        raise ValueError(f"need a (window, estimator) table with {need}; missing {missing}")
    t = table.drop(index=benchmark, level=1, errors="ignore")
    windows = list(dict.fromkeys(t.index.get_level_values(0)))
    if not windows:
        raise ValueError(f"no estimator other than the benchmark {benchmark!r}")
    first = t.loc[windows[0], "diff_vs_benchmark"].astype(float)
    order = [str(e) for e in first.sort_values().index]
    colours = estimator_colours(order, highlight)
    height = min(0.3 * len(order) + 1.6, MAX_FIGSIZE[1])
    fig, axes = plt.subplots(
        1, len(windows), figsize=(min(3.6 * len(windows) + 2.0, MAX_FIGSIZE[0]), height),
        sharey=True, squeeze=False,
    )  # fmt: skip
    for ax, w in zip(axes[0], windows, strict=True):
        sub = t.loc[w].reindex(order)[list(need)].astype(float)
        d = 100 * sub["diff_vs_benchmark"].to_numpy()
        err = np.vstack([d - 100 * sub["ci_low"].to_numpy(), 100 * sub["ci_high"].to_numpy() - d])
        hbars(ax, order, d, colours, np.clip(np.nan_to_num(err), 0, None))
        # a dot at each difference: a bar near zero stays visible
        ax.scatter(d, np.arange(len(order)), c=[colours[e] for e in order], s=14, zorder=3)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(f"{w}-day window", fontsize="medium")
        ax.set_xlabel("")
        ax.set_ylabel("")
    axes[0, 0].tick_params(axis="y", labelsize="small")
    bench = ESTIMATOR_WORDS.get(benchmark, benchmark)
    fig.supxlabel(
        f"annualised volatility − {bench}'s (percentage points; < 0 is better)", fontsize="medium"
    )
    fig.suptitle(
        title or f"Out-of-sample GMV volatility against {bench} (bars: 95 % bootstrap interval)"
    )
    return finish(fig, path)


def fold_small_multiples(
    rows: pd.DataFrame,
    *,
    value: str = "rel_vol",
    exclude: Sequence[str] = ("ledoit_wolf", "sample", "equal_weight"),
    highlight: Sequence[str] = DEPLOYED_NAMES,
    title: str | None = "Cross-universe folds (pre-2016): volatility relative to Ledoit–Wolf's",
    period: str = "day",
    path: str | Path | None = None,
) -> Figure:
    """Small multiples of the cross-universe fold backtest
    (:func:`shrinklab.evaluation.universe_backtest.fold_backtest` rows): one panel per fold
    family (columns) and estimation window (rows), one horizontal bar per estimator with
    the mean of ``value`` over the family's folds and ±1 SE over folds (seaborn
    ``catplot``; no bar when a family has one fold, and no SE note in the title when no
    family has more). ``exclude``: the benchmark (0 by definition), the sample covariance
    and equal weights, which would set the scale. ``period``: the unit of the windows
    (``"month"`` for monthly returns)."""
    need = ("family", "window", "estimator", value)
    missing = [c for c in need if c not in rows.columns]
    if missing:
        raise ValueError(f"columns {missing} not in the fold rows ({list(rows.columns)})")
    rows = rows[~rows["estimator"].isin(exclude)]
    if rows.empty:
        raise ValueError(f"no estimator left after excluding {list(exclude)}")
    names = [str(e) for e in dict.fromkeys(rows["estimator"])]
    mean = rows.groupby("estimator", sort=False)[value].mean()
    order = [str(e) for e in mean.sort_values().index]
    families = list(dict.fromkeys(rows["family"]))
    windows = sorted(set(rows["window"]))
    height = min(0.32 * len(order) + 1.0, (MAX_FIGSIZE[1] - 1.0) / max(len(windows), 1))
    width = min(3.6, (MAX_FIGSIZE[0] - 1.5) / max(len(families), 1))
    with sns.axes_style("ticks", SEABORN_STYLE):
        grid = sns.catplot(
            rows.assign(estimator=rows["estimator"].astype(str)), kind="bar", x=value,
            y="estimator", hue="estimator", order=order, hue_order=names, col="family",
            row="window", col_order=families, row_order=windows, palette=estimator_colours(names, highlight),
            errorbar="se", saturation=1, capsize=0.2, err_kws={"linewidth": 0.8}, legend=False,
            height=height, aspect=width / height, sharex=True, margin_titles=True,
        )  # fmt: skip
    for ax in grid.axes.flat:
        ax.axvline(0, color="black", lw=0.8)
    grid.set_titles(col_template="{col_name}", row_template=f"{{row_name}}-{period} window")
    label = "volatility vs Ledoit–Wolf (%; < 0 is better)" if value == "rel_vol" else value
    grid.set_axis_labels("", "")
    fig = grid.figure
    fig.supxlabel(label, fontsize="medium")
    if title:
        several = rows.groupby(["family", "window", "estimator"])[value].count().max() > 1
        fig.suptitle(title + (" (bars: ±1 SE over folds)" if several else ""))
    return finish(fig, path)


FOLD_SCORES = {
    "pooled_ratio": "realised GMV variance / Ledoit–Wolf's",
    "valid_loss": "validation loss (realised GMV variance, relative)",
}


def finetune_folds(
    folds: pd.DataFrame,
    *,
    title: str | None = "Does fine-tuning on real returns help out of sample?",
    path: str | Path | None = None,
) -> Figure:
    """Validation score per walk-forward fold before and after fine-tuning
    (``pooled_ratio_*`` columns if present, else ``valid_loss_*``)."""
    stem = "pooled_ratio" if "pooled_ratio_pretrained" in folds.columns else "valid_loss"
    cols = [f"{stem}_pretrained", f"{stem}_finetuned"]
    for col in cols:
        if col not in folds.columns:
            raise ValueError(f"column {col!r} not in the folds table")
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(folds) + 3), 4))
    x = np.arange(len(folds))
    labels = ("pretrained on synthetic data", "fine-tuned on real returns")
    for j, (col, label, colour) in enumerate(
        zip(cols, labels, (OTHER_COLOUR, "#1f77b4"), strict=True)
    ):
        ax.bar(
            x + (j - 0.5) * 0.4, folds[col].to_numpy(dtype=float), 0.4, label=label, color=colour
        )
    if stem == "pooled_ratio":
        ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(x, [str(i) for i in folds.index])
    ax.set_xlabel("walk-forward fold")
    ax.set_ylabel(FOLD_SCORES[stem] + " (lower is better)")
    legend_outside(ax)
    if title:
        ax.set_title(title)
    return finish(fig, path)
