"""Input validation (shrinklab.core.validation) and bad-input behaviour of the public estimators."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from shrinklab.core import estimators as est
from shrinklab.core.targets import shrinkage_targets
from shrinklab.core.validation import as_matrices, as_returns, constant_columns, demean, unbatch

ESTIMATORS = [
    est.sample_covariance,
    est.ledoit_wolf,
    est.oas,
    est.lw_constant_correlation,
    est.lw_single_factor,
    est.qis,
]


def _returns(n=30, p=6, seed=0, B=None):
    rng = np.random.default_rng(seed)
    shape = (n, p) if B is None else (B, n, p)
    return rng.standard_normal(shape) * 0.01


def test_as_returns_shapes_and_types():
    X = _returns()
    t, batched = as_returns(X)
    assert t.shape == (1, 30, 6) and not batched and t.dtype == torch.float64
    t3, b3 = as_returns(_returns(B=4))
    assert t3.shape == (4, 30, 6) and b3
    # pandas and float32 torch give the same float64 values
    tp, _ = as_returns(pd.DataFrame(X))
    tt, _ = as_returns(torch.tensor(X, dtype=torch.float32))
    assert torch.equal(tp, t)
    assert tt.dtype == torch.float64
    assert torch.allclose(tt, t, rtol=1e-6, atol=1e-9)
    # integer input is accepted and converted
    ti, _ = as_returns(np.arange(12).reshape(4, 3))
    assert ti.dtype == torch.float64
    assert unbatch(t, False).shape == (30, 6) and unbatch(t3, True).shape == (4, 30, 6)
    assert unbatch(None, False) is None
    t32, _ = as_returns(X, dtype=torch.float32)
    assert t32.dtype == torch.float32
    with pytest.raises(ValueError, match="floating"):
        as_returns(X, dtype=torch.int64)


@pytest.mark.parametrize(
    "bad, pattern",
    [
        (np.ones(10), "2-D"),
        (np.float64(3.0), "2-D"),
        (np.ones((2, 3, 4, 5)), "4-D"),
        (np.ones((1, 5)), "at least 2 observations"),
        (np.ones((2, 1, 5)), "at least 2 observations"),
        (np.ones((5, 0)), "at least 1 asset"),
        (np.ones((0, 5, 3)), "empty batch"),
        (np.array([["a", "b"], ["c", "d"]]), "numeric"),
        (np.ones((4, 3), dtype=bool), "numeric"),
        (np.ones((4, 3), dtype=complex), "real"),
    ],
)
def test_as_returns_rejects(bad, pattern):
    with pytest.raises(ValueError, match=pattern):
        as_returns(bad)


def test_nan_and_inf_are_named_with_count_and_location():
    X = _returns()
    X[3, 2] = np.nan
    X[5, 1] = np.nan
    X[7, 0] = np.inf
    with pytest.raises(ValueError, match=r"2 NaN and 1 inf \(first at index \(0, 3, 2\)\)"):
        as_returns(X)
    X3 = _returns(B=3)
    X3[2, 4, 1] = -np.inf
    with pytest.raises(ValueError, match=r"0 NaN and 1 inf \(first at index \(2, 4, 1\)\)"):
        as_returns(X3)


@pytest.mark.parametrize("f", ESTIMATORS, ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    "bad, pattern",
    [
        (np.full((10, 3), np.nan), "NaN"),
        (np.r_[np.ones((1, 3)), np.full((1, 3), np.inf)], "inf"),
        (np.ones((1, 3)), "at least 2 observations"),
        (np.ones(10), "2-D"),
    ],
)
def test_public_estimators_raise_value_error(f, bad, pattern):
    with pytest.raises(ValueError, match=pattern):
        f(bad)


def test_targets_and_oracles_raise_value_error():
    X = _returns()
    X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        shrinkage_targets(X)
    with pytest.raises(ValueError, match="NaN"):
        est.oracle_weights(X, np.eye(6))
    Xok = _returns()
    with pytest.raises(ValueError, match="p = 6"):
        est.fsopt(Xok, np.eye(5))
    with pytest.raises(ValueError, match="symmetric"):
        est.fsopt(Xok, np.triu(np.ones((6, 6))))
    with pytest.raises(ValueError, match="batch size"):
        est.oracle_weights(_returns(B=3), np.stack([np.eye(6)] * 2))
    with pytest.raises(ValueError, match="unknown target"):
        shrinkage_targets(Xok, names=("identity", "nope"))


def test_as_matrices_broadcast_and_device():
    like = torch.zeros(4, 10, 3, dtype=torch.float64)
    M = as_matrices(np.eye(3), like=like)
    assert M.shape == (4, 3, 3) and M.dtype == torch.float64
    with pytest.raises(ValueError, match="square"):
        as_matrices(np.ones((3, 2)), like=like)
    bad = np.eye(3)
    bad[1, 1] = np.inf
    with pytest.raises(ValueError, match="inf"):
        as_matrices(bad, like=like)


def test_demean_makes_constant_columns_exactly_zero():
    X = _returns(n=7, p=4)
    X[:, 1] = 0.1  # mean of seven 0.1's is not exactly 0.1 in floating point
    X[:, 3] = -3.7
    t, _ = as_returns(X)
    assert constant_columns(t).tolist() == [[False, True, False, True]]
    Xc = demean(t)
    assert torch.all(Xc[..., 1] == 0) and torch.all(Xc[..., 3] == 0)
    assert torch.allclose(Xc.mean(-2), torch.zeros(1, 4, dtype=torch.float64), atol=1e-15)


def test_p_greater_than_n_is_allowed():
    X = _returns(n=8, p=20)
    for f in ESTIMATORS:
        C = f(X)
        assert C.shape == (20, 20)
        assert torch.isfinite(C).all()
