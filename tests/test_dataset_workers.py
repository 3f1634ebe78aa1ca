"""The worker-process build of a training set does not hold one file descriptor per
transferred tensor (a large set used to fail with "received 0 items of ancdata")."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

resource = pytest.importorskip("resource")

SCRIPT = textwrap.dedent(
    """
    import resource, torch
    from shrinklab.data.dataset import build_training_set
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))
    cfg = {"p_min": 5, "p_max": 8, "batch_size": 2, "short_prob": 0.0}
    # 100 batches of 2 samples: at least 100 chunks x 15 fields, more than ten times 128
    two = build_training_set(200, seed=3, config=cfg, progress=False, threads=1, workers=2)
    one = build_training_set(200, seed=3, config=cfg, progress=False, threads=1)
    assert all(torch.equal(a, b) for a, b in zip(two.tensors().values(), one.tensors().values()))
    print("ok", len(two))
    """
)


def test_parallel_build_under_a_low_open_file_limit():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split()[-2:] == ["ok", "200"]
