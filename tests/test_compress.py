"""Compression: exact pruning sparsity, torchao int8 against a dequantized reference,
distillation, ONNX / torch.export parity, trade-off table and deployable choice."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from _tiny_sets import FNAMES, TNAMES, F, K, tiny_set

from shrinklab.core.metrics import normalised_prial_of, prial_of
from shrinklab.evaluation import compression as evaluation_compression
from shrinklab.evaluation.compression import choose_deployable, latency, tradeoff_table
from shrinklab.models.compressed import (
    OnnxModel,
    QuantizedNetwork,
    count_parameters,
    export_onnx,
    export_program,
    model_file_size,
    onnx_parity,
    quantize_int8,
)
from shrinklab.models.ensemble import EnsembleModel
from shrinklab.models.network import MLShrinkageNetwork, ShrinkageOutput
from shrinklab.models.registry import load_model, save_model
from shrinklab.training.compression import (
    distill,
    distillation_loss,
    fine_tune,
    magnitude_prune,
    pruning_sweep,
    sparsity,
    teacher_targets,
)


@pytest.fixture(scope="module")
def data():
    return tiny_set(384, F, K, seed=20), tiny_set(256, F, K, seed=21)


@pytest.fixture(scope="module")
def trained(data):
    """A network fitted for a few epochs (non-trivial weights and BN statistics)."""
    tr, _ = data
    torch.manual_seed(0)
    net = MLShrinkageNetwork(F, K, hidden_dims=(64, 32), dropout=0.0, input_dropout=0.0)
    fine_tune(net, tr, epochs=5, lr=3e-3, batch_size=64, seed=0)
    return net.eval()


@pytest.fixture(scope="module")
def teacher(data):
    tr, _ = data
    members = []
    for s in range(3):
        torch.manual_seed(s)
        m = MLShrinkageNetwork(F, K, hidden_dims=(32, 16), dropout=0.0)
        fine_tune(m, tr, epochs=4, lr=3e-3, batch_size=64, seed=s)
        members.append(m.eval())
    return EnsembleModel(members)


@pytest.fixture(scope="module")
def teacher_onnx(teacher, tmp_path_factory):
    return OnnxModel(export_onnx(teacher, tmp_path_factory.mktemp("onnx") / "ensemble.onnx"))


# ------------------------------------------------------------------ fine-tuning
def test_fine_tune_equals_a_plain_adam_loop(data):
    """fine_tune runs through the trainer's shared pass (shrinklab.training.loop.run_epoch); it
    must equal the textbook loop: one generator seeded once, a fresh permutation per
    epoch, batches of ``batch_size`` (a 1-sample tail skipped), Adam at a constant lr,
    no clipping. Weights and per-epoch losses agree to 1e-6."""
    from types import SimpleNamespace

    from shrinklab.training.compression import supervised_loss

    full, _ = data
    keys = ("features", "oracle_w", "G", "c", "d")
    t = {k: torch.as_tensor(np.asarray(getattr(full, k)))[:383].float() for k in keys}
    tr = SimpleNamespace(**t)  # 383 = 2 · 191 + 1: the last batch has one sample
    torch.manual_seed(3)
    net = MLShrinkageNetwork(F, K, hidden_dims=(16,), dropout=0.0, input_dropout=0.0)
    ref = copy.deepcopy(net)
    hist = fine_tune(net, tr, epochs=2, lr=1e-2, batch_size=191, seed=4)
    opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    gen, ref_hist = torch.Generator().manual_seed(4), []
    ref.train()
    for _ in range(2):
        order, total, count = torch.randperm(383, generator=gen), 0.0, 0
        for s in range(0, 383, 191):
            idx = order[s : s + 191]
            if idx.numel() < 2:
                continue
            batch = {k: v[idx] for k, v in t.items()}
            loss = supervised_loss(ref(batch["features"]), batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.numel()
            count += idx.numel()
        ref_hist.append(total / count)
    np.testing.assert_allclose(hist, ref_hist, rtol=1e-6)
    for (k, a), b in zip(net.state_dict().items(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=k)
    with pytest.raises(ValueError, match="lr > 0"):
        fine_tune(net, tr, lr=0.0)


# ----------------------------------------------------------------------- pruning
@pytest.mark.parametrize("amount", [0.3, 0.5, 0.9])
def test_pruning_reaches_requested_sparsity_exactly(trained, data, amount):
    tr, _ = data
    pruned = magnitude_prune(trained, amount, fine_tune_data=tr, fine_tune_epochs=2)
    # masks made permanent: plain parameters again, same state_dict keys
    assert set(pruned.state_dict()) == set(trained.state_dict())
    assert not any(n.endswith("_orig") for n, _ in pruned.named_parameters())
    for (name, m), (_, m0) in zip(
        [(n, m) for n, m in pruned.named_modules() if isinstance(m, torch.nn.Linear)],
        [(n, m) for n, m in trained.named_modules() if isinstance(m, torch.nn.Linear)],
    ):
        n = m.weight.numel()
        assert int((m.weight == 0).sum()) == round(amount * n), name
        # the zeros are where the original weights were smallest in magnitude
        thresh = m0.weight.abs().flatten().kthvalue(round(amount * n)).values
        assert bool((m0.weight.abs()[m.weight == 0] <= thresh).all())
    assert sparsity(pruned) == pytest.approx(amount, abs=0.01)
    assert sparsity(trained) == 0.0  # the original is untouched


def test_pruning_sweep_table(trained, data):
    tr, va = data
    table, models = pruning_sweep(trained, [0.0, 0.5], va, fine_tune_data=tr, fine_tune_epochs=1)
    assert list(table["amount"]) == [0.0, 0.5]
    assert table["nonzero_parameters"].iloc[1] < table["nonzero_parameters"].iloc[0]
    w = models[0.5].predict(va.features).intensities
    assert table["prial"].iloc[1] == pytest.approx(prial_of(w, va))
    with pytest.raises(ValueError, match="amount"):
        magnitude_prune(trained, 1.0)


def test_pruning_fine_tuned_by_distillation(trained, teacher, data):
    tr, va = data
    pruned = magnitude_prune(trained, 0.6, fine_tune_data=tr, fine_tune_epochs=2, teacher=teacher)
    assert sparsity(pruned) == pytest.approx(0.6, abs=0.01)
    table, _ = pruning_sweep(
        trained, [0.6], va, fine_tune_data=tr, fine_tune_epochs=2, teacher=teacher
    )
    # same seed, same objective: the sweep's model is this one
    w = pruned.predict(va.features).intensities
    assert table["prial"].iloc[0] == pytest.approx(prial_of(w, va), rel=1e-6)


def test_distillation_loss_matches_its_formula(teacher, data):
    from shrinklab.models.network import ShrinkageOutput

    tr, _ = data
    tgt = teacher_targets(teacher, tr)
    g = torch.Generator().manual_seed(0)
    B = 32
    alpha = torch.rand(B, generator=g)
    pi = torch.softmax(torch.randn(B, K, generator=g), 1)
    lv = torch.randn(B, generator=g)
    batch = {
        "teacher_w": tgt["teacher_w"][:B],
        "teacher_log_var": tgt["teacher_log_var"][:B],
        "oracle_w": torch.as_tensor(tr.oracle_w[:B]).float(),
        "G": torch.as_tensor(tr.G[:B]).float(),
        "c": torch.as_tensor(tr.c[:B]).float(),
        "d": torch.as_tensor(tr.d[:B]).float(),
    }
    w = (alpha[:, None] * pi).double()
    G, c, d = (torch.as_tensor(v[:B]).double() for v in (tr.G, tr.c, tr.d))
    frob = ((torch.einsum("bk,bkl,bl->b", w, G, w) - 2 * (c * w).sum(1) + d) / d).mean()
    expected = (
        0.6 * (w - batch["teacher_w"].double()).square().mean()
        + 0.4 * (w - batch["oracle_w"].double()).square().mean()
        + 0.2 * frob
        + 0.1 * (lv.double() - batch["teacher_log_var"].double()).square().mean()
    )
    got = distillation_loss(0.6, 0.2, 0.1)(ShrinkageOutput(alpha, pi, lv), batch)
    assert float(got) == pytest.approx(float(expected), rel=1e-5)
    with pytest.raises(ValueError, match="teacher_weight"):
        distillation_loss(1.5)


# ------------------------------------------------------------------ quantization
def test_int8_weight_only_matches_dequantized_reference(trained, data):
    """torchao int8 weights: per-row symmetric, error ≤ half a step; the quantized model
    equals a float model carrying the dequantized weights (≤ 1e-5), and stays within
    0.02 of the float model's intensities (intensities lie in [0, 1])."""
    _, va = data
    q = quantize_int8(trained, mode="weight_only")
    ref = copy.deepcopy(trained)
    linears = {n: m for n, m in ref.named_modules() if isinstance(m, torch.nn.Linear)}
    for name, m in q.base.named_modules():
        if name not in linears:
            continue
        qw = m.weight
        assert qw.qdata.dtype == torch.int8
        scale = qw.scale.reshape(-1, 1).float()
        deq = qw.qdata.float() * scale
        w = linears[name].weight.detach()
        assert bool(((deq - w).abs() <= 0.5 * scale + 1e-7).all()), name
        # symmetric per-row scale from the row's largest magnitude
        np.testing.assert_allclose(
            (scale.squeeze(1) * 127.5).numpy(), w.abs().amax(1).numpy(), rtol=0.01
        )
        with torch.no_grad():
            linears[name].weight.copy_(deq)
    out_q = q.predict(va.features).intensities
    torch.testing.assert_close(out_q, ref.predict(va.features).intensities, atol=1e-5, rtol=0)
    diff = (out_q - trained.predict(va.features).intensities).abs().max()
    assert float(diff) < 0.02


