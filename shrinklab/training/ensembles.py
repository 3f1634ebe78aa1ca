"""training.ensembles."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shrinklab.core.metrics import as_float64, field_of, quadratic_loss
from shrinklab.data.subsets import take
from shrinklab.data.training_set import TrainingSet
from shrinklab.models.ensemble import EnsembleModel
from shrinklab.models.network import MLShrinkageNetwork, predict_numpy
from shrinklab.models.persistence import load_model_payload
from shrinklab.training.config import TrainConfig
from shrinklab.training.loop import train
from shrinklab.training.parallel import MemberJob, train_members

__all__ = [
    "DEFAULT_ARCHITECTURES",
    "EnsembleInputs",
    "boosting_probabilities",
    "calibrated_ensemble",
    "ensemble_inputs",
    "multi_seed_jobs",
    "multi_seed_seeds",
    "train_architecture_ensemble",
    "train_boosted",
    "train_checkpoint_average",
    "train_multi_seed",
]


@dataclasses.dataclass(frozen=True)
class EnsembleInputs:
    """What an ensemble is trained from (:func:`ensemble_inputs`): the synthetic
    training set, the validation worlds split into an early-stopping half
    (``valid_set``) and a calibration half, the test worlds, the pretrained model's
    payload, its architecture (its config without the input and output sizes) and the
    members' ``TrainConfig`` (the pretraining's with the members' epochs and seed)."""

    train_set: TrainingSet
    valid_set: TrainingSet
    calibration_set: TrainingSet
    test_set: TrainingSet
    pretrained: dict[str, Any]
    architecture: dict[str, Any]
    config: TrainConfig
    train_path: Path

    def run_key(self, n_members: int) -> dict[str, Any]:
        """The settings that name the members' checkpoint folder (``pipeline.run_dir``)."""
        return {"base": self.config.to_dict(), "arch": self.architecture, "n": n_members}


def ensemble_inputs(
    processed: str | Path, models: str | Path, *, seed: int, member_epochs: int
) -> EnsembleInputs:
    """The inputs of the ensemble stage (notebook 04) and of the ensemble-kinds study
    (notebook 08), read from ``processed/synthetic_{train,valid,test}.pt`` and
    ``models/pretrained.pt``. Early stopping and calibration use disjoint halves of the
    validation worlds (``split(0.5, seed)``)."""
    train_path = Path(processed) / "synthetic_train.pt"
    train_set = TrainingSet.load(train_path)
    valid_set, calibration_set = TrainingSet.load(Path(processed) / "synthetic_valid.pt").split(
        0.5, seed
    )
    test_set = TrainingSet.load(Path(processed) / "synthetic_test.pt")
    pretrained = load_model_payload(Path(models) / "pretrained.pt")
    architecture = {
        k: v for k, v in pretrained["config"].items() if k not in ("input_dim", "num_targets")
    }
    config = TrainConfig.from_dict(
        {**pretrained["extra"]["train_config"], "epochs": member_epochs, "seed": seed}
    )
    return EnsembleInputs(
        train_set,
        valid_set,
        calibration_set,
        test_set,
        pretrained,
        architecture,
        config,
        train_path,
    )


def _network_config(train_set: Any, model_config: Mapping[str, Any] | None) -> dict[str, Any]:
    cfg = dict(model_config or {})
    cfg.setdefault("input_dim", int(np.shape(field_of(train_set, "features"))[1]))
    cfg.setdefault("num_targets", int(np.shape(field_of(train_set, "oracle_w"))[1]))
    return cfg


def _train_member(
    model_config: Mapping[str, Any],
    seed: int,
    train_set: Any,
    valid_set: Any,
    config: Any,
    out_dir: Path,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    model: nn.Module | None = None,
) -> tuple[nn.Module, dict[str, Any]]:

    cfg = dataclasses.replace(config or TrainConfig(), seed=int(seed))
    if model is None:
        torch.manual_seed(int(seed))
        model = MLShrinkageNetwork(**model_config)
    history = train(
        model, train_set, valid_set, cfg, out_dir, resume=False, on_epoch_end=on_epoch_end
    )
    return model.cpu().eval(), history


