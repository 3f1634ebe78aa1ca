"""The selection-grid, holdout, training-variants and family-mixing studies at smoke
size (tiny grids, a few hundred synthetic worlds, two-epoch fits)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from shrinklab.core.features import FEATURE_NAMES, MULTI_TARGET_SOURCES
from shrinklab.core.targets import TARGET_NAMES
from shrinklab.data.dataset import build_training_set, classical_intensities
from shrinklab.evaluation import scenarios
from shrinklab.models.experts import GatedExpertModel
from shrinklab.models.network import ShrinkageOutput
from shrinklab.studies import family_mixing, holdout, selection_grid
from shrinklab.studies import training_variants as tv
from shrinklab.training.experts import train_family_gate

TINY_GRID = [
    {"name": "factor p10 n20", "family": "factor", "p": 10, "n": 20},
    {"name": "Toeplitz p12 n8", "family": "toeplitz", "p": 12, "n": 8, "rho": 0.5},
]
NET = {"hidden_dims": [16, 8], "dropout": 0.1, "input_dropout": 0.0, "use_attention": False}
TRAIN = {"epochs": 2, "batch_size": 64, "lr": 3e-3, "patience": 5}


class _LW:
    """Predicts the Ledoit–Wolf intensity (a feature) on the identity target."""

    n_regimes = 0

    def predict(self, x, regime=None):
        a = torch.as_tensor(x)[:, FEATURE_NAMES.index("int_lw")].double()
        w = torch.zeros(a.shape[0], len(TARGET_NAMES), dtype=torch.float64)
        w[:, TARGET_NAMES.index("identity")] = 1.0
        return ShrinkageOutput(a, w, torch.zeros_like(a))


@pytest.fixture(scope="module")
def worlds():
    cfg = {"p_max": 20, "batch_size": 64}
    return build_training_set(320, 0, cfg, progress=False), build_training_set(
        160, 1, cfg, progress=False
    )


@pytest.fixture(scope="module")
def hold(tmp_path_factory):
    return holdout.holdout_set(tmp_path_factory.mktemp("hold"), 20, 64, n=160, seed=5)


# ------------------------------------------------------------------ selection grid
def test_score_of_ledoit_wolf_is_ledoit_wolfs_prial():
    table = selection_grid.score(_LW(), n_reps=6, grid=TINY_GRID, seed=3)
    ref = scenarios.evaluate_grid(TINY_GRID, None, n_reps=6, seed=3)
    lw = ref[ref.estimator == "ledoit_wolf"].set_index("scenario")["prial"]
    assert list(table.index) == [s["name"] for s in TINY_GRID]
    np.testing.assert_allclose(table["prial"], lw.loc[table.index], atol=1e-4)
    # same denominator: the paired difference is the difference of the PRIALs
    np.testing.assert_allclose(
        table["diff"], table["prial"] - table["prial_best_classical"], atol=1e-6
    )
    assert (table["fail"] == (table["diff"] < -table["diff_se"])).all()
    s = selection_grid.summary(table)
    assert s["sel_fails"] == int(table["fail"].sum())
    assert s["sel_mean_prial"] == pytest.approx(table["prial"].mean())
    assert set(s) == {"sel_fails", "sel_mean_prial"} | {f"sel_diff_{n}" for n in table.index}
    with pytest.raises(ValueError, match="n_reps"):
        selection_grid.score(_LW(), n_reps=1, grid=TINY_GRID)
    with pytest.raises(ValueError, match="no scenario"):
        selection_grid.score(_LW(), grid=[])


class _Sample(_LW):
    """No shrinkage: the sample covariance (PRIAL 0 everywhere)."""

    def predict(self, x, regime=None):
        out = super().predict(x, regime)
        return ShrinkageOutput(torch.zeros_like(out.alpha), out.weights, out.log_var)


def test_grid_comparison_applies_the_rules_grid_part():
    from shrinklab.evaluation.compression import grids_not_worse

    models = {"lw": _LW(), "sample": _Sample()}
    table, holds, summary = selection_grid.grid_comparison(models, "lw", "sample", n_reps=2)
    assert not holds and summary.startswith("failures ")
    n = len(selection_grid.SELECTION_GRID) + len(selection_grid.WIDE_GRID)
    assert table.shape == (n, 8) and (table[("sample", "prial")].abs() < 1e-9).all()
    assert selection_grid.grid_comparison(models, "sample", "lw", n_reps=2)[1]
    # the rule itself: no more failures and a mean PRIAL that is not lower
    before = {"grid_fails": 2, "grid_mean_prial": 80.0}
    assert grids_not_worse(before, {"grid_fails": 2, "grid_mean_prial": 80.0})
    assert not grids_not_worse(before, {"grid_fails": 3, "grid_mean_prial": 90.0})
    assert not grids_not_worse(before, {"grid_fails": 1, "grid_mean_prial": 79.9})


def test_grids_are_distinct_from_the_public_grid():
    import yaml

    from shrinklab.pipeline import REPO_ROOT

    public = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())["evaluate"]["scenarios"]
    keys = [tuple(sorted((k, v) for k, v in s.items() if k != "name")) for s in public]
    mine = selection_grid.SELECTION_GRID + selection_grid.WIDE_GRID
    names = [s["name"] for s in mine]
    assert len(names) == len(set(names)) == 14
    assert not {tuple(sorted((k, v) for k, v in s.items() if k != "name")) for s in mine} & set(
        keys
    )
    assert all(s["p"] / s["n"] > 2 for s in selection_grid.WIDE_GRID)


def test_multi_target_from_features_and_table(worlds):
    tr, _ = worlds
    w = selection_grid.multi_target_from_features(tr.features)
    for t in TARGET_NAMES:
        col = w[:, TARGET_NAMES.index(t)]
        if t in MULTI_TARGET_SOURCES:
            torch.testing.assert_close(col, tr.features[:, FEATURE_NAMES.index(f"mt_{t}")].double())
        else:
            assert (col == 0).all()
    assert (w >= -1e-6).all() and (w.sum(1) <= 1 + 1e-5).all()  # multi-target: on the simplex
    with pytest.raises(ValueError, match="features"):
        selection_grid.multi_target_from_features(tr.features[:, :3])
    t = selection_grid.multi_target_table(TINY_GRID[:1], n_reps=6, seed=2)
    assert list(t["scenario"]) == [TINY_GRID[0]["name"]]
    assert np.isfinite(t[["multi_target", "se", "minus_best", "oracle"]].to_numpy()).all()
    assert (t["multi_target"] <= t["oracle"] + 1e-6).all()  # no estimator beats the oracle


# ------------------------------------------------------------------------- holdout
def test_cached_worlds_are_drawn_once(tmp_path):
    cfg = {"p_max": 12, "batch_size": 32}
    a = holdout.cached_worlds(tmp_path / "w.pt", 40, 9, cfg)
    mtime = (tmp_path / "w.pt").stat().st_mtime_ns
    b = holdout.cached_worlds(tmp_path / "w.pt", 40, 9, cfg)
    assert (tmp_path / "w.pt").stat().st_mtime_ns == mtime
    torch.testing.assert_close(a.features, b.features)
    torch.testing.assert_close(a.features, build_training_set(40, 9, cfg, progress=False).features)


def test_wide_scores_of_ledoit_wolf(tmp_path):
    wide = holdout.wide_holdout_set(tmp_path, 60, 16, n=160, seed=10, ratio_max=5.0)
    ratio = wide.p.double() / wide.n.double()
    assert ratio.max() > 2 and ratio.max() <= 5.0 + 1e-9
    s = holdout.wide_scores(_LW(), wide)
    keep = ratio > 2
    lw = classical_intensities(wide)["ledoit_wolf"].double()
    ref = float((wide.quadratic_loss(lw)[keep] / wide.d.double()[keep]).mean())
    assert s["wide_n"] == int(keep.sum())
    assert s["wide_norm_loss"] == pytest.approx(ref, rel=1e-5)
    assert s["wide_best_classical"] <= ref + 1e-9
    with pytest.raises(ValueError, match="no world"):
        holdout.mean_norm_loss(lw, wide, torch.zeros(len(wide), dtype=torch.bool))
    assert holdout.wide_scores(_LW(), wide, ratio=100.0)["wide_n"] == 0


# --------------------------------------------------------------- training variants
def test_curvature_cap_scales_each_world_by_its_curvature(worlds):
    tr, _ = worlds
    capped = tv.with_curvature_cap(tr, cap=2.0, power=1.0)
    G = tr.G.double().numpy()
    e = np.maximum(1.0, np.linalg.norm(G, ord=2, axis=(1, 2)) / (2.0 * tr.d.double().numpy()))
    assert (e > 1).any() and (e == 1).any()
    np.testing.assert_allclose(capped.G.double().numpy(), G / e[:, None, None], rtol=1e-5)
    torch.testing.assert_close(capped.d, tr.d)
    # L/d of the capped worlds is L/(d·e) plus a per-world constant: differences in w agree
    w1, w2 = tr.oracle_w.double(), 0.5 * tr.oracle_w.double()
    lhs = (capped.quadratic_loss(w1) - capped.quadratic_loss(w2)).numpy()
    rhs = (tr.quadratic_loss(w1) - tr.quadratic_loss(w2)).numpy() / e
    np.testing.assert_allclose(lhs, rhs, rtol=1e-4, atol=1e-6 * tr.d.double().numpy().max())
    with pytest.raises(ValueError, match="cap"):
        tv.with_curvature_cap(tr, cap=0.0, power=1.0)


def test_base_configs_read_the_pretrain_section():
    import yaml

    from shrinklab.pipeline import REPO_ROOT

    pt = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())["pretrain"]
    net, kw = tv.base_configs(pt)
    assert net["hidden_dims"] == pt["hidden_dims"] and net["use_attention"] == pt["attention"]
    assert kw["edge_weight"] == pt["edge_weight"] and kw["epochs"] == pt["epochs"]
    from shrinklab.training.config import TrainConfig

    TrainConfig(**kw)  # every key is a TrainConfig field


def test_fits_are_seeded_and_variants_scored(worlds, hold):
    tr, va = worlds
    a = tv.fit(NET, TRAIN, tr, va, seed=4)
    b = tv.fit(NET, TRAIN, tr, va, seed=4)
    for u, v in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(u, v)
    no_mt = tv.fit({**NET, "anchors": "no_multi_target"}, TRAIN, tr, va, seed=4)
    assert no_mt.gate_head.out_features == a.gate_head.out_features - 1
    capped = tv.fit(NET, {**TRAIN, tv.CURVATURE_CAP: (2.0, 1.0)}, tr, va, seed=4)
    assert not torch.equal(
        capped.state_dict()["alpha_head.weight"], a.state_dict()["alpha_head.weight"]
    )
    row, nl = tv.variant_row(a, hold, grid_reps=0)
    assert row["norm_loss"] == pytest.approx(nl.mean()) and nl.shape == (len(hold),)
    assert row["worst_family_ratio"] >= row["geo_ratio"]
    assert {f"ratio_{f}" for f in set(hold.families)} <= set(row)


def test_summarise_pairs_each_variant_with_the_first():
    rng = np.random.default_rng(0)
    norm = {(v, s): rng.random(5) for v in ("ref", "x") for s in (1, 2)}
    rows = pd.DataFrame(
        [
            {"variant": v, "seed": s, "norm_loss": norm[v, s].mean(), "prial": 1.0,
             "geo_ratio": 1.0 + 0.1 * (v == "x") * s, "sel_fails": 1}
            for v in ("ref", "x") for s in (1, 2)
        ]
    )  # fmt: skip
    out = tv.summarise(rows, norm)
    assert list(out.index) == ["ref", "x"]
    d = [(norm["x", s] - norm["ref", s]).mean() for s in (1, 2)]
    assert out.loc["x", "delta_norm_loss_vs_first"] == pytest.approx(np.mean(d))
    assert out.loc["x", "delta_se_over_seeds"] == pytest.approx(np.std(d, ddof=1) / np.sqrt(2))
    assert out.loc["ref", "delta_norm_loss_vs_first"] == 0.0
    assert out.loc["x", "delta_log_geo_ratio_vs_first"] == pytest.approx(
        np.mean([np.log(1.1), np.log(1.2)])
    )
    assert out.loc["x", "sel_fails_all_seeds"] == 2


# -------------------------------------------------------------------- family mixing
def test_subsets_restrict_and_with_others(worlds):
    tr, _ = worlds
    fams = sorted(set(tr.families))
    fits = family_mixing.subsets(fams)
    assert fits["all"] == fams and fits["only factor"] == ["factor"]
    assert len(fits) == 1 + len(fams) + (len(fams) - 1) + ("dominant_factor" in fams)
    one = family_mixing.restrict(tr, ["factor"])
    assert set(one.families) == {"factor"} and len(one) == tr.families.count("factor")
    with pytest.raises(ValueError, match="no world"):
        family_mixing.restrict(tr, ["nope"])
    mixed = family_mixing.with_others(tr, "factor", 0.5, seed=0)
    n_other = len(mixed) - tr.families.count("factor")
    assert set(mixed.families) > {"factor"}
    assert 0.3 * (len(tr) - len(one)) < n_other < 0.7 * (len(tr) - len(one))
    assert len(family_mixing.with_others(tr, "factor", 0.0, seed=0)) == len(one)


def test_mixing_table_and_confusion(worlds, hold):
    tr, va = worlds
    t = family_mixing.mixing_table(NET, TRAIN, tr, va, hold, fits={"all": sorted(set(tr.families))})
    assert list(t["fit"]) == ["all"] and t["n_train"].item() == len(tr)
    cm = family_mixing.family_confusion(tr, hold)
    np.testing.assert_allclose(cm.sum(axis=1), 1.0)
    assert list(cm.index) == sorted(set(tr.families))


def test_gate_threshold_table(worlds, hold):
    tr, va = worlds
    gate = train_family_gate(tr.features, tr.families, hidden_dims=(16,), epochs=5, seed=0).eval()
    general = tv.fit(NET, TRAIN, tr, va, 1)
    fits = family_mixing.expert_fits(NET, TRAIN, tr, va, ["factor"], seeds=(2, 3))
    assert len(fits["factor"].members) == 2
    # the first member is the seed-2 network trained on the factor worlds alone
    ref = tv.fit(
        NET,
        TRAIN,
        family_mixing.restrict(tr, ["factor"]),
        family_mixing.restrict(va, ["factor"]),
        2,
    )
    for u, v in zip(ref.state_dict().values(), fits["factor"].members[0].state_dict().values()):
        assert torch.equal(u, v)
    model = GatedExpertModel(general, fits, gate, 0.8)
    t = family_mixing.gate_threshold_table(model, hold, [0.5, 0.7, 0.95], grid_reps=0)
    assert list(t.index) == ["threshold 0.5", "threshold 0.7", "threshold 0.95"]
    share = t["share_experts"].astype(float).to_numpy()
    assert (np.diff(share) <= 1e-12).all()  # a higher threshold serves fewer worlds
    assert model.threshold == 0.8  # restored
    with pytest.raises(ValueError, match="family experts"):
        family_mixing.gate_threshold_table(SimpleNamespace(), hold, [0.5])
