"""Synthetic PRIAL evaluation (shrinklab.evaluation.scenarios) and the figures (shrinklab.evaluation.plots).

References: scikit-learn's LedoitWolf / OAS for the classical losses, numpy
Frobenius norms of explicitly built matrices for the family members, the
exact identities PRIAL(sample) = 0 and PRIAL(FSOPT) = 100, the oracle's
optimality over the family, a bootstrap over replications for the delta-method
standard error, and closed forms for the SE.
"""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from _forced_model import forced_network, random_network
from sklearn.covariance import OAS, LedoitWolf

from shrinklab.core import metrics
from shrinklab.core.features import FEATURE_NAMES
from shrinklab.core.metrics import prial as prial_reference
from shrinklab.core.targets import TARGET_NAMES, combine, shrinkage_targets
from shrinklab.data.synthetic import make_scenario
from shrinklab.evaluation import examples, feasibility, plots, scenarios, tables
from shrinklab.studies import specialists

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SPEC = {"name": "toy", "family": "spectrum_1_3_10", "p": 12, "n": 30}
SPEC_T = {"family": "factor", "p": 10, "n": 25, "df": 6}


@pytest.fixture(scope="module")
def res_random():
    """One scenario with a responsive model and an ensemble stand-in."""
    return scenarios.evaluate_scenario(SPEC, random_network(1), 40, 7, ensemble=random_network(2))


def _onehot(target: str) -> list[float]:
    return [1.0 if k == target else 0.0 for k in TARGET_NAMES]


# --------------------------------------------------------------------- one scenario
def test_sample_is_zero_and_fsopt_is_hundred_exactly(res_random):
    assert res_random["prial"]["sample"] == 0.0 and res_random["se"]["sample"] == 0.0
    assert res_random["prial"]["fsopt"] == 100.0 and res_random["se"]["fsopt"] == 0.0
    L = res_random["losses"]
    # and the raw formula agrees (not only the hard-coded exact values)
    assert metrics.prial_se(L["fsopt"], L["sample"], L["fsopt"])[0] == pytest.approx(
        100.0, abs=1e-12
    )
    assert metrics.prial_se(L["sample"], L["sample"], L["fsopt"]) == (0.0, 0.0)


def test_prial_agrees_with_estimators_prial(res_random):
    L = res_random["losses"]
    for k, v in res_random["prial"].items():
        assert v == pytest.approx(
            prial_reference(L[k], L["sample"], L["fsopt"]), rel=1e-12, abs=1e-12
        )


def test_classical_losses_match_sklearn():
    R = 6
    sigma, X = make_scenario({k: v for k, v in SPEC.items() if k != "name"}, R, 7)
    res = scenarios.evaluate_scenario(SPEC, None, R, 7)
    for name, cls in (("ledoit_wolf", LedoitWolf), ("oas", OAS)):
        ref = [
            np.sum((cls().fit(X[i].numpy()).covariance_ - sigma[i].numpy()) ** 2) for i in range(R)
        ]
        np.testing.assert_allclose(res["losses"][name], ref, rtol=1e-9)
    Xn = X.numpy() - X.numpy().mean(1, keepdims=True)
    S = np.einsum("bti,btj->bij", Xn, Xn) / X.shape[1]
    np.testing.assert_allclose(
        res["losses"]["sample"], ((S - sigma.numpy()) ** 2).sum((1, 2)), rtol=1e-9
    )
    assert "learned" not in res["prial"] and "gap" not in res


def test_forced_models_match_explicit_matrices():
    R = 8
    sigma, X = make_scenario({k: v for k, v in SPEC_T.items()}, R, 3)
    zero = scenarios.evaluate_scenario(SPEC_T, forced_network(0.0), R, 3)
    np.testing.assert_array_equal(zero["losses"]["learned"], zero["losses"]["sample"])
    assert zero["prial"]["learned"] == 0.0
    ident = scenarios.evaluate_scenario(SPEC_T, forced_network(1.0, _onehot("identity")), R, 3)
    Xn = X.numpy() - X.numpy().mean(1, keepdims=True)
    S = np.einsum("bti,btj->bij", Xn, Xn) / X.shape[1]
    mu = np.trace(S, axis1=1, axis2=2) / S.shape[-1]
    ref = ((mu[:, None, None] * np.eye(S.shape[-1]) - sigma.numpy()) ** 2).sum((1, 2))
    np.testing.assert_allclose(ident["losses"]["learned"], ref, rtol=1e-9)


def test_learned_loss_from_quadratic_form_equals_matrix_loss(res_random):
    sigma, X = make_scenario({k: v for k, v in SPEC.items() if k != "name"}, 40, 7)
    w = torch.as_tensor(res_random["alpha"][:, None] * res_random["weights"])
    Xn = X - X.mean(1, keepdim=True)
    S = Xn.transpose(1, 2) @ Xn / X.shape[1]
    est = combine(S, shrinkage_targets(X), w).numpy()
    ref = ((est - sigma.numpy()) ** 2).sum((1, 2))
    np.testing.assert_allclose(res_random["losses"]["learned"], ref, rtol=1e-9)


def test_oracle_is_best_in_the_family(res_random):
    L = res_random["losses"]
    # Ledoit–Wolf, OAS, constant correlation, single factor, QIS and the models are
    # members of the family w = α π; the oracle minimises the loss over it per draw.
    for k in ("sample", "ledoit_wolf", "oas", "constant_correlation", "single_factor", "qis",
              "learned", "ensemble"):  # fmt: skip
        assert np.all(L["oracle"] <= L[k] * (1 + 1e-9)), k
    w = res_random["oracle_weights"]
    assert np.all(w >= 0) and np.all(w.sum(1) <= 1 + 1e-9)
    np.testing.assert_allclose(res_random["alpha_oracle"], w.sum(1))


