"""scripts/stress_scenarios.py: its two measures by hand, and on a small scenario the
PRIAL it reports equals the evaluation module's."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shrinklab.evaluation import scenarios
from shrinklab.models.registry import load_model
from tests._scripts import ROOT, load_script


def _result():
    """A result shaped as ``scenarios.evaluate_scenario``'s, its PRIAL fields by hand."""
    d = np.array([1.0, 1.0, 10.0, 10.0])  # two small-loss and two large-loss replications
    losses = {
        "sample": d, "fsopt": 0.2 * d,
        # the learned model halves the small losses and leaves the large ones
        "learned": np.array([0.5, 0.5, 10.0, 10.0]),
        # a classical estimator takes 10 % off every loss
        "ledoit_wolf": 0.9 * d, "oas": 0.95 * d, "constant_correlation": d,
        "single_factor": d, "qis": d,
    }  # fmt: skip
    gain = 0.8 * 22.0
    return {
        "losses": losses, "best_classical": "ledoit_wolf",
        "prial": {"learned": 100 * 1.0 / gain, "ledoit_wolf": 100 * 2.2 / gain},
        "diff_best": {"learned": 100 * (1.0 - 2.2) / gain}, "diff_best_se": {"learned": 3.0},
    }  # fmt: skip


def test_the_two_measures_by_hand():
    m = load_script("scripts/stress_scenarios.py")
    gain = 0.8 * 22.0
    row = m.compare(_result())
    assert row["prial"] == pytest.approx(100 * 1.0 / gain)  # 1.0 taken off 22
    assert row["prial_best"] == "ledoit_wolf"
    assert row["prial_best_value"] == pytest.approx(100 * 2.2 / gain)
    assert row["prial_diff"] == pytest.approx(100 * (1.0 - 2.2) / gain)  # behind by PRIAL
    assert row["prial_diff_se"] == 3.0
    assert row["ratio"] == pytest.approx(0.75)  # (0.5 + 0.5 + 1 + 1) / 4
    assert row["ratio_best"] == "ledoit_wolf" and row["ratio_best_value"] == pytest.approx(0.9)
    assert row["ratio_diff"] == pytest.approx(0.15)  # ahead by the mean ratio
    r = np.array([0.4, 0.4, -0.1, -0.1])
    assert row["ratio_diff_se"] == pytest.approx(r.std(ddof=1) / 2)
    bad = _result()
    bad["losses"]["sample"] = np.array([1.0, 0.0, 10.0, 10.0])
    with pytest.raises(ValueError, match="positive"):
        m.compare(bad)


def test_score_matches_the_evaluation_module():
    m = load_script("scripts/stress_scenarios.py")
    model = load_model(ROOT / "shrinklab" / "weights" / "final.pt")
    spec = {"name": "tiny diversified", "family": "diversified", "p": 8, "n": 30, "hetero": 1.0}
    table = m.score(model, [spec], n_reps=6, seed=1)
    ref = scenarios.evaluate_scenario(
        spec, model, 6, scenarios.scenario_seed(1, "tiny diversified")
    )
    assert math.isclose(
        table.loc["tiny diversified", "prial"], ref["prial"]["learned"], rel_tol=1e-9
    )
    row = table.loc["tiny diversified"]
    assert row["miss_prial"] == (row["prial_diff"] < -row["prial_diff_se"])
    with pytest.raises(ValueError, match="n_reps"):
        m.score(model, [spec], n_reps=1, seed=1)
    names = [s["name"] for s in m.stress_grid()]
    assert len(names) == len(set(names)) == 15  # twelve plus three of 0051
