"""Typed settings of the pipeline: one frozen dataclass per section of ``params.yaml``.

Each stage's notebook has a ``parameters`` cell (its small, fast defaults; papermill
injects the section's values after it). The dataclasses here mirror those sections,
field for field and with the same names, so a setting has one name everywhere; their
defaults are the notebooks' ``parameters`` cell values (smoke size). The folders every
stage shares live once, in the ``paths`` section (:class:`Paths`); a section exposes
them as its ``paths`` attribute.

Two ways in, with the same checks (an unknown key, a missing key or a value of the
wrong type is a :class:`ValueError` naming the section and the key):

- :func:`load_section` reads a section of ``params.yaml``
  (``python -m shrinklab.pipeline run`` calls it before papermill starts, so a typo
  fails at once instead of deep inside a notebook);
- :func:`notebook_section` builds a section from a notebook's variables (the line
  after the ``parameters`` cell), so a notebook run by hand is checked too.

The checks only read: the values the notebooks receive are those of ``params.yaml``,
unchanged (an integer where a float is declared stays an integer). Lists stay lists,
so "frozen" means the fields cannot be reassigned, not that a list cannot be mutated.

This module sits in ``core`` (the lowest layer, standard library and PyYAML only) so
that the stage runner, the notebooks and any layer above can import it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "NOTEBOOK_ONLY",
    "SECTIONS",
    "SHARED_SECTION",
    "Compress",
    "DataPrep",
    "Ensemble",
    "EnsembleKinds",
    "Evaluate",
    "Finetune",
    "Holdout",
    "ModelSelection",
    "Paths",
    "Peer",
    "Pretrain",
    "Section",
    "SelectionGrid",
    "Specialists",
    "check_value",
    "load_section",
    "notebook_section",
    "read_params",
    "section_from_dict",
]

SHARED_SECTION = "paths"
"""The params.yaml section of folders every stage shares (defined once)."""


def _default(value: Any) -> Any:
    """A dataclass default for a mutable value (a fresh copy per instance)."""
    return field(default_factory=lambda: copy.deepcopy(value))


def check_value(value: Any, hint: Any) -> bool:
    """Whether ``value`` conforms to the type ``hint`` (``int``, ``float``, ``str``,
    ``bool``, ``Any``, ``list[X]``, ``tuple[X, ...]``, ``dict[K, V]``, ``X | None``).
    A float field accepts an integer (YAML writes ``4`` for 4.0); ``bool`` is never
    taken for a number; a list field accepts a tuple."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(check_value(value, a) for a in args)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (str, bool) or dataclasses.is_dataclass(hint):
        return isinstance(value, hint)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and all(check_value(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            check_value(k, args[0]) and check_value(v, args[1]) for k, v in value.items()
        )
    raise TypeError(f"check_value: unsupported type hint {hint!r}")


@dataclass(frozen=True)
class _Checked:
    """Checks every field's value against its annotation (:func:`check_value`)."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not check_value(value, hints[f.name]):
                raise ValueError(
                    f"params section {self.section_name()!r}: {f.name} = {value!r} is not "
                    f"{_type_name(hints[f.name])}"
                )

    @classmethod
    def section_name(cls) -> str:
        return next((k for k, v in SECTIONS.items() if v is cls), cls.__name__)


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


@dataclass(frozen=True)
class Paths(_Checked):
    """The ``paths`` section: folders shared by the stages (defaults: smoke size)."""

    processed_dir: str = "build/smoke/data"
    models_dir: str = "build/smoke/models"
    reports_dir: str = "build/smoke/reports"
    runs_dir: str = "build/smoke/runs/model_selection"
    studies_cache_dir: str = "build/smoke/studies"  # worlds drawn once by two studies
    weights_dir: str = "build/smoke/weights"  # the bundled model (package data)


@dataclass(frozen=True)
class Section(_Checked):
    """A stage's section. ``paths`` is the shared :class:`Paths`, not a key of the
    section in ``params.yaml``; every other field is one."""

    paths: Paths = field(default_factory=Paths, kw_only=True)

    @classmethod
    def keys(cls) -> list[str]:
        """The section's keys in ``params.yaml`` (its fields but ``paths``)."""
        return [f.name for f in dataclasses.fields(cls) if f.name != "paths"]


@dataclass(frozen=True)
class DataPrep(Section):
    """``data_prep`` (notebooks/01_data_prep.py): real returns and synthetic worlds."""

    seed: int = 0
    n_train: int = 3000
    n_valid: int = 600
    n_test: int = 600
    p_max: int = 60
    batch_size: int = 32  # samples per drawn (p, n) design
    ratio_max: float = 4.0  # largest p/n of the training worlds
    workers: int = 1  # processes building the samples (same result for any number)
    family_weights: dict[str, float] = _default({})  # {}: the library's default mix


@dataclass(frozen=True)
class Pretrain(Section):
    """``pretrain`` (notebooks/02_synthetic_pretraining.py): the network on synthetic worlds."""

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
    hidden_dims: list[int] = _default([64, 32, 16])
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


@dataclass(frozen=True)
class Finetune(Section):
    """``finetune`` (notebooks/03_gpu_training.py): walk-forward fine-tuning on real returns."""

    seed: int = 2
    windows: list[int] = _default([60, 120])
    epochs: int = 2
    lr: float = 0.0003
    asset_subsets: int = 0
    n_folds: int = 2
    # synthetic replay: docs/decisions/0025-fine-tuning-with-synthetic-replay.md (0 = off)
    replay_weight: float = 0.0
    replay_batch: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        if not math.isfinite(self.replay_weight) or self.replay_weight < 0:
            raise ValueError(
                f"params section 'finetune': replay_weight = {self.replay_weight!r} "
                "must be finite and >= 0"
            )
        if self.replay_batch < 1:
            raise ValueError(
                f"params section 'finetune': replay_batch = {self.replay_batch!r} must be >= 1"
            )


@dataclass(frozen=True)
class Ensemble(Section):
    """``ensemble`` (notebooks/04_ensembling.py): multi-seed members and family experts."""

    seed: int = 3
    n_members: int = 2
    member_epochs: int = 2
    workers: int = 1  # processes training the members (1: in the kernel)
    family_experts: list[str] = _default(["factor"])  # [] = no experts
    expert_members: int = 1
    gate_threshold: float = 0.8
    gate_epochs: int = 2


@dataclass(frozen=True)
class Compress(Section):
    """``compress`` (notebooks/05_compression.py): distillation, pruning, the deploy rule."""

    seed: int = 4
    sparsities: list[float] = _default([0.5, 0.9])
    student_hidden: list[int] = _default([32, 16])
    distill_epochs: int = 2
    fold_seed: int = 2021
    fold_windows: list[int] = _default([60])
    fold_splits: int = 1
    fold_draws: int = 1
    fold_start: str = "2013-01-02"
    min_gain_kept_final: float = 0.9
    workers: int = 1  # processes for the fold backtest


@dataclass(frozen=True)
class Peer(Section):
    """``peer`` (notebooks/05_learned_peer.py): the learned peer (RIEnet)."""

    seed: int = 8
    windows: list[int] = _default([60])
    horizon: int = 21
    step: int = 63
    asset_subsets: int = 0
    val_start: str = "2013-01-01"
    epochs: int = 2
    patience: int = 8
    lr: float = 0.003


@dataclass(frozen=True)
class Evaluate(Section):
    """``evaluate`` (notebooks/06_evaluation.py): the reports on the public grid."""

    seed: int = 5
    n_reps: int = 20
    windows: list[int] = _default([60, 120])
    example_scenarios: list[str] = _default([])
    specialists_csv: str = ""  # the specialists study's table ("": no yardstick)
    scenarios: list[dict[str, Any]] = _default(
        [
            {"name": "1/3/10 p=40 n=40", "family": "spectrum_1_3_10", "p": 40, "n": 40},
            {"name": "factor t6 p=20 n=40", "family": "factor", "p": 20, "n": 40, "df": 6},
            {
                "name": "S&P p=20 n=40 t5",
                "family": "sp500",
                "p": 20,
                "n": 40,
                "df": 5,
                "period": "report",
            },
        ]
    )


@dataclass(frozen=True)
class ModelSelection(Section):
    """``model_selection`` (notebooks/07_model_selection.py, a study)."""

    seed: int = 7
    n_search: int = 1500
    n_trials: int = 4
    trial_epochs: int = 3
    batch_size: int = 256
    grid: dict[str, list[Any]] = _default(
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
    real_windows: list[int] = _default([60])
    finetune_lrs: list[float] = _default([0.0001, 0.0003])
    finetune_epochs: int = 2
    ablation_epochs: int = 3
    ablation_studies: list[str] = _default(
        ["features", "loss", "targets", "curriculum", "pretraining", "components"]
    )
    component_weights: dict[str, float] = _default(
        {
            "log_det_weight": 0.1,
            "portfolio_weight": 0.1,
            "smoothness_weight": 0.1,
            "adversarial_weight": 0.1,
        }
    )
    hidden_dims: list[int] = _default([64, 32, 16])
    dropout: float = 0.3
    input_dropout: float = 0.1
    attention: bool = False
    curriculum: bool = True


@dataclass(frozen=True)
class EnsembleKinds(Section):
    """``ensemble_kinds`` (notebooks/08_ensemble_kinds.py, a study)."""

    seed: int = 3
    n_members: int = 2
    member_epochs: int = 2
    workers: int = 1


@dataclass(frozen=True)
class SelectionGrid(Section):
    """``selection_grid`` (notebooks/09_selection_grid.py, a study)."""

    seed: int = 11
    grid_reps: int = 3
    holdout_size: int = 300
    gate_thresholds: list[float] = _default([0.5, 0.7, 0.9])
    multi_target_reps: int = 3
    p_max: int = 20
    batch_size: int = 64


@dataclass(frozen=True)
class Holdout(Section):
    """``holdout`` (notebooks/10_holdout.py, a study)."""

    seed: int = 1
    variants: list[str] = _default(["loss L/d only (λ = 0)", "edge worlds weight 0.25"])
    seeds: list[int] = _default([1, 11])
    n_train: int = 400
    epochs: int = 2
    grid_reps: int = 3
    holdout_size: int = 300
    ratio_max: list[float] = _default([2.0, 4.0])
    ratio_seeds: list[int] = _default([1])
    ratio_train: int = 400
    ratio_valid: int = 150
    wide_size: int = 300
    p_max: int = 20
    batch_size: int = 64


@dataclass(frozen=True)
class Specialists(Section):
    """``specialists`` (notebooks/11_specialists.py, a study): the scenario-specialist
    yardstick of the public grid, whose scenarios, seed and replications it reads from
    the ``evaluate`` section of ``evaluate_params``."""

    evaluate_params: str = ""  # "": the notebook's own smoke-size grid
    specialist_draws: int = 64
    epochs: int = 60
    workers: int = 1


SECTIONS: dict[str, type[_Checked]] = {
    "paths": Paths,
    "data_prep": DataPrep,
    "pretrain": Pretrain,
    "finetune": Finetune,
    "ensemble": Ensemble,
    "compress": Compress,
    "peer": Peer,
    "evaluate": Evaluate,
    "model_selection": ModelSelection,
    "ensemble_kinds": EnsembleKinds,
    "selection_grid": SelectionGrid,
    "holdout": Holdout,
    "specialists": Specialists,
}
"""Every section of ``params.yaml`` and its dataclass."""

NOTEBOOK_ONLY: dict[str, tuple[str, ...]] = {
    "evaluate": ("ablation_csv",),  # the model-selection study's table that 06 shows
    # the grid, read from the evaluate section of `evaluate_params` in a full run
    "specialists": ("scenarios", "seed", "n_reps"),
}
"""Parameters a notebook declares that are not settings of its section (never in
``params.yaml``)."""


def _section_class(name: str) -> type[_Checked]:
    if name not in SECTIONS:
        raise ValueError(f"unknown params section {name!r} (known: {sorted(SECTIONS)})")
    return SECTIONS[name]


def _build(cls: type[_Checked], name: str, values: dict[str, Any], **extra: Any) -> Any:
    keys = cls.keys() if issubclass(cls, Section) else [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(keys))
    if unknown:
        raise ValueError(f"params section {name!r}: unknown keys {unknown} (known: {keys})")
    missing = [k for k in keys if k not in values]
    if missing:
        raise ValueError(f"params section {name!r}: missing keys {missing}")
    return cls(**values, **extra)


def read_params(params_path: str | Path = "params.yaml") -> dict[str, Any]:
    """``params.yaml`` as a dict of sections; every section must be a mapping."""
    with open(params_path, encoding="utf-8") as fh:
        params = yaml.safe_load(fh) or {}
    if not isinstance(params, dict):
        raise ValueError(f"{params_path}: expected a mapping of sections")
    for name, section in params.items():
        if not isinstance(section, dict):
            raise ValueError(f"{params_path}: section {name!r} is not a mapping")
    return params


def section_from_dict(name: str, params: dict[str, Any]) -> Any:
    """Section ``name`` of the parsed ``params`` (sections as dicts), with the shared
    :class:`Paths`; every key must be a field and every field a key."""
    cls = _section_class(name)
    if name not in params:
        raise ValueError(f"params has no section {name!r} (sections: {sorted(params)})")
    paths = _build(Paths, SHARED_SECTION, dict(params.get(SHARED_SECTION) or {}))
    if cls is Paths:
        return paths
    twice = sorted(set(params[name]) & {f.name for f in dataclasses.fields(Paths)})
    if twice:
        raise ValueError(f"params section {name!r}: {twice} set here and in {SHARED_SECTION!r}")
    return _build(cls, name, dict(params[name]), paths=paths)


def load_section(name: str, params_path: str | Path = "params.yaml") -> Any:
    """Section ``name`` of ``params_path`` as its typed dataclass (:data:`SECTIONS`)."""
    try:
        return section_from_dict(name, read_params(params_path))
    except ValueError as err:
        raise ValueError(f"{params_path}: {err}") from None


def notebook_section(name: str, namespace: dict[str, Any]) -> Any:
    """Section ``name`` built from a notebook's variables (``globals()`` after the
    ``parameters`` cell): every field of the section must be defined; the shared paths
    the notebook defines replace :class:`Paths`' defaults."""
    cls = _section_class(name)
    path_names = [f.name for f in dataclasses.fields(Paths)]
    paths = Paths(**{k: namespace[k] for k in path_names if k in namespace})
    if cls is Paths:
        return paths
    missing = [k for k in cls.keys() if k not in namespace]
    if missing:
        raise ValueError(f"params section {name!r}: the notebook does not define {missing}")
    return cls(**{k: namespace[k] for k in cls.keys()}, paths=paths)
