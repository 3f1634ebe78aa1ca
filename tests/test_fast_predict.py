"""The fast prediction path against the straightforward one, the features' one home,
and model files written before the ``dropout`` rename.

References: the models' own ``forward`` in eval mode (a Python loop over the members,
every expert on every row) and the feature pipeline written out step by step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _forced_model import gated_model, random_network, save
from _one_factor import one_factor_returns

from shrinklab.core.features import (
    FEATURE_NAMES,
    extract_features,
    features_from_parts,
    target_gram,
)
from shrinklab.core.features import intensities_from_targets as _intensities
from shrinklab.core.sample_stats import targets_from_parts
from shrinklab.core.targets import TARGET_NAMES
from shrinklab.core.validation import as_returns, center
from shrinklab.models.ensemble import EnsembleModel
from shrinklab.models.network import MLShrinkageNetwork, eval_mode
from shrinklab.models.persistence import load_model_payload
from shrinklab.models.registry import load_model, save_model
from shrinklab.sklearn import ml_shrinkage_estimate, rolling_estimate

# float32 networks: the batched pass and the loop sum in another order, so they may
# differ by a few units in the last place per layer (1.4e-6 relative was seen on one
# intensity of the bundled model); 1e-5 is still 100x below any modelling effect
RTOL = 1e-5


class _LoopModel:
    """The bundled model predicted by its plain ``forward`` (per-member loop)."""

    def __init__(self, model):
        self.model, self.target_names = model, model.target_names

    def predict(self, features):
        with torch.no_grad(), eval_mode(self.model):
            return self.model(self.model._as_input(features))


_returns = one_factor_returns


def _mixed_features():
    """Features of one-factor samples and of i.i.d. Gaussian ones."""
    rng = np.random.default_rng(3)
    X = [_returns(60, 20, s) for s in range(20)] + [
        rng.standard_normal((60, 20)) for _ in range(20)
    ]
    return extract_features(np.stack(X))


@pytest.fixture(scope="module")
def bundled(tmp_path_factory):
    """A gated expert model with an ensemble inside, saved and loaded as a model file
    (the kind whose batched pass these tests check; the bundled file may be a single
    network)."""
    path = tmp_path_factory.mktemp("gated") / "gated.pt"
    save_model(path, gated_model(_mixed_features()), FEATURE_NAMES, TARGET_NAMES)
    return load_model(path)


@pytest.mark.parametrize("p, n", [(3, 12), (20, 60), (100, 250), (60, 30)])
def test_fast_fit_equals_the_member_loop(bundled, p, n):
    for seed in range(3):
        X = _returns(n, p, seed)
        fast = ml_shrinkage_estimate(bundled, X)
        ref = ml_shrinkage_estimate(_LoopModel(bundled), X)
        np.testing.assert_allclose(fast.alpha, ref.alpha, rtol=RTOL, atol=1e-7)
        np.testing.assert_allclose(fast.weights, ref.weights, rtol=RTOL, atol=1e-7)
        scale = np.abs(ref.covariance).max()
        np.testing.assert_allclose(fast.covariance, ref.covariance, rtol=RTOL, atol=RTOL * scale)


def test_fast_rolling_equals_the_member_loop(bundled):
    R = _returns(400, 15, seed=9)
    fast = rolling_estimate(bundled, R, window=60, step=7)
    ref = rolling_estimate(_LoopModel(bundled), R, window=60, step=7)
    np.testing.assert_allclose(fast.alpha, ref.alpha, rtol=RTOL, atol=1e-7)
    np.testing.assert_allclose(fast.weights, ref.weights, rtol=RTOL, atol=1e-7)
    scale = np.abs(ref.covariances).max()
    np.testing.assert_allclose(fast.covariances, ref.covariances, rtol=0, atol=RTOL * scale)


def test_gated_batch_with_general_and_expert_rows_equals_the_loop(bundled):
    """A batch where the gate sends some rows to experts and some to the general model:
    the experts evaluated on their rows only equal the plain forward on all rows."""
    feats = _mixed_features()
    share = bundled.expert_share(feats)
    assert 0 < share["general"] < 1
    fast, ref = bundled.predict(feats), _LoopModel(bundled).predict(feats)
    for a, b in zip(fast, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=RTOL, atol=1e-7)


def test_stacked_ensemble_follows_weight_changes():
    """The batched pass is rebuilt when a member's weights change in place."""
    torch.manual_seed(0)
    ens = EnsembleModel([MLShrinkageNetwork(32, hidden_dims=(8, 4)) for _ in range(3)]).eval()
    x = torch.randn(5, 32)
    before = ens.predict(x).alpha
    with torch.no_grad():
        ens.members[1].alpha_head.bias.add_(3.0)
    after = ens.predict(x).alpha
    with torch.no_grad():
        ref = ens(x).alpha
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, ref, rtol=RTOL, atol=1e-7)


