"""The ``pretrain`` section of ``params.yaml`` (see :mod:`shrinklab.core.params`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from shrinklab.core.params import Section, mutable_default


@dataclass(frozen=True)
class Pretrain(Section):
    """``pretrain`` (notebooks/02_synthetic_pretraining.py): the network on synthetic worlds."""

    section: ClassVar[str] = "pretrain"

    seed: int = 1
    epochs: int = 4
    batch_size: int = 256
    lr: float = 0.002
    weight_decay: float = 0.0001
    intensity_weight: float = 0.5
    matrix_weight: float = 0.3
    spectrum_weight: float = 0.0
    uncertainty_weight: float = 0.05
    clip_norm: float = 1.0
    hidden_dims: list[int] = mutable_default([64, 32, 16])
    dropout: float = 0.3
    input_dropout: float = 0.1
    attention: bool = False
    gate: str = "softmax"
    curriculum: bool = True
    patience: int = 10
    loss_normaliser: str = "sample"
    best_classical_weight: float = 0.0
    gap_floor: float = 0.01
    edge_weight: float = 1.0


SECTION = Pretrain

NOTEBOOK_ONLY: tuple[str, ...] = ()
"""Parameters the notebook declares that are not settings of the section."""
