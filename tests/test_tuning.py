"""Optuna search (seeded, resumable, pruning) and the DVC grid-search commands."""

from __future__ import annotations

import itertools
import shlex
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from _tiny_sets import tiny_set

from shrinklab.studies.tuning import (
    DEFAULT_SEARCH_SPACE,
    best_config,
    dvc_queue_commands,
    grid_configs,
    optuna_search,
)
from shrinklab.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
MODEL = {"hidden_dims": (32, 16)}
LR_SPACE = {"lr": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True}}


@pytest.fixture(scope="module")
def sets():
    return tiny_set(512, seed=0), tiny_set(256, seed=1)


def _base(**kw) -> TrainConfig:
    cfg = {"epochs": 4, "batch_size": 32, "patience": 10, "device": "cpu", "seed": 0}
    cfg.update(kw)
    return TrainConfig(**cfg)


def _search(sets, path, n, seed=0, **kw):
    tr, va = sets
    kw.setdefault("n_startup_trials", 2)
    kw.setdefault("n_warmup_steps", 1)
    return optuna_search(
        tr, va, n, seed, path, "study", kw.pop("base", _base()), model_config=MODEL, **kw
    )


def test_same_seed_same_study(sets, tmp_path):
    a = _search(sets, tmp_path / "a.db", 3, seed=3)
    b = _search(sets, tmp_path / "b.db", 3, seed=3)
    assert a.best_params == b.best_params
    assert a.best_value == b.best_value
    np.testing.assert_array_equal(a.trials["value"].to_numpy(), b.trials["value"].to_numpy())
    # the searched fields are the default space; the best config carries them
    assert set(a.best_params) == set(DEFAULT_SEARCH_SPACE)
    for k, v in a.best_params.items():
        assert getattr(a.best_config, k) == v
    # the objective is the validation mean normalised Frobenius loss: recompute it by
    # retraining the best configuration from scratch, outside Optuna
    from tempfile import TemporaryDirectory

    import torch

    from shrinklab.models.network import MLShrinkageNetwork
    from shrinklab.training.loop import evaluate_loss, train

    tr, va = sets
    torch.manual_seed(0)
    model = MLShrinkageNetwork(8, 5, **MODEL)
    with TemporaryDirectory() as d:
        train(model, tr, va, a.best_config, d, resume=False)
    assert evaluate_loss(model, va, a.best_config)["frobenius"] == pytest.approx(
        a.best_value, rel=1e-9
    )
    # a different seed explores other points
    c = _search(sets, tmp_path / "c.db", 1, seed=4)
    assert c.trials["params_lr"].iloc[0] != a.trials["params_lr"].iloc[0]


def test_resumable_from_storage(sets, tmp_path):
    path = tmp_path / "study.db"
    first = _search(sets, path, 3)
    assert len(first.trials) == 3 and path.is_file()
    # the study is complete: rerunning it reproduces it, it does not grow it
    again = _search(sets, path, 3)
    assert len(again.trials) == 3 and again.best_value == first.best_value
    second = _search(sets, path, 6)
    assert len(second.trials) == 6
    assert list(second.trials["number"]) == list(range(6))
    # the first three trials are the stored ones, unchanged
    np.testing.assert_array_equal(
        second.trials["value"].to_numpy()[:3], first.trials["value"].to_numpy()
    )
    # a resumed search does not replay its first (random start-up) points
    assert not np.isin(
        second.trials["params_lr"].to_numpy()[3:], first.trials["params_lr"].to_numpy()
    ).any()
    assert second.best_value == min(
        v
        for v, s in zip(second.trials["value"], second.trials["state"], strict=True)
        if s == "COMPLETE"
    )


