"""shrinklab.studies.factor_sole (decision 0075, not adopted): the candidate built on the
bundled switched model, the factor map and the rule's selection and judgement."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from _one_factor import load_bundled
from test_gaussian_move import _gains, _vols

from shrinklab.core.features import extract_features
from shrinklab.evaluation.scenarios import DEFAULT_GRID
from shrinklab.studies import factor_sole as fs
from shrinklab.studies.selection_grid import SELECTION_GRID, WIDE_GRID

bundled = pytest.fixture(scope="module")(load_bundled)


def test_candidate_serves_the_factor_expert_alone_where_the_gate_is_sure(bundled):
    """Rows where the gate's P(factor) > t (p/n ≤ 4) get the factor expert's intensities
    exactly; every other row is the bundled model's."""
    from shrinklab.evaluation.scenarios import make_scenario

    _, X = make_scenario({"family": "factor", "p": 60, "n": 60, "n_factors": 3}, 24, 5)
    rng = np.random.default_rng(3)
    x = torch.cat([extract_features(X), extract_features(rng.standard_normal((8, 250, 20)))])
    cand = fs.with_factor_sole(bundled, 0.5)
    assert cand.far_general is bundled.far_general and cand.extra == bundled.extra
    assert cand.near.general is bundled.near.general and cand.near.gate is bundled.near.gate
    near = bundled.near
    with torch.no_grad():
        p_f = near.gate(x.float())[:, near.gate.families.index("factor")].double()
    ratio = x[:, 0].double() <= math.log(fs.IN_RANGE)  # log_p_over_n is the first feature
    sure = (p_f > 0.5) & ratio & ~bundled.is_far(x)
    assert 0 < int(sure.sum()) < len(x)  # both branches are exercised
    got = cand.predict(x).intensities.double()
    base = bundled.predict(x).intensities.double()
    expert = near.expert_map()["factor"].predict(x).intensities.double()
    torch.testing.assert_close(got[sure], expert[sure], atol=1e-6, rtol=0)
    torch.testing.assert_close(got[~sure & ~bundled.is_far(x)], base[~sure & ~bundled.is_far(x)])
    assert float((expert - base)[sure].abs().max()) > 1e-4
    assert fs.sole_share(cand, x) > 0 and fs.sole_share(bundled, x) == 0.0
    with pytest.raises(TypeError, match="SwitchedModel"):
        fs.with_factor_sole(bundled.near, 0.5)


def _key(s):
    return (s["family"], s["p"], s["n"], s.get("n_factors", 3), s.get("df"))


def test_the_map_is_factor_worlds_in_no_grid():
    """No scenario of the map is one of the selection, wide or public grids' (family,
    size, number of factors and tails)."""
    grid = {_key(s) for s in SELECTION_GRID + WIDE_GRID + list(DEFAULT_GRID)}
    for s in fs.FACTOR_MAP:
        assert s["family"] == "factor" and s["p"] / s["n"] <= fs.IN_RANGE
        assert _key(s) not in grid
    names = [s["name"] for s in fs.FACTOR_MAP]
    assert len(set(names)) == len(names) == 14


def test_selection_takes_the_largest_gain_among_the_admissible():
    t = pd.DataFrame({"threshold": [0.5, 0.6, 0.7], "valid_delta": [-0.9, -0.2, -0.1],
                      "gain": [1.0, 0.6, 0.6]})  # fmt: skip
    assert fs.select_0075(t)["threshold"] == 0.7  # 0.5 drops the validation worlds; tie: higher t
    assert fs.select_0075(t.assign(valid_delta=-1.0)) is None
    assert fs.select_0075(t.assign(gain=[0.0, -0.1, 0.0])) is None


def _judge(**over):
    parts = {"factor": _gains(0.1), "factor_misses": (1, 1), "grids": _gains(0.0),
             "grid_fails": (0, 0), "stress": _gains(0.0),
             "folds": _vols("halves", 15.0, 15.0), "funds": _vols("funds", 15.0, 15.0),
             "french": _vols("french", 14.0, 14.0), "valid": (-0.1, 0.05)}  # fmt: skip
    return fs.rule_0075(**(parts | over))


def test_rule_adopts_only_when_every_part_holds():
    assert _judge()["adopt"]
    for over, part in (
        ({"factor_misses": (1, 2)}, "rule1_factor"),
        ({"factor": _gains(0.01)}, "rule1_factor"),  # gain within one SE
        ({"grid_fails": (0, 1)}, "rule2_grids"),
        ({"grids": _gains(-0.2)}, "rule2_grids"),
        ({"stress": _gains(-0.2)}, "rule3_stress"),
        ({"folds": _vols("halves", 15.0, 15.05)}, "rule4_real"),
        ({"french": _vols("french", 14.0, 14.1)}, "rule4_real"),
        ({"valid": (-0.6, 0.1)}, "rule5_valid"),
    ):
        got = _judge(**over)
        assert not got[part] and not got["adopt"], over
