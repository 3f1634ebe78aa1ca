"""Tests for shrinklab.models.network: architecture, initialisation, priors, persistence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from shrinklab.models.network import MLShrinkageNetwork, ShrinkageOutput, output_priors, sparsemax
from shrinklab.models.persistence import load_model_payload, load_pretrained_weights
from shrinklab.models.registry import load_model, register_model_kind, save_model

F = 12
NAMES = [f"f{i}" for i in range(F)]
TARGETS = ["identity", "diagonal", "constant_correlation", "single_factor", "qis"]
pytestmark = pytest.mark.usefixtures("one_thread")


def _trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BN running stats and biases non-trivial values (as after training)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm1d):
                mod.running_mean.copy_(torch.randn(mod.num_features, generator=g))
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.weight.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
    return model


def _reference_forward(model: MLShrinkageNetwork, x: np.ndarray) -> tuple[np.ndarray, ...]:
    """Eval-mode forward pass written independently in numpy from the state_dict."""
    sd = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}
    eps = 1e-5

    def bn(h, prefix):
        return (h - sd[prefix + "running_mean"]) / np.sqrt(sd[prefix + "running_var"] + eps) * sd[
            prefix + "weight"
        ] + sd[prefix + "bias"]

    def leaky(h):
        return np.where(h > 0, h, 0.2 * h)

    h = bn(x.astype(np.float64), "input_norm.")
    for i in range(len(model.blocks)):
        p = f"blocks.{i}."
        z = bn(leaky(h @ sd[p + "linear.weight"].T + sd[p + "linear.bias"]), p + "norm.")
        skip = h @ sd[p + "skip.weight"].T if (p + "skip.weight") in sd else h
        h = z + skip
    a = h @ sd["alpha_head.weight"].T + sd["alpha_head.bias"]
    alpha = 1.0 / (1.0 + np.exp(-a[:, 0]))
    logits = h @ sd["weights_head.weight"].T + sd["weights_head.bias"]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    weights = e / e.sum(axis=1, keepdims=True)
    log_var = (h @ sd["log_var_head.weight"].T + sd["log_var_head.bias"])[:, 0]
    return alpha, weights, log_var


@pytest.mark.parametrize("hidden", [(128, 64, 32), (32, 32), (16,)])
def test_eval_forward_matches_numpy_reference(hidden):
    torch.manual_seed(0)
    model = _trained_like(MLShrinkageNetwork(F, hidden_dims=hidden))
    x = np.random.default_rng(1).normal(size=(9, F)).astype(np.float32)
    out = model.predict(x)
    alpha, weights, log_var = _reference_forward(model, x)
    np.testing.assert_allclose(out.alpha.numpy(), alpha, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.weights.numpy(), weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.log_var.numpy(), log_var, rtol=1e-5, atol=1e-5)


def test_block_structure_follows_spec():
    model = MLShrinkageNetwork(F, hidden_dims=(64, 64, 32))
    b0, b1, b2 = model.blocks
    # post-activation batch norm, LeakyReLU(0.2)
    assert isinstance(b0.act, nn.LeakyReLU) and b0.act.negative_slope == 0.2
    # residual: projection when widths differ, identity when equal
    assert isinstance(b0.skip, nn.Linear) and isinstance(b1.skip, nn.Identity)
    assert isinstance(b2.skip, nn.Linear)
    # 30 % dropout except on the last (decision) block; input dropout 10 %
    assert b0.dropout.p == 0.3 and b1.dropout.p == 0.3 and b2.dropout.p == 0.0
    assert model.input_drop.p == 0.1
    assert MLShrinkageNetwork(F, residual=False).blocks[0].skip is None


def test_output_constraints_and_intensities():
    torch.manual_seed(0)
    model = MLShrinkageNetwork(F)
    out = model(torch.randn(64, F) * 5)
    assert isinstance(out, ShrinkageOutput)
    assert out.alpha.shape == (64,) and out.weights.shape == (64, 5) and out.log_var.shape == (64,)
    assert bool(((out.alpha >= 0) & (out.alpha <= 1)).all())
    assert bool((out.weights >= 0).all())
    torch.testing.assert_close(out.weights.sum(1), torch.ones(64), rtol=0, atol=1e-6)
    torch.testing.assert_close(out.intensities, out.alpha[:, None] * out.weights)
    assert bool((out.intensities.sum(1) <= 1 + 1e-6).all())


def test_single_target_model():
    torch.manual_seed(0)
    model = MLShrinkageNetwork(F, num_targets=1)
    out = model(torch.randn(16, F))
    assert out.weights.shape == (16, 1)
    assert torch.equal(out.weights, torch.ones(16, 1))
    torch.testing.assert_close(out.intensities[:, 0], out.alpha)
    out.alpha.sum().backward()
    assert model.alpha_head.weight.grad is not None


def test_every_parameter_receives_gradient():
    torch.manual_seed(0)
    model = MLShrinkageNetwork(F, use_attention=True, n_regimes=3)
    out = model(torch.randn(32, F), regime=torch.arange(32) % 4)
    (out.intensities.square().sum() + out.log_var.sum()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


def test_he_and_glorot_initialisation():
    torch.manual_seed(0)
    model = MLShrinkageNetwork(256, hidden_dims=(256, 128))
    w = model.blocks[0].linear.weight
    expected_std = math.sqrt(2.0 / (1 + 0.2**2)) / math.sqrt(256)
    assert abs(w.std().item() / expected_std - 1) < 0.02  # 65k draws: ~0.3 % sampling error
    assert torch.count_nonzero(model.blocks[0].linear.bias) == 0
    for head, fan_out in ((model.alpha_head, 1), (model.weights_head, 5)):
        bound = math.sqrt(6.0 / (128 + fan_out))
        assert head.weight.abs().max().item() <= bound
        assert head.weight.abs().max().item() > 0.8 * bound


def test_output_priors_set_exact_outputs_when_heads_see_zero():
    torch.manual_seed(0)
    model = MLShrinkageNetwork(F)
    pi = np.array([0.1, 0.2, 0.3, 0.15, 0.25])
    model.set_output_priors(0.3, pi, log_var_mean=-2.0)
    with torch.no_grad():
        for head in (model.alpha_head, model.weights_head, model.log_var_head):
            head.weight.zero_()
    out = model.predict(np.random.default_rng(0).normal(size=(4, F)))
    np.testing.assert_allclose(out.alpha.numpy(), 0.3, rtol=1e-6)
    np.testing.assert_allclose(out.weights.numpy(), np.tile(pi, (4, 1)), rtol=1e-5)
    np.testing.assert_allclose(out.log_var.numpy(), -2.0)
    with pytest.raises(ValueError, match="alpha_mean"):
        model.set_output_priors(1.5)
    with pytest.raises(ValueError, match="entries"):
        model.set_output_priors(0.5, [0.5, 0.5])


def test_output_priors_from_oracle_matches_brute_force():
    rng = np.random.default_rng(3)
    w = rng.dirichlet(np.ones(5), size=200) * rng.uniform(0, 1, size=(200, 1))
    w[:7] = 0.0  # no shrinkage at all: excluded from the weight prior
    a, pi = output_priors(w)
    assert a == pytest.approx(np.mean([row.sum() for row in w]), rel=1e-12)
    brute = np.mean([row / row.sum() for row in w[7:]], axis=0)
    np.testing.assert_allclose(pi, brute, rtol=1e-12)
    with pytest.raises(ValueError):
        output_priors(np.full((3, 5), np.nan))


def test_predict_is_eval_mode_deterministic_and_restores_mode():
    torch.manual_seed(0)
    model = _trained_like(MLShrinkageNetwork(F))
    x = torch.randn(20, F)
    model.train()
    p1, p2 = model.predict(x), model.predict(x)
    assert model.training
    assert torch.equal(p1.alpha, p2.alpha) and not p1.alpha.requires_grad
    # running statistics: a row's prediction does not depend on the rest of the batch
    alone = model.predict(x[3])
    torch.testing.assert_close(alone.alpha[0], p1.alpha[3], rtol=1e-6, atol=1e-7)
    # training mode uses batch statistics and dropout, so it differs
    assert not torch.allclose(model(x).alpha, p1.alpha)


def test_regime_embedding():
    torch.manual_seed(0)
    model = MLShrinkageNetwork(F, n_regimes=3)
    x = torch.randn(5, F)
    a0 = model.predict(x, regime=torch.zeros(5, dtype=torch.long)).alpha
    a2 = model.predict(x, regime=[2] * 5).alpha
    unknown = model.predict(x).alpha
    assert not torch.allclose(a0, a2) and not torch.allclose(a0, unknown)
    torch.testing.assert_close(model.predict(x, regime=3).alpha, unknown)
    with pytest.raises(ValueError, match="regime indices"):
        model.predict(x, regime=[4] * 5)
    with pytest.raises(ValueError, match="n_regimes=0"):
        MLShrinkageNetwork(F).predict(x, regime=[0] * 5)


def test_attention_map_is_row_stochastic_and_changes_output():
    torch.manual_seed(0)
    model = MLShrinkageNetwork(F, use_attention=True, attention_dim=8, attention_heads=2)
    x = torch.randn(6, F)
    att = model.attention_weights(x)
    assert att.shape == (6, F, F)
    torch.testing.assert_close(att.sum(-1), torch.ones(6, F), rtol=0, atol=1e-5)
    base = model.predict(x).alpha
    with torch.no_grad():
        model.attention.token_bias.add_(1.0)
    assert not torch.allclose(model.predict(x).alpha, base)
    with pytest.raises(ValueError, match="divisible"):
        MLShrinkageNetwork(F, use_attention=True, attention_dim=7, attention_heads=2)


def test_bad_inputs():
    model = MLShrinkageNetwork(F)
    with pytest.raises(ValueError, match="shape"):
        model.predict(np.zeros((3, F + 1)))
    with pytest.raises(ValueError, match="NaN"):
        model.predict(np.full((3, F), np.nan))
    for kwargs in ({"num_targets": 0}, {"hidden_dims": ()}, {"dropout": 1.0}):
        with pytest.raises(ValueError):
            MLShrinkageNetwork(F, **kwargs)


def test_config_rebuilds_same_function():
    torch.manual_seed(0)
    model = _trained_like(MLShrinkageNetwork(F, hidden_dims=(32, 16), use_attention=True))
    clone = MLShrinkageNetwork.from_config(model.config)
    clone.load_state_dict(model.state_dict())
    x = torch.randn(7, F)
    assert torch.equal(clone.predict(x).weights, model.predict(x).weights)


def test_save_load_roundtrip_and_schema_check(tmp_path):
    torch.manual_seed(0)
    model = _trained_like(MLShrinkageNetwork(F, n_regimes=2))
    path = save_model(tmp_path / "m" / "net.pt", model, NAMES, TARGETS, extra={"epoch": 3})
    payload = load_model_payload(path)
    assert {
        "kind",
        "config",
        "state_dict",
        "feature_names",
        "feature_schema",
        "target_names",
    } <= set(payload)
    loaded = load_model(path, expected_feature_schema=NAMES)
    assert not loaded.training
    assert loaded.target_names == TARGETS and loaded.extra == {"epoch": 3}
    x = torch.randn(5, F)
    for a, b in zip(model.predict(x, regime=[0, 1, 2, 0, 1]), loaded.predict(x, [0, 1, 2, 0, 1])):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="feature schema mismatch"):
        load_model(path, expected_feature_schema=NAMES[::-1])
    with pytest.raises(ValueError, match="feature schema mismatch"):
        load_model(path, expected_feature_schema="v0-deadbeef")
    with pytest.raises(ValueError, match="features but"):
        save_model(tmp_path / "bad.pt", model, NAMES[:-1], TARGETS)
    with pytest.raises(ValueError, match="no model file"):
        load_model(tmp_path / "missing.pt")


class _MeanModel(nn.Module):
    """A toy model kind: predicts a constant, to test the registry."""

    def __init__(self, num_targets: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_targets + 1))
        self.num_targets = num_targets

    @property
    def config(self):
        return {"num_targets": self.num_targets}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def test_register_model_kind(tmp_path):
    model = _MeanModel(5)
    with pytest.raises(ValueError, match="not a registered"):
        save_model(tmp_path / "t.pt", model, NAMES, TARGETS)
    register_model_kind("toy_mean", _MeanModel)
    with torch.no_grad():
        model.logits.copy_(torch.arange(6.0))
    save_model(tmp_path / "t.pt", model, NAMES, TARGETS)
    loaded = load_model(tmp_path / "t.pt")
    assert isinstance(loaded, _MeanModel) and torch.equal(loaded.logits, model.logits)
    with pytest.raises(ValueError, match="already registered"):
        register_model_kind("toy_mean", MLShrinkageNetwork)


def test_pretrained_weights_transfer_trunk(tmp_path):
    torch.manual_seed(0)
    source = _trained_like(MLShrinkageNetwork(F))
    path = save_model(tmp_path / "pre.pt", source, NAMES, TARGETS)
    torch.manual_seed(1)
    single = MLShrinkageNetwork(F, num_targets=1)
    report = load_pretrained_weights(single, path)
    assert "weights_head.weight" in report["skipped"]
    assert "blocks.0.linear.weight" in report["loaded"]
    x = torch.randn(8, F)
    # trunk and alpha head transferred: identical intensity α
    torch.testing.assert_close(single.predict(x).alpha, source.predict(x).alpha)
    clone = MLShrinkageNetwork.from_pretrained(path, num_targets=2)
    torch.testing.assert_close(clone.predict(x).alpha, source.predict(x).alpha)
    with pytest.raises(ValueError, match="no pretrained tensor"):
        load_pretrained_weights(_MeanModel(5), path)


# ------------------------------------------------------------------ anchored output
def _full_layout():
    from shrinklab.core.features import FEATURE_NAMES
    from shrinklab.core.targets import TARGET_NAMES

    return list(FEATURE_NAMES), list(TARGET_NAMES)


def _anchored_net(seed: int = 0, gate: str = "softmax") -> MLShrinkageNetwork:
    feats, targets = _full_layout()
    torch.manual_seed(seed)
    return MLShrinkageNetwork(len(feats), len(targets), hidden_dims=(16, 8), gate=gate)


def _features(batch: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, len(_full_layout()[0]), generator=g)
    feats = _full_layout()[0]
    cols = [feats.index(f) for f in feats if f.startswith("int_")]
    x[:, cols] = torch.rand(batch, len(cols), generator=g) * 1.4 - 0.2  # some outside [0, 1]
    # the multi-target intensities are a point of the simplex (w ≥ 0, Σw ≤ 1)
    mt = [feats.index(f) for f in feats if f.startswith("mt_")]
    w = torch.rand(batch, len(mt), generator=g)
    x[:, mt] = w / w.sum(1, keepdim=True) * torch.rand(batch, 1, generator=g)
    return x


def _anchored_reference(net: MLShrinkageNetwork, x: torch.Tensor, gate_map) -> np.ndarray:
    """Intensities w = g0·απ + Σ_j g_j c_j recomputed in numpy from the network's heads,
    with c_j = Σ over candidate j's anchors of clip(x_f, 0, 1) e_t (QIS: e_qis) and
    g = gate_map(logits) per row."""
    with torch.no_grad():
        h = net._trunk(x)
        a = torch.sigmoid(net.alpha_head(h)).squeeze(-1).double().numpy()
        pi = torch.softmax(net.weights_head(h), -1).double().numpy()
        logits = (net.gate_head(h) * net.gate_log_scale.exp()).double().numpy()
    gate = np.stack([gate_map(row) for row in logits])
    xn = x.double().numpy()
    w = gate[:, :1] * a[:, None] * pi
    for f, t, j in net.config["anchors"]:
        value = np.ones(len(xn)) if f < 0 else np.clip(xn[:, f], 0, 1)
        w[:, t] += gate[:, j + 1] * value
    return w


def test_auto_anchors_are_the_classical_estimators():
    feats, targets = _full_layout()
    net = _anchored_net()
    candidates: dict[int, set] = {}
    for f, t, g in net.config["anchors"]:
        candidates.setdefault(g, set()).add((feats[f] if f >= 0 else None, targets[t]))
    assert sorted(candidates) == list(range(6))
    assert [candidates[g] for g in range(6)] == [
        {("int_lw", "identity")},
        {("int_oas", "identity")},
        {("int_cc", "constant_correlation")},
        {("int_sf", "single_factor")},
        {(None, "qis")},
        {  # multi-target shrinkage: one candidate over four targets
            ("mt_identity", "identity"),
            ("mt_constant_correlation", "constant_correlation"),
            ("mt_single_factor", "single_factor"),
            ("mt_qis", "qis"),
        },
    ]
    assert net.gate_head.out_features == 7  # the free head + 6 candidates
    # any other layout: no anchors (the features are not known to hold intensities)
    assert MLShrinkageNetwork(F, 5).config["anchors"] is None
    assert MLShrinkageNetwork(len(feats), 1).config["anchors"] is None
    assert MLShrinkageNetwork(len(feats), 5, anchors=None).gate_head is None


def test_anchored_output_matches_numpy_reference():
    """w = g0·απ + Σ_j g_j c_j with c_j = clip(x_f, 0, 1) e_t (QIS: e_qis), recomputed in numpy."""
    net = _trained_like(_anchored_net()).eval()
    x = _features(32)
    with torch.no_grad():
        out = net(x)

    def softmax(z):
        e = np.exp(z - z.max())
        return e / e.sum()

    w = _anchored_reference(net, x, softmax)
    np.testing.assert_allclose(out.intensities.double().numpy(), w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.alpha.double().numpy(), w.sum(1), rtol=1e-5, atol=1e-6)
    assert torch.allclose(out.weights.sum(-1), torch.ones(32), atol=1e-5)


@pytest.mark.parametrize("j", range(6))
def test_saturated_gate_reproduces_each_classical_estimator(j):
    """A gate saturated on candidate j returns exactly that classical estimator's intensities."""
    net = _anchored_net().eval()
    with torch.no_grad():
        net.gate_head.weight.zero_()
        net.gate_head.bias.fill_(-30.0)
        net.gate_head.bias[j + 1] = 30.0
    x = _features(16)
    w = net(x).intensities
    expected = torch.zeros_like(w)
    for f, t, g in net.config["anchors"]:
        if g == j:
            expected[:, t] = 1.0 if f < 0 else x[:, f].clamp(0, 1)
    assert int((expected != 0).any(0).sum()) == (4 if j == 5 else 1)
    torch.testing.assert_close(w, expected, rtol=0, atol=1e-6)


