"""Training throughput of shrinklab.training.loop.train (its figures of merit).

Prints a table: samples/s and seconds per epoch over ``--n`` (default 100,000)
training samples for the default :class:`~shrinklab.models.network.MLShrinkageNetwork`
and batch size, Adam vs SGD, on CPU (``cpu_threads`` 1 and 2) and on CUDA when
available (fp32 and bf16 autocast). The loss is the O(K²) quadratic-form path, so
the matrices' size p does not matter: the benchmark uses random quadratic-form
statistics (``G = AᵀA``) with the shapes of a real training set.

Optionally it reports the wall time to the early-stopping point on a real synthetic
training set: built here with ``--early-stop N`` (default synthetic config,
:func:`shrinklab.data.dataset.build_training_set`; slow) or loaded with ``--train-set
PATH --valid-set PATH`` (:meth:`shrinklab.data.dataset.TrainingSet.load`, e.g. the files of
the data stage).

Usage::

    .venv/bin/python bench/train.py            # ~1 min on 2 CPU cores
    .venv/bin/python bench/train.py --n 20000 --epochs 2
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from types import SimpleNamespace

import torch

from shrinklab.models.network import MLShrinkageNetwork
from shrinklab.training.config import TrainConfig
from shrinklab.training.loop import train


def random_set(n: int, n_features: int, k: int, seed: int) -> SimpleNamespace:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n_features, generator=g)
    A = torch.randn(n, 8, k, generator=g, dtype=torch.float64)
    w = torch.softmax(x[:, :k].double(), 1) * torch.sigmoid(x[:, k : k + 1].double())
    b = A @ w[:, :, None] + 0.1 * torch.randn(n, 8, 1, generator=g, dtype=torch.float64)
    return SimpleNamespace(
        features=x,
        oracle_w=w.float(),
        G=A.transpose(1, 2) @ A,
        c=(A.transpose(1, 2) @ b)[..., 0],
        d=(b**2).sum((1, 2)),
    )


def bench(tr, va, device: str, optimizer: str, threads: int | None, amp, epochs: int, bs: int):
    torch.manual_seed(0)
    model = MLShrinkageNetwork(tr.features.shape[1], num_targets=tr.oracle_w.shape[1])
    cfg = TrainConfig(
        optimizer=optimizer,
        lr=1e-3 if optimizer == "adam" else 1e-2,
        epochs=epochs,
        batch_size=bs,
        device=device,
        amp=amp,
        cpu_threads=threads,
        patience=10_000,
    )
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        hist = train(model, tr, va, cfg, out_dir=out, resume=False)
        total = time.perf_counter() - t0
    # the first epoch includes one-off costs (moving data, allocator warm-up)
    per_epoch = statistics.median(hist["seconds"][1:] or hist["seconds"])
    return per_epoch, total, hist["valid_frobenius"][-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--targets", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--early-stop", type=int, default=0, metavar="N")
    ap.add_argument("--train-set", default=None, metavar="PATH")
    ap.add_argument("--valid-set", default=None, metavar="PATH")
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args()
    if not args.skip_throughput:
        throughput_table(args)
    if args.early_stop or args.train_set:
        early_stopping(args)


def throughput_table(args: argparse.Namespace) -> None:

    tr = random_set(args.n, args.features, args.targets, seed=0)
    va = random_set(5000, args.features, args.targets, seed=1)
    rows = []
    runs = [("cpu", "adam", 1, None), ("cpu", "sgd", 1, None), ("cpu", "adam", 2, None)]
    if torch.cuda.is_available():
        runs += [("cuda", "adam", None, None), ("cuda", "sgd", None, None)]
        runs += [("cuda", "adam", None, "bf16")]
    for device, opt, threads, amp in runs:
        per_epoch, total, vf = bench(
            tr, va, device, opt, threads, amp, args.epochs, args.batch_size
        )
        rows.append((device, opt, threads or "-", amp or "fp32", per_epoch, args.n / per_epoch, vf))

    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"N = {args.n}, F = {args.features}, K = {args.targets}, batch {args.batch_size}, "
          f"default network (128, 64, 32); epoch time = median of epochs 2..{args.epochs} "
          "(includes validation on 5,000 samples)")  # fmt: skip
    print()
    print("| device | optimizer | threads | precision | s / epoch | samples / s | valid frob. |")
    print("|---|---|---|---|---|---|---|")
    for device, opt, threads, prec, per_epoch, sps, vf in rows:
        print(
            f"| {device} | {opt} | {threads} | {prec} | {per_epoch:.2f} | {sps:,.0f} | {vf:.4f} |"
        )


def early_stopping(args: argparse.Namespace) -> None:
    try:
        from shrinklab.data.dataset import TrainingSet, build_training_set

        t0 = time.perf_counter()
        if args.train_set:
            full = TrainingSet.load(args.train_set)
            valid = TrainingSet.load(args.valid_set)
        else:
            full = build_training_set(args.early_stop, 0, None, progress=False)
            valid = build_training_set(max(args.early_stop // 5, 1000), 1, None, progress=False)
        t_build = time.perf_counter() - t0
        torch.manual_seed(0)
        model = MLShrinkageNetwork(full.features.shape[1], num_targets=full.oracle_w.shape[1])
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            cfg = TrainConfig(epochs=300, batch_size=args.batch_size)
            hist = train(model, full, valid, cfg, out_dir=out)
            t_train = time.perf_counter() - t0
        print()
        print(
            f"early stopping on a synthetic training set (N = {len(full.features)}, "
            f"valid {len(valid.features)}, F = {full.features.shape[1]}): "
            f"{'loading' if args.train_set else 'building'} {t_build:.1f} s, "
            f"training {t_train:.1f} s (batch {args.batch_size}), "
            f"{len(hist['train_loss'])} epochs, best epoch {hist['best_epoch']}, "
            f"valid normalised Frobenius {hist['valid_frobenius'][hist['best_epoch']]:.4f}"
        )
        if hasattr(valid, "normalised_loss") and hasattr(valid, "loss_lw"):
            print(
                "  references on the same validation set (mean of per-sample ratios to the "
                f"sample covariance's loss): oracle w* "
                f"{float(valid.normalised_loss(valid.oracle_w).mean()):.4f}, "
                f"Ledoit-Wolf {float((valid.loss_lw / valid.d).mean()):.4f}, sample 1"
            )
    except Exception as exc:  # report, do not hide
        print(f"\nearly-stopping benchmark skipped: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