def test_median_pruner_prunes_hopeless_trial(sets, tmp_path):
    # two good learning rates complete; a learning rate of 1e-6 leaves the network at
    # its initial (worse than S) predictions and is stopped after the warm-up epoch
    res = _search(
        sets,
        tmp_path / "p.db",
        3,
        search_space=LR_SPACE,
        enqueue=[{"lr": 1e-2}, {"lr": 3e-3}, {"lr": 1e-6}],
    )
    states = list(res.trials["state"])
    assert states == ["COMPLETE", "COMPLETE", "PRUNED"]
    trial = res.study.trials[2]
    assert trial.params["lr"] == 1e-6
    # pruned at the first epoch where the pruner may act (warm-up 1), not trained to the end
    assert max(trial.intermediate_values) == 1
    assert res.best_params["lr"] in (1e-2, 3e-3)
    # without a pruner the same trial runs every epoch
    full = _search(
        sets, tmp_path / "n.db", 3, search_space=LR_SPACE, pruner="none",
        enqueue=[{"lr": 1e-2}, {"lr": 3e-3}, {"lr": 1e-6}],
    )  # fmt: skip
    assert list(full.trials["state"]) == ["COMPLETE"] * 3
    assert full.trials["value"].iloc[2] > max(full.trials["value"].iloc[:2])


def test_killed_trial_is_retried_with_its_params(sets, tmp_path):
    path = tmp_path / "k.db"
    storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
    study = optuna.create_study(storage=storage, study_name="study", direction="minimize")
    dead = study.ask()  # a process that died inside this trial leaves it RUNNING
    dead.suggest_float("lr", 1e-6, 1e-2, log=True)
    lr = dead.params["lr"]
    res = _search(sets, path, 1, search_space=LR_SPACE)
    assert list(res.trials["state"]) == ["FAIL", "COMPLETE"]
    assert res.study.trials[1].params["lr"] == lr
    assert res.study.trials[1].user_attrs["retry_of"] == 0


def test_killed_trial_resumes_from_its_checkpoint(sets, tmp_path):
    import torch

    from shrinklab.models.network import MLShrinkageNetwork
    from shrinklab.studies.tuning import _config_key
    from shrinklab.training.checkpoints import checkpoint_path
    from shrinklab.training.loop import train

    tr, va = sets
    lr = 3e-3
    # reference: the same trial, uninterrupted
    ref = _search(
        sets, tmp_path / "ref.db", 1, search_space=LR_SPACE, pruner="none", enqueue=[{"lr": lr}]
    )
    # a process ran 2 of the 4 epochs of this trial, then died (trial left RUNNING)
    path = tmp_path / "k.db"
    storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
    study = optuna.create_study(storage=storage, study_name="study", direction="minimize")
    study.enqueue_trial({"lr": lr})
    dead = study.ask()
    assert dead.suggest_float("lr", 1e-6, 1e-2, log=True) == lr
    cfg = best_config(_base(), {"lr": lr})
    mcfg = {**MODEL, "input_dim": 8, "num_targets": 5}
    out = Path(f"{path}.trials") / _config_key(cfg, mcfg)
    torch.manual_seed(cfg.seed)
    train(MLShrinkageNetwork(**mcfg), tr, va, cfg, out, max_epochs_per_call=2)
    assert checkpoint_path(out).is_file()
    res = _search(sets, path, 1, search_space=LR_SPACE, pruner="none")
    retried = res.study.trials[1]
    assert retried.params["lr"] == lr and retried.user_attrs["retry_of"] == 0
    assert retried.value == ref.best_value  # bit-identical to the uninterrupted trial
    assert sorted(retried.intermediate_values) == [0, 1, 2, 3]  # 0-1 replayed from checkpoint
    assert retried.intermediate_values == ref.study.trials[0].intermediate_values
    assert not checkpoint_path(out).exists()


def test_search_space_validation(sets, tmp_path):
    with pytest.raises(ValueError, match="not a TrainConfig field"):
        _search(sets, tmp_path / "x.db", 1, search_space={"learning_rate": LR_SPACE["lr"]})
    with pytest.raises(ValueError, match="log scale"):
        _search(
            sets, tmp_path / "x.db", 1,
            search_space={"weight_decay": {"type": "float", "low": 0.0, "high": 1.0, "log": True}},
        )  # fmt: skip
    with pytest.raises(ValueError, match="validation set"):
        optuna_search(sets[0], None, 1, 0, tmp_path / "x.db", "s")
    with pytest.raises(ValueError, match="n_trials"):
        _search(sets, tmp_path / "x.db", 0)
    assert best_config(_base(), {"lr": 0.5}).lr == 0.5


# ----------------------------------------------------------------------- grid search
GRID = {"width": [64, 128], "depth": [2, 3], "dropout": [0.2, 0.3], "attention": [False, True]}


