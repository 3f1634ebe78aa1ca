"""scripts/hetero_full_rule.py: decision 0060's combination over seed-set pairs."""

from __future__ import annotations

import math
import statistics

import pytest

from tests._scripts import load_script

rule = load_script("scripts/hetero_full_rule.py")


def _pair(stress: float, folds: float, valid: float, grids: float) -> dict:
    return {"stress_gain": stress, "folds_delta": folds, "valid_delta": valid, "grids_gain": grids}


def test_over_pairs_means_and_ses_match_the_statistics_module():
    pairs = [_pair(1.0, 0.10, -0.5, -0.2), _pair(2.5, -0.05, -1.0, 0.4), _pair(0.4, 0.02, 0.3, 0.1)]
    res = rule.over_pairs(pairs)
    for key, out, se in (
        ("stress_gain", "stress_gain", "stress_se"),
        ("folds_delta", "folds_delta", "folds_se"),
        ("valid_delta", "valid_delta", "valid_se"),
        ("grids_gain", "grids_gain", "grids_se"),
    ):
        v = [p[key] for p in pairs]
        assert res[out] == pytest.approx(statistics.fmean(v), abs=1e-12)
        assert res[se] == pytest.approx(statistics.stdev(v) / math.sqrt(3), abs=1e-12)
    assert res["pairs"] == 3


def test_over_pairs_applies_the_four_parts():
    good = [_pair(1.0, 0.0, -0.5, 0.0), _pair(1.1, 0.01, -0.4, 0.1), _pair(0.9, -0.01, -0.6, -0.1)]
    assert rule.over_pairs(good)["adopt_B"]
    # a stress gain below half a point fails part 1 however small its SE
    low = [{**p, "stress_gain": p["stress_gain"] - 0.6} for p in good]
    assert not rule.over_pairs(low)["rule1"]
    # folds worse by more than one SE (over the pairs) fail part 2
    worse = [{**p, "folds_delta": p["folds_delta"] + 0.2} for p in good]
    res = rule.over_pairs(worse)
    assert not res["rule2"] and not res["adopt_B"]
    # a validation drop beyond 2 points fails part 3
    assert not rule.over_pairs([{**p, "valid_delta": -2.5} for p in good])["rule3"]
    # grids lower by more than one SE fail part 4
    assert not rule.over_pairs([{**p, "grids_gain": p["grids_gain"] - 1.0} for p in good])["rule4"]


def test_roots_must_come_in_pairs(monkeypatch, tmp_path):
    monkeypatch.setattr("sys.argv", ["hetero_full_rule.py", "a", "b", "c", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        rule.main()
