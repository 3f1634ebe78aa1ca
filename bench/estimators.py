"""Benchmark: batched torch estimators vs scikit-learn in a Python loop.

For p in {20, 100, 500} and n in {p/2, 2p} it prints the time per estimate of
each batched estimator of ``shrinklab.core.estimators`` on a batch of B samples, of
scikit-learn's ``LedoitWolf`` / ``OAS`` fitted one sample at a time, their
ratios (measured in the same run), and QIS relative to one batched
``torch.linalg.eigh`` of the same batch of sample covariances.

Goals: batched LW/OAS >= 5x faster than the scikit-learn loop at
B = 256; QIS within 1.5x of one eigh.

    python bench/estimators.py [--batch 256] [--batch-large 64] [--threads 1] [--device cpu]

B = 256 everywhere except p = 500, where ``--batch-large`` (default 32) keeps
the run under ~3 minutes on 2 CPU cores; times are per estimate, so the
ratios do not depend on B once the batch amortises Python overhead.
Both torch and numpy/scikit-learn run with ``--threads`` threads (default 1:
on a shared machine OpenMP/BLAS thread oversubscription makes multi-threaded
timings meaningless; pass 0 to keep the libraries' defaults).  With one thread
on CPU the clock is the process CPU time (robust to other jobs on the machine),
otherwise wall time.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import numpy as np
import torch
from sklearn.covariance import OAS, LedoitWolf
from threadpoolctl import threadpool_limits

from shrinklab.core import estimators as est
from shrinklab.core.qis import qis_estimate
from shrinklab.core.targets import shrinkage_targets

TORCH_ESTIMATORS: dict[str, Callable] = {
    "sample": est.sample_covariance,
    "lw": est.ledoit_wolf,
    "oas": est.oas,
    "cc": est.lw_constant_correlation,
    "sf": est.lw_single_factor,
    "qis": est.qis,
    "targets5": shrinkage_targets,
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


CLOCK: Callable[[], float] = time.perf_counter


def best_time(fn: Callable[[], object], device: torch.device, budget: float = 0.6) -> float:
    """Minimum time of ``fn`` over a few repeats (after one warm-up call), by ``CLOCK``."""
    _sync(device)
    t0 = CLOCK()
    fn()
    _sync(device)
    first = CLOCK() - t0
    reps = int(max(1, min(7, budget / max(first, 1e-9))))
    best = first
    for _ in range(reps):
        t0 = CLOCK()
        fn()
        _sync(device)
        best = min(best, CLOCK() - t0)
    return best


def make_returns(B: int, n: int, p: int, seed: int) -> np.ndarray:
    """One-factor Gaussian returns with heterogeneous volatilities."""
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((B, n, 1))
    beta = rng.uniform(0.5, 1.5, p)
    vol = rng.uniform(0.5, 2.0, p)
    return (f * beta + rng.standard_normal((B, n, p)) * vol) * 0.01


def bench_cell(p: int, n: int, B: int, device: torch.device, seed: int) -> dict[str, float]:
    Xnp = make_returns(B, n, p, seed)
    X = torch.from_numpy(Xnp).to(device)
    row: dict[str, float] = {}
    for name, f in TORCH_ESTIMATORS.items():
        row[name] = best_time(lambda f=f: f(X), device) / B
    S = est.sample_covariance(X)
    row["eigh"] = best_time(lambda: torch.linalg.eigh(S), device) / B
    row["qis|S"] = best_time(lambda: qis_estimate(S=S, N=n), device) / B
    row["sk_lw"] = best_time(lambda: [LedoitWolf().fit(x) for x in Xnp], device) / B
    row["sk_oas"] = best_time(lambda: [OAS().fit(x) for x in Xnp], device) / B
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--batch-large", type=int, default=32, help="batch size for p = 500")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--p", type=int, nargs="*", default=[20, 100, 500])
    ap.add_argument("--threads", type=int, default=1, help="0: library defaults")
    args = ap.parse_args()
    global CLOCK
    if args.threads > 0:
        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    device = torch.device(args.device)
    # One thread on CPU: process CPU time is robust to other jobs on a shared machine.
    cpu_clock = args.threads == 1 and device.type == "cpu"
    CLOCK = time.process_time if cpu_clock else time.perf_counter
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, load avg "
        f"{os.getloadavg()[0]:.1f}; float64; "
        f"{'CPU' if cpu_clock else 'wall'} time in ms per estimate (min of repeats)"
    )
    cols = [
        "sample",
        "lw",
        "oas",
        "cc",
        "sf",
        "qis",
        "qis|S",
        "targets5",
        "eigh",
        "sk_lw",
        "sk_oas",
    ]
    head = f"{'p':>4} {'n':>5} {'B':>4} " + " ".join(f"{c:>8}" for c in cols)
    head += f" {'sk/lw':>6} {'sk/oas':>6} {'qis/eigh':>8} {'qis|S/eigh':>10}"
    print(head)
    print("-" * len(head))
    t_start = time.perf_counter()
    for i, p in enumerate(args.p):
        B = args.batch if p < 500 else args.batch_large
        for j, n in enumerate((p // 2, 2 * p)):
            r = bench_cell(p, n, B, device, seed=100 * i + j)
            line = f"{p:>4} {n:>5} {B:>4} " + " ".join(f"{1e3 * r[c]:8.3f}" for c in cols)
            line += f" {r['sk_lw'] / r['lw']:6.1f} {r['sk_oas'] / r['oas']:6.1f}"
            line += f" {r['qis'] / r['eigh']:8.2f} {r['qis|S'] / r['eigh']:10.2f}"
            print(line, flush=True)
    print(
        f"total bench time {time.perf_counter() - t_start:.0f} s.  sk/lw, sk/oas: scikit-learn "
        "loop time / batched torch time (goal >= 5); qis/eigh: QIS from returns / one batched "
        "torch.linalg.eigh of the sample covariances (goal <= 1.5); qis|S: QIS given S "
        "(as inside shrinkage_targets).  targets5 = all five targets incl. QIS.  "
        f"Load avg at the end {os.getloadavg()[0]:.1f}."
    )


if __name__ == "__main__":
    main()
