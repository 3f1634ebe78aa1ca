"""The ``data_prep`` section of ``params.yaml`` (see :mod:`shrinklab.core.params`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from shrinklab.core.params import Section, mutable_default


@dataclass(frozen=True)
class DataPrep(Section):
    """``data_prep`` (notebooks/01_data_prep.py): real returns and synthetic worlds."""

    section: ClassVar[str] = "data_prep"

    seed: int = 0
    n_train: int = 3000
    n_valid: int = 600
    n_test: int = 600
    p_max: int = 60
    batch_size: int = 32  # samples per drawn (p, n) design
    ratio_max: float = 4.0  # largest p/n of the training worlds
    workers: int = 1  # processes building the samples (same result for any number)
    family_weights: dict[str, float] = mutable_default({})  # {}: the library's default mix


SECTION = DataPrep

NOTEBOOK_ONLY: tuple[str, ...] = ()
"""Parameters the notebook declares that are not settings of the section."""
