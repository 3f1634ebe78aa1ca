"""The ``holdout`` section of ``params.yaml`` (see :mod:`shrinklab.core.params`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from shrinklab.core.params import Section, mutable_default


@dataclass(frozen=True)
class Holdout(Section):
    """``holdout`` (notebooks/10_holdout.py, a study)."""

    section: ClassVar[str] = "holdout"

    seed: int = 1
    variants: list[str] = mutable_default(["loss L/d only (λ = 0)", "edge worlds weight 0.25"])
    seeds: list[int] = mutable_default([1, 11])
    n_train: int = 400
    epochs: int = 2
    grid_reps: int = 3
    holdout_size: int = 300
    ratio_max: list[float] = mutable_default([2.0, 4.0])
    ratio_seeds: list[int] = mutable_default([1])
    ratio_train: int = 400
    ratio_valid: int = 150
    wide_size: int = 300
    p_max: int = 20
    batch_size: int = 64


SECTION = Holdout

NOTEBOOK_ONLY: tuple[str, ...] = ()
"""Parameters the notebook declares that are not settings of the section."""