def test_extract_features_equals_the_pipeline_written_out():
    """extract_features (through SampleStats) equals the steps of the feature pipeline
    written out: power-of-two scaling, centring, one eigh of S, targets, features (1e-12,
    relative and absolute: for p ≥ n SampleStats takes the spectrum from the n × n Gram
    matrix, where a zero eigenvalue is exactly 0 instead of round-off of order 1e-17)."""
    rng = np.random.default_rng(5)
    for n, p in [(60, 20), (30, 50), (12, 3)]:
        X = rng.standard_normal((3, n, p)) * 0.01
        X[1, :, 0] = 0.5  # a constant column
        Xt = as_returns(X)[0]
        m = Xt.abs().amax(dim=(-2, -1))
        Xs = torch.ldexp(Xt, -torch.frexp(m)[1][:, None, None])
        Xc, S = center(Xs)
        evals, evecs = torch.linalg.eigh(S)
        extras: dict = {}
        T = targets_from_parts(Xc, S, (evals, evecs), extras)
        ref = features_from_parts(
            Xs, Xc, S, evals, target_gram(S, T), _intensities(Xc, S, T, extras)
        )
        torch.testing.assert_close(extract_features(X), ref, rtol=1e-12, atol=1e-12)


def test_files_with_the_old_dropout_key_load(tmp_path):
    """A file whose config says ``dropout_rate`` (written before the rename, as the
    bundled final.pt) loads with the knob under its current name ``dropout``."""
    net = random_network(seed=3)
    path = save(net, tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    cfg = payload["config"]
    cfg["dropout_rate"] = cfg.pop("dropout")
    torch.save(payload, path)
    assert "dropout_rate" in torch.load(path, weights_only=True)["config"]
    assert load_model_payload(path)["config"]["dropout"] == net.config["dropout"]
    loaded = load_model(path)
    assert loaded.config["dropout"] == net.config["dropout"]
    x = torch.randn(4, net.input_dim)
    torch.testing.assert_close(loaded.predict(x).alpha, net.eval().predict(x).alpha)


def _rename_key(obj, old: str, new: str):
    """``obj`` with every dict key ``old`` renamed ``new``, at any depth."""
    if isinstance(obj, dict):
        return {(new if k == old else k): _rename_key(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rename_key(v, old, new) for v in obj]
    return obj


def test_nested_configs_with_the_old_dropout_key_load(bundled, tmp_path):
    """An ensemble file written before the rename (``dropout_rate`` in every member's
    nested config, as the bundled model of earlier releases) loads under ``dropout``
    and predicts as the file with the current key."""
    src = save_model(tmp_path / "new.pt", bundled, FEATURE_NAMES, TARGET_NAMES)
    payload = torch.load(src, weights_only=True)
    old = dict(payload, config=_rename_key(payload["config"], "dropout", "dropout_rate"))
    path = tmp_path / "old.pt"
    torch.save(old, path)
    raw = torch.load(path, weights_only=True)["config"]
    assert "dropout_rate" in raw["general"]["config"]["members"][0]["config"]
    cfg = load_model_payload(path)["config"]
    member = cfg["general"]["config"]["members"][0]["config"]
    assert "dropout" in member and "dropout_rate" not in member
    x = extract_features(np.stack([_returns(60, 20, s) for s in range(4)]))
    a, b = load_model(path).predict(x), load_model(src).predict(x)
    torch.testing.assert_close(a.alpha, b.alpha, rtol=0, atol=0)
