"""Smoke test of the world-mix study (shrinklab.studies.worlds)."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from shrinklab.data.real_windows import build_windows
from shrinklab.evaluation import scenarios
from shrinklab.models.network import ShrinkageOutput
from shrinklab.studies import worlds
from shrinklab.studies.selection_grid import SELECTION_SEED


@pytest.fixture
def train_calls(monkeypatch):
    """Every ``worlds.train`` call of the test, recorded as ``(model, ts, vs, cfg)`` (the
    training still runs)."""
    calls = []
    real_train = worlds.train

    def recording_train(model, ts, vs, cfg, **kw):
        calls.append((model, ts, vs, cfg))
        return real_train(model, ts, vs, cfg, **kw)

    monkeypatch.setattr(worlds, "train", recording_train)
    return calls


def test_portfolio_returns_are_long_only_mixes():
    ret = pd.DataFrame(np.eye(4), index=pd.date_range("2001-01-01", periods=4))
    p = worlds.portfolio_returns_frame(ret, 3, seed=0)
    assert p.shape == (4, 3)
    np.testing.assert_allclose(p.sum(axis=0), 1.0, rtol=1e-12)  # weights sum to one
    assert (p.to_numpy() >= 0).all()


def test_study_smoke(tmp_path):
    res = worlds.run(
        tmp_path, n_train=96, n_valid=64, epochs=1, reps=1, p_max=20,
        windows=(60,), n_portfolio_draws=1,
    )  # fmt: skip
    s = res["summary"]
    assert s["adopt_B"] == (s["rule1_real"] and s["rule2_synthetic"])
    assert s["pooled_real_windows"] > 50
    synth = res["synthetic"]
    assert set(synth["valid"]) == {"A", "B"}
    np.testing.assert_allclose(synth.prial_B - synth.prial_A, synth.delta_B_minus_A, atol=1e-9)
    real = res["real"]
    assert np.isfinite(real[["vol_A", "vol_B"]].to_numpy()).all()
    assert json.loads((tmp_path / "summary.json").read_text()) == s


def test_diversified_universe_is_long_only_with_an_index():
    rng = np.random.default_rng(0)
    ret = pd.DataFrame(rng.normal(size=(30, 20)), index=pd.date_range("2001-01-01", periods=30))
    f = worlds.diversified_returns_frame(ret, 6, seed=1060)
    assert list(f.columns) == ["F0", "F1", "F2", "F3", "F4", "index"]
    np.testing.assert_allclose(f["index"], ret.mean(axis=1), rtol=1e-12)
    # weights recovered by least squares: long-only, summing to one, 8..20 stocks each
    w, *_ = np.linalg.lstsq(ret.to_numpy(), f.to_numpy(), rcond=None)
    w[np.abs(w) < 1e-10] = 0
    assert (w >= 0).all()
    np.testing.assert_allclose(w.sum(axis=0), 1.0, rtol=1e-10)
    assert all(8 <= c <= 20 for c in (w[:, :5] > 0).sum(axis=0))
    assert f.equals(worlds.diversified_returns_frame(ret, 6, seed=1060))


def test_candidate_mixes():
    params = {"data_prep": {"family_weights": {"factor": 1, "sp500": 1}}}
    m = worlds.mixes("diversified", params)
    assert m["A"] == {"factor": 1.0, "sp500": 1.0}
    assert m["B"] == {"factor": 1.0, "sp500": 1.0, "diversified": 1.0}
    assert worlds.mixes(None, params) is worlds.MIXES
    with pytest.raises(ValueError, match="candidate"):
        worlds.mixes("factor", params)  # already in the mix
    with pytest.raises(ValueError, match="candidate"):
        worlds.mixes("no_such_family", params)


def _params_without(tmp_path, family):
    """params.yaml with ``family`` at weight 0 (0026 was studied before it was adopted)."""
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["data_prep"]["family_weights"][family] = 0
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_candidate_weight_must_raise_the_family_weight(tmp_path):
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["data_prep"]["family_weights"].update(factor=1, diversified=0)
    with pytest.raises(ValueError, match="above 'factor'"):
        worlds.mixes("factor", params)  # weight 1 = its weight in the mix
    with pytest.raises(ValueError, match="regular world family"):
        worlds.mixes("no_such_family", params)
    with pytest.raises(ValueError, match="above 'diversified'"):
        worlds.mixes("diversified", params, weight=float("nan"))
    m = worlds.mixes("factor", params, weight=3.0)
    assert m["B"] == {**m["A"], "factor": 3.0} and m["A"]["factor"] == 1.0
    assert worlds.mixes("diversified", params)["B"]["diversified"] == 1.0


def test_study_smoke_candidate(tmp_path):
    params = _params_without(tmp_path, "diversified")
    out = tmp_path / "out"
    worlds.main(
        ["--smoke", "--candidate", "diversified", "--reps", "1", "--out", str(out),
         "--params", str(params)]
    )  # fmt: skip
    tmp_path = out
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["adopt_B"] == (
        s["rule1_diversified"] and s["rule2_0023_universes"] and s["rule3_synthetic"]
    )
    assert s["mixes"]["B"]["diversified"] == 1.0 and s["mixes"]["A"]["diversified"] == 0.0
    real = pd.read_csv(tmp_path / "real_by_universe.csv")
    assert "diversified6_0" in set(real["universe"]) and "stocks" in set(real["universe"])
    assert s["diversified_windows"] == int(real.loc[real.universe == "diversified6_0", "n"].sum())
    assert ((real["sample"] > 0.05) & (real["single_factor"] < 0.5)).all()  # annualised vols


def test_classical_vols_match_numpy():
    rng = np.random.default_rng(3)
    ret = pd.DataFrame(
        0.01 * rng.normal(size=(400, 5)), index=pd.date_range("2005-01-03", periods=400, freq="B")
    )
    rw = build_windows(ret, 60, 21, 21)
    got = worlds.classical_vols({"u": [rw]}, names=("sample",))
    var = []
    for g in rw:
        for x, r in zip(g.X.numpy(), g.realised.numpy(), strict=True):
            w = np.linalg.solve(np.cov(x.T), np.ones(5))
            var.append((r @ (w / w.sum())).var(ddof=1))
    np.testing.assert_allclose(got.loc[("u", 60), "sample"], np.sqrt(252 * np.mean(var)), rtol=1e-9)


def test_parse_overrides():
    assert worlds.parse_overrides(["portfolio_weight=0.3", "epochs=20"]) == {
        "portfolio_weight": 0.3,
        "epochs": 20,
    }
    assert isinstance(worlds.parse_overrides(["epochs=2e1"])["epochs"], int)
    assert worlds.parse_overrides([]) == {}
    assert worlds.parse_overrides(["loss_normaliser=fsopt_gap"]) == {"loss_normaliser": "fsopt_gap"}
    for bad, msg in [
        ("no_such_field=1", "numeric or choice TrainConfig fields"),
        ("device=cuda", "numeric or choice TrainConfig fields"),  # the study runs on the CPU
        ("curriculum=1", "numeric or choice TrainConfig fields"),  # a bool field
        ("seed=3", "numeric or choice TrainConfig fields"),  # arms share their seeds
        ("portfolio_weight", "KEY=VALUE"),
        ("portfolio_weight=high", "not a number"),
        ("portfolio_weight=nan", "finite float"),
        ("epochs=1.5", "finite int"),
        ("optimizer=1", "optimizer must be"),  # TrainConfig's own check
        ("loss_normaliser=prial", "loss_normaliser must be one of"),
        ("portfolio_weight=-1", "portfolio_weight"),  # a range TrainConfig rejects
    ]:
        with pytest.raises(ValueError, match=msg):
            worlds.parse_overrides([bad])
    with pytest.raises(ValueError, match="once per KEY"):
        worlds.parse_overrides(["portfolio_weight=0.1", "portfolio_weight=0.3"])


def test_study_smoke_train_override(tmp_path, train_calls):
    argv = ["--smoke", "--train-override", "portfolio_weight=0.3", "--reps", "1"]
    worlds.main([*argv, "--out", str(tmp_path)])
    (_, ts_a, vs_a, cfg_a), (_, ts_b, vs_b, cfg_b) = train_calls
    assert cfg_a.portfolio_weight == 0.0 and cfg_b.portfolio_weight == 0.3
    assert dataclasses.replace(cfg_b, portfolio_weight=0.0) == cfg_a  # nothing else differs
    assert ts_b is ts_a and vs_b is vs_a  # same worlds: the pair isolates the setting
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["train_overrides"] == {"portfolio_weight": 0.3} and s["candidate"] is None
    # both arms train on the pipeline's mix (params.yaml), 0026's diversified worlds included
    weights = yaml.safe_load(Path("params.yaml").read_text())["data_prep"]["family_weights"]
    assert s["mixes"]["A"] == s["mixes"]["B"] == {k: float(v) for k, v in weights.items()}
    assert s["adopt_B"] == (s["rule1_pooled"] and s["rule2_stocks"] and s["rule3_synthetic"])
    real = pd.read_csv(tmp_path / "real_by_universe.csv")
    assert {"stocks", "diversified6_0", "portfolios0"} <= set(real["universe"])
    assert s["pooled_real_windows"] == int(real["n"].sum())
    assert s["stocks_windows"] == int(real.loc[real.universe == "stocks", "n"].sum())
    synth = pd.read_csv(tmp_path / "synthetic.csv")
    assert list(synth["valid"]) == ["A"]  # one validation set when the mixes agree
    with pytest.raises(ValueError, match="numeric or choice TrainConfig fields"):
        worlds.main(["--smoke", "--train-override", "bogus=1", "--out", str(tmp_path)])


def test_override_of_a_pretrain_setting_reaches_b(tmp_path, monkeypatch, train_calls):
    small = [{"name": "2-factor p12 n30", "family": "factor", "p": 12, "n": 30, "n_factors": 2}]
    monkeypatch.setattr(worlds, "FACTOR_SCENARIOS", small)
    argv = ["--smoke", "--train-override", "loss_normaliser=fsopt_gap", "--rule", "0030"]
    worlds.main([*argv, "--reps", "1", "--out", str(tmp_path)])
    pre = yaml.safe_load(Path("params.yaml").read_text())["pretrain"]
    cfg_a, cfg_b = (call[3] for call in train_calls)
    assert cfg_a.loss_normaliser == pre["loss_normaliser"] != "fsopt_gap"
    assert cfg_b.loss_normaliser == "fsopt_gap"
    assert dataclasses.replace(cfg_b, loss_normaliser=cfg_a.loss_normaliser) == cfg_a
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["train_overrides"] == {"loss_normaliser": "fsopt_gap"} and s["rule"] == "0030"


def test_rule_0027_by_hand():
    d = pd.DataFrame(
        {
            "universe": ["stocks"] * 4 + ["diversified6_0"] * 4,
            "diff": [1.0, 3.0, 1.0, 3.0, -9.0, -11.0, -9.0, -11.0],
        }
    )
    synth = pd.DataFrame({"valid": ["A", "A"], "delta_B_minus_A": [-1.0, -2.0]})
    r = worlds.rule_0027(d, synth)
    assert r["pooled_real_var_diff_B_minus_A"] == pytest.approx(-4.0)
    assert r["pooled_real_var_diff_se"] == pytest.approx(np.std(d["diff"], ddof=1) / np.sqrt(8))
    assert r["stocks_var_diff_B_minus_A"] == pytest.approx(2.0)
    assert r["stocks_var_diff_se"] == pytest.approx(np.std([1, 3, 1, 3], ddof=1) / 2)
    assert r["prial_drop_on_A_valid"] == pytest.approx(1.5)
    # stocks: +2.0 is 3.5 SE above zero: rule 2 fails, so B is not adopted
    assert r["rule1_pooled"] and not r["rule2_stocks"] and r["rule3_synthetic"]
    assert not r["adopt_B"]


class _Constant:
    """A stand-in model: the same intensity and target weights for every draw."""

    def __init__(self, alpha: float, weights):
        self.alpha, self.weights = alpha, torch.tensor(weights, dtype=torch.float64)

    def predict(self, feats):
        n = feats.shape[0]
        return ShrinkageOutput(
            torch.full((n,), self.alpha, dtype=torch.float64),
            self.weights.expand(n, -1),
            torch.zeros(n, dtype=torch.float64),
        )


def test_factor_scenario_gains_match_separate_evaluations():
    spec = {"name": "2-factor p12 n30", "family": "factor", "p": 12, "n": 30, "n_factors": 2}
    a = _Constant(0.1, [1.0, 0, 0, 0, 0])
    b = _Constant(0.6, [0.2, 0.8, 0, 0, 0])
    got = worlds.factor_scenario_gains([(a, b), (a, b)], [spec], 40)
    # reference: each model scored alone on the same replications, gain from the PRIALs
    seed = scenarios.scenario_seed(SELECTION_SEED, spec["name"])
    ra = scenarios.evaluate_scenario(spec, a, 40, seed)
    rb = scenarios.evaluate_scenario(spec, b, 40, seed)
    assert got.loc[0, "prial_gain_B_minus_A"] == pytest.approx(
        rb["prial"]["learned"] - ra["prial"]["learned"], abs=1e-8
    )
    assert got.loc[0, "se"] > 0 and got.loc[0, "n_reps"] == 40
    same = worlds.factor_scenario_gains([(a, a)], [spec], 40)
    assert same.loc[0, "prial_gain_B_minus_A"] == 0 and same.loc[0, "se"] == 0
    with pytest.raises(ValueError, match="at least one"):
        worlds.factor_scenario_gains([], [spec], 40)


def test_rule_0030_by_hand():
    d = pd.DataFrame({"universe": ["stocks"] * 4, "diff": [1.0, -1.0, 2.0, -2.0]})
    synth = pd.DataFrame({"valid": ["A", "A"], "delta_B_minus_A": [-1.0, -2.0]})
    factor = pd.DataFrame(
        {"scenario": ["x", "y"], "prial_gain_B_minus_A": [3.0, 1.0], "se": [3.0, 4.0]}
    )
    r = worlds.rule_0030(d, synth, factor)
    assert r["factor_prial_gain_B_minus_A"] == pytest.approx(2.0)
    assert r["factor_prial_gain_se"] == pytest.approx(2.5)  # √(9 + 16) / 2
    assert not r["rule1_factor_scenarios"] and r["rule2_real"] and r["rule3_synthetic"]
    assert not r["adopt_B"]
    factor["se"] = [1.0, 1.0]  # gain 2.0, SE 0.71: now 2.8 SE above zero
    r = worlds.rule_0030(d, synth, factor)
    assert r["rule1_factor_scenarios"] and r["adopt_B"]
    worse = d.assign(diff=[3.0, 2.0, 3.0, 2.0])  # real variance up by 7 SE
    assert not worlds.rule_0030(worse, synth, factor)["rule2_real"]
    assert not worlds.rule_0030(d, synth.assign(delta_B_minus_A=[-3, -2]), factor)["adopt_B"]


def test_factor_scenarios_are_the_grids_factor_worlds():
    names = [s["name"] for s in worlds.FACTOR_SCENARIOS]
    assert names == ["5-factor p100 n200", "3-factor t4 p80 n160", "3-factor p200 n60"]


def test_rule_0030_needs_arms_that_differ(tmp_path):
    with pytest.raises(ValueError, match="needs arms that differ"):
        worlds.run(tmp_path, rule="0030")
    with pytest.raises(ValueError, match="positive layer widths"):
        worlds.run(tmp_path, hidden_dims_b=[16, 0])
    with pytest.raises(ValueError, match="rule must be"):
        worlds.run(tmp_path, rule="0031")


def test_study_smoke_rule_0030(tmp_path, monkeypatch):
    small = [{"name": "2-factor p12 n30", "family": "factor", "p": 12, "n": 30, "n_factors": 2}]
    monkeypatch.setattr(worlds, "FACTOR_SCENARIOS", small)
    worlds.main(
        ["--smoke", "--candidate", "factor", "--candidate-weight", "3", "--rule", "0030",
         "--reps", "1", "--out", str(tmp_path)]
    )  # fmt: skip
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["rule"] == "0030" and s["mixes"]["B"]["factor"] == 3.0
    assert s["factor_scenarios"] == ["2-factor p12 n30"]
    assert s["adopt_B"] == (
        s["rule1_factor_scenarios"] and s["rule2_real"] and s["rule3_synthetic"]
    )
    f = pd.read_csv(tmp_path / "factor_scenarios.csv")
    assert f.loc[0, "n_reps"] == 4 and np.isfinite(f.loc[0, "se"])


def test_study_smoke_hidden_dims(tmp_path, monkeypatch, train_calls):
    small = [{"name": "2-factor p12 n30", "family": "factor", "p": 12, "n": 30, "n_factors": 2}]
    monkeypatch.setattr(worlds, "FACTOR_SCENARIOS", small)
    argv = ["--smoke", "--hidden-dims", "16,8", "--rule", "0030", "--reps", "1"]
    worlds.main([*argv, "--out", str(tmp_path)])
    (m_a, ts_a, vs_a, cfg_a), (m_b, ts_b, vs_b, cfg_b) = train_calls
    w_a, w_b = (
        [m.out_features for m in net.modules() if isinstance(m, torch.nn.Linear)]
        for net in (m_a, m_b)
    )
    hidden = yaml.safe_load(Path("params.yaml").read_text())["pretrain"]["hidden_dims"]
    # each hidden block has two linear layers of its width, then the same heads
    k = 2 * len(hidden)
    assert w_a[:k] == [h for h in hidden for _ in (0, 1)] and w_b[:4] == [16, 16, 8, 8]
    assert w_a[k:] == w_b[4:]
    assert ts_b is ts_a and vs_b is vs_a and cfg_b == cfg_a  # only the width differs
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["hidden_dims_B"] == [16, 8] and s["mixes"]["A"] == s["mixes"]["B"]
    assert s["adopt_B"] == (
        s["rule1_factor_scenarios"] and s["rule2_real"] and s["rule3_synthetic"]
    )


def test_hetero_worlds_reach_new_families_and_put_the_settings_back():
    from shrinklab.data import families

    def draw(family):
        g = torch.Generator().manual_seed(5)
        return families.sigma_and_root(family, 20, g, None, hetero_prob=1.0)[0]

    before = draw("diversified"), draw("factor")
    with worlds.hetero_worlds(worlds.HETERO_ALL, 1.2):
        inside = draw("diversified")
        assert families.HETERO_TAU == (0.2, 1.2)
    after = draw("diversified"), draw("factor")
    assert not torch.equal(inside, before[0])  # diversified worlds now scaled by D
    logv = torch.log(torch.diagonal(inside))
    assert float(logv.std()) > float(torch.log(torch.diagonal(before[0])).std())
    assert torch.equal(after[0], before[0]) and torch.equal(after[1], before[1])
    assert families.HETERO_TAU == (0.2, 0.8)
    assert "sp500" not in worlds.HETERO_ALL and "resampled" not in worlds.HETERO_ALL
    with pytest.raises(ValueError, match="without heterogeneous"):
        with worlds.hetero_worlds(("sp500",), 1.2):
            pass
    with pytest.raises(ValueError, match="tau_max"):
        with worlds.hetero_worlds(("factor",), 0.1):
            pass


def test_rule_0051_by_hand():
    # two repetitions, two windows each; relative change (B − A)/A in %
    d = pd.DataFrame(
        {"rep": [0, 0, 1, 1], "A": [1.0, 1.0, 1.0, 1.0], "diff": [0.01, -0.01, 0.02, 0.0]}
    )
    synth = pd.DataFrame(
        {"rep": [0, 1, 0], "valid": ["A", "A", "B"], "delta_B_minus_A": [-1.0, -2.0, -9.0]}
    )
    stress = pd.DataFrame(
        {"rep": [0, 0, 1, 1], "prial_gain_B_minus_A": [4.0, 2.0, 3.0, 1.0], "se": [1.0] * 4}
    )
    grids = pd.DataFrame({"rep": [0, 1], "prial_gain_B_minus_A": [-0.2, 0.0], "se": [0.1, 0.1]})
    r = worlds.rule_0051(d, synth, stress, grids)
    assert r["stress_gain_by_rep"] == [3.0, 2.0]
    assert r["stress_prial_gain_B_minus_A"] == pytest.approx(2.5)
    assert r["stress_prial_gain_se"] == pytest.approx(0.5)  # sd 0.707 / √2
    assert r["real_rel_var_by_rep"] == pytest.approx([0.0, 1.0])
    assert r["real_rel_var_pct_se"] == pytest.approx(0.5)
    assert r["rule2_real"]  # mean 0.5 % not more than its SE (0.5) above zero
    assert r["prial_drop_on_A_valid"] == pytest.approx(1.5)  # A's validation worlds only
    assert r["grids_prial_gain_B_minus_A"] == pytest.approx(-0.1)
    assert r["rule1_stress"] and r["rule3_synthetic"] and r["rule4_grids"] and r["adopt_B"]
    worse = grids.assign(prial_gain_B_minus_A=[-0.3, -0.2])  # −0.25 ± 0.05: 5 SE below zero
    assert not worlds.rule_0051(d, synth, stress, worse)["adopt_B"]
    noisy = stress.assign(prial_gain_B_minus_A=[9.0, 9.0, -5.0, -5.0])  # 2 ± 7 over repetitions
    assert not worlds.rule_0051(d, synth, noisy, grids)["rule1_stress"]
    assert not worlds.rule_0051(d.assign(diff=[0.03, 0.03, 0.02, 0.02]), synth, stress, grids)[
        "rule2_real"
    ]


def test_rule_0051_goes_with_heterogeneous_worlds(tmp_path):
    with pytest.raises(ValueError, match="rule 0051"):
        worlds.run(tmp_path, rule="0051")
    with pytest.raises(ValueError, match="rule 0051"):
        worlds.run(tmp_path, hetero_b=(("factor",), 1.2))


def test_study_smoke_rule_0051(tmp_path, monkeypatch, train_calls):
    small = [{"name": "2-factor hetero1.2 p12 n30", "family": "factor", "p": 12, "n": 30,
              "n_factors": 2, "hetero": 1.2}]  # fmt: skip
    monkeypatch.setattr(worlds, "HETERO_STRESS", small)
    monkeypatch.setattr(worlds, "SELECTION_GRID", [{**small[0], "name": "g", "hetero": 0.0}])
    monkeypatch.setattr(worlds, "WIDE_GRID", [])
    worlds.main(
        ["--smoke", "--rule", "0051", "--hetero-all", "--reps", "2", "--out", str(tmp_path)]
    )
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["rule"] == "0051" and s["hetero_tau_max_B"] == 1.2
    assert len(s["stress_gain_by_rep"]) == 2 and len(s["grids_gain_by_rep"]) == 2
    assert s["adopt_B"] == (
        s["rule1_stress"] and s["rule2_real"] and s["rule3_synthetic"] and s["rule4_grids"]
    )
    # B's training worlds differ from A's (heterogeneous variances), same seeds and sizes
    ts_a, ts_b = train_calls[0][1], train_calls[1][1]
    assert torch.equal(ts_a.p, ts_b.p) and not torch.equal(ts_a.features, ts_b.features)
    stress = pd.read_csv(tmp_path / "stress_scenarios.csv")
    assert stress["rep"].tolist() == [0, 1] and np.isfinite(stress["se"]).all()


def test_volatility_path_worlds_move_the_rows_only_inside_and_put_the_setting_back():
    from shrinklab.data import sampling
    from shrinklab.data.synthetic import make_scenario

    spec = {"family": "factor", "p": 8, "n": 300, "n_factors": 2}
    sigma0, x0 = make_scenario(spec, 4, 11)
    with worlds.volatility_path_worlds(1.0):
        assert sampling.VOLATILITY_PATH_PROB == 1.0
        sigma1, x1 = make_scenario(spec, 4, 11)
    sigma2, x2 = make_scenario(spec, 4, 11)
    assert sampling.VOLATILITY_PATH_PROB == 0.0
    assert torch.equal(sigma1, sigma0)  # the truth is unchanged
    assert torch.equal(x2, x0) and not torch.equal(x1, x0)  # off again: the same draws
    # the rows are rescaled by one common factor per day: every asset's ratio is the same
    ratio = x1 / x0
    torch.testing.assert_close(ratio, ratio[..., :1].expand_as(ratio), rtol=1e-5, atol=0.0)
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="prob"):
            with worlds.volatility_path_worlds(bad):
                pass


def test_volatility_path_is_a_normalised_log_ar1():
    from shrinklab.data import sampling

    g = torch.Generator().manual_seed(3)
    paths = torch.stack([sampling.volatility_path(200, g) for _ in range(400)])
    torch.testing.assert_close((paths**2).mean(-1), torch.ones(400, dtype=torch.float64))
    h = torch.log(paths)
    h = h - h.mean(-1, keepdim=True)
    lag1 = (h[:, 1:] * h[:, :-1]).mean() / (h * h).mean()
    assert float(lag1) > 0.8  # persistent: φ = exp(−1/L) with L ≥ 10 days
    sd = h.std(-1)
    assert 0.02 < float(sd.min()) and float(sd.max()) < 1.0  # s in (0.1, 0.5), within a window
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.equal(sampling.volatility_path(50, g1), sampling.volatility_path(50, g2))


def test_rule_0053_is_0051_on_the_path_scenarios():
    d = pd.DataFrame({"rep": [0, 0, 1, 1], "A": [1.0] * 4, "diff": [0.01, -0.01, 0.02, 0.0]})
    synth = pd.DataFrame({"rep": [0, 1], "valid": ["A", "A"], "delta_B_minus_A": [-1.0, -2.0]})
    paths = pd.DataFrame({"rep": [0, 1], "prial_gain_B_minus_A": [3.0, 2.0], "se": [1.0, 1.0]})
    grids = pd.DataFrame({"rep": [0, 1], "prial_gain_B_minus_A": [-0.2, 0.0], "se": [0.1, 0.1]})
    r = worlds.rule_0053(d, synth, paths, grids)
    assert r["paths_prial_gain_B_minus_A"] == pytest.approx(2.5)
    assert r["rule1_paths"] and r["adopt_B"]
    assert not any("stress" in k for k in r)
    flat = paths.assign(prial_gain_B_minus_A=[0.5, -0.5])
    assert not worlds.rule_0053(d, synth, flat, grids)["adopt_B"]
    with pytest.raises(ValueError, match="rule 0053"):
        worlds.run(Path("unused"), rule="0053")
    with pytest.raises(ValueError, match="rule 0053"):
        worlds.run(Path("unused"), paths_b=0.5)


def _smoke_summary(tmp_path, monkeypatch, *args: str) -> dict:
    """``worlds.main --smoke --reps 2 *args`` on one small grid scenario: its summary."""
    small = [{"name": "2-factor p12 n30", "family": "factor", "p": 12, "n": 30, "n_factors": 2}]
    monkeypatch.setattr(worlds, "SELECTION_GRID", small)
    monkeypatch.setattr(worlds, "WIDE_GRID", [])
    worlds.main(["--smoke", *args, "--reps", "2", "--out", str(tmp_path)])
    return json.loads((tmp_path / "summary.json").read_text())


def test_study_smoke_rule_0053(tmp_path, monkeypatch, train_calls):
    s = _smoke_summary(tmp_path, monkeypatch, "--rule", "0053", "--vol-paths", "0.5")
    assert s["rule"] == "0053" and s["volatility_path_prob_B"] == 0.5
    assert len(s["paths_gain_by_rep"]) == 2 and len(s["grids_gain_by_rep"]) == 2
    assert s["adopt_B"] == (
        s["rule1_paths"] and s["rule2_real"] and s["rule3_synthetic"] and s["rule4_grids"]
    )
    ts_a, ts_b = (
        train_calls[0][1],
        train_calls[1][1],
    )  # B's rows carry paths: other features, same worlds
    assert torch.equal(ts_a.p, ts_b.p) and not torch.equal(ts_a.features, ts_b.features)
    from shrinklab.data import sampling

    assert sampling.VOLATILITY_PATH_PROB == 0.0
    paths = pd.read_csv(tmp_path / "path_scenarios.csv")
    assert paths["rep"].tolist() == [0, 1] and np.isfinite(paths["se"]).all()


def test_rule_0062_by_hand():
    # part 1 asks for a real gain (mean + SE below zero), unlike 0051's non-inferiority
    d = pd.DataFrame({"rep": [0, 0, 1, 1], "A": [1.0] * 4, "diff": [-0.01, -0.01, -0.02, 0.0]})
    synth = pd.DataFrame(
        {"rep": [0, 1, 0, 1], "valid": ["A", "A", "B", "B"],
         "delta_B_minus_A": [-1.0, -2.0, 5.0, 7.0]}
    )  # fmt: skip
    grids = pd.DataFrame({"rep": [0, 1], "prial_gain_B_minus_A": [-0.2, 0.0], "se": [0.1, 0.1]})
    r = worlds.rule_0062(d, synth, grids)
    assert r["real_rel_var_by_rep"] == pytest.approx([-1.0, -1.0])
    assert r["real_rel_var_pct_B_minus_A"] == pytest.approx(-1.0)
    assert r["real_rel_var_pct_se"] == pytest.approx(0.0)
    assert r["prial_drop_on_A_valid"] == pytest.approx(1.5)  # A's validation worlds only
    assert r["prial_gain_on_B_valid_by_rep"] == pytest.approx([5.0, 7.0])
    assert r["grids_prial_gain_B_minus_A"] == pytest.approx(-0.1)
    assert r["rule1_real"] and r["rule2_synthetic"] and r["rule3_grids"] and r["adopt_B"]
    # a mean gain within its SE is not enough: −0.5 ± 0.5 %
    level = d.assign(diff=[-0.01, -0.01, 0.0, 0.0])
    assert not worlds.rule_0062(level, synth, grids)["rule1_real"]
    drop = synth.assign(delta_B_minus_A=[-3.0, -2.0, 5.0, 7.0])  # 2.5 points below A
    assert not worlds.rule_0062(d, drop, grids)["rule2_synthetic"]
    worse = grids.assign(prial_gain_B_minus_A=[-0.3, -0.2])  # −0.25 ± 0.05
    assert not worlds.rule_0062(d, synth, worse)["adopt_B"]
    with pytest.raises(ValueError, match="rule 0062"):
        worlds.run(Path("unused"), rule="0062")


def test_study_smoke_rule_0062(tmp_path, monkeypatch, train_calls):
    s = _smoke_summary(tmp_path, monkeypatch, "--rule", "0062", "--candidate", "resampled_forward")
    assert s["rule"] == "0062" and s["mixes"]["B"]["resampled_forward"] == 1.0
    assert "resampled_forward" not in s["mixes"]["A"]
    assert len(s["grids_gain_by_rep"]) == 2 and len(s["real_rel_var_by_rep"]) == 2
    assert s["adopt_B"] == (s["rule1_real"] and s["rule2_synthetic"] and s["rule3_grids"])
    ts_b = train_calls[1][1]  # B's training worlds hold forward worlds
    assert "resampled_forward" in ts_b.families


def test_rule_0063_by_hand():
    # diversified universes must gain; the others (stocks, portfolios) must not lose
    d = pd.DataFrame(
        {"rep": [0, 0, 1, 1], "universe": ["diversified6_0", "stocks"] * 2, "A": [1.0] * 4,
         "diff": [-0.02, 0.001, -0.01, -0.001]}
    )  # fmt: skip
    synth = pd.DataFrame({"rep": [0, 1], "valid": ["A", "A"], "delta_B_minus_A": [-1.0, 0.0]})
    grids = pd.DataFrame({"rep": [0, 1], "prial_gain_B_minus_A": [0.1, -0.1], "se": [0.1, 0.1]})
    r = worlds.rule_0063(d, synth, grids)
    assert r["diversified_rel_var_by_rep"] == pytest.approx([-2.0, -1.0])
    assert r["diversified_rel_var_pct_se"] == pytest.approx(0.5)
    assert r["other_rel_var_by_rep"] == pytest.approx([0.1, -0.1])
    assert r["prial_drop_on_A_valid"] == pytest.approx(0.5)
    assert all(r[k] for k in ("rule1_diversified", "rule2_other_real", "rule3_synthetic",
                              "rule4_grids", "adopt_B"))  # fmt: skip
    stocks_lose = d.assign(diff=[-0.02, 0.02, -0.01, 0.03])  # others +2.5 ± 0.5 %
    assert not worlds.rule_0063(stocks_lose, synth, grids)["rule2_other_real"]
    no_gain = d.assign(diff=[-0.02, 0.0, 0.01, 0.0])  # diversified −0.5 ± 1.5 %
    assert not worlds.rule_0063(no_gain, synth, grids)["rule1_diversified"]
    with pytest.raises(ValueError, match="rule 0063"):
        worlds.run(Path("unused"), rule="0063")


def test_study_smoke_rule_0063_with_a_train_override(tmp_path, monkeypatch, train_calls):
    # decision 0065: the candidate family and B's portfolio-variance loss term together
    s = _smoke_summary(tmp_path, monkeypatch, "--rule", "0063", "--candidate", "fund_portfolios",
                       "--train-override", "portfolio_weight=0.3")  # fmt: skip
    assert s["train_overrides"] == {"portfolio_weight": 0.3}
    cfg_a, cfg_b = train_calls[0][3], train_calls[1][3]
    assert cfg_a.portfolio_weight == 0.0 and cfg_b.portfolio_weight == 0.3


def test_study_smoke_rule_0063(tmp_path, monkeypatch):
    s = _smoke_summary(tmp_path, monkeypatch, "--rule", "0063", "--candidate", "fund_portfolios")
    assert s["rule"] == "0063" and s["mixes"]["B"]["fund_portfolios"] == 1.0
    assert s["train_overrides"] == {}
    assert len(s["diversified_rel_var_by_rep"]) == 2 and len(s["other_rel_var_by_rep"]) == 2
    assert s["adopt_B"] == (
        s["rule1_diversified"] and s["rule2_other_real"] and s["rule3_synthetic"]
        and s["rule4_grids"]
    )  # fmt: skip
