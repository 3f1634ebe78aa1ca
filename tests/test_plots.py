"""Figures of notebook 06 (shrinklab.evaluation.plots): each test reads back what was drawn and
compares it with the data (numpy references), so a figure that silently drops or
mislabels data fails."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection, PathCollection

from shrinklab.evaluation import plots

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402


def _bars(ax):
    """The data bars (seaborn also adds empty legend patches to ``ax.patches``)."""
    return [b for c in ax.containers if hasattr(c, "patches") for b in c.patches]


def test_predicted_vs_oracle_groups():
    rng = np.random.default_rng(0)
    orc = rng.uniform(0, 1, 30)
    pred = np.clip(orc + rng.normal(0, 0.1, 30), 0, 1)
    groups = ["a"] * 10 + ["b"] * 12 + ["c"] * 8
    unc = rng.uniform(0.01, 0.2, 30)
    fig = plots.predicted_vs_oracle(pred, orc, uncertainty=unc, groups=groups, title="α")
    ax = fig.axes[0]
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    bars = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(scatters) == 3 and len(bars) == 3
    # error bars: ±1 predicted s.d., in the colour of their group
    lengths = np.concatenate([[s[1, 1] - s[0, 1] for s in b.get_segments()] for b in bars])
    np.testing.assert_allclose(lengths, 2 * unc)
    for sc, b in zip(scatters, bars):
        np.testing.assert_allclose(sc.get_facecolor()[0][:3], b.get_color()[0][:3])
    start = 0
    for sc, (g, size) in zip(scatters, (("a", 10), ("b", 12), ("c", 8))):
        sl = slice(start, start + size)
        np.testing.assert_allclose(sc.get_offsets()[:, 0], orc[sl])
        np.testing.assert_allclose(sc.get_offsets()[:, 1], pred[sl])
        mae = np.mean(np.abs(pred[sl] - orc[sl]))
        assert sc.get_label() == f"{g} (MAE {mae:.3f})"
        start += size
    pooled = np.mean(np.abs(pred - orc))
    corr = np.corrcoef(pred, orc)[0, 1]
    assert ax.get_title() == f"α: pooled MAE {pooled:.3f}, corr {corr:.2f}"
    plt.close(fig)
    with pytest.raises(ValueError, match="groups"):
        plots.predicted_vs_oracle(pred, orc, groups=["a"] * 29)


def _feasibility_table():
    return pd.DataFrame(
        {
            "prial_oracle": [90.0, 70.0],
            "se_oracle": [1.0, 2.0],
            "prial_constant_oracle": [60.0, 20.0],
            "se_constant_oracle": [3.0, 4.0],
            "prial_best_classical": [55.0, 30.0],
            "se_best_classical": [2.5, 3.5],
            "prial_learned": [58.0, 25.0],
            "se_learned": [1.5, 0.5],
        },
        index=pd.Index(["s1", "s2"], name="scenario"),
    )


def test_feasibility_bars_draw_the_table(tmp_path):
    tab = _feasibility_table()
    fig = plots.feasibility_bars(tab, path=tmp_path / "f.png")
    ax = fig.axes[0]
    order = ["best_classical", "learned", "constant_oracle", "oracle"]
    heights = np.array([b.get_height() for b in _bars(ax)])
    np.testing.assert_allclose(heights, np.concatenate([tab[f"prial_{k}"] for k in order]))
    segs = np.concatenate([c.get_segments() for c in ax.collections])
    lengths = np.sort([s[1, 1] - s[0, 1] for s in segs])
    np.testing.assert_allclose(
        lengths, np.sort(2 * np.concatenate([tab[f"se_{k}"] for k in order]))
    )
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [plots.FEASIBILITY_BARS[k] for k in order]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["s1", "s2"]
    assert (tmp_path / "f.png").stat().st_size > 1000
    plt.close(fig)
    # without a learned model the learned bars are left out
    fig = plots.feasibility_bars(tab.drop(columns=["prial_learned", "se_learned"]))
    assert len(_bars(fig.axes[0])) == 6
    plt.close(fig)
    with pytest.raises(ValueError, match="prial_"):
        plots.feasibility_bars(pd.DataFrame({"x": [1.0]}))


def test_matrix_heatmaps_show_matrices_and_differences():
    true = np.array([[2.0, 0.5], [0.5, 1.0]])
    est = {"lw": np.array([[1.8, 0.3], [0.3, 1.1]]), "ml": np.array([[2.1, 0.4], [0.4, 0.9]])}
    fig = plots.matrix_heatmaps(true, est)
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 5  # true, 2 estimates, 2 differences
    np.testing.assert_allclose(images[0].get_array(), true)
    np.testing.assert_allclose(images[1].get_array(), est["lw"])
    np.testing.assert_allclose(images[3].get_array(), est["lw"] - true)
    np.testing.assert_allclose(images[4].get_array(), est["ml"] - true)
    vmax = max(np.abs(m).max() for m in (true, *est.values()))
    assert images[0].get_clim() == (-vmax, vmax)
    plt.close(fig)


def test_eigenvalue_spectra_sorted_descending():
    rng = np.random.default_rng(1)
    A = rng.normal(size=(6, 6))
    sigma = A @ A.T
    fig = plots.eigenvalue_spectra(sigma, sigma + np.eye(6), {"est": 0.5 * sigma})
    lines = fig.axes[0].lines
    ref = np.sort(np.linalg.eigvalsh(sigma))[::-1]
    np.testing.assert_allclose(lines[0].get_ydata(), ref, rtol=1e-10)
    np.testing.assert_allclose(lines[1].get_ydata(), ref + 1, rtol=1e-10)
    np.testing.assert_allclose(lines[2].get_ydata(), 0.5 * ref, rtol=1e-10)
    assert [ln.get_label() for ln in lines] == ["true Σ", "sample", "est"]
    plt.close(fig)


def test_family_ratio_bars_draw_the_table(tmp_path):
    tab = pd.DataFrame(
        {"ratio_a": [0.9, 0.8], "ratio_b": [1.1, 0.95], "norm_loss": [0.5, 0.4]},
        index=pd.Index(["ensemble", "gated"], name="model"),
    )
    fig = plots.family_ratio_bars(tab, path=tmp_path / "r.png")
    ax = fig.axes[0]
    heights = np.array([b.get_height() for b in _bars(ax)])
    np.testing.assert_allclose(heights, [0.9, 1.1, 0.8, 0.95])  # model by model
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ensemble", "gated"]
    assert any(np.allclose(line.get_ydata(), 1.0) for line in ax.get_lines())  # parity line
    assert (tmp_path / "r.png").stat().st_size > 1000
    plt.close(fig)
    with pytest.raises(ValueError, match="ratio_"):
        plots.family_ratio_bars(tab[["norm_loss"]])


def test_single_scenario_bars_are_ranked_and_the_deployed_model_stands_out():
    names = [f"m{i}" for i in range(12)] + ["oracle"]
    vals = np.linspace(10, 90, len(names))[::-1].copy()
    np.random.default_rng(1).shuffle(vals)
    df = pd.DataFrame({"model": names, "prial": vals, "se": 1.0, "scenario": "test worlds"})
    fig = plots.prial_bars(df, estimator_col="model", highlight=["m3"])
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    widths = [b.get_width() for b in _bars(ax)]
    # one bar per model, best at the top, each labelled with its own value
    assert sorted(labels) == sorted(names) and widths == sorted(vals, reverse=True)
    assert dict(zip(labels, widths)) == dict(zip(names, vals))
    colours = {lab: to_hex(b.get_facecolor()) for lab, b in zip(labels, _bars(ax))}
    assert colours["m3"] == plots.DEPLOYED_COLOUR
    assert sum(c == plots.DEPLOYED_COLOUR for c in colours.values()) == 1
    assert fig._suptitle.get_text() == "PRIAL on test worlds (bars: ±1 standard error)"
    plt.close(fig)
    # members of the highlighted ensemble in its light shade; no SEs: no bars, no claim
    fig = plots.prial_bars(
        df.assign(se=0.0, model=names[:-2] + ["m3[0]", "oracle"]),
        estimator_col="model",
        highlight=["m3"],
    )
    ax = fig.axes[0]
    colours = {
        t.get_text(): to_hex(b.get_facecolor()) for t, b in zip(ax.get_yticklabels(), _bars(ax))
    }
    assert colours["m3[0]"] == plots.MEMBER_COLOUR and colours["m3"] == plots.DEPLOYED_COLOUR
    assert not [c for c in ax.collections if isinstance(c, LineCollection)]
    assert fig._suptitle.get_text() == "PRIAL on test worlds"
    plt.close(fig)
    assert plots.PRIAL_ABOVE_100 not in [t.get_text() for t in fig.texts]  # all ≤ 100
    fig = plots.prial_bars(df.assign(prial=vals + 20), estimator_col="model")
    assert plots.PRIAL_ABOVE_100 in [t.get_text() for t in fig.texts]
    plt.close(fig)
    # one far-negative bar does not set the scale: the axis starts at the floor, value written
    fig = plots.prial_bars(
        df.assign(prial=np.where(df.model == "m5", -700.0, vals)), estimator_col="model"
    )
    ax = fig.axes[0]
    assert ax.get_xlim()[0] == plots.PRIAL_FLOOR
    assert [t.get_text() for t in ax.texts] == [" -700 ◂"]
    plt.close(fig)


def test_reliability_small_multiples_one_panel_per_model():
    levels = np.array([0.1, 0.5, 0.9])
    curves = {
        f"{m} ({k})": pd.DataFrame({"nominal": levels, "observed": levels * (1 + 0.1 * i)})
        for i, m in enumerate(["a", "b", "c"])
        for k in ("conformal", "gaussian")
    }
    fig = plots.reliability_diagram(curves)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["a", "b", "c"]
    for i, ax in enumerate(panels):
        lines = [ln for ln in ax.get_lines() if ln.get_label() in ("conformal", "gaussian")]
        assert len(lines) == 2
        np.testing.assert_allclose(lines[0].get_ydata(), levels * (1 + 0.1 * i))
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["conformal", "gaussian", "calibrated"]
    plt.close(fig)


def test_tradeoff_and_folds_axes_in_words():
    tab = pd.DataFrame({"latency_b1_s": [1e-3, 1e-4], "prial": [90.0, 85.0]}, index=["a", "b"])
    fig = plots.tradeoff(tab, highlight=["b"])
    ax = fig.axes[0]
    assert ax.get_xlabel() == plots.AXIS_LABELS["latency_b1_s"] and "PRIAL" in ax.get_ylabel()
    assert ax.get_title()
    plt.close(fig)
    folds = pd.DataFrame(
        {"pooled_ratio_pretrained": [1.0, 1.1], "pooled_ratio_finetuned": [0.9, 1.0]}
    )
    fig = plots.finetune_folds(folds)
    ax = fig.axes[0]
    assert "_" not in ax.get_ylabel() and ax.get_xlabel() == "walk-forward fold"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "pretrained on synthetic data",
        "fine-tuned on real returns",
    ]
    np.testing.assert_allclose([b.get_height() for b in _bars(ax)], [1.0, 1.1, 0.9, 1.0])
    plt.close(fig)


def _legend_outside_axes(fig, legend):
    """True when the legend's box does not overlap its axes' data area."""
    fig.canvas.draw()
    box = legend.get_window_extent()
    area = legend.axes.get_window_extent()
    return box.x0 >= area.x1 - 1 or box.y1 <= area.y0 + 1


def test_grouped_prial_bars_highlight_peer_and_legend_outside():
    names = ["ledoit_wolf", "qis", "rienet_peer", "learned", "oracle"]
    rng = np.random.default_rng(3)
    df = pd.DataFrame(
        [
            {"scenario": s, "estimator": e, "prial": rng.uniform(0, 99), "se": rng.uniform(0, 3)}
            for s in ("s1", "s2", "s3")
            for e in ["sample", *names]
        ]
    )
    fig = plots.prial_bars(df)
    ax = fig.axes[0]
    heights = [b.get_height() for b in _bars(ax)]
    ref = df[df.estimator != "sample"].set_index(["estimator", "scenario"])["prial"]
    np.testing.assert_allclose(heights, [ref[e, s] for e in names for s in ("s1", "s2", "s3")])
    # the SE bars: one segment per bar, length 2 SE
    segs = np.concatenate([c.get_segments() for c in ax.collections])
    se = df[df.estimator != "sample"].set_index(["estimator", "scenario"])["se"]
    np.testing.assert_allclose(
        sorted(s[1, 1] - s[0, 1] for s in segs), sorted(2 * se[e, s] for e, s in ref.index)
    )
    colours = {e: to_hex(c.patches[0].get_facecolor()) for e, c in zip(names, ax.containers)}
    assert colours["learned"] == plots.DEPLOYED_COLOUR
    assert colours["rienet_peer"] == plots.PEER_COLOUR
    assert list(colours.values()).count(plots.DEPLOYED_COLOUR) == 1
    assert _legend_outside_axes(fig, ax.get_legend())
    assert [t.get_text() for t in ax.get_legend().get_texts()] == names
    w, h = fig.get_size_inches()
    assert 6 <= w <= plots.MAX_FIGSIZE[0] and 3 <= h <= plots.MAX_FIGSIZE[1]
    assert "PRIAL" in ax.get_ylabel() and fig._suptitle.get_text()
    plt.close(fig)


def _summary_table():
    rows = []
    for w, shift in ((60, 0.0), (120, 0.001)):
        for e, d in (
            ("ledoit_wolf", 0.0),
            ("qis", 0.002),
            ("ML (final)", -0.004),
            ("RIEnet peer", 0.001),
        ):
            lo, hi = (
                (np.nan, np.nan) if e == "ledoit_wolf" else (d + shift - 0.003, d + shift + 0.002)
            )
            rows.append({"window": w, "estimator": e, "ann_vol": 0.16 + d, "diff_vs_benchmark": d + shift, "ci_low": lo, "ci_high": hi})  # fmt: skip
    # as backtest.summarise writes it: the closest rival's name is a string column
    return pd.DataFrame(rows).assign(rival="qis").set_index(["window", "estimator"])


def test_backtest_volatility_panels_with_bootstrap_intervals(tmp_path):
    tab = _summary_table()
    fig = plots.backtest_volatility(tab, path=tmp_path / "v.png")
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["60-day window", "120-day window"]
    order = ["ML (final)", "RIEnet peer", "qis"]  # ranked by the 60-day difference
    for ax, w in zip(panels, (60, 120)):
        widths = [b.get_width() for b in _bars(ax)]
        np.testing.assert_allclose(widths, 100 * tab.loc[w].loc[order, "diff_vs_benchmark"])
        segs = np.concatenate(
            [c.get_segments() for c in ax.collections if isinstance(c, LineCollection)]
        )
        np.testing.assert_allclose(
            [s[:, 0] for s in segs], 100 * tab.loc[w].loc[order, ["ci_low", "ci_high"]].to_numpy()
        )
        assert to_hex(_bars(ax)[0].get_facecolor()) == plots.DEPLOYED_COLOUR
        assert to_hex(_bars(ax)[1].get_facecolor()) == plots.PEER_COLOUR
    assert [t.get_text() for t in panels[0].get_yticklabels()] == order
    assert "Ledoit–Wolf" in fig._suptitle.get_text()
    assert "percentage points" in fig._supxlabel.get_text()
    assert (tmp_path / "v.png").stat().st_size > 1000
    plt.close(fig)
    with pytest.raises(ValueError, match="ci_low"):
        plots.backtest_volatility(tab.drop(columns="ci_low"))


def test_fold_small_multiples_family_by_window():
    rng = np.random.default_rng(4)
    rows = pd.DataFrame(
        [
            {"family": f, "fold": f"{f}{k}", "window": w, "estimator": e, "rel_vol": rng.normal()}
            for f in ("halves", "sectors")
            for k in range(3)
            for w in (60, 120)
            for e in ("ledoit_wolf", "qis", "ML (final)")
        ]
    )
    fig = plots.fold_small_multiples(rows)
    panels = [ax for ax in fig.axes if ax.has_data()]
    assert len(panels) == 4  # 2 families x 2 windows
    mean = rows.groupby(["family", "window", "estimator"])["rel_vol"].mean()
    order = [t.get_text() for t in panels[0].get_yticklabels()]
    assert "ledoit_wolf" not in order  # the benchmark is 0 by definition: left out
    assert [ax.get_title() for ax in panels[:2]] == ["halves", "sectors"]  # families across
    for ax, (w, f) in zip(panels, [(w, f) for w in (60, 120) for f in ("halves", "sectors")]):
        bars = sorted(_bars(ax), key=lambda b: b.get_y())  # top to bottom
        np.testing.assert_allclose([b.get_width() for b in bars], [mean[f, w, e] for e in order])
        colours = dict(zip(order, (to_hex(b.get_facecolor()) for b in bars)))
        assert colours["ML (final)"] == plots.DEPLOYED_COLOUR
    w, h = fig.get_size_inches()
    assert w <= plots.MAX_FIGSIZE[0] and h <= plots.MAX_FIGSIZE[1]
    assert (
        "Ledoit–Wolf" in fig._suptitle.get_text() and "< 0 is better" in fig._supxlabel.get_text()
    )
    assert "±1 SE over folds" in fig._suptitle.get_text()
    assert any(t.get_text() == "60-day window" for ax in panels for t in ax.texts)  # margin
    plt.close(fig)
    # one fold per family (Ken French's monthly universes): no SE to speak of, months
    single = rows[rows["fold"].str.endswith("0")]
    fig = plots.fold_small_multiples(single, period="month", title="monthly")
    panels = [ax for ax in fig.axes if ax.has_data()]
    assert fig._suptitle.get_text() == "monthly"
    assert any(t.get_text() == "120-month window" for ax in panels for t in ax.texts)
    plt.close(fig)
    with pytest.raises(ValueError, match="family"):
        plots.fold_small_multiples(rows.drop(columns="family"))


def test_training_curves_and_cumulative_variance_in_words():
    history = {"epoch": [1, 2, 3], "train_loss": [3.0, 2.0, 1.5], "valid_loss": [3.5, 2.5, 2.6]}
    fig = plots.training_curves({**history, "best_epoch": 2})
    ax = fig.axes[0]
    labels = [ln.get_label() for ln in ax.get_lines()]
    assert labels == ["training loss", "validation loss", "best epoch 2"]
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), history["valid_loss"])
    plt.close(fig)
    dates = pd.date_range("2016-01-04", periods=5, freq="B")
    cum = pd.DataFrame(
        {"ledoit_wolf": np.arange(5.0), "ML (final)": np.arange(5.0) * 0.9}, index=dates
    )
    fig = plots.cumulative_variance(cum, title="t")
    ax = fig.axes[0]
    assert to_hex(ax.get_lines()[1].get_color()) == plots.DEPLOYED_COLOUR
    assert ax.get_lines()[1].get_linewidth() > ax.get_lines()[0].get_linewidth()
    assert _legend_outside_axes(fig, ax.get_legend()) and ax.get_xlabel() == "date"
    plt.close(fig)