def test_anchored_intensities_stay_feasible_and_train():
    net = _anchored_net().train()
    x = _features(64)
    out = net(x)
    w = out.intensities
    assert bool((w >= -1e-7).all()) and bool((w.sum(-1) <= 1 + 1e-6).all())
    out.alpha.sum().backward()
    assert net.gate_head.weight.grad is not None and net.gate_log_scale.grad is not None


def test_anchors_persist_and_old_files_load_without(tmp_path):
    feats, targets = _full_layout()
    net = _trained_like(_anchored_net()).eval()
    path = save_model(tmp_path / "m.pt", net, feats, targets)
    back = load_model(path)
    x = _features(8)
    with torch.no_grad():
        torch.testing.assert_close(back(x).intensities, net(x).intensities, rtol=0, atol=0)
    cfg = dict(net.config)
    del cfg["anchors"]  # a file written before anchors existed
    assert MLShrinkageNetwork.from_config(cfg).gate_head is None


def test_anchor_pairs_of_old_files_are_one_candidate_each():
    """Files written before multi-anchor candidates hold [feature, target] pairs."""
    F_full = len(_full_layout()[0])
    pairs = [[17, 0], [-1, 4]]
    net = MLShrinkageNetwork(F_full, 5, hidden_dims=(8,), anchors=pairs)
    assert net.config["anchors"] == [[17, 0, 0], [-1, 4, 1]]
    assert net.gate_head.out_features == 3
    # a state_dict without the (derived, non-persistent) candidate index still loads
    again = MLShrinkageNetwork(F_full, 5, hidden_dims=(8,), anchors=pairs)
    again.load_state_dict(net.state_dict())
    x = _features(4)
    cand = net.eval().anchor_candidates(x)
    assert cand.shape == (4, 2, 5)
    torch.testing.assert_close(cand[:, 0, 0], x[:, 17].clamp(0, 1))
    torch.testing.assert_close(cand[:, 1], torch.eye(5)[4].expand(4, 5))