def calibrated_ensemble(
    members: Sequence[nn.Module], label: str, calibration_set: Any = None, **kw: Any
) -> EnsembleModel:
    """An :class:`EnsembleModel` of ``members`` (``label``; ``kw`` for its constructor),
    its temperature and conformal scores fitted on ``calibration_set`` if given."""
    ens = EnsembleModel(list(members), label=label, **kw)
    if calibration_set is not None:
        ens.calibrate(field_of(calibration_set, "features"), alpha_star(calibration_set))
    return ens


def alpha_star(data: Any) -> np.ndarray:
    """Oracle intensity ``α* = Σ_k w*_k`` per sample."""
    return as_float64(field_of(data, "oracle_w")).sum(1).numpy()


def multi_seed_seeds(seed: int, n_members: int) -> list[int]:
    """The member seeds ``100 seed, 100 seed + 1, …`` of the deployed multi-seed ensemble
    (notebook 04 and the ensemble-kinds study alike)."""
    return [int(seed) * 100 + i for i in range(int(n_members))]


def train_multi_seed(
    train_set: Any,
    valid_set: Any,
    out_dir: str | Path,
    *,
    n_members: int = 5,
    seeds: Sequence[int] | None = None,
    model_config: Mapping[str, Any] | None = None,
    config: Any = None,
    calibration_set: Any = None,
    workers: int = 1,
) -> EnsembleModel:
    """Deep ensemble: ``n_members`` networks of one architecture (``model_config``,
    keyword arguments of :class:`~shrinklab.models.network.MLShrinkageNetwork`; ``input_dim``
    and ``num_targets`` default to the data's) trained by
    :func:`shrinklab.training.loop.train` with ``config`` (a ``TrainConfig``) from different
    seeds (``seeds``, default ``0, 1, …``: initialisation and batch order)
    [Lakshminarayanan et al. 2017]. Member ``i`` writes to ``out_dir/member_i``.
    With ``calibration_set`` the temperature is fitted on it (validation data only).
    The members are trained in ``workers`` processes
    (:func:`shrinklab.training.parallel.train_members`: identical members for any number).
    """
    seeds = list(range(n_members)) if seeds is None else [int(s) for s in seeds]
    jobs = multi_seed_jobs(
        train_set, valid_set, out_dir, seeds=seeds, model_config=model_config, config=config
    )
    return calibrated_ensemble(train_members(jobs, workers), "multi_seed", calibration_set)


def multi_seed_jobs(
    train_set: Any,
    valid_set: Any,
    out_dir: str | Path,
    *,
    seeds: Sequence[int],
    model_config: Mapping[str, Any] | None = None,
    config: Any = None,
    monitor: str | Path | None = None,
    run: str = "ensemble",
) -> list[MemberJob]:
    """The member jobs of :func:`train_multi_seed` (member ``i``: seed ``seeds[i]``,
    folder ``out_dir/member_i``), for :func:`shrinklab.training.parallel.train_members`
    together with other jobs; :func:`calibrated_ensemble` assembles the members. With
    ``monitor`` (a reports folder) member ``i`` logs the run ``<run>/member_i`` there."""
    seeds = [int(s) for s in seeds]
    if len(seeds) < 1:
        raise ValueError("need at least one member")
    mcfg = _network_config(train_set, model_config)
    return [
        MemberJob(
            mcfg,
            s,
            train_set,
            valid_set,
            config,
            Path(out_dir) / f"member_{i}",
            run=f"{run}/member_{i}",
            monitor=None if monitor is None else Path(monitor),
        )
        for i, s in enumerate(seeds)
    ]


