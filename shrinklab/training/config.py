"""The training configuration: :class:`TrainConfig`, whose every field is a knob that a
``params.yaml`` section, a notebook, a study or a benchmark sets (except ``T_0`` and
``T_mult``, kept as fields for the reasons in :class:`TrainConfig`'s docstring), and the
constants of training that nothing sets (they were fields once; :data:`REMOVED_FIELDS`
says how a stored configuration that still carries them is read)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ADVERSARIAL_EPSILON",
    "CURRICULUM_EPOCHS",
    "CURRICULUM_START",
    "ETA_MIN",
    "MIN_DELTA",
    "PROGRESSIVE_EPOCHS",
    "REMOVED_FIELDS",
    "RESUMABLE_FIELDS",
    "SGD_MOMENTUM",
    "SPECTRUM_BATCH",
    "SPECTRUM_MAX_MB",
    "SPECTRUM_POOL",
    "TrainConfig",
    "config_diff",
    "LOSS_NORMALISERS",
    "LOSS_WEIGHTS",
]

# ------------------------------------------------------------- constants of training
#: Momentum of the SGD baseline (``optimizer="sgd"``).
SGD_MOMENTUM = 0.9
#: Floor of the learning rate under cosine annealing with warm restarts (SGDR's η_min).
ETA_MIN = 1e-5
#: How much the monitored loss must improve to count as a new best (early stopping).
MIN_DELTA = 0.0
#: The pool of rebuilt matrices behind the spectrum, log-det and portfolio terms:
#: at most this many random training samples, at most this many MiB, and this many of
#: them (one ``p`` bucket) per step.
SPECTRUM_POOL = 1024
SPECTRUM_MAX_MB = 256.0
SPECTRUM_BATCH = 32
#: Step size of the FGSM perturbation of the adversarial penalty (features are standardised).
ADVERSARIAL_EPSILON = 0.01
#: Curriculum: the easiest ``CURRICULUM_START`` of the samples first, all of them after
#: ``CURRICULUM_EPOCHS`` epochs (linear in between).
CURRICULUM_START = 0.3
CURRICULUM_EPOCHS = 10
#: Progressive sizing: every asset count ``p`` is in the epoch pool after this many epochs.
PROGRESSIVE_EPOCHS = 10

#: Former :class:`TrainConfig` fields → the constant the code now uses instead. A stored
#: configuration (a checkpoint, ``extra["train_config"]`` of a model file) may carry them;
#: :meth:`TrainConfig.from_dict` drops such a key when its value is that constant and
#: refuses one with another value (the file was trained with a setting this code no
#: longer offers).
REMOVED_FIELDS: dict[str, Any] = {
    "momentum": SGD_MOMENTUM,
    "eta_min": ETA_MIN,
    "min_delta": MIN_DELTA,
    "spectrum_pool": SPECTRUM_POOL,
    "spectrum_batch": SPECTRUM_BATCH,
    "spectrum_max_mb": SPECTRUM_MAX_MB,
    "adversarial_epsilon": ADVERSARIAL_EPSILON,
    "curriculum_start": CURRICULUM_START,
    "curriculum_epochs": CURRICULUM_EPOCHS,
    "progressive_epochs": PROGRESSIVE_EPOCHS,
}


# What the per-sample Frobenius loss is divided by (see :func:`loss_normaliser`).
LOSS_NORMALISERS = ("sample", "fsopt_gap", "sample_and_best_classical")


#: The weights of the composite loss's terms and regularisers (0 switches a term off).
LOSS_WEIGHTS: tuple[str, ...] = (
    "intensity_weight",
    "matrix_weight",
    "uncertainty_weight",
    "spectrum_weight",
    "log_det_weight",
    "portfolio_weight",
    "l2",
    "smoothness_weight",
    "adversarial_weight",
)


# Fields that may change between a run and its resumption without changing the result
# of the epochs already run.
RESUMABLE_FIELDS = frozenset({"epochs", "device", "patience"})


# Fields added after models were saved: :meth:`TrainConfig.to_dict` writes them only when
# they differ from their default, so a configuration that leaves them off serialises
# (and hashes, and is saved in a model file) exactly as before they existed.
_SPARSE_FIELDS = {"log_det_weight": 0.0, "portfolio_weight": 0.0}


@dataclass
class TrainConfig:
    """Training hyper-parameters (defaults follow the specification where it gives one).

    ``intensity_weight``/``matrix_weight`` are the composite-loss α/β of the
    specification's loss-function section (0.5/0.3); ``l2`` is its λ = 0.001.
    ``spectrum_weight`` is its γ (0.2 there; default 0 here
    because it needs the matrices): when > 0, the matrices of :data:`SPECTRUM_POOL`
    random training samples (at most :data:`SPECTRUM_MAX_MB` MiB) are rebuilt once with
    ``train_set.rebuild_matrices`` and every step adds γ times the normalised
    eigenvalue-spectrum loss of :data:`SPECTRUM_BATCH` of them (one ``p`` bucket per
    step), predicted in the same forward pass as the batch; if ``valid_set`` can
    rebuild its matrices too, the monitored validation loss includes γ times the
    spectrum loss of a validation pool (without a validation set: of the training
    pool). ``amp``: ``"auto"`` (bf16 if supported, else fp16), ``"bf16"``,
    ``"fp16"`` or ``None``; only used on CUDA (CPU runs in float32). ``device``:
    ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    ``set_priors``: at the start of a fresh run, set the output-head biases from the
    training set's mean oracle intensity and target weights (the architecture specification's initialization strategy,
    :func:`shrinklab.models.network.output_priors`). ``cpu_threads``: intra-op threads while training on CPU (restored afterwards); the
    matrices are tiny, so one thread is fastest and immune to oversubscription;
    ``None`` keeps torch's setting. ``loss_normaliser``: what the per-sample Frobenius
    loss is divided by — ``"sample"``: the sample covariance's loss ``d`` (1 = no
    better than S, 0 = perfect); ``"fsopt_gap"``: the gap ``d − L_FSOPT`` (floored at
    ``gap_floor · d``) after subtracting ``L_FSOPT``, i.e. ``1 − PRIAL/100`` of each
    world (PRIAL of Ledoit & Wolf 2022, "Quadratic shrinkage for large covariance
    matrices", Bernoulli 28(3)), so every world's PRIAL counts equally, also where
    the attainable improvement over S is a small share of ``d`` (large n/p);
    ``"sample_and_best_classical"``: ``L/d + best_classical_weight · L/L_best``, with
    ``L_best`` the loss of the best classical estimator of that world (Ledoit–Wolf,
    OAS, constant correlation, single factor, QIS; floored at ``gap_floor · d``), so
    worlds where every estimator is far better than S (p ≫ n, Toeplitz) still reward
    beating the classical estimators. ``edge_weight``: the weight of the edge-case
    worlds (:data:`shrinklab.data.synthetic.EDGE_FAMILIES`: near-singular, dominant factor)
    in the Frobenius term, i.e. their ``ν`` is divided by it (:func:`edge_family_mask`).
    They are in the training set so that the network stays sane there; their loss is
    far more sensitive to ``w`` than other worlds' (median ``‖G‖₂/d`` about 65 for a
    dominant factor against 6–13), so at weight 1 their gradients dominate training.
    ``log_det_weight`` and ``portfolio_weight``: the specification's log-determinant
    (Stein) and portfolio-variance loss terms, on the same pool of rebuilt matrices as
    the spectrum term (one bucket of :data:`SPECTRUM_BATCH` samples per step): Stein's loss
    of Σ̂(w) (:func:`shrinklab.training.losses.log_det_loss`, scale-free) and the
    relative excess variance of its GMV portfolio under Σ
    (:func:`~shrinklab.training.losses.portfolio_variance_loss`); samples whose Σ̂ is
    not positive definite add nothing to either. Off (0) in the deployed model; the
    ablation study switches them on. ``curriculum`` / ``progressive``: the epoch pool
    grows from the easiest samples / the smallest ``p`` (:data:`CURRICULUM_START`,
    :data:`CURRICULUM_EPOCHS`, :data:`PROGRESSIVE_EPOCHS`). ``optimizer``: ``"adam"`` or
    ``"sgd"`` (momentum :data:`SGD_MOMENTUM`, the specification's baseline); ``T_0`` and
    ``T_mult``: the restarts of the cosine schedule (floor :data:`ETA_MIN`; Loshchilov &
    Hutter 2017, "SGDR: stochastic gradient descent with warm restarts", ICLR).

    ``T_0`` and ``T_mult`` stay fields although no ``params.yaml`` section, notebook or
    study sets them (unlike the constants above). The specification's optimisation
    strategy asks for cosine annealing with warm restarts but gives no period, so the
    defaults (10, 2: cycles of 10, 20 and 40 epochs) are this project's choice, tied to
    the run lengths of ``params.yaml`` (pretraining's and the ensemble members' 70 epochs
    end with the third cycle, fine-tuning's 10 with the first); a run of another length
    wants another period, which the tests set (``T_0 = epochs`` for one cosine without
    restart, ``T_mult = 1`` for equal cycles).
    Both are also written by :meth:`to_dict` into every checkpoint's run key and every
    model file's ``extra["train_config"]``: as constants, dropping them from
    :meth:`to_dict` would change the run keys and the bytes of ``models/pretrained.pt``
    and the models trained from it, and keeping them there would write two constants as
    if they were settings.
    """

    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    epochs: int = 100
    batch_size: int = 512
    T_0: int = 10
    T_mult: int = 2
    clip_norm: float | None = 1.0
    patience: int = 10
    intensity_weight: float = 0.5
    matrix_weight: float = 0.3
    uncertainty_weight: float = 0.05
    l2: float = 1e-3
    spectrum_weight: float = 0.0
    log_det_weight: float = 0.0
    portfolio_weight: float = 0.0
    smoothness_weight: float = 0.0
    adversarial_weight: float = 0.0
    curriculum: bool = False
    progressive: bool = False
    set_priors: bool = True  # set False when fine-tuning pretrained heads
    amp: str | None = "auto"
    seed: int = 0
    device: str = "auto"
    cpu_threads: int | None = 1
    loss_normaliser: str = "sample"
    gap_floor: float = 0.01
    best_classical_weight: float = 0.0
    edge_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.loss_normaliser not in LOSS_NORMALISERS:
            raise ValueError(
                f"loss_normaliser must be one of {LOSS_NORMALISERS}, got {self.loss_normaliser!r}"
            )
        if not 0.0 < self.gap_floor <= 1.0:
            raise ValueError(f"gap_floor must be in (0, 1], got {self.gap_floor}")
        if not (math.isfinite(self.edge_weight) and self.edge_weight > 0):
            raise ValueError(f"edge_weight must be finite and > 0, got {self.edge_weight}")
        if not (math.isfinite(self.best_classical_weight) and self.best_classical_weight >= 0):
            raise ValueError(
                f"best_classical_weight must be finite and >= 0, got {self.best_classical_weight}"
            )
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.amp not in (None, "auto", "bf16", "fp16"):
            raise ValueError(f"amp must be None, 'auto', 'bf16' or 'fp16', got {self.amp!r}")
        for name in (
            "lr",
            "batch_size",
            "epochs",
            "T_0",
            "T_mult",
            "patience",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2 (batch normalisation)")
        for name in ("weight_decay", *LOSS_WEIGHTS):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any]) -> TrainConfig:
        """The configuration a checkpoint or model file stored (:meth:`to_dict`).

        Keys of :data:`REMOVED_FIELDS` are dropped when they hold the constant that
        replaced them; another value is a ``ValueError``, and so is any other key that
        is not a field (``TypeError`` from the constructor would not say why)."""
        values = dict(stored)
        for name, constant in REMOVED_FIELDS.items():
            if name in values and values.pop(name) != constant:
                raise ValueError(
                    f"stored training configuration has {name}={stored[name]!r}; it is no "
                    f"longer a setting (the code uses {constant!r})"
                )
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"stored training configuration has unknown keys {unknown}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict, without the :data:`_SPARSE_FIELDS` left at their default."""
        out = dataclasses.asdict(self)
        for name, default in _SPARSE_FIELDS.items():
            if out[name] == default:
                del out[name]
        return out

    @property
    def uses_matrix_pool(self) -> bool:
        """Whether a term needs the pool of rebuilt matrices (spectrum, log-det, portfolio)."""
        return bool(self.spectrum_weight or self.log_det_weight or self.portfolio_weight)


def config_diff(old: dict[str, Any], cfg: TrainConfig) -> list[str]:
    """Fields of ``cfg`` that differ from a checkpoint's config dict ``old``, except the
    :data:`RESUMABLE_FIELDS` (which may change when a run is resumed)."""
    new = cfg.to_dict()
    keys = set(new) | (set(old) & set(_SPARSE_FIELDS))
    return sorted(
        k
        for k in keys
        if k not in RESUMABLE_FIELDS
        and old.get(k, _SPARSE_FIELDS.get(k)) != new.get(k, _SPARSE_FIELDS.get(k))
    )