@pytest.mark.parametrize("mode", ["weight_only", "dynamic"])
def test_int8_save_load_round_trip_and_smaller_file(data, tmp_path, mode):
    _, va = data
    torch.manual_seed(0)
    net = MLShrinkageNetwork(F, K).eval()  # the specification's size (128, 64, 32)
    q = quantize_int8(net, mode=mode)
    path = save_model(tmp_path / "q.pt", q, FNAMES, TNAMES)
    loaded = load_model(path)
    assert isinstance(loaded, QuantizedNetwork) and loaded.mode == mode
    for u, v in zip(loaded.predict(va.features), q.predict(va.features)):
        assert torch.equal(u, v)
    # the file holds plain tensors only (int8 data + scales): it loads with
    # weights_only=True even where torchao has not been imported
    state = torch.load(path, weights_only=True)["state_dict"]
    assert all(type(v) is torch.Tensor for v in state.values())
    assert state["base.alpha_head.weight_int8"].dtype == torch.int8
    # int8 weights: the file shrinks by well over half (float32 -> int8 + row scales)
    assert model_file_size(q) < 0.5 * model_file_size(net)
    assert count_parameters(q) == count_parameters(net)


def test_ensemble_with_an_int8_member_round_trips(trained, data, tmp_path):
    _, va = data
    ens = EnsembleModel([trained, quantize_int8(trained)])
    loaded = load_model(save_model(tmp_path / "mix.pt", ens, FNAMES, TNAMES))
    assert isinstance(loaded.members[1], QuantizedNetwork)
    for u, v in zip(loaded.predict(va.features), ens.predict(va.features)):
        assert torch.equal(u, v)


