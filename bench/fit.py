"""Benchmark: the cost of one ``MLShrinkageCovariance.fit`` against QIS and Ledoit–Wolf,
and the speed-up of ``fit_rolling`` over a loop of ``fit`` (same run, same machine).

For each (p, n) it prints the time per fit of the learned estimator (the bundled model
by default), of QIS (``shrinklab.core.estimators.qis`` on one sample) and of
scikit-learn's ``LedoitWolf``, and the ratio fit / QIS. Goals (the estimator must cost
about one eigendecomposition plus a small network): fit <= 2 ms at p = 20 and
fit / QIS <= 2 at p >= 100. Then, for a backtest-like series, ``fit_rolling`` against
``fit`` in a loop: the speed-up (goal >= 10x) and the largest difference.

Measurement method (not a change of goal): the loop and ``fit_rolling`` are timed in CPU
process time in interleaved rounds (loop, then rolling; ``ROLL_CASES`` rounds after one
warm-up round); the table gives each one's median time and, as the speed-up, the median
over rounds of loop / rolling, so that a background load moves both timings of a round
alike instead of skewing one single timing (until then: one timing each, which under load
moved the speed-up by a third).

On CPU ``fit`` and ``fit_rolling`` run in NumPy float64 (the same feature, target and
intensity code as the torch pipeline, through :mod:`shrinklab.core.xp`); QIS here is
the torch estimator. Run with ``OMP_NUM_THREADS=1`` and note the load average printed
in the header: on a shared machine the times move by 20 % or more between runs.

With ``--against OTHER`` (a bundled name or model file) it also times the two models'
``fit`` in interleaved rounds on the same samples and prints their ratio per (p, n):
the cost of a model change measured in one run (e.g. decision 0044's soft mixture
against the switch it replaced), independent of the machine's load that day.

    python bench/fit.py [--model final] [--threads 1] [--against old_final.pt]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from threadpoolctl import threadpool_limits

from shrinklab.core import estimators as est
from shrinklab.sklearn import MLShrinkageCovariance

CELLS = [(20, 60), (100, 250), (400, 250)]
ROLL_CASES = [(60, 1, 3), (250, 21, 15)]  # window, step, repeats (each loop ~4 s, ~0.2 s)


def _process_time(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def median_time(fn: Callable[[], object], repeats: int = 31) -> float:
    """Median process time of ``fn`` over ``repeats`` calls, after one warm-up call (the
    median, not the minimum: timings on a shared machine are noisy)."""
    fn()
    return float(np.median([_process_time(fn)[0] for _ in range(repeats)]))


def interleaved_times(fns: list[Callable[[], object]], repeats: int) -> tuple[np.ndarray, list]:
    """Process times ``(repeats, len(fns))`` of several ``fns`` timed in turn (one round
    runs each once) over ``repeats`` rounds after one warm-up round, and each one's last
    result. Times in one round share the machine's load of that moment."""
    outs = [fn() for fn in fns]
    times = np.empty((repeats, len(fns)))
    for r in range(repeats):
        for i, fn in enumerate(fns):
            times[r, i], outs[i] = _process_time(fn)
    return times, outs


def returns(n: int, p: int, seed: int = 0) -> np.ndarray:
    """One-factor returns with heterogeneous volatilities, daily scale."""
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((n, 1))
    return (
        f * rng.uniform(0.5, 1.5, p) + rng.standard_normal((n, p)) * rng.uniform(0.5, 2, p)
    ) * 0.01


def compare_models(model, other, args, repeats: int = 101) -> None:
    """Fit times of ``model`` and ``other`` in interleaved rounds, per cell of ``CELLS``:
    medians and the median over rounds of their ratio."""
    print(
        f"\n{args.model} against {args.against}: CPU ms per fit, medians over {repeats} "
        f"interleaved rounds (load avg {os.getloadavg()[0]:.1f})"
    )
    print(f"{'p':>4} {'n':>5} {'model':>8} {'against':>8} {'ratio':>7}")
    for p, n in CELLS:
        X = returns(n, p)
        fits = [lambda X=X: model.fit(X), lambda X=X: other.fit(X)]
        times, _ = interleaved_times(fits, repeats)
        t_model, t_other = 1e3 * np.median(times, axis=0)
        ratio = float(np.median(times[:, 0] / times[:, 1]))
        print(f"{p:>4} {n:>5} {t_model:>8.2f} {t_other:>8.2f} {ratio:>7.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="final", help="bundled model name or model file")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rolling-only", action="store_true", help="skip the fit / QIS table")
    ap.add_argument("--against", help="a second model: fit times of both, interleaved")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, load avg "
        f"{os.getloadavg()[0]:.1f}; model {args.model}; CPU time per fit in ms (median of 31)"
    )
    model = MLShrinkageCovariance.from_pretrained(args.model)
    print(f"{'p':>4} {'n':>5} {'fit':>8} {'qis':>8} {'sk LW':>8} {'fit/qis':>8}  goal")
    for p, n in [] if args.rolling_only else CELLS:
        X = returns(n, p)
        Xt = torch.from_numpy(X)
        t_fit = median_time(lambda X=X: model.fit(X))
        t_qis = median_time(lambda Xt=Xt: est.qis(Xt))
        t_lw = median_time(lambda X=X: LedoitWolf().fit(X))
        goal = "<= 2 ms" if p < 100 else "fit/qis <= 2"
        ok = t_fit <= 2e-3 if p < 100 else t_fit / t_qis <= 2
        print(
            f"{p:>4} {n:>5} {1e3 * t_fit:>8.2f} {1e3 * t_qis:>8.2f} {1e3 * t_lw:>8.2f} "
            f"{t_fit / t_qis:>8.1f}  {goal}: {'met' if ok else 'NOT met'}"
        )
    if args.against:
        compare_models(model, MLShrinkageCovariance.from_pretrained(args.against), args)
    print(
        f"\nfit_rolling vs a loop of fit (20 assets, 2,000 days; CPU s, medians over "
        f"{'/'.join(str(r) for *_, r in ROLL_CASES)} interleaved rounds; "
        f"load avg {os.getloadavg()[0]:.1f})"
    )
    print(
        f"{'window':>6} {'step':>5} {'windows':>8} {'loop s':>8} {'rolling s':>10} {'speed-up':>9} {'max |diff|':>11}"
    )
    R = returns(2000, 20, seed=1)
    for window, step, repeats in ROLL_CASES:
        ends = range(window, len(R) + 1, step)
        times, (loop, roll) = interleaved_times(
            [
                lambda w=window, e=ends: np.stack([model.fit(R[t - w : t]).covariance_ for t in e]),
                lambda w=window, s=step: model.fit_rolling(R, w, s),
            ],
            repeats,
        )
        diff = float(np.abs(roll.covariances - loop).max())
        t_loop, t_roll = np.median(times, axis=0)
        speedup = float(np.median(times[:, 0] / times[:, 1]))  # per round: the same load
        print(
            f"{window:>6} {step:>5} {len(loop):>8} {t_loop:>8.2f} {t_roll:>10.3f} "
            f"{speedup:>8.1f}x {diff:>11.1e}"
        )


if __name__ == "__main__":
    main()
