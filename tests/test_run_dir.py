"""Checkpoint folders are keyed by configuration, input data AND training code."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from shrinklab.pipeline.runs import (
    TRAINING_CODE,
    code_digest,
    kernel_signature,
    numpy_dispatch_targets,
    run_dir,
)


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
    numpy_kernels = ",".join(numpy_dispatch_targets()[1])
    assert kernel_signature(info) == f"{cap}|{numpy_kernels}|AuthenticAMD|AMD EPYC"
    assert kernel_signature(tmp_path / "missing") == f"{cap}|{numpy_kernels}||"


def test_numpy_dispatch_targets_in_use_follow_the_disable_variable():
    code = (
        "from shrinklab.pipeline.runs import numpy_dispatch_targets as t; "
        "a, b = t(); print(a); print(b)"
    )
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": ""}
    full = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    targets, in_use = (ast.literal_eval(line) for line in full.stdout.splitlines())
    assert set(in_use) <= set(targets)
    if in_use:  # a CPU with dispatch targets: disabling the top one removes it
        env["NPY_DISABLE_CPU_FEATURES"] = in_use[-1]
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        _, fewer = (ast.literal_eval(line) for line in out.stdout.splitlines())
        assert in_use[-1] not in fewer and set(fewer) < set(in_use)
