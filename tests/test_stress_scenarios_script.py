"""scripts/stress_scenarios.py: its two measures by hand, and on a small scenario the
PRIAL it reports equals the evaluation module's."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
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


def test_loss_relative_to_the_best_classical_by_hand():
    m = load_script("scripts/stress_scenarios.py")
    # learned: (0.5 + 0.5 + 10 + 10) / 4; Ledoit–Wolf (the best by PRIAL): 0.9 · 22 / 4
    assert m.compare(_result())["loss_vs_best"] == pytest.approx(5.25 / 4.95)


def test_map_specs_cover_the_grid_and_reject_bad_input():
    m = load_script("scripts/stress_scenarios.py")
    specs = m.map_specs("toeplitz", "rho", [0.1, 0.3], [50, 100], [40, 100, 200])
    assert len(specs) == 12 and len({s["name"] for s in specs}) == 12
    assert specs[0] == {"name": "toeplitz rho=0.1 p50 n40", "family": "toeplitz", "p": 50,
                        "n": 40, "rho": 0.1}  # fmt: skip
    assert {(s["rho"], s["p"], s["n"]) for s in specs} == {
        (r, p, n) for r in (0.1, 0.3) for p in (50, 100) for n in (40, 100, 200)
    }
    with pytest.raises(ValueError, match="unknown family"):
        m.map_specs("toeplitzz", "rho", [0.1], [50], [40])
    with pytest.raises(ValueError, match="at least one values"):
        m.map_specs("toeplitz", "rho", [], [50], [40])
    with pytest.raises(ValueError, match="at least 2"):
        m.map_specs("toeplitz", "rho", [0.1], [1], [40])
    with pytest.raises(ValueError, match="keyword"):
        m.map_specs("toeplitz", "rho=1", [0.1], [50], [40])


def test_map_table_places_each_scenario_and_marks_the_misses():
    m = load_script("scripts/stress_scenarios.py")
    specs = m.map_specs("toeplitz", "rho", [0.1, 0.3], [50], [40, 100])
    ratios = [1.5, 1.1, 0.9, 1.0]  # in the order of specs: (0.1, 40), (0.1, 100), (0.3, 40), ...
    table = pd.DataFrame(
        {"loss_vs_best": ratios, "miss_prial": [True, False, False, False]},
        index=[s["name"] for s in specs],
    )
    grid = m.map_table(table, specs, "rho")
    assert list(grid.columns) == ["p50 n40", "p50 n100"] and list(grid.index) == [0.1, 0.3]
    assert grid.loc[0.1, "p50 n40"] == 1.5 and grid.loc[0.3, "p50 n40"] == 0.9
    assert grid.loc[0.1, "p50 n100"] == 1.1 and grid.loc[0.3, "p50 n100"] == 1.0
    text = m.format_map(table, specs, "rho")
    assert "1.50*" in text and text.count("*") == 1


def test_map_from_the_command_line(tmp_path, capsys):
    m = load_script("scripts/stress_scenarios.py")
    model = str(ROOT / "shrinklab" / "weights" / "final.pt")
    png = tmp_path / "map.png"
    m.main([model, "--map", "toeplitz", "--param", "rho=0.2,0.5", "--p", "8", "--n", "10,30",
            "--n-reps", "4", "--seed", "3", "--plot", str(png)])  # fmt: skip
    out = capsys.readouterr().out
    assert "toeplitz rho=0.2 p8 n10" in out and "p8 n30" in out
    assert png.stat().st_size > 0
    with pytest.raises(SystemExit):
        m.main([model, "--param", "rho=0.2"])  # --param without --map
    with pytest.raises(SystemExit):
        m.main([model, "--map", "toeplitz"])  # --map without --param