def test_grid_configs_is_the_cartesian_product():
    configs = grid_configs(GRID)
    assert len(configs) == 16
    expected = [
        {"hidden_dims": [w // 2**i for i in range(d)], "dropout": do, "attention": at}
        for w, d, do, at in itertools.product(*GRID.values())
    ]
    assert configs == expected
    assert configs[0]["hidden_dims"] == [64, 32]
    assert {tuple(c["hidden_dims"]) for c in configs} == {
        (64, 32), (64, 32, 16), (128, 64), (128, 64, 32)
    }  # fmt: skip
    explicit = grid_configs({"hidden_dims": [[128, 64, 32], [256, 128, 64]], "dropout": [0.3]})
    assert explicit == [
        {"hidden_dims": [128, 64, 32], "dropout": 0.3},
        {"hidden_dims": [256, 128, 64], "dropout": 0.3},
    ]
    assert len(grid_configs({"dropout": [0.3, 0.3]})) == 1  # duplicates dropped
    with pytest.raises(ValueError, match="not both"):
        grid_configs({"width": [64], "hidden_dims": [[64]]})
    with pytest.raises(ValueError, match="non-empty list"):
        grid_configs({"dropout": 0.3})


def test_dvc_queue_commands_round_trip_to_params_yaml():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    lines = dvc_queue_commands(GRID, "pretrain", params=params, jobs=2)
    configs = grid_configs(GRID)
    runs = lines[: len(configs)]
    assert lines[len(configs)] == "dvc queue start -j 2"
    assert lines[-1].startswith("dvc exp show --only-changed --sort-by")
    names = []
    for line, cfg in zip(runs, configs, strict=True):
        argv = shlex.split(line)
        assert argv[:5] == ["dvc", "exp", "run", "pretrain", "--queue"]
        names.append(argv[argv.index("--name") + 1])
        sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set-param"]
        parsed = {}
        for s in sets:
            key, value = s.split("=", 1)
            section, name = key.split(".", 1)
            assert section == "pretrain" and name in params["pretrain"]
            parsed[name] = yaml.safe_load(value)
        assert parsed == cfg
        # the value types match those already in params.yaml (list, float, bool)
        for k, v in parsed.items():
            assert type(v) is type(params["pretrain"][k])
    assert len(set(names)) == len(names)
    assert all(n.replace("-", "").replace("_", "").isalnum() for n in names)
    with pytest.raises(ValueError, match="not in params.yaml"):
        dvc_queue_commands({"n_layers": [2]}, "pretrain", params=params)
    assert dvc_queue_commands({"dropout": [0.1, 0.2]}) == [
        "dvc exp run pretrain --queue --name grid_do0p1 --set-param pretrain.dropout=0.1",
        "dvc exp run pretrain --queue --name grid_do0p2 --set-param pretrain.dropout=0.2",
    ]


def test_update_params_file_edits_only_the_given_keys(tmp_path):
    from shrinklab.studies.tuning import update_params_file

    src = (ROOT / "params.yaml").read_text()
    path = tmp_path / "params.yaml"
    path.write_text(src)
    updates = {"lr": 1e-05, "weight_decay": 0.000123, "hidden_dims": [256, 128, 64]}
    new = update_params_file(path, "pretrain", updates)
    assert path.read_text() == new
    before, after = yaml.safe_load(src), yaml.safe_load(new)
    assert after["pretrain"] == {**before["pretrain"], **updates}
    assert {k: v for k, v in after.items() if k != "pretrain"} == {
        k: v for k, v in before.items() if k != "pretrain"
    }
    # only the three lines changed; comments and layout are kept
    diff = [(a, b) for a, b in zip(src.splitlines(), new.splitlines(), strict=True) if a != b]
    assert len(diff) == 3 and all(b.startswith("  ") for _, b in diff)
    assert "  lr: 1.0e-05" in new.splitlines()
    with pytest.raises(ValueError, match="not in section"):
        update_params_file(path, "pretrain", {"learning_rate": 0.1})
    with pytest.raises(ValueError, match="no top-level section"):
        update_params_file(path, "tuning", {"lr": 0.1})
    assert path.read_text() == new  # failed updates leave the file alone
