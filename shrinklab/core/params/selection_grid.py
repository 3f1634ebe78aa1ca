"""The ``selection_grid`` section of ``params.yaml`` (see :mod:`shrinklab.core.params`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from shrinklab.core.params import Section, mutable_default


@dataclass(frozen=True)
class SelectionGrid(Section):
    """``selection_grid`` (notebooks/09_selection_grid.py, a study)."""

    section: ClassVar[str] = "selection_grid"

    seed: int = 11
    grid_reps: int = 3
    holdout_size: int = 300
    gate_thresholds: list[float] = mutable_default([0.5, 0.7, 0.9])
    multi_target_reps: int = 3
    p_max: int = 20
    batch_size: int = 64


SECTION = SelectionGrid

NOTEBOOK_ONLY: tuple[str, ...] = ()
"""Parameters the notebook declares that are not settings of the section."""
