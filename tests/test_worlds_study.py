"""Smoke test of the world-mix study (shrinklab.studies.worlds)."""

import json

import numpy as np
import pandas as pd

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