def test_decomposition_adds_up(res_random):
    r = res_random
    assert r["gap"] == pytest.approx(r["prial"]["oracle"] - r["prial"]["learned"], rel=1e-9)
    assert r["gap_intensity"] + r["gap_mix"] == pytest.approx(r["gap"], rel=1e-9)
    zero = scenarios.evaluate_scenario(SPEC_T, forced_network(0.0), 10, 1)
    assert zero["gap_mix"] == 0.0  # α̂ = 0: the mix cannot matter
    assert zero["gap_intensity"] == pytest.approx(zero["prial"]["oracle"], rel=1e-12)


def test_paired_difference_to_best_classical(res_random):
    r = res_random
    best = r["best_classical"]
    assert best == max(scenarios.CLASSICAL, key=r["prial"].get)
    for k in ("learned", "ensemble"):
        assert r["diff_best"][k] == pytest.approx(r["prial"][k] - r["prial"][best], rel=1e-9)
        assert r["diff_best_se"][k] > 0


def test_invalid_arguments():
    with pytest.raises(ValueError, match="n_reps"):
        scenarios.evaluate_scenario(SPEC, None, 1, 0)
    with pytest.raises(ValueError, match="family"):
        scenarios.evaluate_scenario({"family": "nope", "p": 5, "n": 10}, None, 5, 0)
    with pytest.raises(ValueError, match="unique"):
        scenarios.evaluate_grid([SPEC, SPEC], None, n_reps=3)
    with pytest.raises(ValueError, match="empty"):
        scenarios.evaluate_grid([], None)


# --------------------------------------------------------------------- standard errors
def test_delta_se_closed_form_constant_denominator():
    rng = np.random.default_rng(0)
    d = rng.gamma(3.0, size=500) + 10.0
    L = d - rng.normal(2.0, 1.5, size=500)  # a = d − L ~ N(2, 1.5²)
    f = d - 4.0  # b = 4 on every draw: SE is sd(a)/(√N · 4)
    p, se = metrics.prial_se(L, d, f)
    a = d - L
    assert p == pytest.approx(100 * a.mean() / 4.0, rel=1e-12)
    assert se == pytest.approx(100 * a.std(ddof=1) / (math.sqrt(500) * 4.0), rel=1e-12)


def test_delta_se_matches_bootstrap_and_shrinks_like_root_n():
    res = scenarios.evaluate_scenario(SPEC, None, 400, 11)
    L = res["losses"]
    rng = np.random.default_rng(1)
    idx = rng.integers(0, 400, size=(3000, 400))
    for k in ("ledoit_wolf", "qis", "constant_correlation"):
        a, b = L["sample"] - L[k], L["sample"] - L["fsopt"]
        boot = 100 * a[idx].mean(1) / b[idx].mean(1)
        assert res["se"][k] == pytest.approx(boot.std(ddof=1), rel=0.15), k
    # 1/√N: the SE on 100 draws (averaged over the 4 disjoint blocks) is ~2× the SE on 400
    for k in ("ledoit_wolf", "qis", "single_factor"):
        blocks = [slice(i, i + 100) for i in range(0, 400, 100)]
        se100 = np.mean(
            [metrics.prial_se(L[k][b], L["sample"][b], L["fsopt"][b])[1] for b in blocks]
        )
        assert 1.6 < se100 / res["se"][k] < 2.4, k


# --------------------------------------------------------------------- grid and tables
@pytest.fixture(scope="module")
def grid_results():
    grid = [SPEC, SPEC_T, {"family": "toeplitz", "p": 16, "n": 10, "rho": 0.5}]
    return scenarios.evaluate_grid(
        grid, random_network(1), n_reps=12, seed=4, ensemble=random_network(2), return_results=True
    ), grid


def test_grid_long_format_and_seeds(grid_results):
    (df, results), grid = grid_results
    assert list(df.columns[:5]) == ["scenario", "estimator", "prial", "se", "n_reps"]
    assert len(df) == 3 * 10 and set(df.n_reps) == {12}
    assert list(dict.fromkeys(df.scenario)) == ["toy", "factor p=10 n=25 t6", "toeplitz p=16 n=10"]
    assert list(df[df.scenario == "toy"].estimator) == [
        *scenarios.ESTIMATORS, "learned", "ensemble", "oracle", "fsopt"
    ]  # fmt: skip
    for r in results:
        sub = df[df.scenario == r["scenario"]].set_index("estimator")
        for k, v in r["prial"].items():
            assert sub.loc[k, "prial"] == v and sub.loc[k, "se"] == r["se"][k]
    # a scenario's draws do not depend on its position in the grid
    rev = scenarios.evaluate_grid(grid[::-1][:1], random_network(1), n_reps=12, seed=4)
    a = rev.set_index("estimator")["prial"]
    b = df[df.scenario == "toeplitz p=16 n=10"].set_index("estimator")["prial"]
    pd.testing.assert_series_equal(a, b.loc[a.index])


def test_capture_ratio(grid_results):
    (df, _), _ = grid_results
    cap = scenarios.capture_ratio(df)
    piv = df.pivot(index="scenario", columns="estimator", values="prial")
    for s in piv.index:
        assert cap[s] == pytest.approx(piv.loc[s, "learned"] / piv.loc[s, "oracle"])
    assert cap["average"] == pytest.approx(piv["learned"].mean() / piv["oracle"].mean())
    with pytest.raises(ValueError, match="nope"):
        scenarios.capture_ratio(df, learned="nope")


