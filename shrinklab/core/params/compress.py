"""The ``compress`` section of ``params.yaml`` (see :mod:`shrinklab.core.params`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from shrinklab.core.params import Section, mutable_default
from shrinklab.core.volatility_timing import PRETESTS

MIXINGS = ("hard", "soft")
"""The values of ``gate_mixing``: :data:`shrinklab.models.experts.MIXINGS` (the layers import
downward only, and the estimator's core install has no YAML, so the two are kept equal
by ``tests/test_experts.py``)."""


@dataclass(frozen=True)
class Compress(Section):
    """``compress`` (notebooks/05_compression.py): distillation, pruning, the deploy rule."""

    section: ClassVar[str] = "compress"

    seed: int = 4
    sparsities: list[float] = mutable_default([0.5, 0.9])
    student_hidden: list[int] = mutable_default([32, 16])
    distill_epochs: int = 2
    fold_seed: int = 2021
    fold_windows: list[int] = mutable_default([60])
    fold_splits: int = 1
    fold_draws: int = 1
    fold_start: str = "2013-01-02"
    min_gain_kept_final: float = 0.9
    workers: int = 1  # processes for the fold backtest and the experts' fine-tunings
    # how the deployed gated model combines its modules: "hard" (the switch) or "soft"
    # (docs/decisions/0044-soft-gate-mixture.md)
    gate_mixing: str = "soft"
    # family experts whose members are fine-tuned on real returns, by finetuned.pt's recipe,
    # in the deployed soft mixture (docs/decisions/0045-fine-tuned-sp500-expert.md; [] = none)
    finetune_experts: list[str] = mutable_default(["factor"])
    # final.pt's covariances get the pre-tested volatility timing with this half-life ratio
    # (docs/decisions/0047-pre-tested-volatility-timing.md; null = none; ½: decision 0049)
    volatility_timing: float | None = 0.5
    # its pre-test: "pooled" (decision 0047) or "split" (decision 0048)
    volatility_pretest: str = "split"
    # windows most like funds of the stocks get the pretrained general network
    # (docs/decisions/0068-fund-switch-with-synthetic-class.md): the seed of the fund
    # class's universes (null = no switch) and the training-world families of the third class
    fund_switch_seed: int | None = 2321
    fund_switch_synthetic: list[str] = mutable_default(
        ["diversified", "dominant_factor", "resampled"]
    )
    # the pretrained network's intensity on those windows times this scale
    # (docs/decisions/0069-far-intensity-scale.md; 1 = as it is)
    fund_switch_far_scale: float = 0.75
    # windows whose tails pre-test as Gaussian move this share of the identity target's
    # intensity to QIS (docs/decisions/0073-gaussian-tails-move-to-qis.md; 0 = none): the
    # pre-test's largest statistic and largest normal-theory SE
    gaussian_move_share: float = 0.25
    gaussian_move_z: float = 2.0
    gaussian_move_se: float = 0.025
    # the fund-like windows at least this long move this share of every target weight to
    # QIS (docs/decisions/0074-long-fund-windows-towards-qis.md; share 0 = none)
    long_fund_qis_n: int = 200
    long_fund_qis_share: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(set(self.finetune_experts)) != len(self.finetune_experts):
            raise ValueError(
                f"params section 'compress': finetune_experts = {self.finetune_experts!r} "
                "repeats a family"
            )
        if self.finetune_experts and self.gate_mixing != "soft":
            raise ValueError(
                "params section 'compress': finetune_experts needs gate_mixing = 'soft' "
                "(decision 0045 measured the fine-tuned experts in the soft mixture)"
            )
        if self.volatility_timing is not None and not float(self.volatility_timing) > 0:
            raise ValueError(
                f"params section 'compress': volatility_timing = {self.volatility_timing!r} "
                "must be a half-life ratio > 0 or null"
            )
        if self.volatility_pretest not in PRETESTS:
            raise ValueError(
                f"params section 'compress': volatility_pretest = {self.volatility_pretest!r} "
                f"must be one of {PRETESTS}"
            )
        if self.fund_switch_seed is not None and not self.fund_switch_synthetic:
            raise ValueError(
                "params section 'compress': fund_switch_synthetic must name at least one "
                "training-world family (decision 0068's third class)"
            )
        if not 0.0 <= float(self.fund_switch_far_scale) <= 1.0:
            raise ValueError(
                "params section 'compress': fund_switch_far_scale = "
                f"{self.fund_switch_far_scale!r} must be in [0, 1]"
            )
        if not 0.0 <= float(self.gaussian_move_share) <= 1.0:
            raise ValueError(
                "params section 'compress': gaussian_move_share = "
                f"{self.gaussian_move_share!r} must be in [0, 1]"
            )
        if not float(self.gaussian_move_se) > 0 or not math.isfinite(float(self.gaussian_move_z)):
            raise ValueError(
                "params section 'compress': gaussian_move_se must be > 0 and gaussian_move_z "
                f"finite, got {self.gaussian_move_se!r} and {self.gaussian_move_z!r}"
            )
        if not 0.0 <= float(self.long_fund_qis_share) <= 1.0 or int(self.long_fund_qis_n) < 0:
            raise ValueError(
                "params section 'compress': long_fund_qis_share must be in [0, 1] and "
                f"long_fund_qis_n >= 0, got {self.long_fund_qis_share!r} and "
                f"{self.long_fund_qis_n!r}"
            )
        if self.gate_mixing not in MIXINGS:
            raise ValueError(
                f"params section 'compress': gate_mixing = {self.gate_mixing!r} must be one "
                f"of {MIXINGS}"
            )


SECTION = Compress

NOTEBOOK_ONLY: tuple[str, ...] = ()
"""Parameters the notebook declares that are not settings of the section."""
