"""The ``compress`` section of ``params.yaml`` (see :mod:`shrinklab.core.params`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from shrinklab.core.params import Section, mutable_default


@dataclass(frozen=True)
class Compress(Section):
    """``compress`` (notebooks/05_compression.py): distillation, pruning, the deploy rule."""

    section: ClassVar[str] = "compress"

    seed: int = 4
    sparsities: list[float] = mutable_default([0.5, 0.9])
    student_hidden: list[int] = mutable_default([32, 16])
    distill_epochs: int = 2
    fold_seed: int = 2021
    fold_windows: list[int] = mutable_default([60])
    fold_splits: int = 1
    fold_draws: int = 1
    fold_start: str = "2013-01-02"
    min_gain_kept_final: float = 0.9
    workers: int = 1  # processes for the fold backtest


SECTION = Compress

NOTEBOOK_ONLY: tuple[str, ...] = ()
"""Parameters the notebook declares that are not settings of the section."""
