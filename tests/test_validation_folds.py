"""Regime-labelled walk-forward folds, leave-one-family-out, cross-validation summaries."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from _tiny_sets import tiny_set

from shrinklab.data import returns as data
from shrinklab.studies.folds import (
    Fold,
    cross_validate,
    family_folds,
    family_labels,
    leave_one_family_out,
    paired_difference,
    regime_splits,
    select_config,
    summarise_cv,
    synthetic_fit_score,
)
from shrinklab.training.config import TrainConfig

FAMS = np.array(["factor", "toeplitz", "block"])


def _family_set(n=360, seed=0, codes=False):
    s = tiny_set(n, seed=seed)
    rng = np.random.default_rng(seed + 7)
    idx = rng.integers(0, 3, size=n)
    if codes:
        s.family = idx
        s.family_names = tuple(FAMS)
    else:
        s.family = FAMS[idx].tolist()
    return s, FAMS[idx]


@pytest.fixture(scope="module")
def sp500():
    returns = data.load_returns()
    regimes = data.market_regimes(data.load_index_prices())
    return returns, regimes


# ----------------------------------------------------------------- real walk-forward
def test_regime_splits_never_overlap_in_time(sp500):
    returns, regimes = sp500
    index = returns.index
    splits = regime_splits(index, regimes, n_folds=6, val_years=2)
    assert len(splits) == 6
    prev_val_end = None
    for s in splits:
        # validation strictly after training; training is an expanding window from day 0
        assert s.train.max() < s.val.min()
        assert s.train[0] == 0 and np.all(np.diff(s.train) == 1) and np.all(np.diff(s.val) == 1)
        assert index[s.val[-1]] < data.TEST_START
        assert s.train_end == index[s.train[-1]] and s.val_start == index[s.val[0]]
        if prev_val_end is not None:
            assert s.val_start > prev_val_end  # validation blocks are disjoint and ordered
        prev_val_end = s.val_end
        # regime shares: independent count with pandas on the validation dates
        counts = regimes.reindex(index[s.val]).value_counts(normalize=True)
        for code, name in enumerate(data.REGIME_NAMES):
            assert s.regime_share[name] == pytest.approx(counts.get(code, 0.0), abs=1e-12)
        assert s.dominant == data.REGIME_NAMES[int(counts.idxmax())]
    # the folds cover several regimes, so per-regime scores are defined
    assert {s.dominant for s in splits} | {
        n for s in splits for n, v in s.regime_share.items() if v > 0
    } == set(data.REGIME_NAMES)
    # the 2008 crisis block is mostly non-calm
    crisis_fold = next(s for s in splits if s.val_start.year == 2008)
    assert crisis_fold.regime_share["calm"] < 0.5
    # a gap removes the last training days before each block
    gapped = regime_splits(index, regimes, n_folds=6, val_years=2, gap=21)
    for a, b in zip(splits, gapped, strict=True):
        assert b.val.min() - b.train.max() == 22 and a.val.min() - a.train.max() == 1


def test_regime_splits_validation(sp500):
    returns, regimes = sp500
    with pytest.raises(ValueError, match="one code per date"):
        regime_splits(returns.index, regimes.to_numpy()[:10])
    bad = pd.Series(7, index=returns.index)
    with pytest.raises(ValueError, match="regime codes"):
        regime_splits(returns.index, bad)


# --------------------------------------------------------------- synthetic families
@pytest.mark.parametrize("codes", [False, True])
def test_leave_one_family_out_holds_out_exactly_one_family(codes):
    s, labels = _family_set(codes=codes)
    assert list(family_labels(s)) == list(labels)
    folds = leave_one_family_out(s)
    assert [f for f, _, _ in folds] == sorted(FAMS)
    n = len(labels)
    for fam, tr, va in folds:
        assert set(labels[va]) == {fam}
        assert fam not in set(labels[tr])
        assert len(np.intersect1d(tr, va)) == 0
        np.testing.assert_array_equal(np.sort(np.concatenate([tr, va])), np.arange(n))
        np.testing.assert_array_equal(va, np.flatnonzero(labels == fam))
    # every sample is validated exactly once over the folds
    all_va = np.concatenate([va for _, _, va in folds])
    np.testing.assert_array_equal(np.sort(all_va), np.arange(n))


def test_family_folds_subset_rows():
    s, labels = _family_set()
    folds = family_folds(s, families=["toeplitz"])
    assert len(folds) == 1 and folds[0].group == "toeplitz"
    va = np.flatnonzero(labels == "toeplitz")
    np.testing.assert_array_equal(folds[0].valid.features, s.features[va])
    np.testing.assert_array_equal(folds[0].valid.G, s.G[va])
    np.testing.assert_array_equal(folds[0].train.c, s.c[labels != "toeplitz"])


def test_leave_one_family_out_errors():
    s, _ = _family_set()
    with pytest.raises(ValueError, match="no samples"):
        leave_one_family_out(s, families=["lognormal"])
    s.family = ["factor"] * len(s.features)
    with pytest.raises(ValueError, match=">= 2 families"):
        leave_one_family_out(s)
    del s.family
    with pytest.raises(ValueError, match="no 'family'"):
        leave_one_family_out(s)


# ------------------------------------------------------------------ cross-validation
def test_cross_validate_mean_and_standard_error():
    rng = np.random.default_rng(0)
    vals = {f"f{i}": rng.normal(size=20) for i in range(5)}
    folds = [Fold(name=k, train=None, valid=v, group=k[-1]) for k, v in vals.items()]

    def fn(offset, fold):
        m = float(fold.valid.mean()) + offset
        return {"score": m, "maybe": m if fold.name != "f2" else math.nan}

    res = cross_validate(fn, folds, {"a": 0.0, "b": 1.0})
    per = np.array([v.mean() for v in vals.values()])
    for name, off in (("a", 0.0), ("b", 1.0)):
        x = per + off
        assert res.loc[name, "score_mean"] == pytest.approx(x.mean(), abs=1e-12)
        assert res.loc[name, "score_se"] == pytest.approx(x.std(ddof=1) / np.sqrt(5), abs=1e-12)
        assert res.loc[name, "score_min"] == pytest.approx(x.min(), abs=1e-12)
        assert res.loc[name, "n_score"] == 5
        y = np.delete(x, 2)  # the NaN fold is skipped
        assert res.loc[name, "maybe_mean"] == pytest.approx(y.mean(), abs=1e-12)
        assert res.loc[name, "maybe_se"] == pytest.approx(y.std(ddof=1) / 2.0, abs=1e-12)
        assert res.loc[name, "n_maybe"] == 4
    assert len(res.attrs["folds"]) == 10
    assert select_config(res, "score") == "a"
    assert select_config(res, "score", lower_is_better=False) == "b"


def test_paired_difference_against_hand_computation():
    """Fold-paired mean and SE of a − b vs numpy; the fold effect cancels."""
    rng = np.random.default_rng(0)
    fold_effect = rng.normal(0, 10, 9)  # large between-fold spread
    a = fold_effect + rng.normal(-0.3, 0.1, 9)
    b = fold_effect + rng.normal(0.0, 0.1, 9)
    rows = [{"config": "a", "fold": f"f{i}", "group": None, "loss": v} for i, v in enumerate(a)]
    # b's rows in another order: the pairing must go by fold, not by row
    rows += [
        {"config": "b", "fold": f"f{i}", "group": None, "loss": b[i]} for i in range(8, -1, -1)
    ]
    per_fold = pd.DataFrame(rows)
    out = paired_difference(per_fold, "a", "b", "loss")
    d = a - b
    assert out["mean"] == pytest.approx(d.mean(), rel=1e-12)
    assert out["se"] == pytest.approx(d.std(ddof=1) / 3.0, rel=1e-12)
    assert out["n"] == 9 and out["wins"] == int((d < 0).sum())
    # the unpaired SE (of a's mean) is far larger: pairing is what makes 0.3 detectable
    assert out["se"] < 0.1 * a.std(ddof=1) / 3.0
    with pytest.raises(ValueError, match="configuration"):
        paired_difference(per_fold, "a", "c", "loss")
    with pytest.raises(ValueError, match="metric"):
        paired_difference(per_fold, "a", "b", "prial")


def test_select_config_rules():
    per = pd.DataFrame(
        {
            "config": ["steady"] * 3 + ["lucky"] * 3,
            "fold": ["x", "y", "z"] * 2,
            "loss": [1.0, 1.1, 1.2, 0.2, 0.3, 2.5],
        }
    )
    s = summarise_cv(per)
    assert select_config(s, "loss", rule="mean") == "lucky"  # mean 1.0 < 1.1
    assert select_config(s, "loss", rule="mean_se") == "steady"
    assert select_config(s, "loss", rule="worst") == "steady"
    with pytest.raises(ValueError, match="rule"):
        select_config(s, "loss", rule="median")
    with pytest.raises(ValueError, match="no metric"):
        select_config(s, "prial")


def test_synthetic_fit_score_leave_one_family_out(tmp_path):
    s, labels = _family_set(n=300)
    folds = family_folds(s)
    cfg = {
        "train": TrainConfig(epochs=3, batch_size=32, device="cpu", seed=0, lr=3e-3),
        "model": {"hidden_dims": (16, 8)},
    }
    fn = synthetic_fit_score(tmp_path)
    res = cross_validate(fn, folds, {"small": cfg})
    per = res.attrs["folds"]
    assert list(per["group"]) == sorted(FAMS)
    assert np.isfinite(per[["prial", "norm_loss"]].to_numpy()).all()
    # the score is deterministic (seeded init and training)
    again = fn(cfg, folds[0])
    assert again["prial"] == per["prial"].iloc[0]
    # PRIAL is 100 (mean d − mean L) / (mean d − mean L_fsopt): consistent with norm_loss's L
    from shrinklab.core.metrics import quadratic_loss
    from shrinklab.models.network import predict_numpy

    torch.manual_seed(0)
    from shrinklab.models.network import MLShrinkageNetwork
    from shrinklab.training.loop import train

    model = MLShrinkageNetwork(8, 5, hidden_dims=(16, 8))
    train(model, folds[0].train, None, cfg["train"], tmp_path / "ref", resume=False)
    v = folds[0].valid
    w = predict_numpy(model, v.features).intensities
    L = quadratic_loss(w, v.G, v.c, v.d).numpy()
    d, f = np.asarray(v.d), np.asarray(v.loss_fsopt)
    assert per["prial"].iloc[0] == pytest.approx(
        100 * (d.mean() - L.mean()) / (d.mean() - f.mean()), rel=1e-9
    )
    assert per["norm_loss"].iloc[0] == pytest.approx(np.mean(L / d), rel=1e-9)


# ------------------------------------------------------------------- real windows
@pytest.fixture(scope="module")
def small_real_folds(sp500):
    from shrinklab.studies.folds import real_folds

    returns, regimes = sp500
    splits = regime_splits(returns.index, regimes, n_folds=2, val_years=1, test_start="2009-01-01")
    return splits, real_folds(returns, regimes, splits, windows=(60,), step=42, val_step=42)


def test_real_folds_do_not_leak_into_validation(sp500, small_real_folds):
    returns, _ = sp500
    index = returns.index
    splits, folds = small_real_folds
    assert [f.group for f in folds] == [s.dominant for s in splits]
    for s, f in zip(splits, folds, strict=True):
        (tr,), (va,) = f.train, f.valid
        for g in tr:  # realised holding periods of training windows end inside training
            assert (g.positions + tr.horizon - 1).max() <= s.train[-1]
        for g in va:  # validation rebalance dates and holding periods inside the block
            assert g.positions.min() >= s.val[0]
            assert (g.positions + va.horizon - 1).max() <= s.val[-1]
            # the regime of a window is the one known the day before its rebalance date
            codes = _regimes_on(sp500[1], index[g.positions - 1])
            np.testing.assert_array_equal(g.regime.numpy(), codes)


def _regimes_on(regimes, dates):
    return regimes.reindex(dates).to_numpy().astype(np.int64)


def test_windows_by_regime_partitions_windows(small_real_folds):
    from shrinklab.studies.folds import windows_by_regime

    _, folds = small_real_folds
    va = folds[1].valid
    parts = windows_by_regime(va)
    total = sum(len(rw) for rws in parts.values() for rw in rws)
    assert total == sum(len(rw) for rw in va)
    for name, rws in parts.items():
        code = data.REGIME_NAMES.index(name)
        for rw in rws:
            for g in rw:
                assert (g.regime == code).all()
    # the windows are the originals, selected: same first-date realised returns
    full = va[0].full
    for rws in parts.values():
        g = rws[0].full
        i = int(np.flatnonzero(full.positions == g.positions[0])[0])
        torch.testing.assert_close(g.realised[0], full.realised[i], rtol=0, atol=0)


def test_real_fit_score_reports_per_regime_losses(small_real_folds, tmp_path):
    from shrinklab.models.network import MLShrinkageNetwork
    from shrinklab.studies.folds import real_fit_score, windows_by_regime

    _, folds = small_real_folds
    torch.manual_seed(0)
    F = folds[0].valid[0].full.features.shape[1]
    pretrained = MLShrinkageNetwork(F, 5, hidden_dims=(8,))
    fn = real_fit_score(pretrained, tmp_path)
    cfg = {"train": TrainConfig(epochs=2, batch_size=8, lr=1e-3, device="cpu", seed=0)}
    res = cross_validate(fn, folds, {"ft": cfg})
    per = res.attrs["folds"]
    for i, fold in enumerate(folds):
        present = set(windows_by_regime(fold.valid))
        for name in data.REGIME_NAMES:
            v = per[f"loss[{name}]"].iloc[i]
            assert np.isfinite(v) == (name in present)
    assert np.isfinite(per["loss"]).all() and (per["loss"] > 0).all()
    # the pretrained model itself is not modified by fine-tuning a fold
    torch.manual_seed(0)
    ref = MLShrinkageNetwork(F, 5, hidden_dims=(8,))
    for a, b in zip(ref.state_dict().values(), pretrained.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_window_sampling_is_one_set_of_keywords(sp500, small_real_folds):
    """real_folds and walk_forward_finetune take the fields of WindowSampling (one set of
    defaults); a misspelt one is refused before any window is built."""
    from shrinklab.data.real_windows import WindowSampling
    from shrinklab.studies.folds import real_folds
    from shrinklab.training.finetune import walk_forward_finetune

    returns, regimes = sp500
    splits, _ = small_real_folds
    assert WindowSampling().step == 5 and WindowSampling(step=42).val_step == 21
    with pytest.raises(TypeError, match="horizn"):
        real_folds(returns, regimes, splits, windows=(60,), horizn=10)
    with pytest.raises(TypeError, match="horizn"):
        walk_forward_finetune(None, returns, splits, out_dir="unused", horizn=10)