def train_architecture_ensemble(
    train_set: Any,
    valid_set: Any,
    out_dir: str | Path,
    *,
    architectures: Sequence[Mapping[str, Any]] | None = None,
    seed: int = 0,
    config: Any = None,
    calibration_set: Any = None,
) -> EnsembleModel:
    """One member per architecture (keyword arguments of
    :class:`~shrinklab.models.network.MLShrinkageNetwork`). Default: the specification's MLP
    ``(128, 64, 32)``, the same with feature self-attention, and a wider
    ``(256, 128, 64)`` MLP. Member ``i`` uses seed ``seed + i``."""
    archs = list(architectures) if architectures is not None else list(DEFAULT_ARCHITECTURES)
    if len(archs) < 2:
        raise ValueError("an architecture ensemble needs at least two architectures")
    members = [
        _train_member(
            _network_config(train_set, a),
            seed + i,
            train_set,
            valid_set,
            config,
            Path(out_dir) / f"arch_{i}",
        )[0]
        for i, a in enumerate(archs)
    ]
    return calibrated_ensemble(members, "architecture", calibration_set)


DEFAULT_ARCHITECTURES: tuple[dict[str, Any], ...] = (
    {"hidden_dims": (128, 64, 32)},
    {"hidden_dims": (128, 64, 32), "use_attention": True},
    {"hidden_dims": (256, 128, 64)},
)


def train_checkpoint_average(
    train_set: Any,
    valid_set: Any,
    out_dir: str | Path,
    *,
    model_config: Mapping[str, Any] | None = None,
    config: Any = None,
    seed: int = 0,
    start_epoch: int | None = None,
    method: str = "swa",
    ema_decay: float = 0.9,
    bn_batch_size: int = 1024,
    calibration_set: Any = None,
) -> EnsembleModel:
    """Checkpoint averaging over the epochs of one training run.

    ``method="swa"``: equal-weight average of the weights at the end of every epoch
    from ``start_epoch`` (default: the second half of ``config.epochs``) — stochastic
    weight averaging with the trainer's cyclic (cosine, warm restarts) learning rate
    [Izmailov et al., UAI 2018]; ``method="ema"``: exponential moving average with
    ``ema_decay`` per epoch. Early stopping is switched off (``patience`` set above
    ``epochs``) so that every epoch is seen. Batch-norm running statistics of the
    averaged weights are recomputed on the training set
    (``torch.optim.swa_utils.update_bn``). Returns a one-member
    :class:`EnsembleModel` (label ``"checkpoint_average"``) holding the averaged
    network, so that it is calibrated (``calibration_set``), saved and compared like
    the other ensemble kinds; ``.members[0]`` is the averaged network and ``.history``
    the training history (``history["averaged_epochs"]`` lists the epochs averaged).
    """
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn

    if method not in ("swa", "ema"):
        raise ValueError(f"method must be 'swa' or 'ema', got {method!r}")
    if method == "ema" and not 0.0 < ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in (0, 1), got {ema_decay}")
    cfg = dataclasses.replace(config or TrainConfig(), seed=int(seed))
    cfg = dataclasses.replace(cfg, patience=cfg.epochs + 1)
    start = cfg.epochs // 2 if start_epoch is None else int(start_epoch)
    if not 0 <= start < cfg.epochs:
        raise ValueError(f"start_epoch must be in [0, {cfg.epochs}), got {start_epoch}")
    torch.manual_seed(int(seed))
    model = MLShrinkageNetwork(**_network_config(train_set, model_config))
    kw = {"multi_avg_fn": get_ema_multi_avg_fn(ema_decay)} if method == "ema" else {}
    averaged: dict[str, Any] = {}
    epochs: list[int] = []

    def on_epoch_end(epoch: int, record: dict[str, Any]) -> None:
        if epoch < start:
            return
        if "model" not in averaged:
            averaged["model"] = AveragedModel(model, device=torch.device("cpu"), **kw)
        averaged["model"].update_parameters(model)  # the first call copies
        epochs.append(epoch)

    _, history = _train_member(
        {}, seed, train_set, valid_set, cfg, Path(out_dir), on_epoch_end, model=model
    )
    net = averaged["model"].module
    feats = torch.as_tensor(np.asarray(field_of(train_set, "features")), dtype=torch.float32)
    update_bn([feats[i : i + bn_batch_size] for i in range(0, feats.shape[0], bn_batch_size)], net)
    history = dict(history)
    history["averaged_epochs"] = epochs
    ens = calibrated_ensemble([net.eval()], "checkpoint_average", calibration_set)
    ens.history = history
    return ens


