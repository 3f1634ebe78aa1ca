"""The ``ensemble_kinds`` section of ``params.yaml`` (see :mod:`shrinklab.core.params`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from shrinklab.core.params import Section


@dataclass(frozen=True)
class EnsembleKinds(Section):
    """``ensemble_kinds`` (notebooks/08_ensemble_kinds.py, a study)."""

    section: ClassVar[str] = "ensemble_kinds"

    seed: int = 3
    n_members: int = 2
    member_epochs: int = 2
    workers: int = 1


SECTION = EnsembleKinds

NOTEBOOK_ONLY: tuple[str, ...] = ()
"""Parameters the notebook declares that are not settings of the section."""