def test_error_decomposition_groups(grid_results):
    (_, results), _ = grid_results
    fam = scenarios.error_decomposition(results, by="family")
    assert list(fam.index) == ["spectrum_1_3_10", "factor", "toeplitz"]
    np.testing.assert_allclose(fam.gap_intensity + fam.gap_mix, fam.gap, rtol=1e-9)
    np.testing.assert_allclose(fam.prial_oracle - fam.prial_learned, fam.gap, rtol=1e-9)
    pn = scenarios.error_decomposition(results, by="pn_bucket")
    assert list(pn.index) == ["0.25 < p/n ≤ 0.75", "p/n > 1.5"]  # increasing p/n
    rev = scenarios.error_decomposition(results[::-1], by="pn_bucket")
    assert list(rev.index) == list(pn.index)
    pd.testing.assert_frame_equal(rev, pn)
    assert pn.loc["0.25 < p/n ≤ 0.75", "n_scenarios"] == 2
    both = [r["gap"] for r in results if r["p"] / r["n"] <= 0.75]
    assert pn.loc["0.25 < p/n ≤ 0.75", "gap"] == pytest.approx(np.mean(both))
    with pytest.raises(ValueError, match="by"):
        scenarios.error_decomposition(results, by="colour")


def test_per_replication_frame(grid_results):
    (_, results), _ = grid_results
    fr = scenarios.per_replication(results)
    assert len(fr) == sum(r["n_reps"] for r in results)
    first = fr[fr.scenario == results[0]["scenario"]]
    np.testing.assert_array_equal(first.loss_qis, results[0]["losses"]["qis"])
    np.testing.assert_array_equal(first.alpha, results[0]["alpha"])
    np.testing.assert_array_equal(first.rep, np.arange(results[0]["n_reps"]))


def test_pn_bucket_edges():
    assert scenarios.pn_bucket(25, 100) == "p/n ≤ 0.25"
    assert scenarios.pn_bucket(26, 100) == "0.25 < p/n ≤ 0.75"
    assert scenarios.pn_bucket(150, 100) == "0.75 < p/n ≤ 1.5"
    assert scenarios.pn_bucket(200, 100) == "p/n > 1.5"


def _fake_grid(learned_prial, learned_diff, diff_se):
    rows = []
    for s, (lp, dd, ds) in enumerate(zip(learned_prial, learned_diff, diff_se)):
        for e, v in [("sample", 0.0), ("ledoit_wolf", 50.0), ("oas", 40.0), ("constant_correlation", 10.0),
                     ("single_factor", 5.0), ("qis", 30.0), ("learned", lp), ("oracle", 60.0),
                     ("fsopt", 100.0)]:  # fmt: skip
            rows.append({"scenario": f"s{s}", "estimator": e, "prial": v, "se": 1.0, "n_reps": 100,
                         "diff_best_classical": dd if e == "learned" else np.nan,
                         "diff_se": ds if e == "learned" else np.nan,
                         "best_classical": "ledoit_wolf"})  # fmt: skip
    return pd.DataFrame(rows)


RIVAL = list(tables.RIVAL_COLUMNS)


def test_headline_table_logic_and_json():
    grid = _fake_grid([55.0, 49.5, 58.0], [5.0, -0.5, 8.0], [0.4, 0.8, 0.5])
    bt = pd.DataFrame(
        {
            "window": [60, 60, 60, 120, 120, 120],
            "estimator": ["ledoit_wolf", "qis", "ML (final)"] * 2,
            "ann_vol": [0.15, 0.16, 0.14, 0.15, 0.14, 0.145],
            "diff_vs_benchmark": [0.0, 0.01, -0.01, 0.0, -0.01, -0.005],
            "ci_low": [np.nan, 0.0, -0.02, np.nan, -0.02, -0.012],
            "ci_high": [np.nan, 0.02, 0.001, np.nan, 0.0, 0.003],
            "significant": [False, False, False, False, True, False],
            "rival": ["ML (final)", "ML (final)", "ledoit_wolf", "qis", "ML (final)", "qis"],
            "diff_vs_rival": [0.01, 0.02, -0.01, 0.01, -0.005, 0.005],
            "rival_ci_low": [0.0, 0.01, -0.02, 0.0, -0.011, -0.002],
            "rival_ci_high": [0.02, 0.03, 0.001, 0.02, 0.002, 0.0125],
        }
    ).set_index(["window", "estimator"])
    h = tables.headline_table(grid, bt)
    assert list(h["goal met"]) == ["yes", "yes", "yes", "yes",
                                   "yes (next ledoit_wolf: -1.00 [-2.00, +0.10])",
                                   "no (qis lower: +0.50 [-0.20, +1.25])"]  # fmt: skip
    assert "closest rival" in h.attrs["caption"]
    with pytest.raises(ValueError, match="lacks"):
        tables.headline_table(grid, bt.drop(columns=["rival_ci_high"]))
    avg = h.iloc[3]
    assert avg["learned"] == f"{np.mean([55.0, 49.5, 58.0]):.1f}"
    assert "captured 90 %" in avg["oracle"]  # 54.17 / 60
    assert h.iloc[4]["best classical"] == "ledoit_wolf 15.00"
    assert h.iloc[5]["best classical"] == "qis 14.00"
    # one scenario more than one SE below the best classical one fails the goal
    worse = tables.headline_table(_fake_grid([55.0, 48.0], [5.0, -2.0], [0.4, 1.0]))
    assert list(worse["goal met"]) == ["yes", "no", "no"]
    # a near-tie keeps two significant digits of its SE instead of "-0.0 ± 0.0"
    tie = tables.headline_table(_fake_grid([58.0, 57.983], [5.0, -0.017], [0.4, 0.027]))
    assert tie.iloc[1]["learned − best"] == "-0.017 ± 0.027"
    assert tie.iloc[0]["learned − best"] == "5.00 ± 0.40"
    assert list(tie["goal met"]) == ["yes", "yes", "yes"]
    # a learned peer: its own row per window; the learned model's goal counts it
    bt_peer = pd.concat(
        [
            bt,
            pd.DataFrame(
                {
                    "window": [60, 120],
                    "estimator": ["peer"] * 2,
                    "ann_vol": [0.135, 0.146],
                    "diff_vs_benchmark": [-0.015, -0.004],
                    "ci_low": [-0.03, -0.01],
                    "ci_high": [0.0, 0.002],
                    "significant": [True, False],
                    "rival": ["ML (final)", "qis"],
                    "diff_vs_rival": [-0.005, 0.006],
                    "rival_ci_low": [-0.01, 0.0],
                    "rival_ci_high": [0.0, 0.01],
                }
            ).set_index(["window", "estimator"]),
        ]
    ).sort_index()
    # the learned model's rival at 60 is now the peer (what summarise would write)
    bt_peer.loc[(60, "ML (final)"), RIVAL] = ["peer", 0.005, -0.001, 0.012]
    hp = tables.headline_table(grid, bt_peer, peers=["peer"])
    assert len(hp) == len(h) + 2
    # the peer is lower at 60
    assert hp.iloc[4]["goal met"] == "no (peer lower: +0.50 [-0.10, +1.20])"
    assert hp.iloc[5]["setting"] == "GMV S&P 500, window 60: peer (learned peer)"
    assert hp.iloc[5]["learned"] == "13.50" and "[-3.00, +0.00]" in hp.iloc[5]["learned − best"]
    assert hp.iloc[7]["learned"] == "14.60"
    assert hp.iloc[6]["setting"] == "GMV S&P 500, window 120: ML (final)"
    with pytest.raises(ValueError, match="peer 'RIEnet'"):
        tables.headline_table(grid, bt, peers=["RIEnet"])
    js = tables.headline_json(h)
    assert js["columns"] == list(h.columns) and len(js["rows"]) == len(h)
    assert all(isinstance(v, str) for row in js["rows"] for v in row)
    assert "PRIAL" in js["caption"] and "bootstrap" in js["caption"]


