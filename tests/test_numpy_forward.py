"""The estimator's float64 NumPy forward (shrinklab.models.numpy_forward) against the torch
models, and fit_rolling against a loop of fit on that path.

References: the torch model converted to float64 (``copy.deepcopy(model).double()``, its
own ``predict``): the same operations in the same precision, so the two agree to 1e-10
(summation order only). Against the float32 model as loaded: 1e-5 (each float32 layer
rounds to ~6e-8 relative; a few layers of sums over up to 128 terms stay well below
1e-5, the tolerance test_fast_predict uses for float32 reorderings).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from _forced_model import gated_model, random_network, randomise_norms
from _one_factor import load_bundled, one_factor_returns

from shrinklab.core.features import FEATURE_NAMES, extract_features
from shrinklab.core.targets import TARGET_NAMES
from shrinklab.models.ensemble import EnsembleModel
from shrinklab.models.network import MLShrinkageNetwork, sparsemax
from shrinklab.models.numpy_forward import np_sparsemax, numpy_forward, numpy_predict
from shrinklab.sklearn import MLShrinkageCovariance

F, K = len(FEATURE_NAMES), len(TARGET_NAMES)
F64_TOL = 1e-10
F32_TOL = 1e-5


bundled = pytest.fixture(scope="module")(load_bundled)
_returns = one_factor_returns


def _features(count=40, n=60, p=20):
    """Features of one-factor samples and of i.i.d. Gaussian ones (the latter send some
    rows of the bundled model to its experts)."""
    rng = np.random.default_rng(3)
    X = [_returns(n, p, s) for s in range(count // 2)]
    X += [rng.standard_normal((n, p)) for _ in range(count - count // 2)]
    return extract_features(np.stack(X)).numpy()


def _torch64(model, x):
    with torch.no_grad():
        out = copy.deepcopy(model).double().predict(torch.from_numpy(x))
    return [t.numpy() for t in out]


def _assert_outputs(got, ref, tol):
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def test_sparsemax_matches_torch():
    z = np.random.default_rng(0).standard_normal((50, 7)) * 3
    got = np_sparsemax(z)
    np.testing.assert_allclose(got, sparsemax(torch.from_numpy(z)).numpy(), rtol=0, atol=1e-15)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-12)
    assert (got == 0).any()  # exact zeros, unlike softmax


@pytest.mark.parametrize("gate", ["softmax", "sparsemax", None])
def test_network_equals_the_float64_torch_network(gate):
    torch.manual_seed(1)
    anchors = "auto" if gate else None
    net = MLShrinkageNetwork(F, K, hidden_dims=(16, 16, 8), anchors=anchors, gate=gate or "softmax")
    net = randomise_norms(net.eval(), 2)
    x = _features()
    _assert_outputs(numpy_predict(net, x), _torch64(net, x), F64_TOL)


@pytest.mark.parametrize("combine", ["intensities", "mean"])
def test_ensemble_equals_the_float64_torch_ensemble(combine):
    members = [randomise_norms(random_network(seed=s), s) for s in range(3)]
    ens = EnsembleModel(members, combine=combine, member_weights=[0.2, 0.5, 0.3]).eval()
    ens.set_temperature(1.7, within_weight=0.4)
    x = _features()
    _assert_outputs(numpy_predict(ens, x), _torch64(ens, x), F64_TOL)


def test_gated_expert_model_equals_torch_and_uses_general_and_expert_rows():
    x = _features()
    model = gated_model(x)
    fwd = numpy_forward(model)
    choice = fwd._eval.choice(x)  # noqa: SLF001 - the switch under test
    assert (choice == -1).any() and (choice >= 0).any()
    torch_choice = model.expert_choice(torch.from_numpy(x).float()).numpy()
    np.testing.assert_array_equal(choice, torch_choice)
    _assert_outputs(numpy_predict(model, x), _torch64(model, x), F64_TOL)
    ref32 = [t.double().numpy() for t in model.predict(x)]
    got = numpy_predict(model, x)
    np.testing.assert_allclose(got[0], ref32[0], rtol=0, atol=F32_TOL)
    np.testing.assert_allclose(got[1], ref32[1], rtol=0, atol=F32_TOL)
    np.testing.assert_allclose(got[2], ref32[2], rtol=F32_TOL, atol=F32_TOL)


def test_bundled_model_equals_torch(bundled):
    x = _features()
    _assert_outputs(numpy_predict(bundled, x), _torch64(bundled, x), F64_TOL)
    ref32 = [t.double().numpy() for t in bundled.predict(x)]
    got = numpy_predict(bundled, x)
    np.testing.assert_allclose(got[0], ref32[0], rtol=0, atol=F32_TOL)
    np.testing.assert_allclose(got[1], ref32[1], rtol=0, atol=F32_TOL)
    np.testing.assert_allclose(got[2], ref32[2], rtol=F32_TOL, atol=F32_TOL)


def test_unsupported_kinds_fall_back_and_bad_features_are_refused():
    torch.manual_seed(0)
    att = MLShrinkageNetwork(F, K, hidden_dims=(8,), use_attention=True).eval()
    assert numpy_predict(att, _features(4)) is None
    net = random_network(seed=1)
    with pytest.raises(ValueError, match="NaN or inf"):
        numpy_predict(net, np.full((1, F), np.nan))
    with pytest.raises(ValueError, match="shape"):
        numpy_predict(net, np.zeros((1, F - 1)))


def test_load_state_dict_refreshes_the_snapshot():
    net, other = random_network(seed=1), random_network(seed=2)
    x = _features(6)
    before = numpy_predict(net, x)
    net.load_state_dict(other.state_dict())
    _assert_outputs(numpy_predict(net, x), _torch64(other, x), F64_TOL)
    assert not np.allclose(before[0], numpy_predict(net, x)[0])


def test_fit_rolling_equals_a_loop_of_fit_to_1e10(bundled):
    R = _returns(400, 15, seed=9)
    est = MLShrinkageCovariance()
    roll = est.fit_rolling(R, window=60, step=7)
    ends = range(60, len(R) + 1, 7)
    fits = [(f.covariance_, f.shrinkage_) for f in (est.fit(R[e - 60 : e]) for e in ends)]
    loop = np.stack([c for c, _ in fits])
    np.testing.assert_allclose(roll.covariances, loop, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(roll.alpha, [a for _, a in fits], rtol=0, atol=1e-10)
