"""The ``ensemble`` section of ``params.yaml`` (see :mod:`shrinklab.core.params`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

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
    # experts trained like the family experts but kept out of ensemble.pt, for the deployed
    # soft mixture behind a guard: {family: {threshold, max_p_over_n}} (decision 0058;
    # shrinklab.models.guarded)
    guarded_experts: dict[str, dict[str, Any]] = mutable_default(
        {"toeplitz": {"threshold": 0.5, "max_p_over_n": 4.0}}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        both = sorted(set(self.guarded_experts) & set(self.family_experts))
        if both:
            raise ValueError(
                f"params section 'ensemble': {both} are in both family_experts and "
                "guarded_experts (a family gets one kind of expert)"
            )


SECTION = Ensemble

NOTEBOOK_ONLY: tuple[str, ...] = ()
"""Parameters the notebook declares that are not settings of the section."""
