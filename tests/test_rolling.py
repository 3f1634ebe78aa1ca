"""One fit builds its statistics once; fit_rolling batches many windows.

References: the estimate from the separate public pieces (``extract_features``,
``shrinkage_targets`` on the unscaled returns, ``combine``), and ``fit`` in a loop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from _forced_model import gated_model, random_network, save
from sklearn.base import clone

from shrinklab.core.features import extract_features, features_of
from shrinklab.core.sample_stats import sample_stats
from shrinklab.core.targets import TARGET_NAMES, combine, shrinkage_targets
from shrinklab.core.validation import center
from shrinklab.models.numpy_forward import numpy_predict
from shrinklab.sklearn import MLShrinkageCovariance


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> str:
    return save(random_network(seed=5), tmp_path_factory.mktemp("roll") / "m.pt")


def _returns(n=300, p=10, seed=0, scale=0.01):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, p)) @ rng.standard_normal((p, p)) * scale


@pytest.mark.parametrize("scale", [0.01, 1.0, 1e-40, 1e40])
def test_fit_equals_the_estimate_from_separate_pieces(model_file, scale):
    """Σ̂ from the shared statistics equals S + Σ απ_k (T_k − S) with the targets built
    from the raw returns (a second eigendecomposition), to 1e-12 relative."""
    X = _returns(scale=scale)
    est = MLShrinkageCovariance.from_pretrained(model_file).fit(X)
    # α, π of the estimator's network path (float64 NumPy forward, tested against torch
    # in test_numpy_forward.py): this test is about the shared statistics
    alpha, weights, _ = numpy_predict(est.model_, extract_features(X).numpy())
    w = torch.from_numpy(alpha[:, None] * weights)
    Xt = torch.from_numpy(X)[None]
    S = center(Xt)[1]
    ref = combine(S, shrinkage_targets(Xt, TARGET_NAMES), w)[0].numpy()
    np.testing.assert_allclose(est.covariance_, 0.5 * (ref + ref.T), rtol=1e-12, atol=0)
    # the estimator keeps T − S (intensities with ‖S − F‖² from the Gram): equal to round-off
    np.testing.assert_allclose(est.features_, extract_features(X)[0].numpy(), rtol=0, atol=1e-12)


def test_sample_stats_are_shared_and_scale_exactly():
    X = torch.from_numpy(_returns(n=80, p=6))[None]
    stats = sample_stats(X)
    assert torch.equal(features_of(stats), extract_features(X))
    S = center(X)[1]
    torch.testing.assert_close(stats.unscale(stats.S), S, rtol=1e-15, atol=0)
    assert stats.T.shape == (1, len(TARGET_NAMES), 6, 6)


@pytest.mark.parametrize("const", [False, True])
def test_sample_stats_share_the_gram_eigh_with_qis_for_p_ge_n(const):
    """For p >= n the one eigh of the Gram matrix serves the spectrum and QIS: the QIS
    target equals qis_estimate's own Gram route (its second eigh) to 1e-13 relative, with
    or without a constant column, and the spectrum equals eigvalsh(S) at the same scale."""
    from shrinklab.core.qis import qis_estimate

    X = _returns(n=30, p=45, seed=4)
    if const:
        X[:, 3] = 0.5
    stats = sample_stats(torch.from_numpy(X)[None])
    ref = qis_estimate(stats.Xc, stats.S, 30)[0]
    got = stats.T[0, TARGET_NAMES.index("qis")]
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-13 * float(ref.abs().max()))
    lam = torch.linalg.eigvalsh(stats.S)[0].clamp_min(0)
    torch.testing.assert_close(
        stats.evals[0].clamp_min(0), lam, rtol=0, atol=1e-12 * float(lam[-1])
    )


@pytest.mark.parametrize("n, p, const", [(80, 6, False), (30, 45, False), (40, 12, True)])
def test_sample_stats_with_differences_give_the_same_features(n, p, const):
    """sample_stats(X, differences=True) keeps T − S in one buffer (the estimator's route:
    Gram of the differences, intensities with ‖S − F‖² from its diagonal): D equals T − S
    of the default stats exactly and the features agree to 1e-12."""
    X = _returns(n=n, p=p, seed=6)
    if const:
        X[:, 2] = -0.25
    ref = sample_stats(torch.from_numpy(X)[None])
    got = sample_stats(torch.from_numpy(X)[None], differences=True)
    assert got.T is None and ref.D is None
    assert torch.equal(got.D, ref.T - ref.S.unsqueeze(1))
    torch.testing.assert_close(features_of(got), features_of(ref), rtol=0, atol=1e-12)


def test_fit_runs_in_inference_mode_but_leaves_normal_tensors_in_caches(tmp_path):
    """The estimator runs under torch.inference_mode; the caches it may fill first (a
    gated model's stacked ensemble members, the QP's active sets) hold normal tensors, so
    later training-time use with autograd is not refused."""
    from shrinklab.core import estimators, simplex_qp
    from shrinklab.models.stacked import _STACKS

    feats = extract_features(np.stack([_returns(n=60, p=5, seed=s) for s in range(8)]))
    path = save(gated_model(feats), tmp_path / "gated.pt")
    est = MLShrinkageCovariance.from_pretrained(path).fit(_returns(n=60, p=5))
    assert not torch.is_tensor(est.covariance_)
    with torch.inference_mode():  # the estimator's model by its torch path (the fit uses NumPy)
        est.model_.general.predict(est.features_[None])
    sets = [t for v in simplex_qp._ACTIVE_SETS.values() for t in v if torch.is_tensor(t)]
    stacks = [s for s in _STACKS.values()]
    assert sets and stacks
    assert not any(t.is_inference() for t in sets)
    assert not any(s.head_w[0].is_inference() or s.blocks[0][0].is_inference() for s in stacks)
    G = torch.eye(3, dtype=torch.float64, requires_grad=True)
    estimators.solve_simplex_qp(G, torch.ones(3, dtype=torch.float64)).sum().backward()


def test_reused_workspace_gives_the_same_fits_in_any_order_and_thread(model_file):
    """The per-thread buffer for T − S is reused across fits: fits of different samples
    and sizes, in any order and from several threads, equal fresh fits."""
    from concurrent.futures import ThreadPoolExecutor

    from shrinklab.models import estimate

    samples = [_returns(n=50, p=p, seed=s) for p, s in [(6, 0), (9, 1), (6, 2), (9, 3)]]
    est = MLShrinkageCovariance.from_pretrained(model_file)
    first = [est.fit(X).covariance_.copy() for X in samples]
    assert getattr(estimate._WORKSPACE, "np_buf", None) is not None  # the fit's NumPy buffer
    again = [est.fit(X).covariance_ for X in reversed(samples)][::-1]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda X: clone(est).fit(X).covariance_, samples * 3))
    for i, a in enumerate(first):
        np.testing.assert_array_equal(a, again[i])
    for i, c in enumerate(threaded):
        np.testing.assert_array_equal(c, first[i % len(first)])


def test_fit_rolling_matches_a_loop_of_fit(model_file):
    dates = pd.bdate_range("2020-01-01", periods=260)
    R = pd.DataFrame(_returns(n=260, p=8, seed=2), index=dates)
    est = MLShrinkageCovariance.from_pretrained(model_file)
    roll = est.fit_rolling(R, window=60, step=20)
    ends = list(range(60, 261, 20))
    loop = np.stack([est.fit(R.values[e - 60 : e]).covariance_ for e in ends])
    assert roll.covariances.shape == (len(ends), 8, 8)
    # the network runs in float32: a batch and a single row round differently (≤ 1e-6 rel.)
    np.testing.assert_allclose(roll.covariances, loop, rtol=1e-6, atol=1e-10)
    assert list(roll.index) == [dates[e - 1] for e in ends]
    assert roll.weights.shape == (len(ends), len(TARGET_NAMES))
    np.testing.assert_allclose(roll.weights.sum(1), 1.0, atol=1e-6)


def test_fit_rolling_chunks_give_the_same_answer(model_file):
    from shrinklab.sklearn import rolling_estimate

    R = _returns(n=150, p=5, seed=3)
    model = MLShrinkageCovariance.from_pretrained(model_file).model_
    whole = rolling_estimate(model, R, 40, 7)
    chunked = rolling_estimate(model, R, 40, 7, max_bytes=1)  # one window per chunk
    np.testing.assert_allclose(whole.covariances, chunked.covariances, rtol=1e-6, atol=1e-10)
    assert list(whole.index) == list(range(39, 150, 7))


def test_fit_rolling_cpu_chunk_cap_changes_no_bit(model_file, monkeypatch):
    """The CPU cap on windows per pass (cache-sized chunks) splits the windows, nothing
    else: the same bits as one pass, windows in order, and the loop of fit to 1e-10."""
    from shrinklab.models import estimate
    from shrinklab.sklearn import rolling_estimate

    R = _returns(n=120, p=6, seed=4)
    est = MLShrinkageCovariance.from_pretrained(model_file)
    model = est.model_
    monkeypatch.setattr(estimate, "_CHUNK_WINDOWS", 10**9)
    monkeypatch.setattr(estimate, "_CHUNK_BYTES", 10**12)
    whole = rolling_estimate(model, R, 30, 4)
    monkeypatch.setattr(estimate, "_CHUNK_WINDOWS", 4)  # 23 windows: 6 passes, last of 3
    capped = rolling_estimate(model, R, 30, 4)
    monkeypatch.setattr(estimate, "_CHUNK_WINDOWS", 10**9)
    monkeypatch.setattr(estimate, "_CHUNK_BYTES", 8 * 30 * 6 * 4)  # 4 windows: as capped
    by_bytes = rolling_estimate(model, R, 30, 4)
    for k in ("covariances", "alpha", "weights", "index"):
        np.testing.assert_array_equal(getattr(capped, k), getattr(whole, k))
        np.testing.assert_array_equal(getattr(by_bytes, k), getattr(whole, k))
    loop = np.stack([est.fit(R[e - 30 : e]).covariance_ for e in range(30, 121, 4)])
    np.testing.assert_allclose(capped.covariances, loop, rtol=0, atol=1e-10)


def test_fit_rolling_bad_input(model_file):
    est = MLShrinkageCovariance.from_pretrained(model_file)
    R = _returns(n=50, p=4)
    with pytest.raises(ValueError, match="longer than the 50 rows"):
        est.fit_rolling(R, 60)
    with pytest.raises(ValueError, match="window >= 2 and step >= 1"):
        est.fit_rolling(R, 20, step=0)
    with pytest.raises(ValueError, match="2-D"):
        est.fit_rolling(R[:, 0], 20)
    bad = R.copy()
    bad[10, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        est.fit_rolling(bad, 20)
    with pytest.raises(ValueError, match="assume_centered"):
        MLShrinkageCovariance.from_pretrained(model_file, assume_centered=True).fit_rolling(R, 20)


def test_precision_is_computed_on_first_read(model_file, monkeypatch):
    from scipy import linalg

    from shrinklab import sklearn as sk

    calls, pinvh = [], linalg.pinvh
    monkeypatch.setattr(sk.linalg, "pinvh", lambda a, **kw: calls.append(1) or pinvh(a, **kw))
    est = MLShrinkageCovariance.from_pretrained(model_file).fit(_returns(n=80, p=6))
    assert calls == []  # fit does not pay for the pseudo-inverse
    np.testing.assert_allclose(est.precision_, pinvh(est.covariance_), rtol=1e-10)
    assert est.precision_ is est.precision_
    assert calls == [1]  # computed once, then kept
    est.fit(_returns(n=80, p=6, seed=9))
    np.testing.assert_allclose(est.precision_, linalg.pinvh(est.covariance_), rtol=1e-10)
    assert (
        MLShrinkageCovariance(model_file, store_precision=False).fit(_returns()).precision_ is None
    )
    with pytest.raises(AttributeError):
        _ = MLShrinkageCovariance(model_file).precision_
