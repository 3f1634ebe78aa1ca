"""shrinklab.studies.gaussian_move (decision 0073): the candidate built on the bundled
switched model, the maps and the rule's selection and judgement."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from _one_factor import load_bundled

from shrinklab.core.features import extract_features
from shrinklab.core.tail_pretest import gaussian_rows
from shrinklab.data.families import FAMILIES
from shrinklab.models.switched import towards_qis
from shrinklab.studies import gaussian_move as gm
from shrinklab.studies.selection_grid import SELECTION_GRID, WIDE_GRID

bundled = pytest.fixture(scope="module")(load_bundled)


def test_candidate_keeps_every_part_and_moves_only_the_gaussian_rows(bundled):
    rng = np.random.default_rng(2)
    x = torch.cat(
        [extract_features(rng.standard_normal((250, 40))) for _ in range(4)]
        + [extract_features(rng.standard_t(3, size=(250, 40))) for _ in range(4)]
    )
    cand = gm.with_gaussian_move(bundled, 0.5, 2.0, 0.05)
    assert cand.near is bundled.near and cand.far_general is bundled.far_general
    assert cand.stock is bundled.stock and cand.extra == bundled.extra
    rows = torch.as_tensor(gaussian_rows(x, 2.0, 0.05))
    assert rows[:4].any() and not rows[4:].any()
    ref = towards_qis(bundled.predict(x), rows, 0.5)
    torch.testing.assert_close(cand.predict(x).intensities, ref.intensities)
    assert gm.fired_share(cand, x) == pytest.approx(float(rows.double().mean()))
    with pytest.raises(TypeError, match="SwitchedModel"):
        gm.with_gaussian_move(bundled.near, 0.5, 2.0, 0.05)


def test_maps_are_gaussian_or_tailed_and_in_no_grid():
    grid = {(s["family"], s["p"], s["n"]) for s in SELECTION_GRID + WIDE_GRID}
    for s in gm.GAUSSIAN_MAP:
        assert s["family"] in FAMILIES and "df" not in s and s["n"] >= 2 * s["p"]
        assert (s["family"], s["p"], s["n"]) not in grid
    assert all(s.get("df", 0) >= 5 for s in gm.TAILED_MAP)
    names = [s["name"] for s in gm.GAUSSIAN_MAP + gm.TAILED_MAP]
    assert len(set(names)) == len(names)


def _table(**over):
    t = pd.DataFrame({"share": [0.25, 0.5, 0.75], "z": [2.0] * 3, "se": [0.05] * 3,
                      "valid_delta": [-0.1, -0.2, -0.9], "misses": [2, 1, 0],
                      "gain": [0.05, 0.08, 0.1]})  # fmt: skip
    return t.assign(**over)


def test_selection_takes_the_fewest_misses_among_the_admissible():
    best = gm.select_0073(_table(), base_misses=3)
    assert best["share"] == 0.5  # 0.75 has fewer misses but drops the validation worlds 0.9
    tie = gm.select_0073(_table(misses=[1, 1, 1]), base_misses=3)
    assert tie["share"] == 0.5  # ties: the larger gain
    assert gm.select_0073(_table(valid_delta=[-1.0] * 3), 3) is None
    assert gm.select_0073(_table(misses=[3, 3, 3], gain=[-0.1, 0.0, -0.2]), 3) is None


def _gains(mean: float, k: int = 4) -> pd.DataFrame:
    return pd.DataFrame({"rep": range(k), "scenario": list("abcd")[:k],
                         "prial_gain_B_minus_A": mean, "se": 0.02})  # fmt: skip


def _vols(family: str, base: float, cand: float) -> pd.DataFrame:
    rows = []
    for k in range(3):
        for w in (60, 120, 250):
            noise = 0.01 * ((k * 7 + w) % 5)
            for est, v in (("final", base), ("switch", cand)):
                rows.append({"family": family, "fold": f"{family}{k}", "window": w,
                             "estimator": est, "ann_vol": v + noise})  # fmt: skip
    return pd.DataFrame(rows)


def _judge(**over):
    parts = {"gaussian": _gains(0.1), "gaussian_misses": (3, 1), "tailed": _gains(0.0),
             "grids": _gains(0.0), "grid_fails": (0, 0), "stress": _gains(0.0),
             "folds": _vols("halves", 15.0, 15.0), "funds": _vols("funds", 15.0, 15.0),
             "french": _vols("french", 14.0, 14.0), "valid": (-0.1, 0.05)}  # fmt: skip
    return gm.rule_0073(**(parts | over))


def test_rule_adopts_only_when_every_part_holds():
    assert _judge()["adopt"]
    for over, part in (
        ({"gaussian_misses": (3, 3)}, "rule1_gaussian"),
        ({"gaussian": _gains(0.01)}, "rule1_gaussian"),  # gain within one SE
        ({"tailed": _gains(-0.2)}, "rule2_tailed"),
        ({"grid_fails": (0, 1)}, "rule3_grids"),
        ({"grids": _gains(-0.2)}, "rule3_grids"),
        ({"stress": _gains(-0.2)}, "rule4_stress"),
        ({"french": _vols("french", 14.0, 14.1)}, "rule5_real"),
        ({"funds": _vols("funds", 15.0, 15.05)}, "rule5_real"),
        ({"valid": (-0.6, 0.1)}, "rule6_valid"),
    ):
        got = _judge(**over)
        assert not got[part] and not got["adopt"], over


def test_the_deployed_estimator_moves_the_hedge_on_a_large_gaussian_sample(bundled, tmp_path):
    """End to end (scikit-learn estimator, NumPy fast path): the bundled model carries
    decision 0073's step; on a Gaussian sample of 200 assets over 400 days its target
    weights are those of the same model without the step after :func:`towards_qis`, and on
    the same sample with Student-t(4) returns the two agree."""
    from shrinklab.core.features import FEATURE_NAMES
    from shrinklab.core.targets import TARGET_NAMES
    from shrinklab.models.network import ShrinkageOutput
    from shrinklab.models.registry import save_model
    from shrinklab.sklearn import MLShrinkageCovariance

    assert bundled.gauss_share > 0 and bundled.config["gaussian"]["share"] == bundled.gauss_share
    plain = gm.with_gaussian_move(bundled, 0.0, bundled.gauss_z, bundled.gauss_se)
    path = save_model(tmp_path / "plain.pt", plain, FEATURE_NAMES, TARGET_NAMES,
                      extra=dict(bundled.extra))  # fmt: skip
    rng = np.random.default_rng(21)
    gauss = rng.standard_normal((400, 200)) * 0.01
    heavy = rng.standard_t(4, size=(400, 200)) * 0.01
    for X, moved in ((gauss, True), (heavy, False)):
        got = MLShrinkageCovariance().fit(X)
        ref = MLShrinkageCovariance(str(path)).fit(X)
        w = torch.tensor([[ref.target_weights_[k] for k in TARGET_NAMES]], dtype=torch.float64)
        out = ShrinkageOutput(torch.tensor([ref.shrinkage_], dtype=torch.float64), w,
                              torch.zeros(1, dtype=torch.float64))  # fmt: skip
        expected = towards_qis(out, torch.tensor([moved]), bundled.gauss_share).weights[0]
        np.testing.assert_allclose(
            [got.target_weights_[k] for k in TARGET_NAMES], expected.numpy(), atol=1e-6
        )
        assert got.shrinkage_ == pytest.approx(ref.shrinkage_, abs=1e-9)
        if moved:  # a move that changes something: the identity weight was not zero
            assert ref.target_weights_["identity"] > 1e-3
            assert got.target_weights_["identity"] < ref.target_weights_["identity"]
