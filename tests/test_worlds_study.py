"""Smoke test of the world-mix study (shrinklab.studies.worlds)."""

import json

import numpy as np
import pandas as pd
import pytest

from shrinklab.data.real_windows import build_windows
from shrinklab.studies import worlds


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


def test_study_smoke_candidate(tmp_path):
    worlds.main(["--smoke", "--candidate", "diversified", "--reps", "1", "--out", str(tmp_path)])
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["adopt_B"] == (
        s["rule1_diversified"] and s["rule2_0023_universes"] and s["rule3_synthetic"]
    )
    assert s["mixes"]["B"]["diversified"] == 1.0 and "diversified" not in s["mixes"]["A"]
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
