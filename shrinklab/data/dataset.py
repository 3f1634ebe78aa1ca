"""Stored training samples: features, oracle labels and the O(K²) Frobenius statistics.

For each synthetic world ``(Σ, X)`` of :func:`shrinklab.data.synthetic.generate_batches`
:func:`build_training_set` stores

* ``features (N, F)`` float32 — :mod:`shrinklab.core.features` (schema
  :data:`shrinklab.core.features.FEATURE_SCHEMA`);
* the labels: multi-target oracle weights ``oracle_w (N, K)`` (exact simplex QP,
  :func:`shrinklab.core.estimators.solve_simplex_qp`) and ``alpha_star = Σ_k w*_k``;
* ``G (N, K, K)``, ``c (N, K)``, ``d (N,)`` of :func:`shrinklab.core.targets.quadratic_form`,
  so that ``‖Σ̂(w) − Σ‖²_F = wᵀGw − 2cᵀw + d`` costs O(K²) for any ``p``
  (``d`` is the sample covariance's loss);
* ``loss_fsopt`` — ``‖FSOPT − Σ‖²_F`` of the finite-sample optimal
  rotation-equivariant oracle ``U diag(uᵢᵀΣuᵢ) Uᵀ`` (Ledoit & Wolf 2012, Ann.
  Statist. 40(2)), and ``loss_lw`` — that of Ledoit & Wolf (2004, JMVA) linear
  shrinkage; both unnormalised (same units as ``d``), so
  ``PRIAL = 100 (E d − E L) / (E d − E loss_fsopt)``;
* ``intensities (N, 4)`` — the LW, OAS, constant-correlation and single-factor
  intensities at full precision (:func:`classical_intensities` writes these
  estimators, and QIS, as points ``w`` of the family);
* ``p, n, family, df, sample_seed, difficulty`` — enough to rebuild ``Σ``, ``X``,
  ``S`` and the targets bit-exactly (:meth:`TrainingSet.rebuild_matrices`,
  bucketed by ``p``, for losses that need the matrices).

The normalised Frobenius loss of intensities ``w`` is ``(wᵀGw − 2cᵀw + d) / d``
(:meth:`TrainingSet.normalised_loss`; 1 = no better than ``S``).

Per batch (shared ``(p, n)``; each chunk of a few to 128 samples is generated
and processed at once, so no batch-sized ``X`` is ever held) one sample
covariance, one ``eigh`` of ``S`` shared by the features (eigenvalues), the QIS
target and FSOPT (eigenvectors), the classical intensities in O(np + p²)
(:func:`shrinklab.core.estimators.shrinkage_intensities`), the K − 1 other targets, one
quadratic form and one batched QP are computed.  The QIS target is never formed:
it is ``U diag(δ) Uᵀ`` in the eigenbasis of ``S``, so its row of ``G`` and its
entry of ``c`` cost O(p²) (:func:`shrinklab.data.labels.process_batch`); FSOPT's ``uᵢᵀΣuᵢ``
come from the root of ``Σ`` the generator drew ``X`` with (one ``trmm``, or
O(p²k) for factor models; :func:`fsopt_loss_from_eigh`).  Besides the synthetic
generator only that product loops over samples in Python.  ``build_training_set(...,
workers=2)`` spreads the chunks over processes with identical results.
``bench/data_throughput.py`` times each part, one process and two workers.

Files (:meth:`TrainingSet.save` / :meth:`TrainingSet.load`) are a ``torch.save``
dict of tensors and plain metadata (``schema_version``, ``feature_schema``,
``feature_names``, ``target_names``, ``family_names``, the synthetic ``config``),
loaded with ``weights_only=True``; a schema mismatch is a ``ValueError``.

Modules: this one builds the set (chunks, worker processes, progress);
:mod:`shrinklab.data.labels` is the fused pass over one batch (:func:`process_batch`,
one eigendecomposition feeding features, targets, labels and quadratic forms);
:mod:`shrinklab.data.training_set` is the stored set itself (:class:`TrainingSet`).
Their public names stay importable from here.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from typing import Any

import torch

from shrinklab.core.progress import report
from shrinklab.data import synthetic
from shrinklab.data.labels import chunk_size, fsopt_loss_from_eigh, process_batch
from shrinklab.data.training_set import (
    FIELDS,
    SCHEMA_VERSION,
    MatrixBucket,
    TrainingSet,
    classical_intensities,
    normalised_frobenius,
    plain_config,
)

__all__ = [
    "SCHEMA_VERSION",
    "TrainingSet",
    "MatrixBucket",
    "classical_intensities",
    "normalised_frobenius",
    "build_training_set",
    "process_batch",
    "fsopt_loss_from_eigh",
]


def _progress_enabled(progress: bool) -> bool:
    return bool(progress) and sys.stderr.isatty() and not os.environ.get("CI")


def build_training_set(
    n_samples: int,
    seed: int,
    config: synthetic.SyntheticConfig | Mapping[str, Any] | None = None,
    progress: bool = True,
    threads: int | None = None,
    workers: int = 1,
) -> TrainingSet:
    """Draw ``n_samples`` synthetic worlds and compute their training rows (batched).

    ``config`` is a :class:`shrinklab.data.synthetic.SyntheticConfig` or a dict of its
    fields (``None``: defaults); ``seed`` fixes everything (deterministic on CPU).
    A tqdm bar is shown when ``progress`` and stderr is a terminal and the
    environment variable ``CI`` is unset.  ``threads`` sets torch's intra-op
    threads for the duration of the build (restored after; ``None``: unchanged).
    On a machine shared with other jobs ``threads=1`` avoids OpenMP
    oversubscription, which was measured to slow the build down 40-fold
    (768 samples: 0.8 s with 1 thread, 34.6 s with 2, load average ~8 on 2 cores).

    ``workers > 1`` builds the batches in that many worker processes (``spawn``;
    each with ``threads`` intra-op threads, default 1): the batch plans
    (:func:`shrinklab.data.synthetic.plan_batches`) are drawn here and each worker
    generates and processes chunks of them, so the result is identical to
    ``workers=1`` run with the same thread count (tested).  The unit of work is
    a chunk of a batch (a few to 128 samples), so batches of different ``n``
    balance between the workers.  Starting the workers
    costs about a second (importing torch); worth it from a few thousand samples.

    Side effect: glibc malloc is set to keep freed memory for reuse
    (:func:`_keep_freed_memory`: ~15 % faster; resident memory stays at its peak).
    """
    if threads is not None and int(threads) < 1:
        raise ValueError(f"threads must be >= 1 or None, got {threads}")
    if int(n_samples) < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    cfg = synthetic.as_config(config)
    _keep_freed_memory()
    if int(workers) > 1:
        return _build_parallel(
            int(n_samples), int(seed), cfg, progress, int(workers), int(threads or 1)
        )
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        with _blas_threads(threads):
            return _build(int(n_samples), int(seed), cfg, progress)
    finally:
        torch.set_num_threads(previous)


def _blas_threads(threads: int | None):
    """Context limiting numpy's / scipy's BLAS (OpenBLAS: ``syrk``, ``trmm``, ``dsyevd``
    of the builder) to ``threads`` threads like torch's (no-op for ``None``)."""
    import contextlib

    if threads is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=int(threads), user_api="blas")


