"""studies.ensemble_kinds: the four ensemble kinds of the specification's
model-ensembling step, trained side by side and compared by the selection rule of
docs/decisions/0012-ensemble-kind-multi-seed.md.

Not a stage of ``make repro``: the pipeline trains only the deployed kind (multi-seed,
docs/decisions/0018-pipeline-trains-only-the-deployed-ensemble.md). ``make studies``
runs this comparison (notebooks/08_ensemble_kinds.py, ``studies/dvc.yaml``) to check
that the choice still holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from shrinklab.evaluation import selection
from shrinklab.models.ensemble import EnsembleModel
from shrinklab.training import ensembles

__all__ = ["KINDS", "compare_ensemble_kinds", "train_ensemble_kinds"]

#: The kinds compared, in the order of the tables.
KINDS = ("multi_seed", "checkpoint_average", "architecture", "boosting")


def train_ensemble_kinds(
    train_set: Any,
    valid_set: Any,
    calibration_set: Any,
    out_dir: str | Path,
    *,
    architecture: Mapping[str, Any],
    config: Any,
    seed: int,
    n_members: int,
    workers: int = 1,
    kinds: Sequence[str] = KINDS,
) -> dict[str, EnsembleModel]:
    """Train each of ``kinds`` (a subset of :data:`KINDS`) with the members' trainer
    settings ``config`` and calibrate it on ``calibration_set``:

    * ``multi_seed`` — ``n_members`` seeds of ``architecture`` (deep ensembles,
      Lakshminarayanan et al. 2017), trained in ``workers`` processes;
    * ``checkpoint_average`` — stochastic weight averaging over the second half of one
      run (Izmailov et al. 2018);
    * ``architecture`` — ``architecture`` with and without feature self-attention;
    * ``boosting`` — ``max(2, n_members)`` members on resamples weighted by the
      previous members' regret (Drucker 1997).

    Checkpoints go to ``out_dir/<kind>``."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {list(kinds)}")
    out = Path(out_dir)
    common = {"config": config, "calibration_set": calibration_set}
    builders = {
        "multi_seed": lambda: ensembles.train_multi_seed(
            train_set,
            valid_set,
            out / "multi_seed",
            seeds=ensembles.multi_seed_seeds(seed, n_members),
            model_config=architecture,
            workers=workers,
            **common,
        ),
        "checkpoint_average": lambda: ensembles.train_checkpoint_average(
            train_set,
            valid_set,
            out / "swa",
            model_config=architecture,
            seed=seed,
            method="swa",
            **common,
        ),
        "architecture": lambda: ensembles.train_architecture_ensemble(
            train_set,
            valid_set,
            out / "architecture",
            architectures=[dict(architecture), {**architecture, "use_attention": True}],
            seed=seed,
            **common,
        ),
        "boosting": lambda: ensembles.train_boosted(
            train_set,
            valid_set,
            out / "boosting",
            n_members=max(2, int(n_members)),
            model_config=architecture,
            seed=seed,
            **common,
        ),
    }
    return {kind: builders[kind]() for kind in KINDS if kind in kinds}


def compare_ensemble_kinds(
    kinds: Mapping[str, EnsembleModel],
    valid_set: Any,
    test_set: Any,
    *,
    levels: Sequence[float] = (0.5, 0.9),
    extra_intensities: Mapping[str, Any] | None = None,
) -> SimpleNamespace:
    """The selection rule on the validation worlds and the reports on the test worlds.

    Returns ``chosen`` and ``selection`` (:func:`shrinklab.evaluation.selection.select_ensemble`
    on ``valid_set``: the only input of the choice), ``test_prial``
    (:func:`~shrinklab.evaluation.selection.prial_table` of members, kinds, ``extra_intensities``
    and the oracle on ``test_set``) and ``coverage``
    (:func:`~shrinklab.evaluation.selection.coverage_table` on ``test_set``)."""
    if not kinds:
        raise ValueError("no ensemble kinds to compare")
    chosen, table = selection.select_ensemble(kinds, valid_set, levels=tuple(levels))
    return SimpleNamespace(
        chosen=chosen,
        selection=table,
        test_prial=selection.prial_table(kinds, test_set, extra_intensities=extra_intensities),
        coverage=selection.coverage_table(kinds, test_set, levels=tuple(levels)),
    )
