"""Ablation runner: feature groups, single-target oracle, PRIAL with standard errors,
real-data volatility, and the shape of the ablation table."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from _tiny_sets import tiny_set
from sklearn.covariance import ledoit_wolf as sk_ledoit_wolf

from shrinklab.core.estimators import solve_simplex_qp
from shrinklab.core.features import FEATURE_NAMES
from shrinklab.core.metrics import prial, prial_with_se
from shrinklab.data import returns as data
from shrinklab.models.network import ShrinkageOutput
from shrinklab.studies.ablation import (
    ALL_STUDIES,
    COMPONENTS,
    FEATURE_GROUPS,
    LOSS_COMPONENTS,
    drop_features,
    feature_group_indices,
    real_volatility,
    regime_model,
    remap_anchors,
    run_ablation,
    single_target,
)
from shrinklab.training.config import TrainConfig


@pytest.fixture(scope="module")
def sets():
    from shrinklab.data.dataset import build_training_set

    cfg = {"p_max": 20, "batch_size": 64}
    return (
        build_training_set(300, 0, cfg, progress=False),
        build_training_set(160, 1, cfg, progress=False),
    )


@pytest.fixture(scope="module")
def windows():
    from shrinklab.data.real_windows import build_windows

    ret = data.load_returns()
    reg = data.market_regimes(data.load_index_prices())
    tr = build_windows(ret, 60, 21, 21, start="2011-01-01", end="2012-12-31", regimes=reg)
    va = build_windows(ret, 60, 21, 21, start="2013-01-01", end="2013-12-31", regimes=reg)
    return tr, va


# -------------------------------------------------------------------- feature groups
def test_feature_groups_partition_the_features():
    groups = feature_group_indices(FEATURE_NAMES)
    assert list(groups) == list(FEATURE_GROUPS)
    flat = sorted(i for idx in groups.values() for i in idx)
    assert flat == list(range(len(FEATURE_NAMES)))  # every feature exactly once
    names = {g: [FEATURE_NAMES[i] for i in idx] for g, idx in groups.items()}
    assert names["tails"] == ["kurt_mean", "kurt_median", "kurt_market"]
    assert names["classical_intensities"] == [
        "int_lw", "int_oas", "int_cc", "int_sf",
        "mt_identity", "mt_constant_correlation", "mt_single_factor", "mt_qis",
    ]  # fmt: skip
    assert len(names["target_distances"]) == 5
    with pytest.raises(ValueError, match="belong to no group"):
        feature_group_indices(FEATURE_NAMES, {"size": ("log_",)})
    with pytest.raises(ValueError, match="in groups"):
        feature_group_indices(["a1", "a2"], {"x": ("a",), "y": ("a1",)})
    with pytest.raises(ValueError, match="matches no feature"):
        feature_group_indices(["a1"], {"x": ("a",), "y": ("b",)})


@pytest.mark.parametrize("as_torch", [False, True])
def test_drop_features_removes_exactly_those_columns(as_torch):
    s = tiny_set(50, n_features=8)
    s.feature_names = tuple(f"f{i}" for i in range(8))
    if as_torch:
        s.features = torch.as_tensor(s.features)
    out = drop_features(s, [6, 1, 3])
    ref = np.delete(np.asarray(s.features), [1, 3, 6], axis=1)
    np.testing.assert_array_equal(np.asarray(out.features), ref)
    assert out.feature_names == ("f0", "f2", "f4", "f5", "f7")
    assert out.G is s.G and out.oracle_w is s.oracle_w  # labels untouched, shared
    with pytest.raises(ValueError, match=r"in \[0, 8\)"):
        drop_features(s, [8])
    with pytest.raises(ValueError, match="every feature"):
        drop_features(s, range(8))


def test_single_target_oracle_matches_the_exact_qp(sets):
    tr, _ = sets
    for k in (0, 3):
        one = single_target(tr, k)
        assert one.G.shape == (len(tr), 1, 1) and one.c.shape == (len(tr), 1)
        ref = solve_simplex_qp(tr.G[:, k : k + 1, k : k + 1].double(), tr.c[:, k : k + 1].double())
        np.testing.assert_allclose(one.oracle_w.numpy(), ref.numpy(), atol=1e-10)
        # and it is no better than the multi-target oracle on the full quadratic form
        full = torch.zeros(len(tr), 5, dtype=torch.float64)
        full[:, k] = one.oracle_w[:, 0]
        assert (tr.quadratic_loss(full) >= tr.quadratic_loss(tr.oracle_w) - 1e-6 * tr.d).all()
    np.testing.assert_array_equal(single_target(tr).d, tr.d)
    with pytest.raises(ValueError, match="target"):
        single_target(tr, 5)


# --------------------------------------------------------------------------- metrics
def test_prial_with_se_against_closed_form(sets):
    _, va = sets
    w = torch.as_tensor(va.oracle_w.numpy() * 0.7)
    w0 = torch.zeros_like(w)
    w0[:, 0] = torch.as_tensor(va.features[:, FEATURE_NAMES.index("int_lw")]).double()
    p, se, delta, dse = prial_with_se(w, va, w0)
    L, L0 = va.quadratic_loss(w).numpy(), va.quadratic_loss(w0).numpy()
    d, f = va.d.numpy(), va.loss_fsopt.numpy()
    assert p == pytest.approx(prial(L, d, f), abs=1e-9)
    assert delta == pytest.approx(prial(L, d, f) - prial(L0, d, f), abs=1e-9)
    assert prial_with_se(w0, va)[0] == pytest.approx(prial(L0, d, f), abs=1e-9)
    assert prial_with_se(torch.zeros_like(w), va)[0] == pytest.approx(0.0, abs=1e-9)


def test_prial_standard_errors_match_the_sampling_distribution():
    # K = 1 worlds with known loss distributions: G = 1, w = 1 gives L = 1 − 2c + d, so
    # c = (d − L + 1)/2 sets any L. The delta-method SEs must match the spread of the
    # estimates over independent validation sets (Monte Carlo, 1500 replications).
    rng = np.random.default_rng(1)
    n, reps = 200, 1500
    est, ses, deltas, dses = [], [], [], []
    for _ in range(reps):
        d = rng.lognormal(0.0, 0.5, n)
        L = d * (1 - rng.uniform(0.2, 0.6, n))
        f = d * (1 - rng.uniform(0.6, 0.9, n))
        c = (d - L + 1) / 2
        v = SimpleNamespace(G=np.ones((n, 1, 1)), c=c[:, None], d=d, loss_fsopt=f)
        p, se, dp, dse = prial_with_se(np.ones((n, 1)), v, np.full((n, 1), 0.5))
        est.append(p)
        ses.append(se)
        deltas.append(dp)
        dses.append(dse)
        # the closed form of the estimate itself
        L0 = 0.25 - c + d
        assert p == pytest.approx(100 * (d.mean() - L.mean()) / (d.mean() - f.mean()), abs=1e-9)
        assert dp == pytest.approx(100 * (L0.mean() - L.mean()) / (d.mean() - f.mean()), abs=1e-9)
    assert np.mean(ses) == pytest.approx(np.std(est, ddof=1), rel=0.1)
    assert np.mean(dses) == pytest.approx(np.std(deltas, ddof=1), rel=0.1)


class _LWStub(torch.nn.Module):
    """Predicts the Ledoit–Wolf intensity (a feature column) on the identity target."""

    n_regimes = 0

    def predict(self, x, regime=None):
        a = torch.as_tensor(x)[:, FEATURE_NAMES.index("int_lw")].double()
        wts = torch.zeros(a.shape[0], 5, dtype=torch.float64)
        wts[:, 0] = 1.0
        return ShrinkageOutput(a, wts, torch.zeros_like(a))


def test_real_volatility_of_ledoit_wolf_against_sklearn(windows):
    _, va = windows
    res = real_volatility(_LWStub(), va)
    var = []
    for g in va:
        for X, R in zip(g.X.numpy(), g.realised.numpy(), strict=True):
            cov = sk_ledoit_wolf(X)[0]
            wgt = np.linalg.solve(cov, np.ones(cov.shape[0]))
            r = R @ (wgt / wgt.sum())
            var.append(r.var(ddof=1))
    var = np.asarray(var)
    ref = np.sqrt(252 * var.mean())
    assert res["real_windows"] == len(var)
    assert res["real_vol_lw"] == pytest.approx(ref, rel=1e-9)
    assert res["real_vol"] == pytest.approx(ref, rel=1e-6)  # float32 features
    assert res["real_ratio_lw"] == pytest.approx(1.0, abs=1e-6)
    se = np.sqrt(252) * var.std(ddof=1) / np.sqrt(len(var)) / (2 * np.sqrt(var.mean()))
    assert res["real_vol_se"] == pytest.approx(se, rel=1e-6)


# ----------------------------------------------------------------------------- runner
def test_ablation_table_has_the_expected_rows(sets, windows, tmp_path):
    tr, va = sets
    cfg = TrainConfig(epochs=3, batch_size=64, lr=3e-3, device="cpu", seed=0, curriculum=True)
    fcfg = TrainConfig(epochs=2, batch_size=8, lr=3e-4, device="cpu", seed=0, patience=2)
    model_config = {"hidden_dims": (16, 8)}
    table = run_ablation(
        tr, va, tmp_path, model_config=model_config, train_config=cfg, real=windows,
        finetune_config=fcfg, studies=[s for s in ALL_STUDIES if s != "components"],
        base_label="test base",
    )  # fmt: skip
    expected = (
        [("full", "full model")]
        + [("features", f"without {g}") for g in FEATURE_GROUPS]
        + [("loss", f"without {c}") for c in LOSS_COMPONENTS if getattr(cfg, c) > 0]
        + [("targets", "single target (identity)"), ("curriculum", "without curriculum")]
        + [
            ("pretraining", v)
            for v in (
                "pretrained, not fine-tuned",
                "pretrained + fine-tuned",
                "scratch + fine-tuned",
            )
        ]
    )
    assert list(zip(table["study"], table["variant"], strict=True)) == expected
    cols = {
        "prial",
        "prial_se",
        "delta_prial",
        "delta_prial_se",
        "norm_loss_se",
        "real_vol",
        "real_vol_se",
    }
    assert cols <= set(table.columns)
    assert np.isfinite(table[sorted(cols)].to_numpy()).all()
    assert (table["prial_se"] > 0).all()
    groups = feature_group_indices(FEATURE_NAMES)
    feat = table[table["study"] == "features"]
    assert list(feat["n_features"]) == [len(FEATURE_NAMES) - len(i) for i in groups.values()]
    assert table.loc[table["study"] == "targets", "num_targets"].item() == 1
    # every row says what it was trained from and for how long
    assert set(table["base"]) == {"test base"} and set(table["n_train"]) == {len(tr.features)}
    fine = table["variant"].str.contains("fine-tuned") & ~table["variant"].str.startswith(
        "pretrained,"
    )
    assert set(table.loc[fine, "epochs"]) == {fcfg.epochs}
    assert set(table.loc[~fine, "epochs"]) == {cfg.epochs}
    full = table.iloc[0]
    assert full["delta_prial"] == 0.0
    # the pretrained, not fine-tuned row is the full model itself
    assert (
        table.iloc[-3]["prial"] == full["prial"] and table.iloc[-3]["real_vol"] == full["real_vol"]
    )

    # the "without tails" row is reproducible outside the runner (same seed, same data)
    from shrinklab.models.network import MLShrinkageNetwork, predict_numpy
    from shrinklab.training.loop import train

    cols_t = groups["tails"]
    t2, v2 = drop_features(tr, cols_t), drop_features(va, cols_t)
    torch.manual_seed(0)
    m = MLShrinkageNetwork(len(FEATURE_NAMES) - 3, 5, **model_config)
    train(m, t2, v2, cfg, tmp_path / "ref", resume=False)
    p_ref = prial_with_se(predict_numpy(m, v2.features).intensities, va)[0]
    assert table.set_index("variant").loc["without tails", "prial"] == pytest.approx(
        p_ref, abs=1e-9
    )


def test_ablation_subset_and_errors(sets, tmp_path):
    tr, va = sets
    cfg = TrainConfig(epochs=2, batch_size=64, device="cpu", seed=0, uncertainty_weight=0.0, l2=0.0)
    t = run_ablation(
        tr, va, tmp_path, model_config={"hidden_dims": (8,)}, train_config=cfg, studies=["loss"]
    )
    # only the components that are on in the base configuration are removed
    assert list(t["variant"]) == ["full model", "without intensity_weight", "without matrix_weight"]
    assert "real_vol" not in t
    with pytest.raises(ValueError, match="unknown studies"):
        run_ablation(tr, va, tmp_path, studies=["dropout"])
    with pytest.raises(ValueError, match="needs real"):
        run_ablation(tr, va, tmp_path, studies=["pretraining"])
    no_diff = SimpleNamespace(
        **{k: getattr(tr, k) for k in ("features", "oracle_w", "G", "c", "d")}
    )
    with pytest.raises(ValueError, match="difficulty"):
        run_ablation(no_diff, va, tmp_path, train_config=cfg, studies=["curriculum"])


def test_remap_anchors_follows_the_kept_columns_and_target():
    from shrinklab.core.targets import TARGET_NAMES
    from shrinklab.models.network import classical_anchors

    full = classical_anchors(len(FEATURE_NAMES), len(TARGET_NAMES))
    groups = feature_group_indices(FEATURE_NAMES)
    for name, cols in groups.items():
        keep = [i for i in range(len(FEATURE_NAMES)) if i not in set(cols)]
        got = remap_anchors(full, keep=keep)
        # independent reference: the anchors whose feature survives, looked up by name
        ref = [a for a in full if a[0] == -1 or a[0] in keep]
        assert len(got or []) == len(ref), name
        for (f, t, _), (f0, t0, _) in zip(got or [], ref, strict=True):
            assert t == t0 and (f == f0 == -1 or FEATURE_NAMES[keep[f]] == FEATURE_NAMES[f0])
        if got:
            assert sorted({g for *_, g in got}) == list(range(len({g for *_, g in got})))
    # without the classical intensities only the fixed corner (QIS) and the
    # multi-target anchors are left
    no_int = remap_anchors(
        full,
        keep=[
            i for i in range(len(FEATURE_NAMES)) if i not in set(groups["classical_intensities"])
        ],
    )
    assert no_int is None or all(f == -1 for f, *_ in no_int)
    one = remap_anchors(full, target=0)
    assert one and all(t == 0 for _, t, _ in one)
    assert len(one) == sum(t == 0 for _, t, _ in full)
    assert remap_anchors("auto", keep=[0]) == "auto" and remap_anchors(None, target=0) is None


# ------------------------------------------------------------- components switched on
def test_regime_model_predicts_as_its_source_until_trained():
    from shrinklab.models.network import MLShrinkageNetwork

    torch.manual_seed(0)
    src = MLShrinkageNetwork(len(FEATURE_NAMES), 5, hidden_dims=(8, 4)).eval()
    with torch.no_grad():
        for p in src.parameters():
            p.add_(0.1 * torch.randn_like(p))
    out = regime_model(src, 3).eval()
    assert out.n_regimes == 3 and src.n_regimes == 0
    x = torch.randn(20, len(FEATURE_NAMES))
    ref = src.predict(x)
    for regime in (None, torch.full((20,), 2, dtype=torch.long)):
        got = out.predict(x, regime)
        torch.testing.assert_close(got.intensities, ref.intensities, rtol=1e-6, atol=1e-7)
    # the regime columns are live: once the first block reads them, the regime matters
    with torch.no_grad():
        out.blocks[0].linear.weight.add_(1.0)
    a = out.predict(x, torch.zeros(20, dtype=torch.long)).intensities
    b = out.predict(x, torch.ones(20, dtype=torch.long)).intensities
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="n_regimes"):
        regime_model(src, 0)


def test_components_study_switches_on_what_the_base_leaves_off(sets, windows, tmp_path):
    tr, va = sets
    cfg = TrainConfig(epochs=2, batch_size=64, lr=3e-3, device="cpu", seed=0)
    fcfg = TrainConfig(epochs=1, batch_size=8, lr=3e-4, device="cpu", seed=0, patience=2)
    t = run_ablation(
        tr, va, tmp_path, model_config={"hidden_dims": (8,)}, train_config=cfg,
        studies=["components"], real=windows, finetune_config=fcfg,
    )  # fmt: skip
    expected = ["full model"] + [f"with {c}" for c in COMPONENTS]
    assert list(t["variant"]) == expected + ["with regime inputs (fine-tuned)"]
    assert ALL_STUDIES[-1] == "components"  # run by default (notebook 07's list names it)
    assert set(t["study"].iloc[1:]) == {"components"}
    assert np.isfinite(t[["prial", "delta_prial", "norm_loss", "real_vol"]].to_numpy()).all()
    # a component switched on changes the fit (same seed and data as the full model)
    assert (t["prial"].iloc[1:] != t["prial"].iloc[0]).all()
    # the "with attention" row is the full configuration with attention, trained alike
    from shrinklab.models.network import MLShrinkageNetwork, predict_numpy
    from shrinklab.training.loop import train

    torch.manual_seed(0)
    m = MLShrinkageNetwork(len(FEATURE_NAMES), 5, hidden_dims=(8,), use_attention=True)
    train(m, tr, va, cfg, tmp_path / "ref", resume=False)
    p_ref = prial_with_se(predict_numpy(m, va.features).intensities, va)[0]
    assert t.set_index("variant").loc["with attention", "prial"] == pytest.approx(p_ref, abs=1e-9)
    # components on in the base configuration get no row; with the curriculum study
    # the curriculum row is that study's
    on = TrainConfig(epochs=1, batch_size=64, device="cpu", seed=0, smoothness_weight=0.1)
    t2 = run_ablation(
        tr, va, tmp_path / "on", model_config={"hidden_dims": (8,), "use_attention": True},
        train_config=on, studies=["components", "curriculum"],
    )  # fmt: skip
    assert list(t2["variant"]) == [
        "full model", "with curriculum", "with log-det loss", "with portfolio-variance loss",
        "with adversarial", "with progressive sizes",
    ]  # fmt: skip


def test_loss_term_rows_use_the_declared_weights(sets, tmp_path):
    """The log-det and portfolio-variance rows are the base configuration with that
    weight switched on (``component_weights``), trained alike: reproduced outside the
    runner at the same seed."""
    from shrinklab.models.network import MLShrinkageNetwork, predict_numpy
    from shrinklab.training.loop import train

    tr, va = sets
    cfg = TrainConfig(epochs=2, batch_size=64, lr=3e-3, device="cpu", seed=0, spectrum_weight=0.01)
    weights = {"log_det_weight": 0.3, "portfolio_weight": 0.2}
    t = run_ablation(
        tr, va, tmp_path, model_config={"hidden_dims": (8,)}, train_config=cfg,
        studies=["components"], component_weights=weights,
    )  # fmt: skip
    rows = t.set_index("variant")
    for variant, (name, value) in zip(
        ("with log-det loss", "with portfolio-variance loss"), weights.items(), strict=True
    ):
        torch.manual_seed(0)
        m = MLShrinkageNetwork(len(FEATURE_NAMES), 5, hidden_dims=(8,))
        train(m, tr, va, dataclasses.replace(cfg, **{name: value}), tmp_path / name, resume=False)
        p_ref = prial_with_se(predict_numpy(m, va.features).intensities, va)[0]
        assert rows.loc[variant, "prial"] == pytest.approx(p_ref, abs=1e-9)
        assert rows.loc[variant, "prial"] != rows.loc["full model", "prial"]
    with pytest.raises(ValueError, match="not weights"):
        run_ablation(tr, va, tmp_path, studies=["components"], component_weights={"lr": 0.1})
    with pytest.raises(ValueError, match="> 0"):
        run_ablation(
            tr, va, tmp_path, studies=["components"], component_weights={"log_det_weight": 0.0}
        )


def test_derived_sets_keep_world_families_for_edge_weight():
    """A feature-drop or single-target set keeps ``family`` and ``family_names``, so the
    deployed configuration (``edge_weight != 1``) trains on it (it raised before)."""
    from shrinklab.training.objective import edge_family_mask

    s = tiny_set(40, n_features=8)
    s.family = np.arange(40) % 2
    s.family_names = ("diagonal", "near_singular")  # the second is an edge family
    for derived in (drop_features(s, [0]), single_target(s, 0)):
        assert derived.family_names == s.family_names
        mask = edge_family_mask(derived).numpy()
        np.testing.assert_array_equal(mask, np.arange(40) % 2 == 1)
    bare = tiny_set(10, n_features=8)
    assert not hasattr(drop_features(bare, [0]), "family_names")


def test_derived_sets_train_with_the_best_classical_loss_term(sets, tmp_path):
    """The deployed loss (``sample_and_best_classical``, decision 0009) trains on a
    feature-drop set with the same per-world best classical loss as the full set (it
    raised before); the one-target model is trained on ``L/d`` alone."""
    from shrinklab.training.objective import best_classical_loss

    tr, va = sets
    dropped = drop_features(tr, [0, 3])
    np.testing.assert_array_equal(best_classical_loss(dropped), best_classical_loss(tr))
    with pytest.raises(ValueError, match="best classical loss needs"):
        best_classical_loss(single_target(tr, 0))
    cfg = TrainConfig(
        epochs=1, batch_size=64, lr=3e-3, device="cpu", seed=0,
        loss_normaliser="sample_and_best_classical", best_classical_weight=0.01, gap_floor=0.001,
    )  # fmt: skip
    table = run_ablation(
        tr, va, tmp_path, model_config={"hidden_dims": (8,)}, train_config=cfg,
        studies=["features", "targets"],
    )  # fmt: skip
    assert {"without " + g for g in FEATURE_GROUPS} <= set(table["variant"])
    assert "single target (identity)" in set(table["variant"])


def test_a_row_subset_keeps_the_best_classical_loss_of_its_rows(sets):
    """``take`` carries the classical intensities, so the deployed loss trains on row
    subsets too, with the same per-world best classical loss as the full set."""
    from shrinklab.data.subsets import take
    from shrinklab.training.objective import best_classical_loss

    tr, _ = sets
    idx = np.array([5, 0, 17, 42])
    np.testing.assert_array_equal(best_classical_loss(take(tr, idx)), best_classical_loss(tr)[idx])
