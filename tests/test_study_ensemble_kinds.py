"""The ensemble-kinds study at smoke size: four kinds trained, calibrated and compared."""

from __future__ import annotations

import pytest
import torch

from shrinklab.studies.ensemble_kinds import (
    KINDS,
    compare_ensemble_kinds,
    train_ensemble_kinds,
)
from shrinklab.training.config import TrainConfig
from shrinklab.training.ensembles import multi_seed_seeds, train_multi_seed
from tests._tiny_sets import F, K, tiny_set

ARCH = {"input_dim": F, "num_targets": K, "hidden_dims": (16, 8)}


def _cfg() -> TrainConfig:
    return TrainConfig(epochs=2, batch_size=64, lr=3e-3, device="cpu", amp=None, patience=100)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tr, va, cal, te = (
        tiny_set(n, F, K, seed=s) for n, s in ((192, 20), (96, 21), (96, 22), (96, 23))
    )
    out = tmp_path_factory.mktemp("kinds")
    kinds = train_ensemble_kinds(
        tr, va, cal, out, architecture=ARCH, config=_cfg(), seed=3, n_members=2
    )
    return (tr, va, cal, te, out), kinds


def test_every_kind_is_trained_and_calibrated(study):
    _, kinds = study
    assert tuple(kinds) == KINDS
    sizes = {k: len(e.members) for k, e in kinds.items()}
    assert sizes == {"multi_seed": 2, "checkpoint_average": 1, "architecture": 2, "boosting": 2}
    for ens in kinds.values():
        assert ens.conformal_scores.numel() == 96


def test_study_multi_seed_is_the_pipelines(study, tmp_path):
    """The study's multi-seed kind is the ensemble the pipeline stage deploys."""
    (tr, va, cal, _, _), kinds = study
    deployed = train_multi_seed(
        tr,
        va,
        tmp_path,
        seeds=multi_seed_seeds(3, 2),
        model_config=ARCH,
        config=_cfg(),
        calibration_set=cal,
    )
    for a, b in zip(deployed.members, kinds["multi_seed"].members):
        for u, v in zip(a.state_dict().values(), b.state_dict().values()):
            assert torch.equal(u, v)


def test_comparison_tables(study):
    (_, va, _, te, _), kinds = study
    result = compare_ensemble_kinds(kinds, va, te)
    assert result.chosen in KINDS
    assert set(result.selection.index) == set(KINDS)
    assert result.selection["chosen"].sum() == 1 and result.selection.loc[result.chosen, "chosen"]
    assert set(result.coverage.index) == set(KINDS)
    assert result.coverage[["conformal_50", "conformal_90"]].stack().between(0, 1).all()
    models = set(result.test_prial["model"])
    assert set(KINDS) <= models and "oracle" in models and "multi_seed[1]" in models


def test_bad_input_raises(study):
    (tr, va, cal, te, out), _ = study
    with pytest.raises(ValueError, match="subset of"):
        train_ensemble_kinds(
            tr, va, cal, out, architecture=ARCH, config=_cfg(), seed=0, n_members=1, kinds=["x"]
        )
    with pytest.raises(ValueError, match="no ensemble kinds"):
        compare_ensemble_kinds({}, va, te)