@pytest.mark.parametrize(
    "bad",
    [
        "classical",
        [[99, 0]],
        [[0, 7]],
        [[-2, 0]],
        [[17, 0], [18, 2, 1]],  # pairs and triples mixed
        [[17, 0, 0], [18, 2, 2]],  # candidate 1 missing
    ],
)
def test_bad_anchors_raise(bad):
    with pytest.raises(ValueError, match="anchor"):
        MLShrinkageNetwork(len(_full_layout()[0]), 5, anchors=bad)


def _simplex_projection_bisection(z: np.ndarray) -> np.ndarray:
    """Brute-force Euclidean projection onto the simplex: bisection on τ in
    Σ max(z − τ, 0) = 1 (an independent reference for sparsemax)."""
    lo, hi = z.min() - 1.0, z.max()
    for _ in range(200):
        tau = 0.5 * (lo + hi)
        lo, hi = (tau, hi) if np.maximum(z - tau, 0).sum() > 1 else (lo, tau)
    return np.maximum(z - 0.5 * (lo + hi), 0)


def test_sparsemax_is_the_simplex_projection_with_exact_zeros():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(50, 6, generator=g, dtype=torch.float64) * 2
    p = sparsemax(z)
    ref = np.stack([_simplex_projection_bisection(row) for row in z.numpy()])
    np.testing.assert_allclose(p.numpy(), ref, rtol=0, atol=1e-12)
    assert bool((p == 0).any())  # sparse: exact zeros, which softmax never gives
    torch.testing.assert_close(p.sum(-1), torch.ones(50, dtype=torch.float64))
    # shift invariance and a closed form: two entries 1 apart → (1, 0)
    torch.testing.assert_close(sparsemax(z + 3.0), p)
    torch.testing.assert_close(
        sparsemax(torch.tensor([[2.0, 1.0]], dtype=torch.float64)),
        torch.tensor([[1.0, 0.0]], dtype=torch.float64),
    )
    # autograd through the sort/threshold form matches finite differences
    zz = (torch.randn(4, 5, generator=g, dtype=torch.float64) * 0.3).requires_grad_()
    assert torch.autograd.gradcheck(sparsemax, (zz,))