def boosting_probabilities(
    model: Any, data: Any, emphasis: str = "regret", uniform_mix: float = 0.1
) -> np.ndarray:
    """Resampling probabilities for the next boosting member: proportional to the
    current model's normalised Frobenius loss per sample, ``L(ŵ)/d`` (``emphasis="loss"``)
    or to its excess over the oracle, ``(L(ŵ) − L(w*))/d`` (``"regret"``, default: the
    part a better network can remove), mixed with ``uniform_mix`` of the uniform
    distribution so that no sample is dropped for good."""
    if emphasis not in ("regret", "loss"):
        raise ValueError(f"emphasis must be 'regret' or 'loss', got {emphasis!r}")
    if not 0.0 <= uniform_mix <= 1.0:
        raise ValueError(f"uniform_mix must be in [0, 1], got {uniform_mix}")
    G, c, d = field_of(data, "G"), field_of(data, "c"), as_float64(field_of(data, "d"))
    w = predict_numpy(model, field_of(data, "features")).intensities
    score = quadratic_loss(w, G, c, d)
    if emphasis == "regret":
        score = score - quadratic_loss(field_of(data, "oracle_w"), G, c, d)
    score = (score / d.clamp_min(1e-300)).clamp_min(0.0).numpy()
    n = score.size
    total = score.sum()
    base = score / total if total > 0 else np.full(n, 1.0 / n)
    return (1.0 - uniform_mix) * base + uniform_mix / n


def train_boosted(
    train_set: Any,
    valid_set: Any,
    out_dir: str | Path,
    *,
    n_members: int = 3,
    model_config: Mapping[str, Any] | None = None,
    config: Any = None,
    seed: int = 0,
    emphasis: str = "regret",
    uniform_mix: float = 0.1,
    calibration_set: Any = None,
) -> EnsembleModel:
    """Boosting by resampling [Drucker, ICML 1997; Freund & Schapire 1997]: member 0 is
    trained on the training set; member ``m`` on ``N`` rows drawn with replacement with
    the probabilities of :func:`boosting_probabilities` for the ensemble of members
    ``0..m−1`` (its worst normalised-Frobenius-loss cases are drawn most often). The
    trainer has no sample-weight hook, hence resampling. The members are averaged with
    equal weights (as the other ensembles). ``out_dir/boost_m`` per member; the draws
    use ``numpy.random.default_rng(seed)``."""
    if n_members < 1:
        raise ValueError("need at least one member")
    mcfg = _network_config(train_set, model_config)
    rng = np.random.default_rng(int(seed))
    n = int(np.shape(field_of(train_set, "features"))[0])
    members: list[nn.Module] = []
    data = train_set
    for m in range(n_members):
        if m > 0:
            probs = boosting_probabilities(
                EnsembleModel(members), train_set, emphasis=emphasis, uniform_mix=uniform_mix
            )
            idx = rng.choice(n, size=n, replace=True, p=probs)
            # a TrainingSet keeps its type (and all fields) through its own subset()
            data = train_set.subset(idx) if hasattr(train_set, "subset") else take(train_set, idx)
        net, _ = _train_member(
            mcfg, seed + m, data, valid_set, config, Path(out_dir) / f"boost_{m}"
        )
        members.append(net)
    return calibrated_ensemble(members, "boosted", calibration_set)