def _batch_rows(batch: synthetic.SyntheticBatch) -> dict[str, torch.Tensor]:
    """The stored fields of one synthetic batch (see :func:`process_batch`)."""
    codes = {f: i for i, f in enumerate(synthetic.FAMILIES)}
    out = process_batch(batch.X, batch.sigma, roots=batch.roots)
    B = len(batch)
    out["p"] = torch.full((B,), batch.p, dtype=torch.int64)
    out["n"] = torch.full((B,), batch.n, dtype=torch.int64)
    out["family"] = torch.tensor([codes[f] for f in batch.family], dtype=torch.int64)
    out["df"] = batch.df
    out["sample_seed"] = batch.sample_seed
    out["difficulty"] = batch.difficulty
    return {k: out[k].to(FIELDS[k]) for k in FIELDS}


def _plan_rows(plan: synthetic.BatchPlan, cfg: synthetic.SyntheticConfig) -> dict:
    """Generate and process one planned batch, chunk by chunk.

    Each chunk of :func:`chunk_size` samples is drawn (samples do not depend on
    their batch, :func:`shrinklab.data.synthetic.regenerate`) and processed at once,
    so no batch-sized ``X`` is ever allocated: the same rows as processing
    ``generate_batches``' whole batch, with cache-sized, reused memory.
    """
    parts = [_chunk_rows(sub, cfg) for sub in _chunk_plans(plan)]
    return {k: torch.cat([q[k] for q in parts]) for k in FIELDS}


def _chunk_rows(sub: synthetic.BatchPlan, cfg: synthetic.SyntheticConfig) -> dict:
    """Generate and process one chunk-sized plan (the unit of work of the worker processes)."""
    return _batch_rows(_chunk_batch(sub, cfg))


def _chunk_rows_numpy(sub: synthetic.BatchPlan, cfg: synthetic.SyntheticConfig) -> dict:
    """:func:`_chunk_rows` as numpy arrays, for the worker processes: torch tensors sent
    between processes travel through shared memory, one open file descriptor each in
    the receiving process while the tensor lives, and a large training set (tens of
    thousands of samples, hundreds of chunks × 15 fields) then runs out of descriptors
    ("received 0 items of ancdata"); numpy arrays are pickled by value. The plan's
    tensors arrive as numpy arrays for the same reason (:func:`_plan_as_numpy`)."""
    sub = dataclasses.replace(
        sub, df=torch.from_numpy(sub.df), sample_seed=torch.from_numpy(sub.sample_seed)
    )
    return {k: v.numpy() for k, v in _chunk_rows(sub, cfg).items()}


