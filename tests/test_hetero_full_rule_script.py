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


def test_rule_0061_is_a_non_inferiority_test_on_the_folds():
    # grids gain by more than one SE, folds within the margin, the rest level
    good = [_pair(0.1, 0.02, 0.1, 2.0), _pair(-0.2, 0.01, 0.0, 1.8), _pair(0.0, 0.00, 0.2, 2.2)]
    res = rule.over_pairs(good, rule.verdict_0061)
    assert res["adopt_B"]
    # 0059's thresholds on the same pairs fail (no stress gain of half a point)
    assert not rule.over_pairs(good)["adopt_B"]
    # mean + 1 SE of the folds above the margin fails part 1 (mean 0.055: 0.01 % above)
    near = [{**p, "folds_delta": p["folds_delta"] + 0.045} for p in good]
    res = rule.over_pairs(near, rule.verdict_0061)
    assert res["folds_delta"] + res["folds_se"] > rule.FOLD_MARGIN
    assert not res["rule1"] and not res["adopt_B"]
    # grids level (not above one SE) fail part 2
    flat = [{**p, "grids_gain": g} for p, g in zip(good, (0.5, -0.4, 0.1), strict=True)]
    assert not rule.over_pairs(flat, rule.verdict_0061)["rule2"]
    # a validation or stress drop beyond one SE fails parts 3 and 4
    assert not rule.over_pairs([{**p, "valid_delta": -1.0} for p in good], rule.verdict_0061)[
        "rule3"
    ]
    assert not rule.over_pairs([{**p, "stress_gain": -3.0} for p in good], rule.verdict_0061)[
        "rule4"
    ]
