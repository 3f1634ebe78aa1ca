"""The ``finetune`` section of ``params.yaml`` (see :mod:`shrinklab.core.params`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from shrinklab.core.params import Section, mutable_default


@dataclass(frozen=True)
class Finetune(Section):
    """``finetune`` (notebooks/03_gpu_training.py): walk-forward fine-tuning on real returns."""

    section: ClassVar[str] = "finetune"

    seed: int = 2
    windows: list[int] = mutable_default([60, 120])
    epochs: int = 2
    lr: float = 0.0003
    asset_subsets: int = 0
    n_folds: int = 2
    # synthetic replay: docs/decisions/0025-fine-tuning-with-synthetic-replay.md (0 = off)
    replay_weight: float = 0.0
    replay_batch: int = 256
    # derived long-only portfolios per stock added to the fine-tuning universe (0 = the
    # stocks only): docs/decisions/0041-derived-universes-over-fine-tuning-seeds.md
    derived_per_stock: float = 0.0
    # fine-tuning seeds seed, seed + 1, … whose networks are averaged into finetuned.pt
    # (1 = one fine-tuning): docs/decisions/0042-seed-soup-fine-tuning.md
    soup_seeds: int = 1
    workers: int = 1  # processes running the soup's fine-tunings (1: in the kernel)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not math.isfinite(self.replay_weight) or self.replay_weight < 0:
            raise ValueError(
                f"params section 'finetune': replay_weight = {self.replay_weight!r} "
                "must be finite and >= 0"
            )
        if not math.isfinite(self.derived_per_stock) or self.derived_per_stock < 0:
            raise ValueError(
                f"params section 'finetune': derived_per_stock = {self.derived_per_stock!r} "
                "must be finite and >= 0"
            )
        if self.soup_seeds < 1:
            raise ValueError(
                f"params section 'finetune': soup_seeds = {self.soup_seeds!r} must be >= 1"
            )
        if self.workers < 1:
            raise ValueError(f"params section 'finetune': workers = {self.workers!r} must be >= 1")
        if self.replay_batch < 1:
            raise ValueError(
                f"params section 'finetune': replay_batch = {self.replay_batch!r} must be >= 1"
            )


SECTION = Finetune

NOTEBOOK_ONLY: tuple[str, ...] = ()
"""Parameters the notebook declares that are not settings of the section."""
