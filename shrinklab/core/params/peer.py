"""The ``peer`` section of ``params.yaml`` (see :mod:`shrinklab.core.params`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from shrinklab.core.params import Section, mutable_default


@dataclass(frozen=True)
class Peer(Section):
    """``peer`` (notebooks/05_learned_peer.py): the learned peer (RIEnet)."""

    section: ClassVar[str] = "peer"

    seed: int = 8
    windows: list[int] = mutable_default([60])
    horizon: int = 21
    step: int = 63
    asset_subsets: int = 0
    val_start: str = "2013-01-01"
    epochs: int = 2
    patience: int = 8
    lr: float = 0.003


SECTION = Peer

NOTEBOOK_ONLY: tuple[str, ...] = ()
"""Parameters the notebook declares that are not settings of the section."""
