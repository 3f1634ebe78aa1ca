"""Family experts behind a feature gate (shrinklab.models.experts): the gate classifier, the
hard switch against a brute-force rule, persistence through save_model/load_model and
MLShrinkageCovariance, the family ratios, the expert builder and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shrinklab.core.features import FEATURE_NAMES
from shrinklab.core.targets import TARGET_NAMES
from shrinklab.evaluation.selection import (
    best_classical_family_loss,
    family_loss_table,
    family_ratios,
)
from shrinklab.models.ensemble import EnsembleModel
from shrinklab.models.experts import FamilyGate, GatedExpertModel
from shrinklab.models.network import MLShrinkageNetwork
from shrinklab.models.registry import load_model, save_model
from shrinklab.training.experts import train_family_experts, train_family_gate

F, K = len(FEATURE_NAMES), len(TARGET_NAMES)


def _net(seed: int, input_dim: int = F, num_targets: int = K) -> MLShrinkageNetwork:
    torch.manual_seed(seed)
    return MLShrinkageNetwork(
        input_dim=input_dim, num_targets=num_targets, hidden_dims=(8,), gate="sparsemax"
    ).eval()


def _clusters(n: int, seed: int, dim: int = 6) -> tuple[np.ndarray, list[str]]:
    """Three well-separated Gaussian clusters with labels a, b, c."""
    rng = np.random.default_rng(seed)
    centres = {"a": np.full(dim, 3.0), "b": np.full(dim, -3.0), "c": np.zeros(dim)}
    labels = [str(x) for x in rng.choice(list(centres), size=n)]
    x = np.stack([centres[lab] for lab in labels]) + rng.normal(size=(n, dim))
    return x.astype(np.float32), labels


def _gated(threshold: float = 0.8, seed: int = 0) -> GatedExpertModel:
    gate = FamilyGate(F, ["a", "b", "c"], hidden_dims=(16,))
    torch.manual_seed(seed)
    for p in gate.parameters():  # a gate whose probabilities vary over the inputs
        torch.nn.init.normal_(p, std=2.0)
    return GatedExpertModel(_net(1), {"a": _net(2), "b": _net(3)}, gate.eval(), threshold)


# ----------------------------------------------------------------------------- gate
def test_gate_learns_separable_families_and_is_deterministic():
    x, y = _clusters(600, seed=0)
    gate = train_family_gate(x, y, hidden_dims=(16,), epochs=30, lr=1e-2, seed=3)
    x_new, y_new = _clusters(300, seed=1)
    with torch.no_grad():
        proba = gate(torch.as_tensor(x_new))
    assert gate.families == ["a", "b", "c"]
    torch.testing.assert_close(proba.sum(1), torch.ones(300), atol=1e-6, rtol=0)
    pred = [gate.families[i] for i in proba.argmax(1).tolist()]
    assert np.mean(np.asarray(pred) == np.asarray(y_new)) > 0.97
    again = train_family_gate(x, y, hidden_dims=(16,), epochs=30, lr=1e-2, seed=3)
    for p, q in zip(gate.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(p, q)


def test_gate_rejects_bad_input():
    x, y = _clusters(50, seed=0)
    with pytest.raises(ValueError, match="one family label per row"):
        train_family_gate(x, y[:-1])
    x_bad = x.copy()
    x_bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        train_family_gate(x_bad, y)
    with pytest.raises(ValueError, match="at least two distinct families"):
        train_family_gate(x, ["a"] * len(y))
    with pytest.raises(ValueError, match="positive"):
        train_family_gate(x, y, epochs=0)


# --------------------------------------------------------------------- gated model
def test_switch_matches_brute_force_rule():
    """Each row is the expert's output where that family's gate probability exceeds the
    threshold, the general model's otherwise; the variance is always the general one."""
    model = _gated(threshold=0.6)
    x = torch.randn(400, F) * 2
    with torch.no_grad():
        out = model(x)
        proba = model.gate(x)
        ref = {"general": model.general(x), "a": model.experts[0](x), "b": model.experts[1](x)}
    used = {"general": 0, "a": 0, "b": 0}
    for i in range(len(x)):
        src = "general"
        for fam in ("a", "b"):
            if proba[i, model.gate.families.index(fam)] > 0.6:
                src = fam
        used[src] += 1
        torch.testing.assert_close(out.alpha[i], ref[src].alpha[i], atol=0, rtol=0)
        torch.testing.assert_close(out.weights[i], ref[src].weights[i], atol=0, rtol=0)
    torch.testing.assert_close(out.log_var, ref["general"].log_var, atol=0, rtol=0)
    assert min(used.values()) > 0, used  # the test exercises all three branches
    share = model.expert_share(x.numpy())
    assert share == pytest.approx({k: v / len(x) for k, v in used.items()})


def test_never_firing_gate_is_the_general_model_and_sure_gate_the_expert():
    gate = FamilyGate(F, ["a", "b"], hidden_dims=(4,))
    last = gate.mlp[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)  # P = 1/2 everywhere: never above 0.8
    model = GatedExpertModel(_net(1), {"a": _net(2)}, gate.eval())
    x = torch.randn(50, F)
    assert torch.equal(model.predict(x).alpha, model.general.predict(x).alpha)
    last.bias.data = torch.tensor([20.0, 0.0])  # P(a) ≈ 1 everywhere
    out, expert = model.predict(x), model.experts[0].predict(x)
    assert torch.equal(out.alpha, expert.alpha) and torch.equal(out.weights, expert.weights)