def test_headline_rows_for_other_universes():
    """Real universes backtested fold by fold (Ken French's portfolios): per learned
    model, the mean over cells of the volatility relative to Ledoit–Wolf's with its SE, the
    classical estimator with the lowest mean, the paired difference and the cells won."""
    rel = {  # (family, window) -> estimator -> rel_vol
        ("a", 36): {"ledoit_wolf": 0.0, "oas": -0.2, "ML (final)": -0.5, "peer": 2.0},
        ("a", 60): {"ledoit_wolf": 0.0, "oas": 0.1, "ML (final)": 0.3, "peer": 1.0},
        ("b", 36): {"ledoit_wolf": 0.0, "oas": -0.4, "ML (final)": -0.1, "peer": 3.0},
    }
    rows = pd.DataFrame(
        [
            {"family": f, "window": w, "estimator": e, "rel_vol": v, "ann_vol": 10 * (1 + v / 100)}
            for (f, w), d in rel.items()
            for e, v in d.items()
        ]
    )
    grid = _fake_grid([55.0], [5.0], [0.4])
    h = tables.headline_table(
        grid, peers=["peer"], universe_rows=rows, universe_setting="GMV elsewhere"
    )
    final, peer = h.iloc[-2], h.iloc[-1]
    assert final["setting"] == "GMV elsewhere: ML (final)"
    assert peer["setting"] == "GMV elsewhere: peer (learned peer)"
    learned = np.array([-0.5, 0.3, -0.1])
    oas = np.array([-0.2, 0.1, -0.4])
    assert final["best classical"] == f"oas {oas.mean():+.2f}"
    se = learned.std(ddof=1) / np.sqrt(3)
    assert final["learned"] == f"{learned.mean():.2f} ± {se:.2f}"
    d = learned - oas
    assert final["learned − best"] == f"{d.mean():.2f} ± {d.std(ddof=1) / np.sqrt(3):.2f}"
    # at or below the cell's best classical estimator in cell (a, 36) only
    assert final["goal met"] == "no (1 of 3 cells)" and peer["goal met"] == "(a competitor)"
    assert "GMV elsewhere" in h.attrs["caption"]
    with pytest.raises(ValueError, match="'missing'"):
        tables.universe_headline_rows(rows, "x", "missing")


# --------------------------------------------------------------------- figures
def test_prial_bars_draw_the_table(grid_results):
    """Every (scenario, estimator) PRIAL is one bar with a ±1 SE error bar, whichever
    layout (grouped bars or one panel per scenario) the size of the table picks."""
    (df, _), _ = grid_results
    fig = plots.prial_bars(df)
    shown = [e for e in dict.fromkeys(df.estimator) if e not in ("sample", "fsopt")]
    panels = [ax for ax in fig.axes if ax.patches]
    horizontal = len(shown) > 6 or df.scenario.nunique() == 1
    size = (lambda b: b.get_width()) if horizontal else (lambda b: b.get_height())
    drawn = np.sort([size(b) for ax in panels for b in ax.patches])
    kept = df[df.estimator.isin(shown)]
    np.testing.assert_allclose(drawn, np.sort(kept.prial.to_numpy()))
    axis = 0 if horizontal else 1  # error bars along the bars
    segs = np.concatenate([c.get_segments() for ax in panels for c in ax.collections])
    lengths = np.array([s[1, axis] - s[0, axis] for s in segs])
    np.testing.assert_allclose(np.sort(lengths), np.sort(2 * kept.se.to_numpy()), atol=1e-9)
    plt.close(fig)


