"""Checkpoint folders are keyed by configuration, input data AND training code."""

from __future__ import annotations

from pathlib import Path

from shrinklab.pipeline.runs import TRAINING_CODE, code_digest, kernel_signature, run_dir


def _package(root: Path, loss_factor: str) -> Path:
    for sub in TRAINING_CODE:
        (root / "shrinklab" / sub).mkdir(parents=True, exist_ok=True)
        (root / "shrinklab" / sub / "__init__.py").write_text("")
    (root / "shrinklab" / "training" / "losses.py").write_text(f"FACTOR = {loss_factor}\n")
    return root


def test_code_digest_changes_with_training_code(tmp_path):
    a = code_digest(root=_package(tmp_path / "a", "1.0"))
    b = code_digest(root=_package(tmp_path / "b", "5.0"))  # the intensity term × 5
    assert a != b
    assert a == code_digest(root=_package(tmp_path / "c", "1.0"))  # same code, same key


def test_run_dir_key_covers_config_data_and_code(tmp_path):
    data = tmp_path / "train.pt"
    data.write_bytes(b"abc")
    base = run_dir("pretrain", {"lr": 1e-3}, data, root=tmp_path, code="x")
    assert base == run_dir("pretrain", {"lr": 1e-3}, data, root=tmp_path, code="x")
    assert base != run_dir("pretrain", {"lr": 1e-3}, data, root=tmp_path, code="y")
    assert base != run_dir("pretrain", {"lr": 2e-3}, data, root=tmp_path, code="x")
    data.write_bytes(b"abd")
    assert base != run_dir("pretrain", {"lr": 1e-3}, data, root=tmp_path, code="x")
    assert base.parent == tmp_path / "build" / "runs" and base.name.startswith("pretrain-")


def test_the_repository_digest_covers_the_trainer():
    root = Path(__file__).resolve().parents[1]
    assert (root / "shrinklab" / "training" / "loop.py").exists()
    assert len(code_digest()) == 64


def test_run_dir_key_covers_the_cpu_kernels(tmp_path):
    data = tmp_path / "d.bin"
    data.write_bytes(b"abc")
    a = run_dir("pretrain", {"lr": 1e-3}, data, root=tmp_path, code="x", kernels="AVX2|A|m")
    assert a == run_dir("pretrain", {"lr": 1e-3}, data, root=tmp_path, code="x", kernels="AVX2|A|m")
    assert a != run_dir(
        "pretrain", {"lr": 1e-3}, data, root=tmp_path, code="x", kernels="AVX512|A|m"
    )
    assert a != run_dir("pretrain", {"lr": 1e-3}, data, root=tmp_path, code="x", kernels="AVX2|B|m")


def test_kernel_signature_reads_the_capability_and_the_processor(tmp_path):
    import torch

    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n\n"
        "processor\t: 1\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n"
    )
    cap = torch.backends.cpu.get_cpu_capability()
    assert kernel_signature(info) == f"{cap}|AuthenticAMD|AMD EPYC"
    assert kernel_signature(tmp_path / "missing") == f"{cap}||"
