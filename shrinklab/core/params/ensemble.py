"""The ``ensemble`` section of ``params.yaml`` (see :mod:`shrinklab.core.params`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from shrinklab.core.params import Section, mutable_default


@dataclass(frozen=True)
class Ensemble(Section):
    """``ensemble`` (notebooks/04_ensembling.py): multi-seed members and family experts."""

    section: ClassVar[str] = "ensemble"

    seed: int = 3
    n_members: int = 2
    member_epochs: int = 2
    workers: int = 1  # processes training the members (1: in the kernel)
    family_experts: list[str] = mutable_default(["factor"])  # [] = no experts
    expert_members: int = 1
    gate_threshold: float = 0.8
    gate_epochs: int = 2


SECTION = Ensemble

NOTEBOOK_ONLY: tuple[str, ...] = ()
"""Parameters the notebook declares that are not settings of the section."""