# ------------------------------------------------------------------ distillation
def test_distilled_student_matches_teacher_better_than_random_init(teacher, data):
    tr, va = data
    student = distill(teacher, tr, epochs=15, batch_size=64, seed=0)
    assert student.config["hidden_dims"] == [32, 16]
    torch.manual_seed(0)
    rand = MLShrinkageNetwork(F, K, hidden_dims=(32, 16)).eval()
    t = teacher.predict(va.features).intensities
    mse_student = float((student.predict(va.features).intensities - t).square().mean())
    mse_random = float((rand.predict(va.features).intensities - t).square().mean())
    assert mse_student < 0.25 * mse_random
    assert count_parameters(student) < count_parameters(teacher) / 2


def test_student_takes_the_teachers_gate(data):
    """A sparsemax teacher (a network, or an ensemble of them) gets a sparsemax student;
    a softmax teacher a softmax one; an explicit student_config wins."""
    from shrinklab.training.compression import _gate_of

    tr, _ = data
    sparse = MLShrinkageNetwork(F, K, hidden_dims=(8,), gate="sparsemax").eval()
    assert _gate_of(sparse) == "sparsemax"
    assert _gate_of(EnsembleModel([sparse, copy.deepcopy(sparse)])) == "sparsemax"
    assert _gate_of(MLShrinkageNetwork(F, K, hidden_dims=(8,))) == "softmax"
    assert _gate_of(object()) == "softmax"
    assert distill(sparse, tr, epochs=1, seed=0).config["gate"] == "sparsemax"
    assert (
        distill(sparse, tr, epochs=1, seed=0, student_config={"gate": "softmax"}).config["gate"]
        == "softmax"
    )


