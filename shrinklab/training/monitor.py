"""One logger per training run: TensorBoard event files and DVCLive (the
specification's Monitoring and Visualization section).

:class:`RunLogger` writes the same scalars to ``<root>/tensorboard/<run>/``
(``torch.utils.tensorboard``; browse with ``tensorboard --logdir reports/tensorboard``)
and ``<root>/dvclive/<run>/`` (DVCLive TSV curves that ``dvc plots show`` renders),
plus histograms and figures to TensorBoard only. It has the interface the trainers
take as ``logger`` (``log_metric``, ``next_step``, and optionally ``log_histogram``,
``log_figure``).

Logging never changes training: the logger only reads values the trainer has already
computed (no extra forward passes, no random numbers). A missing ``tensorboard`` or
``dvclive`` is reported in one line (once per process) and that backend skipped; with
neither (the core install) the logger does nothing.

Parallel workers (one process per ensemble member): pass the run *name* (a string,
picklable), not a logger, and open the logger inside the worker, e.g.
``with RunLogger(f"ensemble/member_{i}", root) as log: train(..., logger=log)``; each
member then owns its folders and no two processes write one file.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RunLogger", "run_logger"]

_MISSING_NOTE: set[str] = set()


def _note(message: str) -> None:
    """Print ``message`` once per process (stderr, one line)."""
    if message not in _MISSING_NOTE:
        _MISSING_NOTE.add(message)
        print(message, file=sys.stderr, flush=True)


class RunLogger:
    """TensorBoard + DVCLive logger of one training run.

    Parameters
    ----------
    run : run name, a relative path such as ``"pretrain"`` or ``"ensemble/member_0"``.
    root : reports folder; event files go to ``root/tensorboard/run``, DVCLive to
        ``root/dvclive/run`` (both created here, emptied first so a rerun does not
        append to a stale run).
    tensorboard, dvclive : switch either backend off.
    """

    def __init__(
        self,
        run: str,
        root: str | Path = "reports",
        *,
        tensorboard: bool = True,
        dvclive: bool = True,
    ) -> None:
        if not run or Path(run).is_absolute() or ".." in Path(run).parts:
            raise ValueError(f"run must be a relative name without '..', got {run!r}")
        self.run = str(run)
        self.step = 0
        self.tb_dir = Path(root) / "tensorboard" / run
        self.live_dir = Path(root) / "dvclive" / run
        self._tb = self._open_tensorboard() if tensorboard else None
        self._live = self._open_dvclive() if dvclive else None

    # ------------------------------------------------------------------ backends
    def _open_tensorboard(self) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            _note("monitor: tensorboard not installed; no event files (pip install tensorboard)")
            return None
        _clear(self.tb_dir)
        return SummaryWriter(log_dir=str(self.tb_dir))

    def _open_dvclive(self) -> Any:
        try:
            from dvclive import Live
        except ImportError:
            _note("monitor: dvclive not installed; no DVCLive curves (pip install dvclive)")
            return None
        _clear(self.live_dir)
        return Live(dir=str(self.live_dir), save_dvc_exp=False, dvcyaml=None, report=None)

    @property
    def active(self) -> bool:
        """Whether any backend writes."""
        return self._tb is not None or self._live is not None

    # ------------------------------------------------------------------- logging
    def log_metric(self, name: str, value: float) -> None:
        """Scalar ``name`` at the current step (NaN / inf are skipped: a run without
        validation data has no validation curve)."""
        value = float(value)
        if not np.isfinite(value):
            return
        if self._tb is not None:
            self._tb.add_scalar(name, value, self.step)
        if self._live is not None:
            self._live.log_metric(name, value)

    def log_histogram(self, name: str, values: Any) -> None:
        """Histogram of ``values`` (array or tensor) at the current step (TensorBoard)."""
        if self._tb is None:
            return
        arr = values.detach().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)
        arr = np.asarray(arr, dtype=np.float64).ravel()
        arr = arr[np.isfinite(arr)]
        if arr.size:
            self._tb.add_histogram(name, arr, self.step)

    def log_figure(self, name: str, fig: Any) -> None:
        """A matplotlib figure as a TensorBoard image at the current step (the figure
        stays open)."""
        if self._tb is not None:
            self._tb.add_figure(name, fig, self.step, close=False)

    def next_step(self) -> None:
        """End of an epoch: later values belong to the next step."""
        if self._live is not None:
            self._live.next_step()
        if self._tb is not None:
            self._tb.flush()
        self.step += 1

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._live is not None:
            self._live.end()
            self._live = None
            # DVCLive's summary (the last step's values again) is not a curve: removed so
            # that dvc.yaml can declare a whole folder of runs as plots (``dvc plots show``
            # fails on a JSON object inside a plots folder)
            (self.live_dir / "metrics.json").unlink(missing_ok=True)

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_logger(run: str, root: str | Path | None) -> Any:
    """Context manager: a :class:`RunLogger` of ``run`` under ``root``, or ``None``
    (nothing logged) when ``root`` is ``None``."""
    from contextlib import nullcontext

    return nullcontext(None) if root is None else RunLogger(run, root)


def _clear(folder: Path) -> None:
    """Empty ``folder`` (files and sub-folders) and create it."""
    import shutil

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