def test_other_figures(tmp_path, grid_results, res_random):
    (_, results), _ = grid_results
    r = res_random
    figs = [
        plots.predicted_vs_oracle(r["alpha"], r["alpha_oracle"], uncertainty=r["uncertainty"]),
        plots.eigenvalue_spectra(
            np.diag([3.0, 2.0, 1.0]), np.diag([4.0, 2.0, 0.5]), {"est": np.diag([3.5, 2.0, 0.8])}
        ),  # fmt: skip
        plots.matrix_heatmaps(np.eye(4), {"a": np.eye(4) * 1.1, "b": np.ones((4, 4))}),
        plots.training_curves(
            {
                "epoch": [1, 2, 3],
                "train_loss": [3, 2, 1],
                "valid_loss": [3, 2.5, 2],
                "lr": [1e-3, 5e-4, 1e-4],
                "best_epoch": 3,
            }
        ),  # fmt: skip
        plots.reliability_diagram(
            {"m": pd.DataFrame({"nominal": [0.5, 0.9], "observed": [0.4, 0.8]})}
        ),
        plots.cumulative_variance(
            pd.DataFrame(
                {"lw": [1.0, 2.0, 3.0], "ml": [0.9, 1.8, 2.6]},
                index=pd.date_range("2020-01-01", periods=3),
            )
        ),  # fmt: skip
        plots.error_decomposition_bars(scenarios.error_decomposition(results)),
        plots.tradeoff(
            pd.DataFrame({"latency_b1_s": [1e-4, 5e-5], "prial": [60.0, 59.0]}, index=["a", "b"])
        ),
        plots.finetune_folds(
            pd.DataFrame(
                {"pooled_ratio_pretrained": [1.0, 0.98], "pooled_ratio_finetuned": [0.97, 0.96]}
            )
        ),  # fmt: skip
    ]
    assert all(isinstance(f, matplotlib.figure.Figure) for f in figs)
    # the scatter shows the data it was given
    offsets = figs[0].axes[0].collections[-1].get_offsets()
    np.testing.assert_allclose(offsets[:, 0], r["alpha_oracle"])
    np.testing.assert_allclose(offsets[:, 1], r["alpha"])
    # spectra are the sorted eigenvalues
    np.testing.assert_allclose(figs[1].axes[0].lines[1].get_ydata(), [4.0, 2.0, 0.5])
    out = plots.prial_bars(grid_results[0][0], path=tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
    for f in [*figs, out]:
        plt.close(f)
    with pytest.raises(ValueError, match="shape"):
        plots.matrix_heatmaps(np.eye(3), {"x": np.eye(4)})
    with pytest.raises(ValueError, match="length"):
        plots.predicted_vs_oracle([0.1, 0.2], [0.1])


# --------------------------------------------------------------------- feasibility
# The classical estimators that are members of the family Σ̂(w), as (target, intensity fn).
_MEMBERS = {
    "ledoit_wolf": "identity",
    "oas": "identity",
    "constant_correlation": "constant_correlation",
    "single_factor": "single_factor",
}


@pytest.fixture(scope="module")
def res_small():
    return scenarios.evaluate_scenario(SPEC_T, random_network(1), 15, 5)


def _summed(w, G, c, d):
    """Σ_i (wᵀG_iw − 2c_iᵀw + d_i) for a constant w (plain numpy)."""
    w = np.asarray(w, dtype=np.float64)
    return float(np.einsum("k,bkl,l->", w, G, w) - 2 * (c @ w).sum() + d.sum())


def test_constant_oracle_is_best_constant_weight(res_small):
    r = res_small
    G, c, d = r["G"], r["c"], r["losses"]["sample"]
    co = feasibility.constant_oracle(r)
    best = co["losses"].sum()
    assert best == pytest.approx(_summed(co["weights"], G, c, d), rel=1e-10)
    w = co["weights"]
    assert np.all(w >= -1e-12) and w.sum() <= 1 + 1e-12
    sigma, X = make_scenario(SPEC_T, 15, 5)
    K = len(TARGET_NAMES)
    candidates = [np.zeros(K), np.eye(K)[TARGET_NAMES.index("qis")]]  # sample, QIS
    for name, target in _MEMBERS.items():
        _, rho = scenarios.ESTIMATORS[name](X, return_shrinkage=True)
        e = np.eye(K)[TARGET_NAMES.index(target)]
        # the construction is right: ρ_i e_target on replication i is the estimator itself
        own = np.einsum("b,k,bkl,l->b", rho.numpy() ** 2, e, G, e) - 2 * rho.numpy() * (c @ e) + d
        np.testing.assert_allclose(own, r["losses"][name], rtol=1e-9)
        # each replication's weights, and their mean, used for every replication
        candidates += [float(x) * e for x in rho.numpy()] + [float(rho.mean()) * e]
    rng = np.random.default_rng(0)
    simplex = rng.dirichlet(np.ones(K + 1), size=3000)[:, :K]  # w ≥ 0, Σw ≤ 1 (slack dropped)
    candidates += list(simplex) + list(np.eye(K))
    losses = np.array([_summed(v, G, c, d) for v in candidates])
    assert best <= losses.min() * (1 + 1e-12)
    # brute force comes close from above (the optimum is not hiding elsewhere)
    assert losses.min() <= best * 1.02
    # and the per-replication oracle is below the constant one on every replication
    assert np.all(r["losses"]["oracle"] <= co["losses"] * (1 + 1e-12))
    assert co["prial"] <= r["prial"]["oracle"]
    p, se = metrics.prial_se(co["losses"], d, r["losses"]["fsopt"])
    assert (co["prial"], co["se"]) == (p, se) and se > 0


def test_constant_oracle_matches_scipy(res_small):
    from scipy.optimize import minimize

    G, c = res_small["G"], res_small["c"]
    Gs, cs = G.sum(0), c.sum(0)
    K = Gs.shape[0]
    f = lambda w: w @ Gs @ w - 2 * cs @ w  # noqa: E731
    cons = [{"type": "ineq", "fun": lambda w: 1 - w.sum()}]
    ref = min(
        (minimize(f, x0, bounds=[(0, None)] * K, constraints=cons, method="SLSQP",
                  options={"ftol": 1e-14, "maxiter": 500}) for x0 in np.eye(K) * 0.5),
        key=lambda o: o.fun,
    )  # fmt: skip
    w = feasibility.constant_oracle_weights(G, c).numpy()
    assert f(w) <= ref.fun + 1e-9 * abs(ref.fun)
    assert f(w) == pytest.approx(ref.fun, rel=1e-7)


def test_constant_oracle_equals_oracle_on_identical_replications(res_small):
    r, i = res_small, 3
    R = 6
    tile = lambda a: np.repeat(a[i : i + 1], R, axis=0)  # noqa: E731
    fake = {
        "G": tile(r["G"]),
        "c": tile(r["c"]),
        "losses": {"sample": tile(r["losses"]["sample"]), "fsopt": tile(r["losses"]["fsopt"])},
    }
    co = feasibility.constant_oracle(fake)
    np.testing.assert_allclose(co["losses"], r["losses"]["oracle"][i], rtol=1e-9)
    assert co["losses"].mean() == pytest.approx(r["losses"]["oracle"][i], rel=1e-9)
    np.testing.assert_allclose(co["weights"], r["oracle_weights"][i], atol=1e-6)


def test_constant_oracle_invalid_input():
    with pytest.raises(ValueError, match="G"):
        feasibility.constant_oracle_weights(np.zeros((3, 5, 5)), np.zeros((2, 5)))
    with pytest.raises(ValueError, match="R >= 1"):
        feasibility.constant_oracle_weights(np.zeros((0, 5, 5)), np.zeros((0, 5)))
    with pytest.raises(ValueError, match="evaluate_scenario"):
        feasibility.constant_oracle({"losses": {}})


def test_feasibility_table_and_summary(grid_results):
    (df, results), _ = grid_results
    tab = feasibility.feasibility_table(results)
    assert list(tab.index) == [r["scenario"] for r in results]
    for r in results:
        row, co = tab.loc[r["scenario"]], feasibility.constant_oracle(r)
        assert row["prial_constant_oracle"] == co["prial"] and row["se_constant_oracle"] == co["se"]
        assert row["prial_oracle"] == r["prial"]["oracle"]
        assert row["prial_best_classical"] == max(r["prial"][k] for k in scenarios.CLASSICAL)
        assert row["learned_minus_constant"] == pytest.approx(
            r["prial"]["learned"] - co["prial"], rel=1e-9, abs=1e-9
        )
        assert row["learned_minus_constant_se"] > 0
        w = row[[f"w_{k}" for k in TARGET_NAMES]].to_numpy(dtype=float)
        np.testing.assert_allclose(w, co["weights"])
        assert row["alpha_constant"] == pytest.approx(w.sum())
        assert row["alpha_oracle_sd"] == pytest.approx(np.std(r["alpha_oracle"], ddof=1))
    summ = feasibility.feasibility_summary(tab)
    assert summ["prial_oracle"] == pytest.approx(tab.prial_oracle.mean())
    assert summ["constant_capture"] == pytest.approx(
        tab.prial_constant_oracle.mean() / tab.prial_oracle.mean()
    )
    # learned capture uses the same convention as the headline's capture ratio
    assert summ["learned_capture"] == pytest.approx(scenarios.capture_ratio(df)["average"])
    assert summ["goal_prial"] == pytest.approx(0.9 * tab.prial_oracle.mean())
    assert summ["learned_minus_constant"] == pytest.approx(tab.learned_minus_constant.mean())
    with pytest.raises(ValueError, match="feasibility_table"):
        feasibility.feasibility_summary(df)


def test_example_matrices_are_the_scored_draws(res_small):
    r, rep = res_small, 4
    net = random_network(1)
    names = ["sample", "ledoit_wolf", "qis", "learned", "oracle", "constant_oracle", "fsopt"]
    m = examples.example_matrices(r, net, names, rep=rep)
    sigma = m["sigma"]
    co = feasibility.constant_oracle(r)
    for k in names:
        loss = ((m[k] - sigma) ** 2).sum()
        ref = co["losses"][rep] if k == "constant_oracle" else r["losses"][k][rep]
        # learned: float32 network on a batch of one vs the whole batch
        assert loss == pytest.approx(ref, rel=1e-5 if k == "learned" else 1e-9), k
    np.testing.assert_allclose(m["sample"], m["sample"].T)
    assert set(examples.example_matrices(r, net)) == {"sigma", "sample", "ledoit_wolf", "qis",
                                                      "learned", "oracle"}  # fmt: skip
    with pytest.raises(ValueError, match="rep"):
        examples.example_matrices(r, rep=15)
    with pytest.raises(ValueError, match="model"):
        examples.example_matrices(r, None, ["learned"])
    with pytest.raises(ValueError, match="unknown"):
        examples.example_matrices(r, None, ["nope"])


# --------------------------------------------------------------------- ablation table
def test_ablation_table(tmp_path):
    assert tables.ablation_table(tmp_path / "missing.csv") is None
    raw = pd.DataFrame(
        {
            "study": ["full", "features", "loss"],
            "variant": ["full model", "without size", "without spectrum loss"],
            "prial": [53.18, 18.27, 55.0],
            "prial_se": [14.3, 12.4, 10.0],
            "delta_prial": [0.0, -34.91, 1.5],
            "delta_prial_se": [0.0, 6.0, 1.0],
            "norm_loss": [0.8819, 0.9224, 0.88],
            "norm_loss_se": [0.006, 0.009, 0.005],
            "real_vol": [0.1509, 0.1457, np.nan],
            "real_vol_se": [0.0118, 0.0101, np.nan],
            "real_ratio_lw": [1.1693, 1.1295, np.nan],
        }
    )
    raw.to_csv(tmp_path / "ablation.csv", index=False)
    t = tables.ablation_table(tmp_path / "ablation.csv")
    assert list(t["PRIAL %"]) == ["53.2 ± 14.3", "18.3 ± 12.4", "55.0 ± 10.0"]
    assert list(t["Δ PRIAL vs full"]) == ["—", "-34.9 ± 6.0", "+1.5 ± 1.0"]
    assert list(t["beyond 2 SE"]) == ["—", "yes", "no"]  # 34.9 > 12; 1.5 < 2
    assert list(t["L/L(S)"]) == ["0.882 ± 0.006", "0.922 ± 0.009", "0.880 ± 0.005"]
    assert list(t["real vol %"]) == ["15.09 ± 1.18", "14.57 ± 1.01", "—"]
    assert list(t["vol / LW"]) == ["1.169", "1.129", "—"]
    assert "Ablations" in t.attrs["caption"]
    assert "does not record its base configuration" in t.attrs["caption"]
    described = raw.assign(base="the deployed configuration", epochs=[12, 12, 10], n_train=500)
    described.to_csv(tmp_path / "described.csv", index=False)
    caption = tables.ablation_table(tmp_path / "described.csv").attrs["caption"]
    assert "Full model: the deployed configuration, trained 12 epochs on 500 synthetic" in caption
    assert "(fine-tuning rows: 10 epochs)" in caption
    raw.drop(columns=["real_vol", "real_vol_se", "real_ratio_lw"]).to_csv(
        tmp_path / "synthetic_only.csv", index=False
    )
    assert "real vol %" not in tables.ablation_table(tmp_path / "synthetic_only.csv").columns
    raw.drop(columns=["norm_loss"]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="norm_loss"):
        tables.ablation_table(tmp_path / "bad.csv")


def test_select_examples(grid_results):
    (_, results), _ = grid_results
    names = [r["scenario"] for r in results]
    assert examples.select_examples(results, [names[2], names[0]]) == [results[2], results[0]]
    # default: first scenario of each family (here all three families differ)
    assert examples.select_examples(results) == results
    assert examples.select_examples(results, max_n=2) == results[:2]
    same = [results[0], {**results[1], "family": results[0]["family"]}, results[2]]
    assert examples.select_examples(same) == [same[0], same[2]]
    with pytest.raises(ValueError, match="nope"):
        examples.select_examples(results, ["nope"])


def test_feasibility_text():
    summ = {"n_scenarios": 8.0, "prial_oracle": 92.58, "prial_constant_oracle": 75.01,
            "prial_best_classical": 72.29, "goal_prial": 83.32, "constant_capture": 0.8102,
            "prial_learned": 73.28, "learned_capture": 0.7915,
            "learned_minus_constant": 73.28 - 75.01}  # fmt: skip
    text = feasibility.feasibility_text(summ)
    for part in ("8 scenarios", "92.6", "75.0 (81 % of the oracle)", "72.3", "73.3 (79 %",
                 "1.7 points below", "asks for 83.3", "telling replications apart"):  # fmt: skip
        assert part in text, part
    easy = {**summ, "goal_prial": 70.0, "learned_minus_constant": 2.0}
    easy_text = feasibility.feasibility_text(easy)
    assert "within reach of a well-chosen constant" in easy_text
    assert "2.0 points above" in easy_text
    no_model = {k: v for k, v in summ.items() if "learned" not in k}
    assert "learned" not in feasibility.feasibility_text(no_model)


# --------------------------------------------------------------------- scenario specialists
def test_scenario_training_rows_match_the_evaluation_and_a_brute_force():
    """Rows of one chunk equal what evaluate_scenario computes on the same draws, and
    d = ‖S − Σ‖²_F matches a plain numpy computation at 1e-10."""
    spec, n_draws, seed = SPEC_T, 9, 3
    rows = specialists.scenario_training_rows(spec, n_draws, seed)
    assert rows.features.shape == (n_draws, len(FEATURE_NAMES))
    assert rows.G.shape == (n_draws, 5, 5) and rows.oracle_w.shape == (n_draws, 5)
    # one chunk: its seed is derived from (seed, chunk 0) as documented in the function
    chunk_seed = int(np.random.SeedSequence([seed, 0]).generate_state(1, dtype=np.uint64)[0] >> 2)
    res = scenarios.evaluate_scenario(spec, None, n_draws, chunk_seed)
    np.testing.assert_allclose(rows.d.numpy(), res["losses"]["sample"], rtol=1e-12)
    np.testing.assert_allclose(rows.loss_fsopt.numpy(), res["losses"]["fsopt"], rtol=1e-12)
    np.testing.assert_allclose(rows.G.numpy(), res["G"], rtol=1e-12)
    np.testing.assert_allclose(rows.oracle_w.numpy(), res["oracle_weights"], atol=1e-12)
    sigma, X = make_scenario({k: v for k, v in spec.items() if k != "name"}, n_draws, chunk_seed)
    for i in range(n_draws):
        x = X[i].numpy()
        S = np.cov(x, rowvar=False, bias=True)
        assert rows.d[i].item() == pytest.approx(((S - sigma[i].numpy()) ** 2).sum(), rel=1e-10)
    with pytest.raises(ValueError, match="n_draws"):
        specialists.scenario_training_rows(spec, 1, 0)


def test_specialist_table_feeds_the_feasibility_summary(grid_results):
    (df, results), grid = grid_results
    spec = pd.DataFrame(
        {"prial_specialist": [50.0, 60.0, 70.0], "se_specialist": [1.0, 2.0, 3.0]},
        index=pd.Index([r["scenario"] for r in results], name="scenario"),
    )
    tab = feasibility.feasibility_table(results, specialist=spec)
    for r in results:
        row = tab.loc[r["scenario"]]
        assert row["specialist_share"] == pytest.approx(
            row["prial_specialist"] / r["prial"]["oracle"]
        )
    summ = feasibility.feasibility_summary(tab)
    assert summ["prial_specialist"] == pytest.approx(60.0)
    assert summ["specialist_capture"] == pytest.approx(60.0 / tab.prial_oracle.mean())
    text = feasibility.feasibility_text(summ)
    assert "trained on each scenario alone" in text and "60.0" in text
    with pytest.raises(ValueError, match="no row"):
        feasibility.feasibility_table(results, specialist=spec.iloc[:2])
    # a real (tiny) specialist: trained on its own draws, scored on the grid's replications
    small = specialists.specialist_table(results[:1], n_draws=48, epochs=2)
    assert list(small.index) == [results[0]["scenario"]]
    assert np.isfinite(small.prial_specialist).all() and (small.se_specialist > 0).all()


def test_specialist_table_round_trips_exactly_and_must_cover_the_grid(grid_results, tmp_path):
    """The specialists study's CSV reads back bit for bit, and notebook 06 refuses a
    table whose scenarios, seeds or replications are not those of its grid."""
    (_, results), grid = grid_results
    rng = np.random.default_rng(0)
    names = [r["scenario"] for r in results]
    table = pd.DataFrame(
        {
            "prial_specialist": rng.normal(50, 30, 3) / 7,  # full 53-bit mantissas
            "se_specialist": [1 / 3, 2.0**-40, 1e300],
            "n_draws": 2000,
            "seed": [r["seed"] for r in results],
            "n_reps": [r["n_reps"] for r in results],
        },
        index=pd.Index(names, name="scenario"),
    )
    path = feasibility.write_specialist_table(table, tmp_path / "s" / "specialists.csv")
    back = feasibility.read_specialist_table(path, results)
    assert list(back.index) == names
    for col in ("prial_specialist", "se_specialist"):
        assert back[col].to_numpy().tobytes() == table[col].to_numpy().tobytes()
    # rows in another order come back in the grid's order
    table.iloc[::-1].to_csv(tmp_path / "rev.csv", float_format="%.17g")
    assert list(feasibility.read_specialist_table(tmp_path / "rev.csv", results).index) == names
    feasibility.write_specialist_table(table.iloc[1:], tmp_path / "few.csv")
    with pytest.raises(ValueError, match=r"not cover exactly.*missing \['toy'\]"):
        feasibility.read_specialist_table(tmp_path / "few.csv", results)
    extra = pd.concat([table, table.iloc[:1].rename(index={"toy": "other"})])
    feasibility.write_specialist_table(extra, tmp_path / "extra.csv")
    with pytest.raises(ValueError, match=r"not in the grid \['other'\]"):
        feasibility.read_specialist_table(tmp_path / "extra.csv", results)
    feasibility.write_specialist_table(table.assign(n_reps=99), tmp_path / "stale.csv")
    with pytest.raises(ValueError, match="other replications"):
        feasibility.read_specialist_table(tmp_path / "stale.csv", results)
    with pytest.raises(FileNotFoundError, match="specialists study"):
        feasibility.read_specialist_table(tmp_path / "absent.csv", results)
    with pytest.raises(ValueError, match="indexed by 'scenario'"):
        feasibility.write_specialist_table(table.reset_index(), tmp_path / "bad.csv")


def test_specialists_need_no_model(grid_results):
    """The specialists study scores on a grid evaluated without a model: the replications'
    quadratic forms and losses it uses are bit-identical to those of the model's grid."""
    (_, results), grid = grid_results
    _, bare = scenarios.evaluate_grid(grid, None, n_reps=12, seed=4, return_results=True)
    for r, b in zip(results, bare):
        assert (r["scenario"], r["seed"], r["n_reps"]) == (b["scenario"], b["seed"], b["n_reps"])
        for key in ("G", "c"):
            assert np.array_equal(r[key], b[key])
        for key in ("sample", "fsopt"):
            assert np.array_equal(r["losses"][key], b["losses"][key])


def test_score_on_replications_equals_the_full_evaluation(grid_results):
    """Scoring a model from a result's stored quadratic forms gives the PRIAL and SE
    that evaluate_scenario computes for it from scratch (1e-9)."""
    (_, results), grid = grid_results
    other = random_network(7)
    for spec, r in zip(grid, results):
        full = scenarios.evaluate_scenario(spec, other, r["n_reps"], r["seed"])
        prial, se = specialists.score_on_replications(other, r)
        assert prial == pytest.approx(full["prial"]["learned"], rel=1e-9, abs=1e-9)
        assert se == pytest.approx(full["se"]["learned"], rel=1e-9, abs=1e-9)
    with pytest.raises(ValueError, match="evaluate_scenario"):
        specialists.score_on_replications(other, {"G": 1})
