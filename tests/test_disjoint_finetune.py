"""Tests of shrinklab.studies.disjoint_finetune (decision 0038): the halves are disjoint,
the held-out universes read only the held-out stocks, fine-tuning reads only the fit
half before 2016, and the assembly serves each world by the module final.pt would."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from shrinklab.core.features import FEATURE_NAMES
from shrinklab.core.params.finetune import Finetune
from shrinklab.core.targets import TARGET_NAMES
from shrinklab.data import returns as data
from shrinklab.evaluation.backtest import classical_estimators
from shrinklab.evaluation.compression import NON_MARKET_FAMILIES
from shrinklab.models.experts import FamilyGate, GatedExpertModel
from shrinklab.models.network import MLShrinkageNetwork
from shrinklab.studies.disjoint_finetune import (
    DisjointSpec,
    HalfSplit,
    Variant,
    deployed_structure,
    finetune_half,
    half_splits,
    held_out_universes,
    split_rows,
)

pytestmark = pytest.mark.usefixtures("one_thread")
F, K = len(FEATURE_NAMES), len(TARGET_NAMES)


def _returns(p: int = 8, start: str = "2009-01-01", end: str = "2016-12-31", seed: int = 0):
    """A market factor plus idiosyncratic noise, on business days spanning 2016."""
    idx = pd.bdate_range(start, end)
    rng = np.random.default_rng(seed)
    f = rng.standard_t(5, size=(len(idx), 1))
    X = 0.01 * (f * rng.uniform(0.5, 1.5, p) + rng.normal(size=(len(idx), p)))
    return pd.DataFrame(X, index=idx, columns=[f"s{i}" for i in range(p)])


def test_half_splits_are_disjoint_cover_the_assets_and_swap_roles():
    cols = [f"s{i}" for i in range(11)]
    splits = half_splits(cols, 3, np.random.default_rng(5))
    assert [s.name for s in splits] == ["s0a", "s0b", "s1a", "s1b", "s2a", "s2b"]
    for s in splits:
        assert not set(s.fit) & set(s.held_out)
        assert sorted(s.fit + s.held_out) == sorted(cols)
        assert len(s.fit) in (5, 6) and len(s.held_out) in (5, 6)
    for a, b in zip(splits[::2], splits[1::2], strict=True):
        assert a.fit == b.held_out and a.held_out == b.fit
    assert half_splits(cols, 3, np.random.default_rng(5)) == splits  # same seed, same splits
    assert half_splits(cols, 3, np.random.default_rng(6)) != splits
    with pytest.raises(ValueError, match="at least 4 assets"):
        half_splits(cols[:3], 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="n_splits"):
        half_splits(cols, 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="unique"):
        half_splits(["a", "a", "b", "c"], 1, np.random.default_rng(0))


def test_held_out_universes_read_only_the_held_out_stocks_before_2016():
    r = _returns(p=12)
    split = HalfSplit("s0a", tuple(f"s{i}" for i in range(6)), tuple(f"s{i}" for i in range(6, 12)))
    spec = DisjointSpec(portfolio_sizes=(3, 8), mixture_sizes=(2,), start="2012-01-03")
    us = held_out_universes(r, split, spec, np.random.default_rng(1))
    assert [u.family for u in us] == ["halves", "portfolios", "portfolios", "mixtures"]
    assert [u.p for u in us] == [6, 3, 8, 8]
    assert all(u.returns.index.max() < data.TEST_START for u in us)
    pd.testing.assert_frame_equal(us[0].returns, data.before_test(r[list(split.held_out)]))
    # changing the fit half's returns (or anything after 2015) changes no universe
    r2 = r.copy()
    r2[list(split.fit)] *= 3.0
    r2.loc[r2.index >= data.TEST_START] = 0.5
    us2 = held_out_universes(r2, split, spec, np.random.default_rng(1))
    for u, v in zip(us, us2, strict=True):
        pd.testing.assert_frame_equal(u.returns, v.returns)
    # ... while changing a held-out stock does
    r3 = r.copy()
    r3["s7"] *= 3.0
    us3 = held_out_universes(r3, split, spec, np.random.default_rng(1))
    assert not np.allclose(us[2].returns.to_numpy(), us3[2].returns.to_numpy())
    with pytest.raises(ValueError, match="at least 6 held-out stocks"):
        held_out_universes(r, HalfSplit("x", ("s0",), ("s1", "s2")), spec, np.random.default_rng(1))


def _settings(**kw) -> Finetune:
    base = dict(seed=0, windows=[60], epochs=1, lr=1e-3, asset_subsets=0, n_folds=1)
    return Finetune(**(base | kw))


def _net(seed: int) -> MLShrinkageNetwork:
    torch.manual_seed(seed)
    return MLShrinkageNetwork(F, num_targets=K, hidden_dims=(16, 8), dropout=0.0).eval()


def test_finetune_half_reads_nothing_after_2015_and_moves_the_weights(tmp_path):
    r = _returns(p=4, start="2003-01-01")
    regimes = pd.Series(0, index=r.index)
    pre = _net(0)
    a = finetune_half(pre, r, regimes, _settings(), tmp_path / "a")
    r2 = r.copy()
    r2.loc[r2.index >= data.TEST_START] *= 10.0
    b = finetune_half(pre, r2, regimes, _settings(), tmp_path / "b")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, atol=0, rtol=0, msg=name)
    # it did fine-tune, on a copy: the pretrained network is untouched
    after, before = a.state_dict().values(), pre.state_dict().values()
    assert any(not torch.equal(x, y) for x, y in zip(after, before, strict=True))
    assert torch.equal(next(pre.parameters()), next(_net(0).parameters()))
    with pytest.raises(ValueError, match="replay_data"):
        finetune_half(pre, r, regimes, _settings(replay_weight=1.0), tmp_path / "c")
    # a variant's λ replaces the section's (here: turns the replay on, which needs worlds)
    with pytest.raises(ValueError, match="replay_data"):
        finetune_half(
            pre, r, regimes, _settings(), tmp_path / "d", variant=Variant(replay_weight=2.0)
        )


def test_deployed_structure_serves_each_world_as_final_pt_does():
    families = ["factor", *NON_MARKET_FAMILIES, "diversified"]
    gate = FamilyGate(F, families, hidden_dims=(16,))
    torch.manual_seed(3)
    for p in gate.parameters():  # probabilities that vary over the inputs
        torch.nn.init.normal_(p, std=3.0)
    teacher = GatedExpertModel(_net(1), {"factor": _net(2)}, gate.eval(), 0.5)
    finetuned = _net(4)
    model = deployed_structure(finetuned, teacher, "hard")
    assert model.general is finetuned
    x = torch.randn(2000, F) * 2
    with torch.no_grad():
        proba = gate(x)
    # decision 0043: the server's four families count together; at 0.5 one module at most
    factor = (proba[:, families.index("factor")] > 0.5).tolist()
    nm_cols = [families.index(f) for f in NON_MARKET_FAMILIES]
    non_market = (proba[:, nm_cols].sum(-1) > 0.5).tolist()
    pooled_only = [
        m and not bool((proba[i, nm_cols] > 0.5).any()) for i, m in enumerate(non_market)
    ]
    assert any(pooled_only), "some rows should be served only because of the pooling"
    out = model.predict(x)
    for module, rows in (
        (teacher.expert_map()["factor"], factor),
        (teacher.general, non_market),
        (finetuned, [not f and not m for f, m in zip(factor, non_market)]),
    ):
        rows = torch.tensor(rows)
        assert rows.any(), "every module should serve some rows of this gate"
        torch.testing.assert_close(
            out.alpha[rows], module.predict(x[rows]).alpha, atol=1e-6, rtol=0
        )
    # decision 0044: the soft form averages the same three modules by the gate
    soft = deployed_structure(finetuned, teacher, "soft")
    assert soft.mixing == "soft" and soft.general is finetuned
    share = {"factor": proba[:, families.index("factor")], "server": proba[:, nm_cols].sum(-1)}
    want = finetuned.predict(x).intensities * (1 - share["factor"] - share["server"])[:, None]
    want += share["factor"][:, None] * teacher.expert_map()["factor"].predict(x).intensities
    want += share["server"][:, None] * teacher.general.predict(x).intensities
    torch.testing.assert_close(soft.predict(x).intensities, want, atol=1e-5, rtol=0)


def test_split_rows_backtest_the_held_out_universes_with_a_split_column():
    r = _returns(p=12)
    split = HalfSplit("s1b", tuple(f"s{i}" for i in range(6)), tuple(f"s{i}" for i in range(6, 12)))
    spec = DisjointSpec(portfolio_sizes=(3,), mixture_sizes=(2,), windows=(60,), start="2014-01-02")
    est = {k: v for k, v in classical_estimators().items() if k in ("ledoit_wolf", "sample")}
    rows = split_rows(r, split, spec, {}, classical=est)
    assert set(rows["split"]) == {"s1b"}
    assert sorted(rows["fold"].unique()) == [
        "s1b half p=6",
        "s1b mixtures p=8",
        "s1b portfolios p=3",
    ]
    lw = rows[rows.estimator == "ledoit_wolf"]
    assert np.allclose(lw["rel_vol"], 0.0) and (lw["ann_vol"] > 0).all()
    again = split_rows(r, split, spec, {}, classical=est)
    pd.testing.assert_frame_equal(rows, again)  # the split's name seeds its universes


def test_with_derived_portfolios_adds_portfolios_of_the_stocks_only():
    from shrinklab.studies.disjoint_finetune import with_derived_portfolios

    r = _returns(p=8)
    out = with_derived_portfolios(r, 0.5, seed=3)
    assert list(out.columns[:8]) == list(r.columns) and out.shape == (len(r), 12)
    assert all(c.startswith("derived_") for c in out.columns[8:])
    pd.testing.assert_frame_equal(out.iloc[:, :8], r)
    pd.testing.assert_frame_equal(out, with_derived_portfolios(r, 0.5, seed=3))
    assert not out.equals(with_derived_portfolios(r, 0.5, seed=4))
    # each portfolio moves with the stocks: a common factor, as index and sector funds have
    corr = out.corr().to_numpy()[8:, :8]
    assert (corr.max(axis=1) > 0.3).all()
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="per_stock"):
            with_derived_portfolios(r, bad, seed=0)


def test_seed_average_adds_the_mean_of_the_members_per_fold_and_window():
    from shrinklab.studies.disjoint_finetune import seed_average

    rows = []
    for fold in ("f1", "f2"):
        for window in (60, 120):
            for est, vol in (("ledoit_wolf", 10.0), ("A@1", 9.0), ("A@2", 9.6), ("B@1", 11.0)):
                v = vol + (0.5 if fold == "f2" else 0.0) + window / 1000
                rows.append(
                    {
                        "split": "s0a",
                        "family": "halves",
                        "fold": fold,
                        "p": 10,
                        "window": window,
                        "estimator": est,
                        "ann_vol": v,
                        "rel_vol": v - 10.0,
                    }
                )
    rows = pd.DataFrame(rows)
    out = seed_average(rows, {"A": ["A@1", "A@2"]})
    assert len(out) == len(rows) + 4 and list(out.columns) == list(rows.columns)
    a = out[out.estimator == "A"].set_index(["fold", "window"])
    one = rows[rows.estimator == "A@1"].set_index(["fold", "window"])
    two = rows[rows.estimator == "A@2"].set_index(["fold", "window"])
    np.testing.assert_allclose(
        a["ann_vol"], (one["ann_vol"] + two["ann_vol"]) / 2, rtol=0, atol=1e-12
    )
    np.testing.assert_allclose(
        a["rel_vol"], (one["rel_vol"] + two["rel_vol"]) / 2, rtol=0, atol=1e-12
    )
    with pytest.raises(ValueError, match="every member"):
        seed_average(rows, {"B": ["B@1", "B@2"]})  # B@2 is missing
    with pytest.raises(ValueError, match="not already in the rows"):
        seed_average(rows, {"A@1": ["A@2"]})
    with pytest.raises(ValueError, match="needs members"):
        seed_average(rows, {"C": []})


def test_a_fine_tuning_seed_override_changes_the_fit_and_the_sections_seed_does_not(tmp_path):
    r = _returns(p=4, start="2003-01-01")
    regimes = pd.Series(0, index=r.index)
    pre = _net(0)
    base = finetune_half(pre, r, regimes, _settings(), tmp_path / "a")
    same = finetune_half(pre, r, regimes, _settings(), tmp_path / "b", variant=Variant(seed=0))
    other = finetune_half(pre, r, regimes, _settings(), tmp_path / "c", variant=Variant(seed=5))
    for x, y in zip(base.state_dict().values(), same.state_dict().values(), strict=True):
        assert torch.equal(x, y)
    pairs = zip(base.state_dict().values(), other.state_dict().values(), strict=True)
    assert any(not torch.equal(x, y) for x, y in pairs)


def test_a_variant_replaces_only_the_fields_it_sets_and_runs_the_stage_recipe(
    tmp_path, monkeypatch
):
    """Variant fields replace the section's (``soup`` → ``soup_seeds``); DEPLOYED keeps the
    section as it is; the fine-tuning is the stage's own (stage_finetune_soup)."""
    import torch

    from shrinklab.core.params.finetune import Finetune
    from shrinklab.models.network import MLShrinkageNetwork
    from shrinklab.studies import disjoint_finetune as dfs
    from shrinklab.studies.disjoint_finetune import DEPLOYED, RunInputs, Variant

    calls = []

    def fake_stage(pretrained, returns, regimes, settings, out_dir, *, replay_data=None):
        calls.append((settings, Path(out_dir), list(returns.columns), replay_data))
        torch.manual_seed(settings.seed)
        return MLShrinkageNetwork(input_dim=4, num_targets=2, hidden_dims=(3,)), []

    monkeypatch.setattr(dfs, "stage_finetune_soup", fake_stage)
    section = Finetune(seed=2, replay_weight=3.0, derived_per_stock=1.0, soup_seeds=3)
    returns = pd.DataFrame({"A": [0.0], "B": [0.0]})
    run = RunInputs(tmp_path, section, returns, None, "worlds", None, None)
    run.finetune(["A"], tmp_path / "SB", DEPLOYED)
    assert calls[-1] == (section, tmp_path / "SB", ["A"], "worlds")
    run.finetune(["B"], tmp_path / "A", Variant(derived_per_stock=0, soup=1))
    got = calls[-1][0]
    assert (got.derived_per_stock, got.soup_seeds, got.seed, got.replay_weight) == (0, 1, 2, 3.0)
    assert calls[-1][2] == ["B"]
    got = dfs.recipe_settings(section, Variant(replay_weight=10, seed=6))
    assert (got.derived_per_stock, got.soup_seeds, got.seed, got.replay_weight) == (1.0, 3, 6, 10)
    with pytest.raises(ValueError, match="soup must be"):
        run.finetune(["A"], tmp_path / "x", Variant(soup=0))


