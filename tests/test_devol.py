"""shrinklab.studies.devol (decision 0076): the devolatilised candidate on the bundled
switched model, the multi-scale universes, the map and the rule's selection and
judgement."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from _one_factor import load_bundled
from test_gaussian_move import _gains, _vols

from shrinklab.data.families import HETERO_FAMILIES
from shrinklab.data.universes import Universe
from shrinklab.evaluation import backtest
from shrinklab.studies import devol

bundled = pytest.fixture(scope="module")(load_bundled)


def test_candidate_devolatilises_only_the_wide_spread_windows(bundled):
    """Windows with a narrow spread get the bundled model's estimate exactly; a window
    with a wide one gets ``D Σ̂(X D⁻¹) D``, which makes it scale-equivariant: rescaling
    its assets rescales the estimate (checked against an independent rescaling)."""
    rng = np.random.default_rng(4)
    X = torch.as_tensor(rng.standard_normal((3, 120, 10)) * 0.01)
    X[1, :, :5] *= 0.05  # volatilities 20 times apart: spread about 3
    spread = devol.spread_of(X)
    assert spread[1] > 2.0 and spread[0] < 0.5 and spread[2] < 0.5
    base = backtest.learned_estimator(bundled)(X)
    cand = devol.Devolatilised(bundled, 1.5)
    out = cand(X)
    torch.testing.assert_close(out[[0, 2]], base[[0, 2]], atol=0, rtol=0)
    sd = X[1].std(dim=0)
    ref = backtest.learned_estimator(bundled)((X[1] / sd)[None])[0]
    torch.testing.assert_close(out[1], sd[:, None] * ref * sd[None, :])
    assert float((out[1] - base[1]).abs().max() / base[1].abs().max()) > 1e-3
    scale = torch.linspace(0.5, 4.0, 10, dtype=torch.float64)
    again = cand((X[1] * scale)[None])[0]  # still wide: the same standardised returns
    torch.testing.assert_close(again, scale[:, None] * out[1] * scale[None, :])
    with pytest.raises(ValueError, match="finite"):
        devol.Devolatilised(bundled, float("nan"))


def test_deleveraged_scales_the_same_half_for_every_leverage():
    idx = pd.bdate_range("2010-01-01", periods=50)
    frame = pd.DataFrame(np.random.default_rng(0).standard_normal((50, 7)), index=idx)
    u = Universe("funds", "funds p=7", frame, idx[10])
    out = devol.deleveraged([u], seed=3)
    assert [v.family for v in out] == ["funds x0.1", "funds x0.25"]
    ratio = [(v.returns / frame).iloc[0].round(6) for v in out]
    assert sorted(ratio[0].unique()) == [0.1, 1.0] and int((ratio[0] == 0.1).sum()) == 3
    assert list(ratio[0] == 0.1) == list(ratio[1] == 0.25)
    assert out[0].start == u.start and out[0].returns.index.equals(idx)


def test_the_map_is_inside_the_training_range_and_in_no_grid():
    for s in devol.HETERO_MAP:
        assert s["family"] in HETERO_FAMILIES and s["hetero"] <= 0.8
    names = [s["name"] for s in devol.HETERO_MAP]
    assert len(set(names)) == len(names) == 14


def test_selection_takes_the_lowest_multi_scale_volatility_among_the_admissible():
    t = pd.DataFrame({"threshold": [1.0, 1.5, 2.0], "multi": [-5.0, -3.0, -3.0],
                      "map_gain": [-2.0, 0.1, 0.2], "map_se": [1.0, 0.5, 0.5]})  # fmt: skip
    assert devol.select_0076(t)["threshold"] == 2.0  # 1.0 loses on the map; tie: higher t
    assert devol.select_0076(t.assign(multi=[-5.0, 0.0, 0.1])) is None
    assert devol.select_0076(t.assign(map_gain=-3.0)) is None


def _judge(**over):
    parts = {"multi": _vols("funds x0.1", 1.0, 0.9), "folds": _vols("halves", 15.0, 15.0),
             "funds": _vols("funds", 15.0, 15.0), "french": _vols("french", 14.0, 14.0),
             "grids": _gains(0.0), "grid_fails": (0, 0), "stress": _gains(0.0),
             "hetero": _gains(0.0)}  # fmt: skip
    return devol.rule_0076(**(parts | over))


def test_rule_adopts_only_when_every_part_holds():
    assert _judge()["adopt"]
    for over, part in (
        ({"multi": _vols("funds x0.1", 1.0, 1.0)}, "rule1_multi"),
        ({"folds": _vols("halves", 15.0, 15.05)}, "rule2_real"),
        ({"french": _vols("french", 14.0, 14.1)}, "rule2_real"),
        ({"grid_fails": (0, 1)}, "rule3_grids"),
        ({"grids": _gains(-0.2)}, "rule3_grids"),
        ({"stress": _gains(-0.2)}, "rule4_stress"),
        ({"hetero": _gains(-0.2)}, "rule5_hetero"),
    ):
        got = _judge(**over)
        assert not got[part] and not got["adopt"], over