def test_round_trip_and_sklearn_estimator(tmp_path):
    """save_model/load_model keep the outputs; MLShrinkageCovariance.from_pretrained
    loads a gated model file and fits with it (its covariance is that of the served
    model's intensities, checked against the general-model file where the gate is off)."""
    from shrinklab import MLShrinkageCovariance

    members = [_net(10), _net(11)]
    model = GatedExpertModel(EnsembleModel(members), {"a": _net(2)}, _gated().gate)
    path = save_model(tmp_path / "gated.pt", model, FEATURE_NAMES, TARGET_NAMES)
    loaded = load_model(path)
    assert type(loaded) is GatedExpertModel and type(loaded.general) is EnsembleModel
    x = torch.randn(64, F)
    a, b = model.predict(x), loaded.predict(x)
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, atol=0, rtol=0)

    # intervals: the general ensemble's half-width around the served model's α
    lo, hi = loaded.interval(x, 0.9, method="gaussian")
    glo, ghi = loaded.general.interval(x, 0.9, method="gaussian")
    torch.testing.assert_close(hi - lo, ghi - glo, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close((hi + lo) / 2, b.alpha.double(), atol=1e-7, rtol=0)
    with pytest.raises(TypeError, match="has no intervals"):
        _gated().interval(x)

    est = MLShrinkageCovariance.from_pretrained(path)
    X = np.random.default_rng(0).standard_normal((60, 15))
    est.fit(X)
    assert est.covariance_.shape == (15, 15)
    assert np.allclose(est.covariance_, est.covariance_.T)
    assert set(est.target_weights_) == set(TARGET_NAMES)
    # the same fit through the general model alone agrees whenever the gate is off
    with torch.no_grad():
        loaded.gate.mlp[-1].weight.zero_()
        loaded.gate.mlp[-1].bias.copy_(torch.tensor([0.0, 0.0, 0.0]))  # P = 1/3 < 0.8
    off = save_model(tmp_path / "off.pt", loaded, FEATURE_NAMES, TARGET_NAMES)
    general = save_model(tmp_path / "general.pt", loaded.general, FEATURE_NAMES, TARGET_NAMES)
    c_off = MLShrinkageCovariance.from_pretrained(off).fit(X).covariance_
    c_gen = MLShrinkageCovariance.from_pretrained(general).fit(X).covariance_
    np.testing.assert_allclose(c_off, c_gen, rtol=1e-12, atol=1e-12)


def test_constructor_rejects_bad_configurations():
    gate = FamilyGate(F, ["a", "b"])
    with pytest.raises(ValueError, match="threshold"):
        GatedExpertModel(_net(1), {"a": _net(2)}, gate, threshold=0.4)
    with pytest.raises(ValueError, match="threshold"):
        GatedExpertModel(_net(1), {"a": _net(2)}, gate, threshold=1.0)
    with pytest.raises(ValueError, match="not among the gate's families"):
        GatedExpertModel(_net(1), {"z": _net(2)}, gate)
    with pytest.raises(ValueError, match="at least one expert"):
        GatedExpertModel(_net(1), {}, gate)
    with pytest.raises(ValueError, match="disagree"):
        GatedExpertModel(_net(1), {"a": _net(2, num_targets=K - 1)}, gate)
    with pytest.raises(ValueError, match="the gate takes"):
        GatedExpertModel(_net(1), {"a": _net(2)}, FamilyGate(F - 1, ["a", "b"]))
    with pytest.raises(ValueError, match="at least two distinct"):
        FamilyGate(F, ["a", "a"])
    with pytest.raises(ValueError, match=r"shape \(B, "):
        _gated().predict(torch.randn(3, F + 1))


# ------------------------------------------------------- on real synthetic worlds
@pytest.fixture(scope="module")
def worlds():
    from shrinklab.data.dataset import build_training_set

    cfg = {"p_min": 4, "p_max": 12, "batch_size": 16}
    return build_training_set(160, seed=0, config=cfg, progress=False), build_training_set(
        96, seed=1, config=cfg, progress=False
    )


def test_family_ratios_against_classical_losses(worlds):
    """A model that *is* a classical estimator has ratio ≥ 1 in every family, with
    equality exactly where that estimator has the family's lowest mean loss."""
    from shrinklab.data.dataset import classical_intensities

    tr, _ = worlds
    losses = {k: tr.quadratic_loss(w).numpy() for k, w in classical_intensities(tr).items()}
    fam = np.asarray(tr.families)
    for loss in losses.values():
        ratios = family_ratios(loss, tr)
        assert set(ratios) == set(fam)
        for f, r in ratios.items():
            best = min(v[fam == f].mean() for v in losses.values())
            assert r == pytest.approx(loss[fam == f].mean() / best, rel=1e-12)
            assert r >= 1 - 1e-12
            assert (abs(r - 1) < 1e-12) == (loss[fam == f].mean() == best)
    best = best_classical_family_loss(tr)
    assert best == {f: min(v[fam == f].mean() for v in losses.values()) for f in set(fam)}
    assert family_ratios(losses["qis"], tr, best) == family_ratios(losses["qis"], tr)
    with pytest.raises(ValueError, match="one entry per world"):
        family_ratios(losses["qis"][:-1], tr)


def test_train_family_experts_and_table(worlds, tmp_path):
    from shrinklab.training.config import TrainConfig

    tr, va = worlds
    fam = sorted(set(tr.families) & set(va.families))[0]
    cfg = TrainConfig(epochs=1, batch_size=32, device="cpu", amp=None)
    net_cfg = {"input_dim": F, "num_targets": K, "hidden_dims": (8,)}
    experts = train_family_experts(
        tr, va, [fam], tmp_path, model_config=net_cfg, config=cfg, seed=0
    )
    assert list(experts) == [fam] and isinstance(experts[fam], MLShrinkageNetwork)
    assert not experts[fam].training
    with pytest.raises(ValueError, match="no training worlds of family 'nope'"):
        train_family_experts(tr, va, ["nope"], tmp_path, model_config=net_cfg, config=cfg)
    pair = train_family_experts(
        tr, va, [fam], tmp_path / "pair", model_config=net_cfg, config=cfg, seed=0, n_members=2
    )[fam]
    assert isinstance(pair, EnsembleModel) and len(pair.members) == 2
    for u, v in zip(pair.members[0].state_dict().values(), experts[fam].state_dict().values()):
        assert torch.equal(u, v)  # member 0 has the single expert's seed
    with pytest.raises(ValueError, match="at least 1"):
        train_family_experts(tr, va, [fam], tmp_path, model_config=net_cfg, config=cfg, n_members=0)
    with pytest.raises(ValueError, match="repeat"):
        train_family_experts(tr, va, [fam, fam], tmp_path, model_config=net_cfg, config=cfg)

    gate = train_family_gate(tr.features, tr.families, hidden_dims=(8,), epochs=2)
    gated = GatedExpertModel(_net(1), experts, gate)
    table = family_loss_table({"general": gated.general, "gated": gated}, tr)
    assert list(table.index) == ["general", "gated"]
    assert {f"ratio_{f}" for f in set(tr.families)} <= set(table.columns)
    loss = tr.quadratic_loss(gated.predict(tr.features).intensities.double())
    assert table.loc["gated", "norm_loss"] == pytest.approx(float((loss / tr.d).mean()), rel=1e-9)


def test_with_experts_of_serves_the_same_rows_by_the_same_experts():
    from shrinklab.evaluation.compression import with_experts_of

    source = _gated(threshold=0.6)
    general = _net(7)
    model = with_experts_of(general, source).eval()
    x = torch.randn(64, F)
    choice = source.expert_choice(x)
    assert torch.equal(model.expert_choice(x), choice)
    out, ref_general = model.predict(x), general.predict(x)
    for i, expert in enumerate(source.experts):
        rows = choice == i
        if rows.any():
            torch.testing.assert_close(
                out.alpha[rows], expert.predict(x[rows]).alpha.to(out.alpha.dtype)
            )
    keep = choice < 0
    assert keep.any() and (~keep).any()  # both the general model and an expert serve
    torch.testing.assert_close(out.alpha[keep], ref_general.alpha[keep].to(out.alpha.dtype))
    torch.testing.assert_close(out.log_var, ref_general.log_var.to(out.log_var.dtype))
    with pytest.raises(TypeError, match="GatedExpertModel"):
        with_experts_of(general, _net(8))
    with pytest.raises(TypeError, match="already has experts"):
        with_experts_of(source, source)


# ------------------------------------------------------------- shared experts (0035)
def _shared(threshold: float = 0.9) -> tuple[GatedExpertModel, MLShrinkageNetwork]:
    """Gate over a, b, c; ``a`` has its own expert, ``b`` and ``c`` share one module."""
    gate = _gated(threshold=0.6).gate
    server = _net(5)
    return GatedExpertModel(
        _net(1), {"a": _net(2), "b": server, "c": server}, gate, threshold
    ), server


def test_shared_expert_serves_each_of_its_families_and_is_stored_once(tmp_path):
    model, server = _shared()
    assert len(model.experts) == 2 and model.expert_families == ["a", "b", "c"]
    assert model.expert_slots == [0, 1, 1] and model.expert_map()["c"] is server
    x = torch.randn(400, F) * 2
    with torch.no_grad():
        out = model(x)
        proba = model.gate(x)
        ref = {"general": model.general(x), "a": model.experts[0](x), "s": server(x)}
    used = {"general": 0, "a": 0, "s": 0}
    for i in range(len(x)):  # brute force: the family with the largest probability above it
        src = "general"
        best = max("abc", key=lambda f: float(proba[i, model.gate.families.index(f)]))
        if proba[i, model.gate.families.index(best)] > model.threshold:
            src = "a" if best == "a" else "s"
        used[src] += 1
        torch.testing.assert_close(out.alpha[i], ref[src].alpha[i], atol=0, rtol=0)
    assert min(used.values()) > 0, used
    torch.testing.assert_close(model.predict(x).alpha, out.alpha, atol=1e-6, rtol=0)
    # saved once, loaded with the sharing intact and the same outputs
    path = save_model(tmp_path / "shared.pt", model, FEATURE_NAMES, TARGET_NAMES)
    loaded = load_model(path)
    assert len(loaded.experts) == 2 and loaded.expert_map()["b"] is loaded.expert_map()["c"]
    assert loaded.expert_families == ["a", "b", "c"]
    assert len(torch.load(path, weights_only=True)["state_dict"]) == len(model.state_dict())
    torch.testing.assert_close(loaded.predict(x).alpha, model.predict(x).alpha, atol=0, rtol=0)


def test_config_without_sharing_is_unchanged():
    config = _gated().config
    assert "shared_experts" not in config and "expert_order" not in config
    assert list(config["experts"]) == ["a", "b"]


def test_numpy_forward_of_a_shared_expert_model():
    from shrinklab.models.numpy_forward import NumpyForward

    model, _ = _shared()
    x = torch.randn(300, F) * 2
    fwd = NumpyForward(model)
    assert fwd.supported
    alpha, weights, _ = fwd(x.numpy())
    out = model.predict(x)
    np.testing.assert_allclose(alpha, out.alpha.numpy(), atol=1e-5)
    np.testing.assert_allclose(weights, out.weights.numpy(), atol=1e-5)


def test_choose_expert_pools_the_families_of_a_shared_module():
    from shrinklab.models.experts import choose_expert

    slots = [0, 1, 1, 1]  # family 0 alone, families 1-3 share module 1
    p = torch.tensor(
        [
            [0.10, 0.40, 0.35, 0.15],  # no family above 0.7, module 1 together 0.9
            [0.75, 0.10, 0.10, 0.05],  # family 0 alone
            [0.40, 0.20, 0.20, 0.20],  # module 1 together 0.6: the general model
            [0.05, 0.10, 0.80, 0.05],  # family 2 above the threshold on its own
        ]
    )
    assert choose_expert(p, slots, 0.7).tolist() == [-1, 0, -1, 2]
    assert choose_expert(p, slots, 0.7, pool_shared=True).tolist() == [1, 0, -1, 2]
    # against a brute-force rule on random probabilities
    rng = np.random.default_rng(0)
    q = torch.as_tensor(rng.dirichlet(np.full(4, 0.3), size=2000))
    got = choose_expert(q, slots, 0.7, pool_shared=True).tolist()
    for row, g in zip(q.tolist(), got, strict=True):
        totals = [row[0], sum(row[1:])]
        m = int(np.argmax(totals))
        want = -1 if totals[m] <= 0.7 else (0 if m == 0 else 1 + int(np.argmax(row[1:])))
        assert g == want
    assert 0.05 < np.mean(np.array(got) >= 1) < 0.95  # both outcomes occur
    # one family per module: pooling changes nothing
    torch.testing.assert_close(
        choose_expert(q, [0, 1, 2, 3], 0.7, pool_shared=True), choose_expert(q, [0, 1, 2, 3], 0.7)
    )


def test_pooled_shared_expert_serves_more_rows_and_survives_save_and_numpy(tmp_path):
    from shrinklab.models.numpy_forward import NumpyForward

    single, server = _shared(threshold=0.6)
    pooled = GatedExpertModel(
        single.general, single.expert_map(), single.gate, 0.6, pool_shared=True
    )
    x = torch.randn(2000, F) * 2
    a, b = single.expert_choice(x), pooled.expert_choice(x)
    assert ((a >= 1) <= (b >= 1)).all() and int((b >= 1).sum()) > int((a >= 1).sum())
    assert "pool_shared" not in single.config and pooled.config["pool_shared"] is True
    loaded = load_model(save_model(tmp_path / "p.pt", pooled, FEATURE_NAMES, TARGET_NAMES))
    assert loaded.pool_shared
    torch.testing.assert_close(loaded.predict(x).alpha, pooled.predict(x).alpha, atol=0, rtol=0)
    alpha, _, _ = NumpyForward(pooled)(x.numpy())
    np.testing.assert_allclose(alpha, pooled.predict(x).alpha.numpy(), atol=1e-5)
    assert not np.allclose(alpha, single.predict(x).alpha.numpy(), atol=1e-5)


def test_with_server_for_adds_one_module_for_the_named_families():
    from shrinklab.evaluation.compression import with_server_for

    gate = _gated(threshold=0.6).gate
    base = GatedExpertModel(_net(1), {"a": _net(2)}, gate, 0.55)
    server = _net(9)
    model = with_server_for(base, server, ["b", "c"])
    assert model.expert_families == ["a", "b", "c"] and len(model.experts) == 2
    assert model.general is base.general and model.gate is base.gate
    x = torch.randn(300, F) * 2
    choice, base_choice = model.expert_choice(x), base.expert_choice(x)
    out, ref = model.predict(x), base.predict(x)
    served = choice >= 1
    assert served.any() and (~served).any()
    # rows the server does not take are base's; the rows it takes are the server's
    keep = ~served
    torch.testing.assert_close(out.alpha[keep], ref.alpha[keep], atol=0, rtol=0)
    torch.testing.assert_close(
        out.alpha[served], server.predict(x[served]).alpha, atol=1e-6, rtol=0
    )
    assert bool((base_choice[keep] == choice[keep]).all())
    with pytest.raises(ValueError, match="already have an expert"):
        with_server_for(base, server, ["a"])
    with pytest.raises(ValueError, match="not among the gate"):
        with_server_for(base, server, ["z"])
    with pytest.raises(ValueError, match="distinct"):
        with_server_for(base, server, ["b", "b"])
    with pytest.raises(TypeError, match="GatedExpertModel"):
        with_server_for(_net(3), server, ["b"])


# ------------------------------------------------------------- soft mixture (0044)
def test_soft_mixture_is_the_gate_weighted_average_of_the_intensities(tmp_path):
    from shrinklab.evaluation.compression import with_mixing
    from shrinklab.models.numpy_forward import NumpyForward

    hard, server = _shared(threshold=0.6)
    soft = with_mixing(hard, "soft")
    assert soft.general is hard.general and soft.gate is hard.gate and soft.mixing == "soft"
    x = torch.randn(500, F) * 2
    # independent reference in NumPy float64: each family's probability times the
    # intensities of the module serving it, the rest on the general model
    with torch.no_grad():
        p = hard.gate(x).double().numpy()
        w_of = {
            "general": hard.general(x).intensities.double().numpy(),
            "a": hard.experts[0](x).intensities.double().numpy(),
            "s": server(x).intensities.double().numpy(),
        }
    col = {f: hard.gate.families.index(f) for f in "abc"}
    share = {"a": p[:, col["a"]], "s": p[:, col["b"]] + p[:, col["c"]]}
    want = w_of["general"] * (1 - share["a"] - share["s"])[:, None]
    want += share["a"][:, None] * w_of["a"] + share["s"][:, None] * w_of["s"]
    out = soft.predict(x)
    np.testing.assert_allclose(out.intensities.double().numpy(), want, atol=2e-6)
    np.testing.assert_allclose(out.weights.sum(1).numpy(), 1.0, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(soft(x).intensities, out.intensities, atol=1e-6, rtol=0)
    # it differs from the switch, and the predicted variance stays the general model's
    assert not torch.allclose(out.alpha, hard.predict(x).alpha, atol=1e-4)
    torch.testing.assert_close(out.log_var, hard.predict(x).log_var, atol=0, rtol=0)
    # the mean weights: each family's probability, the general model the rest
    share_mean = soft.expert_share(x)
    assert abs(sum(share_mean.values()) - 1.0) < 1e-9
    assert abs(share_mean["b"] - float(p[:, col["b"]].mean())) < 1e-6
    # saved with its mixing, loaded the same; the NumPy evaluator mixes the same way
    assert soft.config["mixing"] == "soft" and "mixing" not in hard.config
    loaded = load_model(save_model(tmp_path / "soft.pt", soft, FEATURE_NAMES, TARGET_NAMES))
    assert loaded.mixing == "soft"
    torch.testing.assert_close(loaded.predict(x).alpha, out.alpha, atol=0, rtol=0)
    fwd = NumpyForward(soft)
    alpha, weights, _ = fwd(x.numpy())
    np.testing.assert_allclose(alpha[:, None] * weights, want, atol=1e-5)
    # all modules' members run as one stack; module by module gives the same numbers
    assert fwd._eval.fused is not None
    fwd._eval.fused = None
    alpha_each, weights_each, _ = fwd(x.numpy())
    np.testing.assert_array_equal(alpha_each, alpha)
    np.testing.assert_array_equal(weights_each, weights)


def test_soft_mixture_of_a_sure_gate_is_the_switch_and_bad_mixing_is_refused():
    from shrinklab.core.params.compress import MIXINGS as SECTION_MIXINGS
    from shrinklab.evaluation.compression import with_mixing
    from shrinklab.models.experts import MIXINGS

    assert SECTION_MIXINGS == MIXINGS  # params.yaml accepts exactly the model's mixings

    hard = _gated(threshold=0.6)
    for p in hard.gate.mlp[-1].parameters():  # a gate sure of family ``a`` everywhere
        torch.nn.init.zeros_(p)
    with torch.no_grad():
        hard.gate.mlp[-1].bias[0] = 50.0
    x = torch.randn(50, F)
    soft = with_mixing(hard, "soft")
    torch.testing.assert_close(soft.predict(x).alpha, hard.predict(x).alpha, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="mixing must be one of"):
        with_mixing(hard, "average")
    with pytest.raises(TypeError, match="GatedExpertModel"):
        with_mixing(_net(1), "soft")


def test_with_experts_replaced_swaps_one_module_and_keeps_the_rest():
    """Decision 0045: a family's module is replaced (for every family it serves); the
    gate, pooling, mixing and the other modules stay, and the outputs change only
    through the replaced module."""
    from shrinklab.evaluation.compression import with_experts_replaced, with_mixing

    model, server = _shared()
    model = with_mixing(model, "soft")
    new_a, new_server = _net(11), _net(12)
    swapped = with_experts_replaced(model, {"a": new_a})
    assert swapped.expert_map()["a"] is new_a and swapped.expert_map()["b"] is server
    assert swapped.gate is model.gate and swapped.general is model.general
    assert (swapped.mixing, swapped.threshold, swapped.pool_shared) == (
        "soft",
        model.threshold,
        model.pool_shared,
    )
    both = with_experts_replaced(model, {"c": new_server})  # shared: replaced for b and c
    assert both.expert_map()["b"] is new_server and both.expert_map()["c"] is new_server
    assert len(both.experts) == 2 and both.expert_map()["a"] is model.expert_map()["a"]
    x = torch.randn(300, F) * 2
    with torch.no_grad():
        P = model.module_weights(x)
        delta = (
            new_a.predict(x).intensities.double() - model.experts[0].predict(x).intensities.double()
        )
    want = model.predict(x).intensities.double() + P[:, :1] * delta
    torch.testing.assert_close(swapped.predict(x).intensities.double(), want, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="no expert"):
        with_experts_replaced(model, {"zzz": new_a})
    with pytest.raises(TypeError, match="GatedExpertModel"):
        with_experts_replaced(_net(1), {"a": new_a})


def test_expert_modules_names_the_missing_family():
    from shrinklab.evaluation.compression import expert_modules

    model, server = _shared()
    got = expert_modules(model, ["c", "a"])
    assert list(got) == ["c", "a"] and got["c"] is server and got["a"] is model.experts[0]
    assert expert_modules(_net(1), []) == {}
    with pytest.raises(ValueError, match=r"no expert for \['zzz'\] \(it has \['a', 'b', 'c'\]\)"):
        expert_modules(model, ["a", "zzz"])
    with pytest.raises(TypeError, match="GatedExpertModel"):
        expert_modules(_net(1), ["a"])


def test_with_server_families_added_moves_the_family_weight_to_the_server():
    """The research log's candidate: the non-market server also serves ``diversified``. In the
    soft mixture the intensities then change by P(diversified) · (w_server − w_general),
    an identity checked against the modules' own outputs; everything else is shared."""
    from shrinklab.evaluation.compression import (
        NON_MARKET_FAMILIES,
        with_ensemble_for_non_market,
        with_experts_of,
        with_mixing,
        with_server_families_added,
    )

    families = [*NON_MARKET_FAMILIES, "diversified", "sp500", "block"]
    gate = FamilyGate(F, families, hidden_dims=(16,))
    torch.manual_seed(4)
    for p in gate.parameters():
        torch.nn.init.normal_(p, std=2.0)
    teacher = GatedExpertModel(_net(1), {"sp500": _net(2)}, gate.eval(), 0.7)
    teacher.general = EnsembleModel([_net(5), _net(6)], label="e")
    base = with_ensemble_for_non_market(with_experts_of(_net(3), teacher), teacher)
    base = with_mixing(base, "soft")
    model = with_server_families_added(base, ["diversified"])
    server = base.expert_map()["toeplitz"]
    assert model.expert_map()["diversified"] is server and len(model.experts) == len(base.experts)
    assert model.gate is base.gate and model.general is base.general
    assert (model.mixing, model.threshold, model.pool_shared) == (
        base.mixing,
        base.threshold,
        base.pool_shared,
    )
    x = torch.randn(400, F) * 2
    with torch.no_grad():
        p_div = gate(x)[:, families.index("diversified")].double()[:, None]
        delta = (
            server.predict(x).intensities.double() - base.general.predict(x).intensities.double()
        )
    want = base.predict(x).intensities.double() + p_div * delta
    got = model.predict(x).intensities.double()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert float((got - base.predict(x).intensities.double()).abs().max()) > 1e-3
    assert with_server_families_added(base, []) is base
    with pytest.raises(ValueError, match="already served"):
        with_server_families_added(base, ["sp500"])
    with pytest.raises(ValueError, match="not among the gate"):
        with_server_families_added(base, ["zzz"])
    with pytest.raises(ValueError, match="non-market families"):
        with_server_families_added(with_experts_of(_net(3), teacher), ["diversified"])
    with pytest.raises(TypeError, match="GatedExpertModel"):
        with_server_families_added(_net(3), ["diversified"])


# ----------------------------------------------------------------------------- guards
def _guarded_pair(threshold: float = 0.5, max_log_ratio: float | None = 0.5):
    """A: a soft mixture where ``c``'s probability goes to the module shared with ``b``;
    B: the same with ``c`` served by its own expert; G: B with a guard on ``c`` (fallback
    ``b``), which should be B where the guard is open and A elsewhere."""
    gate = _gated(seed=3).gate
    server, c_expert = _net(5), _net(6)
    a = GatedExpertModel(
        _net(1), {"a": _net(2), "b": server, "c": server}, gate, 0.7, mixing="soft"
    )
    members = a.expert_map() | {"c": c_expert}
    b = GatedExpertModel(a.general, members, gate, 0.7, mixing="soft")
    guard = {"threshold": threshold, "max_log_ratio": max_log_ratio, "fallback": "b"}
    g = GatedExpertModel(a.general, members, gate, 0.7, mixing="soft", guards={"c": guard})
    return a, b, g


def test_a_guarded_family_counts_for_its_expert_only_where_the_guard_is_open(tmp_path):
    """Decision 0058: the guarded model equals B (the expert weighs P(c)) where
    P(c | x) > threshold and log p/n ≤ the limit, and A (P(c) with the shared module)
    elsewhere: checked row by row against the two unguarded models."""
    a, b, g = _guarded_pair()
    torch.manual_seed(11)
    x = torch.randn(600, F) * 2
    x[:, FEATURE_NAMES.index("log_p_over_n")] = torch.linspace(-2.0, 2.0, 600)
    with torch.no_grad():
        p_c = g.gate(x)[:, g.gate.families.index("c")]
    open_ = (p_c > 0.5) & (x[:, FEATURE_NAMES.index("log_p_over_n")] <= 0.5)
    assert 20 < int(open_.sum()) < 580  # both branches are exercised
    want = torch.where(
        open_[:, None], b.predict(x).intensities.double(), a.predict(x).intensities.double()
    )
    got = g.predict(x).intensities.double()
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(g(x).intensities.double(), got, atol=1e-5, rtol=0)
    # where the guard is closed the expert has no weight; the weights still sum as before
    with torch.no_grad():
        weights, weights_b = g.module_weights(x), b.module_weights(x)
    assert float(weights[~open_, g.expert_slots[g.expert_families.index("c")]].abs().max()) == 0
    torch.testing.assert_close(weights.sum(1), weights_b.sum(1), atol=1e-12, rtol=0)
    share = g.expert_share(x)
    assert share["c"] < b.expert_share(x)["c"] and share["b"] > b.expert_share(x)["b"]
    # no p/n limit: the threshold alone decides
    _, _, no_limit = _guarded_pair(max_log_ratio=None)
    want = torch.where(
        (p_c > 0.5)[:, None], b.predict(x).intensities.double(), a.predict(x).intensities.double()
    )
    torch.testing.assert_close(no_limit.predict(x).intensities.double(), want, atol=1e-6, rtol=0)
    # the guard is stored with the model; a model without guards stores none
    loaded = load_model(save_model(tmp_path / "g.pt", g, FEATURE_NAMES, TARGET_NAMES))
    assert loaded.guards == g.guards and loaded.config["guards"]["c"]["fallback"] == "b"
    torch.testing.assert_close(loaded.predict(x).intensities.double(), got, atol=0, rtol=0)
    assert "guards" not in a.config and "guards" not in b.config


def test_a_guard_with_no_fallback_gives_the_closed_rows_to_the_general_model(tmp_path):
    """Fallback ``None`` (a model with no module for ``c`` besides its expert, as the
    deployed soft form without the non-market server): where the guard is closed the
    guarded model equals the same mixture without the ``c`` expert, in which the general
    model keeps P(c); where open, the model with it. Row by row, and through save/load
    and the NumPy evaluator."""
    import copy

    from shrinklab.models.numpy_forward import NumpyForward

    gate = _gated(seed=3).gate
    general, experts = _net(1), {"a": _net(2), "b": _net(5)}
    without = GatedExpertModel(general, experts, gate, 0.7, mixing="soft")
    with_c = GatedExpertModel(general, experts | {"c": _net(6)}, gate, 0.7, mixing="soft")
    guard = {"threshold": 0.4, "max_log_ratio": 0.3, "fallback": None}
    g = GatedExpertModel(
        general, with_c.expert_map(), gate, 0.7, mixing="soft", guards={"c": guard}
    )
    torch.manual_seed(13)
    x = torch.randn(600, F) * 2
    x[:, FEATURE_NAMES.index("log_p_over_n")] = torch.linspace(-2.0, 2.0, 600)
    with torch.no_grad():
        p_c = gate(x)[:, gate.families.index("c")]
    open_ = (p_c > 0.4) & (x[:, FEATURE_NAMES.index("log_p_over_n")] <= 0.3)
    assert 20 < int(open_.sum()) < 580
    want = torch.where(
        open_[:, None],
        with_c.predict(x).intensities.double(),
        without.predict(x).intensities.double(),
    )
    got = g.predict(x).intensities.double()
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    with torch.no_grad():  # closed rows: the experts' weights sum to the model's without c
        torch.testing.assert_close(
            g.module_weights(x).sum(1)[~open_],
            without.module_weights(x).sum(1)[~open_],
            atol=1e-12,
            rtol=0,
        )
    loaded = load_model(save_model(tmp_path / "g.pt", g, FEATURE_NAMES, TARGET_NAMES))
    assert loaded.guards["c"]["fallback"] is None
    torch.testing.assert_close(loaded.predict(x).intensities.double(), got, atol=0, rtol=0)
    ref = copy.deepcopy(g).double()
    alpha, weights, _ = NumpyForward(g)(x.double().numpy())
    np.testing.assert_allclose(
        alpha[:, None] * weights, ref.predict(x.double()).intensities.numpy(), atol=1e-10, rtol=0
    )


def test_bad_guards_are_refused_clearly():
    a, b, _ = _guarded_pair()
    members, gate = b.expert_map(), b.gate
    ok = {"threshold": 0.5, "max_log_ratio": None, "fallback": "b"}
    cases = [
        ({"c": ok}, "hard", "soft mixture"),
        ({"c": {"threshold": 0.5, "fallback": "b"}}, "soft", "exactly the keys"),
        ({"zzz": ok}, "soft", "has no expert"),
        ({"c": ok | {"threshold": 1.0}}, "soft", r"in \(0, 1\)"),
        ({"c": ok | {"fallback": "c"}}, "soft", "served by another module"),
        ({"c": ok | {"fallback": "zzz"}}, "soft", "served by another module"),
    ]
    for guards, mixing, match in cases:
        with pytest.raises(ValueError, match=match):
            GatedExpertModel(b.general, members, gate, 0.7, mixing=mixing, guards=guards)
    # a fallback served by the same module as the guarded family is refused too
    with pytest.raises(ValueError, match="served by another module"):
        GatedExpertModel(
            a.general, a.expert_map(), gate, 0.7, mixing="soft",
            guards={"c": ok},
        )  # fmt: skip


def test_numpy_forward_of_a_guarded_model_equals_torch():
    """The estimator's NumPy evaluator moves a guarded family's probability as
    ``GatedExpertModel.family_weights`` does (float64 copy of the model: 1e-10)."""
    import copy

    from shrinklab.models.numpy_forward import NumpyForward

    _, b, g = _guarded_pair()
    torch.manual_seed(12)
    x = torch.randn(400, F).double() * 2
    x[:, FEATURE_NAMES.index("log_p_over_n")] = torch.linspace(-2.0, 2.0, 400).double()
    ref = copy.deepcopy(g).double()
    out = ref.predict(x)
    alpha, weights, _ = NumpyForward(g)(x.numpy())
    np.testing.assert_allclose(alpha, out.alpha.numpy(), atol=1e-10, rtol=0)
    # the intensities α π: π alone is ill-defined where the mixture's α is ~0
    np.testing.assert_allclose(
        alpha[:, None] * weights, out.intensities.numpy(), atol=1e-10, rtol=0
    )
    # and it differs from the unguarded model's where the guard is closed
    alpha_b, _, _ = NumpyForward(b)(x.numpy())
    assert float(np.abs(alpha - alpha_b).max()) > 1e-4


# ----------------------------------------------------------------------------- sole servers
def test_a_sole_server_takes_the_whole_window_where_the_gate_is_sure(tmp_path):
    """Decision 0075: where P(a | x) > threshold and log p/n ≤ the limit, the model equals
    expert ``a`` alone; elsewhere the soft mixture without the sole server. Row by row
    against the two, through save/load and the NumPy evaluator (float64 copy: 1e-10)."""
    import copy

    from shrinklab.models.numpy_forward import NumpyForward

    a, _, _ = _guarded_pair()
    sole = {"a": {"threshold": 0.5, "max_log_ratio": 0.5}}
    s = GatedExpertModel(a.general, a.expert_map(), a.gate, 0.7, mixing="soft", sole=sole)
    torch.manual_seed(14)
    x = torch.randn(600, F) * 2
    x[:, FEATURE_NAMES.index("log_p_over_n")] = torch.linspace(-2.0, 2.0, 600)
    with torch.no_grad():
        p_a = a.gate(x)[:, a.gate.families.index("a")]
    on = (p_a > 0.5) & (x[:, FEATURE_NAMES.index("log_p_over_n")] <= 0.5)
    assert 20 < int(on.sum()) < 580  # both branches are exercised
    expert = a.expert_map()["a"].predict(x).intensities.double()
    mixed = a.predict(x).intensities.double()
    assert float((expert - mixed)[on].abs().max()) > 1e-3  # the rule changes something
    want = torch.where(on[:, None], expert, mixed)
    got = s.predict(x).intensities.double()
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(s(x).intensities.double(), got, atol=1e-5, rtol=0)
        weights = s.module_weights(x)
    torch.testing.assert_close(weights[on].sum(1), torch.ones(int(on.sum()), dtype=weights.dtype))
    loaded = load_model(save_model(tmp_path / "s.pt", s, FEATURE_NAMES, TARGET_NAMES))
    assert loaded.sole == s.sole and "sole" not in a.config
    torch.testing.assert_close(loaded.predict(x).intensities.double(), got, atol=0, rtol=0)
    ref = copy.deepcopy(s).double()
    alpha, pi, _ = NumpyForward(s)(x.double().numpy())
    np.testing.assert_allclose(
        alpha[:, None] * pi, ref.predict(x.double()).intensities.numpy(), atol=1e-10, rtol=0
    )


def test_bad_sole_servers_are_refused_clearly():
    a, _, _ = _guarded_pair()
    ok = {"threshold": 0.6, "max_log_ratio": None}
    cases = [
        ({"a": ok}, "hard", "soft mixture"),
        ({"a": {"threshold": 0.6}}, "soft", "exactly the keys"),
        ({"zzz": ok}, "soft", "has no expert"),
        ({"a": ok | {"threshold": 0.4}}, "soft", r"in \[0.5, 1\)"),
        ({"a": ok | {"max_log_ratio": float("nan")}}, "soft", "finite or None"),
    ]
    for sole, mixing, match in cases:
        with pytest.raises(ValueError, match=match):
            GatedExpertModel(a.general, a.expert_map(), a.gate, 0.7, mixing=mixing, sole=sole)


def test_with_changes_keeps_every_other_part():
    """``GatedExpertModel.with_changes``: the one way the helpers rebuild a gated model;
    each argument not named is kept (the same modules, not copies), an unknown name is
    refused."""
    _, _, g = _guarded_pair()
    sole = {"a": {"threshold": 0.6, "max_log_ratio": None}}
    s = g.with_changes(sole=sole)
    assert s.general is g.general and s.gate is g.gate and s.guards == g.guards
    assert s.expert_map() == g.expert_map() and s.mixing == g.mixing == "soft"
    assert s.threshold == g.threshold and s.pool_shared == g.pool_shared and s.sole == sole
    h = s.with_changes(mixing="soft", guards=None)
    assert h.guards == {} and h.sole == sole
    with pytest.raises(TypeError, match="unknown arguments"):
        g.with_changes(temperature=2.0)