def test_a_variant_with_experts_fine_tunes_them_and_deploys_them(tmp_path, monkeypatch):
    """Decision 0045: ``Variant(experts=...)`` fine-tunes the teacher's experts of those
    families with the variant's recipe (the stage's stage_finetune_expert) on the fit
    stocks, and the assembly serves them in place of the teacher's."""
    from shrinklab.studies import disjoint_finetune as dfs
    from shrinklab.studies.disjoint_finetune import RunInputs

    families = ["factor", "sp500", "diversified", *NON_MARKET_FAMILIES]
    gate = FamilyGate(F, families, hidden_dims=(16,))
    teacher = GatedExpertModel(_net(1), {"factor": _net(2), "sp500": _net(3)}, gate.eval(), 0.5)
    calls = []

    def fake_expert(expert, family, returns, regimes, settings, out_dir, *, replay_data=None):
        calls.append((expert, family, list(returns.columns), settings, Path(out_dir), replay_data))
        return _net(9)

    monkeypatch.setattr(dfs, "stage_finetune_expert", fake_expert)
    section = Finetune(seed=2, replay_weight=3.0, derived_per_stock=1.0, soup_seeds=3)
    returns = pd.DataFrame({"A": [0.0], "B": [0.0]})
    run = RunInputs(tmp_path, section, returns, None, "worlds", None, teacher)
    assert run.finetune_experts(["A"], tmp_path, Variant()) == {} and not calls
    # by default the compress section's families, as final.pt is built; () for none
    run = RunInputs(tmp_path, section, returns, None, "worlds", None, teacher, "soft", ("sp500",))
    assert list(run.finetune_experts(["A"], tmp_path / "D", Variant())) == ["sp500"]
    assert calls[-1][4] == tmp_path / "D" / "sp500"
    assert run.finetune_experts(["A"], tmp_path, Variant(experts=())) == {}
    assert len(calls) == 1
    got = run.finetune_experts(["B"], tmp_path / "E", Variant(seed=6, experts=("sp500",)))
    expert, family, cols, settings, out_dir, replay = calls[-1]
    assert expert is teacher.expert_map()["sp500"] and family == "sp500" and cols == ["B"]
    assert (settings.seed, settings.derived_per_stock, out_dir, replay) == (
        6,
        1.0,
        tmp_path / "E" / "sp500",
        "worlds",
    )
    with pytest.raises(ValueError, match="no expert for"):
        run.finetune_experts(["A"], tmp_path, Variant(experts=("toeplitz",)))
    model = deployed_structure(_net(4), teacher, "soft", got)
    assert model.expert_map()["sp500"] is got["sp500"]
    assert model.expert_map()["factor"] is teacher.expert_map()["factor"]
    assert model.mixing == "soft"
    # the non-market server can serve more families in the assembly (an exploration)
    both = deployed_structure(_net(4), teacher, "soft", got, ["diversified"])
    server = both.expert_map()["toeplitz"]
    assert both.expert_map()["diversified"] is server and "diversified" not in model.expert_map()


def test_script_variants_parse_experts_and_server_families():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "disjoint_script", Path(__file__).parents[1] / "scripts" / "disjoint_finetune.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    got = script._variants(["A=", "E=:::sp500", "D=::::diversified+block", "N=:::none:none"])
    assert got["A"] == Variant()
    assert got["E"] == Variant(experts=("sp500",))
    assert got["D"] == Variant(server=("diversified", "block"))
    assert got["N"] == Variant(experts=(), server=())
