"""shrinklab.studies.qis_transfer: decision 0064's wrapper and rule."""

import pickle

import numpy as np
import pandas as pd
import pytest
import torch

from shrinklab.core.targets import TARGET_NAMES
from shrinklab.models.network import ShrinkageOutput
from shrinklab.studies import qis_transfer as qt


def test_moved_intensities_by_hand():
    # order: identity, diagonal, constant_correlation, single_factor, qis
    assert TARGET_NAMES[qt.QIS] == "qis"
    w = torch.tensor([[0.1, 0.0, 0.2, 0.1, 0.3], [0.4, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    out = qt.moved_intensities(w, torch.tensor([0.5, 0.0]))
    expected = torch.tensor(
        [[0.05, 0.0, 0.1, 0.05, 0.5], [0.4, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64
    )
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-15)
    torch.testing.assert_close(out.sum(1), w.sum(1))
    all_moved = qt.moved_intensities(w, torch.ones(2))
    assert float(all_moved[:, : qt.QIS].abs().max()) == 0.0
    with pytest.raises(ValueError, match="share"):
        qt.moved_intensities(w, torch.tensor([1.5, 0.0]))
    with pytest.raises(ValueError, match="intensities"):
        qt.moved_intensities(w[:, :3], torch.zeros(2))


class _Gate(torch.nn.Module):
    families = ["sp500", "diversified"]

    def forward(self, x):  # P(diversified) = the first feature
        return torch.stack([1 - x[:, 0], x[:, 0]], dim=1)


class _Model:
    gate = _Gate()
    extra = {"volatility_timing": 0.5}

    def _as_input(self, features):
        return torch.as_tensor(features, dtype=torch.float32)

    def predict(self, features, regime=None):
        n = len(features)
        return ShrinkageOutput(
            torch.full((n,), 0.6), torch.tensor([[0.25, 0.0, 0.25, 0.0, 0.5]] * n), torch.zeros(n)
        )


def test_qis_transfer_follows_the_gate():
    m = qt.QisTransfer(_Model(), 0.5)
    x = np.array([[0.0], [1.0], [0.4]])
    out = m.predict(x)
    w = out.intensities
    base = torch.tensor([0.15, 0.0, 0.15, 0.0, 0.3], dtype=torch.float64)
    torch.testing.assert_close(w[0], base)  # P(diversified) = 0: unchanged
    torch.testing.assert_close(
        w[1], torch.tensor([0.075, 0.0, 0.075, 0.0, 0.45], dtype=torch.float64)
    )
    torch.testing.assert_close(w[2, qt.QIS], torch.tensor(0.3 + 0.2 * 0.3, dtype=torch.float64))
    torch.testing.assert_close(out.alpha, torch.full((3,), 0.6, dtype=torch.float64))
    assert m.extra == {"volatility_timing": 0.5}  # the model's attributes pass through
    with pytest.raises(ValueError, match="lam"):
        qt.QisTransfer(_Model(), 1.5)
    # the backtest's worker processes get it pickled
    back = pickle.loads(pickle.dumps(m))
    torch.testing.assert_close(back.predict(x).intensities, w)


def test_fund_universes_are_fresh_and_pre_test():
    us = qt.fund_universes(2165)
    assert [u.family for u in us].count("funds") == 9 and len(us) == 12
    assert len({u.name for u in us}) == 12
    assert all(u.returns.index.max() < pd.Timestamp("2016-01-01") for u in us)
    assert us[0].returns.shape[1] == 6 and us[-1].returns.shape[1] == 15
    other = qt.fund_universes(2166)
    assert not np.allclose(us[0].returns.to_numpy(), other[0].returns.to_numpy())


def _rows(family, folds, vols):
    return pd.DataFrame(
        [{"family": family, "fold": f, "window": w, "estimator": e, "ann_vol": v}
         for (f, w, e), v in zip(folds, vols, strict=True)]
    )  # fmt: skip


def test_rule_0064_by_hand():
    keys = [(f"u{i}", 60, e) for i in range(3) for e in ("final", "transfer")]
    funds = _rows("funds", keys, [10.0, 9.9, 10.0, 9.8, 10.0, 10.0])  # −1, −2, 0 %: −1 ± 0.58
    fk = [("a", w, e) for w in (60, 120) for e in ("final", "transfer", "qis", "oas")]
    folds = _rows("etf", fk, [9.0, 9.0, 9.5, 9.6, 9.0, 9.25, 9.2, 9.3])  # 120: 9.25 > 9.2
    french = _rows("french", [("c", 36, "final"), ("c", 36, "transfer"), ("d", 36, "final"),
                              ("d", 36, "transfer")], [10.0, 10.0, 10.0, 10.0])  # fmt: skip
    grids = pd.DataFrame({"final": [80.0, 90.0], "transfer": [79.8, 89.6]})
    r = qt.rule_0064(funds, folds, french, grids)
    assert r["funds_rel_vol_pct"] == pytest.approx(-1.0)
    assert r["funds_rel_vol_se"] == pytest.approx(1 / np.sqrt(3))
    assert r["rule1_funds"] and r["rule3_french"] and r["rule4_grids"]
    assert r["folds_new_misses"] == ["etf 120"] and not r["rule2_folds"] and not r["adopt"]
    assert r["grids_prial_drop"] == pytest.approx(0.3)
    ok = folds.copy()
    ok.loc[(ok.window == 120) & (ok.estimator == "transfer"), "ann_vol"] = 9.15
    assert qt.rule_0064(funds, ok, french, grids)["adopt"]
    worse = grids.assign(transfer=[79.0, 89.0])
    assert not qt.rule_0064(funds, ok, french, worse)["rule4_grids"]


def test_fold_parts_by_hand():
    from shrinklab.studies.fold_parts import estimator_vols, new_misses, relative_vols

    fk = [("a", w, e) for w in (60, 120) for e in ("final", "cand", "qis", "oas")]
    rows = _rows("etf", fk, [9.0, 9.0, 9.5, 9.6, 9.0, 9.25, 9.2, 9.3])
    assert estimator_vols(rows, "qis").tolist() == [9.5, 9.2]
    assert relative_vols(rows, "cand", "final").round(10).tolist() == [0.0, round(25 / 9, 10)]
    assert new_misses(rows, "final", "cand") == (2, ["etf 120"])  # final 9.0 <= best at both
    assert new_misses(rows, "oas", "cand") == (0, [])  # oas is above the best (qis) at both
