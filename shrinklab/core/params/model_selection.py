"""The ``model_selection`` section of ``params.yaml`` (see :mod:`shrinklab.core.params`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from shrinklab.core.params import Section, mutable_default


@dataclass(frozen=True)
class ModelSelection(Section):
    """``model_selection`` (notebooks/07_model_selection.py, a study)."""

    section: ClassVar[str] = "model_selection"

    seed: int = 7
    n_search: int = 1500
    n_trials: int = 4
    trial_epochs: int = 3
    batch_size: int = 256
    grid: dict[str, list[Any]] = mutable_default(
        {
            "width": [64, 128, 256],
            "depth": [2, 3],
            "dropout": [0.2, 0.3],
            "attention": [False, True],
        }
    )
    grid_jobs: int = 2
    cv_epochs: int = 2
    n_real_folds: int = 2
    real_windows: list[int] = mutable_default([60])
    finetune_lrs: list[float] = mutable_default([0.0001, 0.0003])
    finetune_epochs: int = 2
    ablation_epochs: int = 3
    ablation_studies: list[str] = mutable_default(
        ["features", "loss", "targets", "curriculum", "pretraining", "components"]
    )
    component_weights: dict[str, float] = mutable_default(
        {
            "log_det_weight": 0.1,
            "portfolio_weight": 0.1,
            "smoothness_weight": 0.1,
            "adversarial_weight": 0.1,
        }
    )
    hidden_dims: list[int] = mutable_default([64, 32, 16])
    dropout: float = 0.3
    input_dropout: float = 0.1
    attention: bool = False
    curriculum: bool = True


SECTION = ModelSelection

NOTEBOOK_ONLY: tuple[str, ...] = ()
"""Parameters the notebook declares that are not settings of the section."""