def test_sparsemax_gate_matches_reference_and_reaches_pure_qis():
    """gate="sparsemax": w = g0·απ + Σ_j g_j c_j with g the simplex projection of the
    logits (numpy reference); a gate that prefers QIS by a margin returns exactly QIS."""
    net = _trained_like(_anchored_net(gate="sparsemax")).eval()
    x = _features(32)
    with torch.no_grad():
        out = net(x)
    w = _anchored_reference(net, x, _simplex_projection_bisection)
    np.testing.assert_allclose(out.intensities.double().numpy(), w, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        net.gate_head.weight.zero_()
        net.gate_head.bias.zero_()
        qis = next(g for f, _, g in net.config["anchors"] if f < 0)  # the fixed QIS corner
        net.gate_head.bias[qis + 1] = 1.5  # QIS logit 1.5 above the others: enough for sparsemax
    w = net(x).intensities
    expected = torch.zeros_like(w)
    expected[:, -1] = 1.0
    torch.testing.assert_close(w, expected, rtol=0, atol=0)
    # the same logits under softmax leave about 11 % on the other experts
    soft = _anchored_net(gate="softmax").eval()
    soft.load_state_dict(net.state_dict())
    with torch.no_grad():
        assert float(soft(x).intensities[:, -1].min()) < 0.9


def test_gate_persists_and_old_files_default_to_softmax(tmp_path):
    feats, targets = _full_layout()
    net = _trained_like(_anchored_net(gate="sparsemax")).eval()
    back = load_model(save_model(tmp_path / "m.pt", net, feats, targets))
    assert back.config["gate"] == "sparsemax"
    x = _features(8)
    with torch.no_grad():
        torch.testing.assert_close(back(x).intensities, net(x).intensities, rtol=0, atol=0)
    cfg = dict(net.config)
    del cfg["gate"]  # a file written before the option existed
    assert MLShrinkageNetwork.from_config(cfg).config["gate"] == "softmax"
    with pytest.raises(ValueError, match="gate"):
        MLShrinkageNetwork(len(feats), len(targets), gate="argmax")
