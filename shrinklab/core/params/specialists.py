"""The ``specialists`` section of ``params.yaml`` (see :mod:`shrinklab.core.params`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from shrinklab.core.params import Section


@dataclass(frozen=True)
class Specialists(Section):
    """``specialists`` (notebooks/11_specialists.py, a study): the scenario-specialist
    yardstick of the public grid, whose scenarios, seed and replications it reads from
    the ``evaluate`` section of ``evaluate_params``."""

    section: ClassVar[str] = "specialists"

    evaluate_params: str = ""  # "": the notebook's own smoke-size grid
    specialist_draws: int = 64
    epochs: int = 60
    workers: int = 1


SECTION = Specialists

NOTEBOOK_ONLY: tuple[str, ...] = ("scenarios", "seed", "n_reps")
"""Parameters the notebook declares that are not settings of the section (never in
``params.yaml``): the grid, read from the evaluate section of `evaluate_params` in a full run."""