def _plan_as_numpy(plan: synthetic.BatchPlan) -> synthetic.BatchPlan:
    """``plan`` with its tensors as numpy arrays, to send to a worker process."""
    return dataclasses.replace(plan, df=plan.df.numpy(), sample_seed=plan.sample_seed.numpy())


def _chunk_batch(
    sub: synthetic.BatchPlan, cfg: synthetic.SyntheticConfig
) -> synthetic.SyntheticBatch:
    """The synthetic batch of one chunk, ``X`` in float32 when the draws are (exactly
    the float64 values of :func:`shrinklab.data.synthetic.build_batch`, half the memory
    traffic; :func:`process_batch` upcasts them piece by piece), with the roots of
    ``Σ`` that ``X`` was drawn with (for the FSOPT loss)."""
    return synthetic.build_planned_batch(sub, cfg, torch.float32, keep_roots=True)


def _chunk_plans(plan: synthetic.BatchPlan) -> list[synthetic.BatchPlan]:
    """``plan`` split into consecutive plans of at most :func:`chunk_size` samples."""
    step = chunk_size(plan.n, plan.p)
    return [
        dataclasses.replace(
            plan,
            families=plan.families[s : s + step],
            df=plan.df[s : s + step],
            sample_seed=plan.sample_seed[s : s + step],
        )
        for s in range(0, len(plan.families), step)
    ]


def _init_worker(threads: int) -> None:
    """Worker set-up: intra-op threads (torch and numpy/scipy BLAS) and
    :func:`_keep_freed_memory`."""
    torch.set_num_threads(threads)
    _blas_threads(threads).__enter__()  # for the worker's lifetime
    _keep_freed_memory()


def _keep_freed_memory() -> None:
    """Let glibc malloc keep freed memory for reuse (process-wide, idempotent).

    By default glibc returns large freed blocks to the OS, so every chunk's
    temporaries (tens of MB) are page-faulted in again; in this VM that was
    measured at 15-20 % of the build time.  Blocks below 256 MB are then served
    from the heap and up to 512 MB of free heap is kept (the process's resident
    memory does not shrink below its peak).  A no-op where glibc is absent.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 256 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 512 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


def _assemble(parts: list[dict[str, torch.Tensor]], cfg: synthetic.SyntheticConfig) -> TrainingSet:
    fields = {k: torch.cat([q[k] for q in parts]) for k in FIELDS}
    return TrainingSet(
        **fields,
        config=plain_config(dataclasses.asdict(cfg)),
        family_names=synthetic.stored_family_names(fields["family"]),
    )


def _report_samples(done: int, total: int, step: int, workers: int = 1) -> None:
    """A progress line each time another tenth of the samples is built."""
    if done * 10 // total != (done - step) * 10 // total or done == total:
        report(f"training set: {done:,}/{total:,} samples ({workers} worker(s))")


def _build(
    n_samples: int, seed: int, cfg: synthetic.SyntheticConfig, progress: bool
) -> TrainingSet:
    from tqdm import tqdm

    parts: list[dict[str, torch.Tensor]] = []
    done = 0
    with tqdm(
        total=int(n_samples),
        desc="training samples",
        unit="sample",
        disable=not _progress_enabled(progress),
    ) as bar:
        for plan in synthetic.plan_batches(int(n_samples), int(seed), cfg):
            parts.append(_plan_rows(plan, cfg))
            bar.update(len(plan.families))
            done += len(plan.families)
            _report_samples(done, int(n_samples), len(plan.families))
    return _assemble(parts, cfg)


def _build_parallel(
    n_samples: int,
    seed: int,
    cfg: synthetic.SyntheticConfig,
    progress: bool,
    workers: int,
    threads: int,
) -> TrainingSet:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    # Tasks are chunks (not whole batches) so that batches of very different n balance.
    tasks = [s for plan in synthetic.plan_batches(n_samples, seed, cfg) for s in _chunk_plans(plan)]
    parts: list[dict[str, torch.Tensor]] = []
    done = 0
    with (
        ProcessPoolExecutor(
            max_workers=min(workers, len(tasks)),
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(threads,),
        ) as pool,
        tqdm(
            total=n_samples,
            desc=f"training samples ({workers} workers)",
            unit="sample",
            disable=not _progress_enabled(progress),
        ) as bar,
    ):
        tasks_np = [_plan_as_numpy(t) for t in tasks]
        for arrays in pool.map(_chunk_rows_numpy, tasks_np, [cfg] * len(tasks_np)):
            rows = {k: torch.from_numpy(v) for k, v in arrays.items()}
            parts.append(rows)
            bar.update(int(rows["p"].shape[0]))
            done += int(rows["p"].shape[0])
            _report_samples(done, n_samples, int(rows["p"].shape[0]), workers)
    return _assemble(parts, cfg)