# ---------------------------------------------------------- inference formats
def test_onnx_parity_attention_network(data, tmp_path):
    _, va = data
    torch.manual_seed(1)
    model = MLShrinkageNetwork(F, K, hidden_dims=(16, 8), use_attention=True, attention_dim=8)
    model.eval()
    path = export_onnx(model, tmp_path / "m.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # one self-contained file
    # no source paths inside (the exporter's stack traces are dropped): the file does not
    # depend on where the repository is checked out
    raw = path.read_bytes()
    assert b"stack_trace" not in raw and b"network.py" not in raw
    import onnx

    assert onnx.load(str(path)).graph.node[0].metadata_props  # the other metadata stay
    om = OnnxModel(path)
    for rows in (slice(0, 1), slice(0, 257)):
        assert onnx_parity(model, om, va.features[rows]) <= 1e-5
    with pytest.raises(ValueError, match="shape"):
        om.predict(np.zeros((2, F + 1), np.float32))


def test_onnx_parity_ensemble(teacher, teacher_onnx, data):
    _, va = data
    for rows in (slice(0, 1), slice(0, 257)):
        assert onnx_parity(teacher, teacher_onnx, va.features[rows]) <= 1e-5
    out, ref = teacher_onnx.predict(va.features[:5]), teacher.predict(va.features[:5])
    torch.testing.assert_close(out.log_var, ref.log_var, atol=1e-5, rtol=1e-5)


def test_torch_export_parity(trained, data, tmp_path):
    _, va = data
    em = export_program(trained, tmp_path / "m.pt2")
    got = em.predict(va.features).intensities
    torch.testing.assert_close(got, trained.predict(va.features).intensities, atol=1e-6, rtol=0)
    assert em.file_size == (tmp_path / "m.pt2").stat().st_size


# -------------------------------------------------------------- trade-off table
def test_tradeoff_table_and_choice(trained, teacher, teacher_onnx, data):
    _, va = data
    lw = np.zeros((len(va.d), K))
    lw[:, 0] = 0.2
    om = teacher_onnx
    table = tradeoff_table(
        {"ensemble": teacher, "net": trained, "onnx_ensemble": om},
        va,
        lw_intensities=lw,
        repeats=5,
        feature_cost_s=1e-3,
    )
    assert table.attrs["prial_lw"] == pytest.approx(prial_of(lw, va))
    # the gain is measured on per-world normalised losses (every world weighs the same)
    p_lw = normalised_prial_of(lw, va)
    p_ens = normalised_prial_of(teacher.predict(va.features).intensities, va)
    assert table.attrs["norm_prial_lw"] == pytest.approx(p_lw)
    assert table.loc["ensemble", "gain_kept"] == pytest.approx(1.0)
    w_net = trained.predict(va.features).intensities
    assert table.loc["net", "prial"] == pytest.approx(prial_of(w_net, va))
    p_net = normalised_prial_of(w_net, va)
    assert table.loc["net", "norm_prial"] == pytest.approx(p_net)
    assert table.loc["net", "gain_kept"] == pytest.approx((p_net - p_lw) / (p_ens - p_lw))
    assert table.loc["onnx_ensemble", "gain_kept"] == pytest.approx(1.0, abs=1e-4)
    assert table.loc["net", "file_bytes"] == model_file_size(trained)
    assert (table[["latency_b1_s", "latency_b1024_s"]] > 0).all().all()
    assert (table["e2e_b1_s"] > 1e-3).all()
    name, reason = choose_deployable(table)
    assert name in table.index and reason
    with pytest.raises(ValueError, match="reference"):
        tradeoff_table({"net": trained}, va, lw_intensities=lw)


def test_worst_family_gain_against_a_brute_force_and_the_rule(monkeypatch):
    """gain_kept_worst_family is the smallest per-family gain kept (numpy brute force on
    hand-made losses); a model that keeps 99 % overall but not in one family is not
    deployed, and without family labels the column is absent."""
    rng = np.random.default_rng(0)
    N = 300
    fam = np.repeat([0, 1, 2], N // 3)
    d = rng.uniform(1.0, 2.0, N)
    fs = 0.3 * d
    # Gram G = I, c = 0 per world: L(w) = |w|² + d; models differ only by |w|² ≤ d
    G, c = np.tile(np.eye(K), (N, 1, 1)), np.zeros((N, K))

    # size and speed are not under test here (the models are fixed intensity tables)
    monkeypatch.setattr(evaluation_compression, "model_file_size", lambda model: 1)
    monkeypatch.setattr(evaluation_compression, "count_parameters", lambda model, nonzero=False: 1)
    monkeypatch.setattr(evaluation_compression, "latency", lambda *a, **k: 1e-3)

    class Fixed:
        """A 'model' whose intensities give a chosen normalised loss per world."""

        def __init__(self, norm_loss):
            w = np.zeros((N, K))
            w[:, 0] = np.sqrt(np.clip(norm_loss - 1.0, 0, None) * d)  # L/d = 1 + w²/d ≥ 1
            self.w = w

        def predict(self, features):
            a = self.w.sum(1)
            pi = np.where(a[:, None] > 0, self.w / np.maximum(a, 1e-300)[:, None], 1.0 / K)
            return ShrinkageOutput(torch.as_tensor(a), torch.as_tensor(pi), torch.zeros(N))

    # every model is worse than S here (L/d ≥ 1), so build gains relative to a worse LW
    lw_nl, ref_nl = np.full(N, 3.0), np.full(N, 1.5)
    # loses in family 1, makes up for it in family 2: about 100 % kept overall
    stu_nl = ref_nl + np.select([fam == 1, fam == 2], [0.2, -0.2], 0.0)
    data = {"G": G, "c": c, "d": d, "loss_fsopt": fs, "family": fam,
            "features": np.zeros((N, 4)), "loss_lw": lw_nl * d}  # fmt: skip
    models = {"ensemble": Fixed(ref_nl), "student": Fixed(stu_nl)}
    table = tradeoff_table(models, data, repeats=1, min_family_size=10)

    def fam_prial(nl, f):
        m = fam == f
        return 100 * (1 - nl[m]).mean() / (1 - fs[m] / d[m]).mean()

    kept = [
        (fam_prial(stu_nl, f) - fam_prial(lw_nl, f)) / (fam_prial(ref_nl, f) - fam_prial(lw_nl, f))
        for f in range(3)
    ]
    assert table.loc["student", "gain_kept_worst_family"] == pytest.approx(min(kept), rel=1e-9)
    assert min(kept) < 0.99 < table.loc["student", "gain_kept"]
    table["latency_b1_s"] = [1e-3, 1e-6]
    name, reason = choose_deployable(table)
    assert name == "ensemble" and "every world family" in reason
    assert choose_deployable(table.drop(columns="gain_kept_worst_family"))[0] == "student"
    no_family = {k: v for k, v in data.items() if k != "family"}
    assert "gain_kept_worst_family" not in tradeoff_table(models, no_family, repeats=1)


def test_choose_deployable_rules():
    t = pd.DataFrame(
        {
            "prial": [60.0, 59.9, 55.0, 59.95],
            "gain_kept": [1.0, 0.995, 0.8, 0.999],
            "latency_b1_s": [1e-3, 1e-5, 1e-6, 5e-5],
        },
        index=pd.Index(["ensemble", "student", "tiny", "int8"], name="model"),
    )
    name, reason = choose_deployable(t)
    assert name == "student" and "99.5%" in reason  # fastest among those keeping >= 99 %
    assert choose_deployable(t, min_gain_kept=0.9991)[0] == "ensemble"
    assert choose_deployable(t, min_gain_kept=0.7)[0] == "tiny"
    slow = t.assign(latency_b1_s=[1e-6, 1e-5, 1e-4, 1e-3])
    assert choose_deployable(slow)[0] == "ensemble"
    # only 20 % faster than the ensemble is not "clearly faster"
    barely = t.assign(latency_b1_s=[1e-3, 8e-4, 1e-6, 9e-4])
    assert choose_deployable(barely)[0] == "ensemble"
    with pytest.raises(ValueError, match="max_latency_ratio"):
        choose_deployable(t, max_latency_ratio=0.0)


def test_choose_deployable_is_by_size_not_by_timing_noise():
    """Among clearly faster models the smallest wins, whatever their (noisy) latencies."""
    t = pd.DataFrame(
        {
            "prial": [60.0, 60.1, 60.3, 59.0],
            "gain_kept": [1.0, 1.002, 1.005, 0.98],
            "nonzero_parameters": [100_000, 3_000, 1_700, 500],
            "latency_b1_s": [2e-3, 3.70e-4, 3.80e-4, 3.0e-4],
        },
        index=pd.Index(["ensemble", "student", "pruned_50", "pruned_90"], name="model"),
    )
    name, reason = choose_deployable(t)
    assert name == "pruned_50" and "smallest" in reason  # pruned_90 keeps < 99 %
    noisy = t.assign(latency_b1_s=[2e-3, 3.80e-4, 3.70e-4, 3.0e-4])  # timings swapped
    assert choose_deployable(noisy)[0] == "pruned_50"
    tie = t.assign(nonzero_parameters=[100_000, 1_700, 1_700, 500])
    assert choose_deployable(tie)[0] == "pruned_50"  # equal size: higher PRIAL


def test_choose_deployable_clearly_smaller_is_eligible_without_being_faster():
    """A single-network reference (e.g. a checkpoint average) is not 2x slower than a
    student, but a student with < half its parameters that keeps the gain is deployed."""
    t = pd.DataFrame(
        {
            "prial": [83.1, 86.8, 82.6],
            "gain_kept": [1.0, 1.22, 0.97],
            "nonzero_parameters": [28_806, 3_238, 1_726],
            "latency_b1_s": [5.9e-4, 3.7e-4, 3.7e-4],
        },
        index=pd.Index(["ensemble", "student", "pruned_50"], name="model"),
    )
    name, reason = choose_deployable(t)
    assert name == "student" and "3238 vs 28806" in reason  # pruned_50 keeps < 99 %
    # only 40 % smaller and not 2x faster: the reference stays
    big = t.assign(nonzero_parameters=[28_806, 17_000, 17_000])
    assert choose_deployable(big)[0] == "ensemble"
    assert choose_deployable(t, max_size_ratio=0.1)[0] == "ensemble"
    with pytest.raises(ValueError, match="max_size_ratio"):
        choose_deployable(t, max_size_ratio=1.5)


def test_latency_is_per_estimate(trained, data):
    _, va = data
    per_1 = latency(trained, va.features, 1, repeats=5)
    per_256 = latency(trained, va.features, 256, repeats=5)
    assert per_1 > 0 and per_256 > 0
    assert per_256 < per_1  # batching amortises the per-call overhead


@pytest.mark.filterwarnings("ignore:the reference")  # a 3-epoch ensemble may not beat LW
def test_real_training_set_end_to_end(tmp_path):
    """On a small real TrainingSet (synthetic worlds, p ≤ 12): ensemble → distilled
    student → ONNX, the trade-off table's LW reference comes from the stored
    ``loss_lw``, and the saved ensemble reloads through the dataset's feature schema."""
    from shrinklab.core.features import FEATURE_SCHEMA
    from shrinklab.core.metrics import prial
    from shrinklab.data.dataset import build_training_set
    from shrinklab.training.config import TrainConfig
    from shrinklab.training.ensembles import train_multi_seed

    cfg = {"p_min": 4, "p_max": 12, "batch_size": 64}
    tr = build_training_set(128, seed=0, config=cfg, progress=False)
    va = build_training_set(96, seed=1, config=cfg, progress=False)
    tcfg = TrainConfig(epochs=3, batch_size=64, lr=3e-3, device="cpu", amp=None)
    ens = train_multi_seed(
        tr,
        va,
        tmp_path / "ms",
        n_members=2,
        model_config={"hidden_dims": (16, 8)},
        config=tcfg,
        calibration_set=va,
    )
    student = distill(ens, tr, epochs=3, batch_size=64)
    om = OnnxModel(export_onnx(student, tmp_path / "s.onnx"))
    assert onnx_parity(student, om, va.features) <= 1e-5
    table = tradeoff_table({"ensemble": ens, "student": student, "onnx": om}, va, repeats=3)
    assert table.attrs["prial_lw"] == pytest.approx(prial(va.loss_lw, va.d, va.loss_fsopt))
    p_ens = prial_of(ens.predict(va.features).intensities, va)
    assert table.loc["ensemble", "prial"] == pytest.approx(p_ens)
    path = save_model(tmp_path / "e.pt", ens, tr.feature_names, tr.target_names)
    loaded = load_model(path, expected_feature_schema=FEATURE_SCHEMA)
    assert torch.equal(loaded.predict(va.features).alpha, ens.predict(va.features).alpha)


def test_feature_latency_times_one_window():
    from shrinklab.evaluation.compression import feature_latency

    X = np.random.default_rng(0).normal(size=(60, 10))
    t = feature_latency(X, repeats=3, warmup=1)
    assert 0 < t < 5.0
    with pytest.raises(ValueError, match="one"):
        feature_latency(np.zeros((2, 60, 10)))
