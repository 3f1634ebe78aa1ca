"""Independent ensemble members trained side by side in worker processes.

The members of a deep ensemble (and of each family expert) do not depend on one another,
so :func:`train_members` can run them in ``workers`` processes. Each job seeds its own
network and trainer (``torch.manual_seed(seed)`` before the network is built, then
:func:`shrinklab.training.loop.train` with ``config.seed = seed``), and each worker runs
with one torch thread, so a member is bit-identical whichever process trains it
(tested in ``tests/test_parallel_members.py``). Workers start by ``spawn`` (no forked
copy of the parent's threads or open files); they inherit the environment, so the
progress lines of :func:`shrinklab.core.progress.report` still reach the terminal.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import pickle
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shrinklab.models.network import MLShrinkageNetwork
from shrinklab.training.config import TrainConfig
from shrinklab.training.loop import train
from shrinklab.training.monitor import run_logger

__all__ = [
    "MemberJob",
    "Pending",
    "map_in_processes",
    "start_in_processes",
    "train_member",
    "train_members",
]


@dataclasses.dataclass(frozen=True)
class MemberJob:
    """One network to train: its architecture (keyword arguments of
    :class:`~shrinklab.models.network.MLShrinkageNetwork`), seed, data, trainer settings
    (``config.seed`` is replaced by ``seed``) and checkpoint folder; with ``monitor`` (a
    reports folder) the worker logs the run ``run`` there
    (:class:`~shrinklab.training.monitor.RunLogger`, one log folder per member)."""

    model_config: Mapping[str, Any]
    seed: int
    train_set: Any
    valid_set: Any
    config: Any
    out_dir: Path
    run: str | None = None
    monitor: Path | None = None


def train_member(job: MemberJob) -> nn.Module:
    """Train one member and return it on the CPU in eval mode. A checkpoint in
    ``job.out_dir`` (a killed or finished earlier run with the same settings and data) is
    resumed; on CPU the result is bit-identical to an uninterrupted run
    (:func:`shrinklab.training.loop.train`)."""
    cfg = dataclasses.replace(job.config or TrainConfig(), seed=int(job.seed))
    torch.manual_seed(int(job.seed))
    model = MLShrinkageNetwork(**dict(job.model_config))
    with run_logger(job.run or Path(job.out_dir).name, job.monitor) as log:
        train(model, job.train_set, job.valid_set, cfg, Path(job.out_dir), resume=True, logger=log)
    return model.cpu().eval()


def _worker_init() -> None:
    torch.set_num_threads(1)


def _pool(workers: int) -> ProcessPoolExecutor:
    """``workers`` spawned processes with one torch thread each (module docstring)."""
    ctx = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init)


def map_in_processes(fn: Callable[[Any], Any], items: Iterable[Any], workers: int = 1) -> list:
    """``[fn(x) for x in items]``, in ``workers`` spawned processes with one torch thread
    each (``1``: in this process). ``fn`` must be a module-level function and the items
    picklable; a script that calls it with ``workers > 1`` needs the
    ``if __name__ == "__main__":`` guard (spawned workers import it)."""
    items = list(items)
    if int(workers) < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    n = min(int(workers), len(items))
    if n <= 1:
        return [fn(x) for x in items]
    with _pool(n) as pool:
        return list(pool.map(fn, items))


class Pending:
    """The results of :func:`start_in_processes`, in the order of its items: ``result()``
    waits for them (once; later calls return the same list) and closes the pool."""

    def __init__(self, fn: Callable[[Any], Any], blobs: list, pool: Any, futures: list) -> None:
        self._fn, self._blobs, self._pool, self._futures = fn, blobs, pool, futures
        self._results: list | None = None

    def result(self) -> list:
        if self._results is None:
            if self._pool is None:  # one worker: run here, now
                self._results = [_run_pickled(self._fn, b) for b in self._blobs]
            else:
                try:
                    self._results = [f.result() for f in self._futures]
                finally:
                    self._pool.shutdown(wait=True, cancel_futures=True)
        return self._results


def _run_pickled(fn: Callable[[Any], Any], blob: bytes) -> Any:
    return fn(pickle.loads(blob))


def start_in_processes(fn: Callable[[Any], Any], items: Iterable[Any], workers: int = 1) -> Pending:
    """:func:`map_in_processes` started in the background: the ``workers`` processes begin
    at once and this returns; :meth:`Pending.result` collects the list. The caller can do
    other work meanwhile (e.g. the compression stage distils while its experts are
    fine-tuned); with ``workers = 1`` the items run in this process when ``result()`` is
    called. The results are those of :func:`map_in_processes` (same processes, one torch
    thread each). Each item is pickled on the call, so later changes to the caller's
    objects do not reach the work."""
    items = list(items)
    if int(workers) < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    blobs = [pickle.dumps(x, protocol=pickle.HIGHEST_PROTOCOL) for x in items]
    n = min(int(workers), len(items))
    if n <= 1:
        return Pending(fn, blobs, None, [])
    pool = _pool(n)
    return Pending(fn, blobs, pool, [pool.submit(_run_pickled, fn, b) for b in blobs])


def train_members(jobs: Sequence[MemberJob], workers: int = 1) -> list[nn.Module]:
    """Train every job (:func:`train_member`) in ``workers`` processes
    (:func:`map_in_processes`); returns the members in the order of ``jobs``."""
    return map_in_processes(train_member, jobs, workers)
