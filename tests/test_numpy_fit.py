"""The estimator's NumPy fit (shrinklab.core.xp) against the torch path of the same code:
sample statistics, features, intensities and covariance on several (p, n), p > n, p = 2,
heavy tails and a constant column."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shrinklab import sklearn as sk
from shrinklab.core.features import features_of
from shrinklab.core.sample_stats import sample_stats
from shrinklab.core.targets import TARGET_NAMES
from shrinklab.models import estimate

CASES = [
    (20, 60, None, False),
    (2, 30, None, False),
    (50, 30, None, False),
    (40, 41, 3.0, False),
    (8, 100, 2.5, False),
    (12, 40, None, True),
    (30, 20, None, True),
]


def _returns(p: int, n: int, df: float | None, const: bool, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed + p + n)
    z = rng.standard_t(df, size=(n, p)) if df else rng.standard_normal((n, p))
    X = 0.01 * (z @ (rng.normal(size=(p, p)) / np.sqrt(p) + np.eye(p))) + 0.001
    if const:
        X[:, 1] = 0.02
    return X


def _rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


@pytest.mark.parametrize("p,n,df,const", CASES)
def test_numpy_statistics_and_features_equal_the_torch_path(p, n, df, const):
    X = _returns(p, n, df, const)
    with np.errstate(divide="ignore", invalid="ignore"):
        sn = sample_stats(X, differences=True, numpy=True)
        fn = features_of(sn)
    st = sample_stats(torch.from_numpy(X), differences=True)
    ft = features_of(st).numpy()
    assert isinstance(fn, np.ndarray) and fn.shape == ft.shape
    assert _rel(sn.S, st.S.numpy()) <= 1e-13
    assert _rel(sn.D, st.D.numpy()) <= 1e-12  # the five targets minus S (QIS included)
    np.testing.assert_allclose(fn, ft, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("p,n,df,const", CASES)
def test_numpy_fit_equals_the_torch_estimate(p, n, df, const):
    X = _returns(p, n, df, const)
    model = sk.MLShrinkageCovariance.from_pretrained("final").model_
    ref = sk.ml_shrinkage_estimate(model, X)  # the torch path
    est = sk.MLShrinkageCovariance.from_pretrained("final").fit(X)
    assert _rel(est.covariance_, ref.covariance) <= 1e-12
    assert abs(est.shrinkage_ - ref.alpha) <= 1e-12
    np.testing.assert_allclose(est.intensities_, ref.alpha * ref.weights, atol=1e-12)
    np.testing.assert_allclose(est.features_, ref.features, rtol=1e-10, atol=1e-12)
    assert list(est.target_weights_) == list(ref.target_names)
    if const:
        assert np.all(est.covariance_[1] == 0)


def test_numpy_workspace_is_the_fits_buffer():
    X = _returns(6, 30, None, False)
    est = sk.MLShrinkageCovariance.from_pretrained("final").fit(X)
    buf = estimate._WORKSPACE.np_buf
    assert isinstance(buf, np.ndarray) and buf.shape == (1, len(TARGET_NAMES), 6, 6)
    assert est.covariance_.shape == (6, 6)


def test_numpy_shim_ops_equal_torch_ops():
    """The NumPy operations of shrinklab.core.xp that are not plain NumPy calls against
    the torch calls they stand for."""
    from shrinklab.core.xp import NUMPY, TORCH

    rng = np.random.default_rng(3)
    x = np.sort(rng.standard_normal((3, 7)), axis=-1)
    xt = torch.from_numpy(x)
    q = (0.05, 0.25, 0.5, 0.75, 0.95)
    np.testing.assert_allclose(
        NUMPY.quantile_sorted(x, q, x), TORCH.quantile_sorted(xt, q, xt).numpy(), rtol=0, atol=1e-15
    )
    y = rng.standard_normal((4, 6))
    y[0, [1, 3]] = np.nan
    y[1, :] = np.nan
    y[2, :5] = np.nan
    np.testing.assert_array_equal(
        NUMPY.nanmedian_lower(y), TORCH.nanmedian_lower(torch.from_numpy(y)).numpy()
    )
    z = np.array([np.nan, np.inf, -np.inf, 1.5])
    np.testing.assert_array_equal(
        NUMPY.nan_to_num(z, nan=0.0), TORCH.nan_to_num(torch.from_numpy(z), nan=0.0).numpy()
    )
    num, den = rng.standard_normal((2, 5)), np.array([[0.0, 1.0, -2.0, 0.0, 3.0]] * 2)
    np.testing.assert_array_equal(
        NUMPY.safe_div(num, den),
        TORCH.safe_div(torch.from_numpy(num), torch.from_numpy(den)).numpy(),
    )
    np.testing.assert_array_equal(
        NUMPY.mean(y[3:], -1, keepdim=True), y[3:].mean(-1, keepdims=True)
    )
    cols = [rng.standard_normal(3) for _ in range(4)]
    np.testing.assert_array_equal(NUMPY.stack(cols, -1), np.stack(cols, axis=-1))
    e = np.array([3.0, -1100.0])
    v = np.array([[[0.75]], [[0.75]]])
    np.testing.assert_array_equal(
        NUMPY.ldexp(v, e[:, None, None]), np.ldexp(v, e.astype(int)[:, None, None])
    )


def test_numpy_shim_reductions_and_diagonal_writes():
    """The NumPy shim's sums over an axis of a 3-D array (products with ones) equal
    NumPy's reduction to round-off (1e-15 of the sum of |x|), its broadcast safe_div
    equals the torch one, and its in-place diagonal writes (a strided view) equal
    fancy-index writes exactly, for contiguous and strided matrices."""
    from shrinklab.core.xp import NUMPY, TORCH

    rng = np.random.default_rng(5)
    for shape in [(7, 250, 20), (1, 60, 3), (2, 5, 1), (3, 1, 4)]:
        x = rng.standard_normal(shape)
        for dim in (0, 1, 2, -2, -1, (-2, -1)):
            for keep in (False, True):
                ref = x.sum(dim, keepdims=keep)
                got = NUMPY.sum(x, dim, keep)
                assert got.shape == ref.shape
                tol = 1e-15 * np.abs(x).sum(dim, keepdims=keep).max()
                np.testing.assert_allclose(got, ref, rtol=0, atol=tol)
                np.testing.assert_allclose(
                    NUMPY.mean(x, dim, keep), x.mean(dim, keepdims=keep), rtol=0, atol=tol
                )
    num, den = rng.standard_normal((3, 4)), np.array([[0.0], [2.0], [-1.0]])
    np.testing.assert_array_equal(
        NUMPY.safe_div(num, den),
        TORCH.safe_div(torch.from_numpy(num), torch.from_numpy(den)).numpy(),
    )
    D = rng.standard_normal((2, 5, 6, 6))
    idx = np.arange(6)
    views = [lambda A: A[:, 2], lambda A: A[0], lambda A: A.transpose(0, 1, 3, 2)[:, 1]]
    for view in views:
        got, ref = D.copy(), D.copy()
        v = rng.standard_normal(view(got).shape[:-1])
        NUMPY.set_diagonal_(view(got), v)
        view(ref)[..., idx, idx] = v
        NUMPY.add_diagonal_(view(got), 1.5)
        view(ref)[..., idx, idx] += 1.5
        NUMPY.sub_into_diagonal(v, 2 * v, view(got))
        view(ref)[..., idx, idx] = v - 2 * v
        np.testing.assert_array_equal(got, ref)
        NUMPY.zero_diagonal_(view(got))
        view(ref)[..., idx, idx] = 0.0
        np.testing.assert_array_equal(got, ref)


def test_numpy_simplex_qp_equals_the_torch_one_also_for_singular_gram():
    """The QP on NumPy arrays (torch's batched solve, the pseudo-inverse for its singular
    KKT systems) gives the torch path's weights to 1e-12: a random positive definite G, a
    rank-deficient one (two equal targets) and a zero one."""
    from shrinklab.core.simplex_qp import solve_simplex_qp, solve_simplex_qp_array

    rng = np.random.default_rng(11)
    A = rng.standard_normal((3, 4, 6))
    A[1, 3] = A[1, 2]  # targets 2 and 3 equal: G singular
    A[2] = 0.0
    G = A @ A.transpose(0, 2, 1)
    c = np.einsum("bkp,bp->bk", A, rng.standard_normal((3, 6)))
    with np.errstate(invalid="ignore"):  # 0/0 in the unused branch of a where (G = 0)
        got = solve_simplex_qp_array(G, c)
    ref = solve_simplex_qp(torch.from_numpy(G), torch.from_numpy(c)).numpy()
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    assert np.all(got >= 0) and np.all(got.sum(-1) <= 1 + 1e-12)
