"""The GPU paths of the trainer: CUDA in float32 and with automatic mixed precision.

They run only where CUDA is present (skipped on the 2-core CI box, which has none);
the same small problem is trained on the CPU as the reference."""

from __future__ import annotations

import pytest
import torch
from test_train import _oracle_frobenius, make_set, small_net

from shrinklab.training.config import TrainConfig
from shrinklab.training.loop import train
from shrinklab.training.losses import quadratic_frobenius

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _valid_loss(model, ds) -> float:
    model = model.cpu().eval()
    w = model.predict(ds.features).intensities.double()
    t = {k: torch.as_tensor(getattr(ds, k)).double() for k in ("G", "c", "d")}
    return quadratic_frobenius(w, t["G"], t["c"], t["d"]).item()


def _fit(device: str, amp: str | None, tmp_path) -> tuple[float, dict]:
    tr, va = make_set(2048, seed=0), make_set(512, seed=1)
    model = small_net(dropout=0.0, input_dropout=0.0)
    cfg = TrainConfig(epochs=8, batch_size=128, T_0=8, patience=50, device=device, amp=amp)
    hist = train(model, tr, va, cfg, out_dir=tmp_path / f"{device}-{amp}")
    return _valid_loss(model, va), hist


def test_cuda_float32_follows_the_cpu_run(tmp_path):
    """Same seeds, same batches: CUDA float32 ends within 2 % of the CPU run's loss
    (kernels differ in summation order, so not bit for bit)."""
    cpu, _ = _fit("cpu", None, tmp_path)
    cuda, hist = _fit("cuda", None, tmp_path)
    assert all(torch.isfinite(torch.tensor(hist["train_loss"])))
    assert cuda == pytest.approx(cpu, rel=0.02)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_trains_to_the_float32_quality(tmp_path, amp):
    """Autocast (bf16 or fp16, the loss kept in float64) still learns: its validation
    loss ends within 5 % of the float32 CUDA run and well above the exact oracle."""
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    ref, _ = _fit("cuda", None, tmp_path)
    mixed, hist = _fit("cuda", amp, tmp_path)
    assert all(torch.isfinite(torch.tensor(hist["train_loss"])))
    assert mixed == pytest.approx(ref, rel=0.05)
    assert mixed >= _oracle_frobenius(make_set(512, seed=1)) - 1e-6
