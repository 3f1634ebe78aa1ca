"""The finetune stage's recipe, in one place: how notebook 03 fine-tunes the pretrained
network from the ``finetune`` section of ``params.yaml``.

Notebook 03 (the pipeline) and :mod:`shrinklab.studies.disjoint_finetune` (decision 0038:
the same recipe on half of the stocks) both call these functions, so a change to the
recipe reaches both. The section is a :class:`shrinklab.core.params.finetune.Finetune`: ``seed``,
``windows``, ``epochs``, ``lr``, ``asset_subsets``, ``n_folds`` (the last walk-forward
folds of :func:`shrinklab.data.returns.walk_forward_splits`), ``replay_weight`` and
``replay_batch`` (synthetic replay, decision 0025), ``derived_per_stock`` (derived
portfolios in the fine-tuning universe, :func:`stage_returns`; decisions 0039, 0041) and
``soup_seeds`` (the weight soup of that many fine-tuning seeds, :func:`stage_finetune_soup`;
decision 0042). Batch size 64, patience 5 and no
prior setting of the output biases are the stage's fixed choices (decision 0016).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from shrinklab.data import returns as data
from shrinklab.data import universes
from shrinklab.training.config import TrainConfig
from shrinklab.training.finetune import WalkForwardResult, walk_forward_finetune
from shrinklab.training.parallel import Pending, map_in_processes, start_in_processes
from shrinklab.training.replay import ReplaySpec
from shrinklab.training.soup import weight_soup

__all__ = [
    "PendingExperts",
    "family_replay_worlds",
    "stage_config",
    "stage_finetune",
    "stage_finetune_expert",
    "stage_finetune_soup",
    "stage_replay",
    "stage_returns",
    "stage_splits",
    "start_finetune_experts",
    "with_derived_portfolios",
]


def with_derived_portfolios(returns: pd.DataFrame, per_stock: float, seed: int) -> pd.DataFrame:
    """The stocks ``returns`` plus ``round(per_stock · p)`` derived long-only portfolios of
    them (:func:`shrinklab.data.universes.derived_portfolios`: sector- and index-like assets
    with a real idiosyncratic part), drawn with ``seed``: decision 0039's fine-tuning
    universe."""
    if not np.isfinite(per_stock) or per_stock <= 0:
        raise ValueError(f"per_stock must be a positive number, got {per_stock}")
    m = max(1, round(per_stock * returns.shape[1]))
    derived = universes.derived_portfolios(returns, m, np.random.default_rng(seed))
    derived.columns = [f"derived_{c}" for c in derived.columns]
    if set(derived.columns) & set(returns.columns):
        raise ValueError("asset names clash with the derived portfolios' names")
    return pd.concat([returns, derived], axis=1)


def stage_returns(returns: pd.DataFrame, settings: Any) -> pd.DataFrame:
    """The fine-tuning universe: ``returns`` before the test period
    (:func:`shrinklab.data.returns.before_test`; no window of the stage reaches it, and the
    derived portfolios are built without it), plus ``settings.derived_per_stock`` derived
    portfolios per stock drawn with ``settings.seed`` when it is above 0."""
    returns = data.before_test(returns)
    if settings.derived_per_stock > 0:
        returns = with_derived_portfolios(returns, settings.derived_per_stock, settings.seed)
    return returns


def stage_splits(index: pd.DatetimeIndex, settings: Any) -> list[data.Split]:
    """The stage's walk-forward folds: the last ``settings.n_folds`` of
    :func:`shrinklab.data.returns.walk_forward_splits` (none reaches the test period)."""
    return data.walk_forward_splits(index)[-settings.n_folds :]


def stage_config(settings: Any, device: str = "cpu") -> TrainConfig:
    """The optimiser settings of the finetune stage on ``device``."""
    return TrainConfig(
        lr=settings.lr,
        epochs=settings.epochs,
        batch_size=64,
        patience=5,
        seed=settings.seed,
        device=device,
        set_priors=False,
    )


def stage_replay(settings: Any, replay_data: Any) -> ReplaySpec | None:
    """The synthetic replay of the stage (``None`` with ``replay_weight = 0``: nothing is
    read or drawn); ``replay_data`` is the synthetic training set, or a callable that
    loads it (called only when the replay is on)."""
    if settings.replay_weight <= 0:
        return None
    if replay_data is None:
        raise ValueError("replay_weight > 0 needs the synthetic training set (replay_data)")
    worlds = replay_data() if callable(replay_data) else replay_data
    return ReplaySpec(worlds, settings.replay_weight, settings.replay_batch, settings.seed)


def stage_finetune(
    pretrained: nn.Module,
    returns: pd.DataFrame,
    regimes: pd.Series | None,
    settings: Any,
    out_dir: str | Path,
    *,
    config: TrainConfig | None = None,
    replay: ReplaySpec | None = None,
    monitor: str | Path | None = None,
) -> WalkForwardResult:
    """:func:`shrinklab.training.finetune.walk_forward_finetune` of ``pretrained`` on
    ``returns`` as the stage runs it: the last ``settings.n_folds`` walk-forward folds,
    ``settings.windows``, ``settings.asset_subsets`` random asset subsets drawn with
    ``settings.seed``, the market ``regimes``. ``config`` defaults to
    :func:`stage_config` on the CPU and ``replay`` (from :func:`stage_replay`) to none;
    ``monitor``: a reports folder for TensorBoard and DVCLive."""
    return walk_forward_finetune(
        pretrained,
        returns,
        stage_splits(returns.index, settings),
        windows=settings.windows,
        config=stage_config(settings) if config is None else config,
        out_dir=out_dir,
        asset_subsets=settings.asset_subsets,
        seed=settings.seed,
        regimes=regimes,
        monitor=monitor,
        replay=replay,
    )


@dataclasses.dataclass(frozen=True)
class _SoupMember:
    """One fine-tuning of :func:`stage_finetune_soup`, picklable for a worker process."""

    pretrained: nn.Module
    returns: pd.DataFrame
    regimes: pd.Series | None
    settings: Any
    out_dir: Path
    config: TrainConfig
    replay: ReplaySpec | None
    monitor: str | Path | None


def _member_job(
    pretrained: nn.Module,
    returns: pd.DataFrame,
    regimes: pd.Series | None,
    settings: Any,
    seed: int,
    out_dir: Path,
    device: str,
    replay_data: Any,
    monitor: str | Path | None = None,
) -> _SoupMember:
    """One fine-tuning of ``pretrained`` by the stage's recipe with ``seed`` in place of
    the section's: its universe (:func:`stage_returns`), optimiser settings and replay."""
    member = dataclasses.replace(settings, seed=int(seed))
    return _SoupMember(
        pretrained,
        stage_returns(returns, member),
        regimes,
        member,
        Path(out_dir),
        stage_config(member, device),
        stage_replay(member, replay_data),
        monitor,
    )


def _finetune_member(job: _SoupMember) -> WalkForwardResult:
    return stage_finetune(
        job.pretrained,
        job.returns,
        job.regimes,
        job.settings,
        job.out_dir,
        config=job.config,
        replay=job.replay,
        monitor=job.monitor,
    )


def stage_finetune_soup(
    pretrained: nn.Module,
    returns: pd.DataFrame,
    regimes: pd.Series | None,
    settings: Any,
    out_dir: str | Path,
    *,
    device: str = "cpu",
    replay_data: Any = None,
    monitor: str | Path | None = None,
) -> tuple[nn.Module, list[WalkForwardResult]]:
    """The finetune stage: for each seed ``settings.seed … settings.seed + soup_seeds − 1``,
    :func:`stage_finetune` of ``pretrained`` on :func:`stage_returns` of the raw ``returns``
    with that seed (asset subsets, replay draws, derived portfolios; :func:`stage_config`
    on ``device``, :func:`stage_replay` of ``replay_data``); returns the
    :func:`shrinklab.training.soup.weight_soup` of the fine-tuned networks (the network
    itself when ``soup_seeds = 1``) and every seed's result. Checkpoints in ``out_dir``
    (one seed) or ``out_dir/seed_<s>``; ``monitor`` receives the first seed's curves.

    The fine-tunings do not depend on one another: they run in ``settings.workers``
    processes with one torch thread each
    (:func:`shrinklab.training.parallel.map_in_processes`), and each network is the same
    for any number of workers (tested in ``tests/test_finetune_soup_workers.py``)."""
    if settings.replay_weight > 0 and callable(replay_data):
        replay_data = replay_data()  # loaded once for every seed
    jobs = []
    for i in range(settings.soup_seeds):
        seed = settings.seed + i
        folder = Path(out_dir) if settings.soup_seeds == 1 else Path(out_dir) / f"seed_{seed}"
        jobs.append(
            _member_job(
                pretrained,
                returns,
                regimes,
                settings,
                seed,
                folder,
                device,
                replay_data,
                monitor if i == 0 else None,
            )
        )
    results = map_in_processes(_finetune_member, jobs, settings.workers)
    if len(results) == 1:
        return results[0].model, results
    return weight_soup([r.model for r in results]), results


def family_replay_worlds(replay_data: Any, family: str) -> Any:
    """The worlds of ``family`` in the synthetic training set ``replay_data`` (a
    :class:`shrinklab.data.dataset.TrainingSet`, or a callable that loads it): a family
    expert rehearses its own worlds while it is fine-tuned (:func:`stage_finetune_expert`)."""
    worlds = replay_data() if callable(replay_data) else replay_data
    idx = np.flatnonzero(np.asarray(worlds.families) == str(family))
    if idx.size == 0:
        raise ValueError(f"no synthetic training worlds of family {family!r} to replay")
    return worlds.subset(idx.tolist())


def _expert_jobs(
    expert: nn.Module,
    family: str,
    returns: pd.DataFrame,
    regimes: pd.Series | None,
    settings: Any,
    out_dir: str | Path,
    device: str,
    replay_data: Any,
) -> list[_SoupMember]:
    """The fine-tunings of :func:`stage_finetune_expert`, one per member of ``expert``."""
    members = list(getattr(expert, "members", [expert]))
    if settings.replay_weight > 0 and replay_data is not None:  # None: stage_replay says so
        replay_data = family_replay_worlds(replay_data, family)
    return [
        _member_job(
            member,
            returns,
            regimes,
            settings,
            settings.seed + i,
            Path(out_dir) / f"member_{i}",
            device,
            replay_data,
        )
        for i, member in enumerate(members)
    ]


def _with_members_of(expert: nn.Module, results: list[WalkForwardResult]) -> nn.Module:
    """A copy of ``expert`` with its members' weights replaced by the fine-tuned ones (the
    ensemble's mixture weights and calibration buffers kept)."""
    out = copy.deepcopy(expert)
    targets = list(getattr(out, "members", [out]))
    for target, result in zip(targets, results, strict=True):
        target.load_state_dict(result.model.state_dict())
    return out.eval()


def stage_finetune_expert(
    expert: nn.Module,
    family: str,
    returns: pd.DataFrame,
    regimes: pd.Series | None,
    settings: Any,
    out_dir: str | Path,
    *,
    device: str = "cpu",
    replay_data: Any = None,
) -> nn.Module:
    """A copy of the family expert ``expert`` (an
    :class:`~shrinklab.models.ensemble.EnsembleModel` of networks, or one network) whose
    members are each fine-tuned on the raw ``returns`` as the finetune stage fine-tunes
    (decision 0045): member ``i`` by :func:`stage_finetune` on :func:`stage_returns` with
    seed ``settings.seed + i`` (its derived portfolios, asset subsets and replay draws; the
    soup's seeds), one fine-tuning per member and no soup, since the ensemble already
    averages its members. The replay rehearses the ``family``'s own synthetic training
    worlds (:func:`family_replay_worlds`), so the expert keeps its speciality. The
    ensemble's mixture weights and calibration buffers are kept. Checkpoints in
    ``out_dir/member_<i>``; the members run in ``settings.workers`` processes, each the
    same for any number."""
    pending = _start_experts(
        {family: expert}, {family: Path(out_dir)}, returns, regimes, settings, device, replay_data
    )
    return pending.result()[family]


class PendingExperts:
    """The experts of :func:`start_finetune_experts`: ``result()`` waits for their
    fine-tunings and returns ``{family: fine-tuned expert}`` (the same dict on every call)."""

    def __init__(
        self, experts: Mapping[str, nn.Module], sizes: list[int], pending: Pending
    ) -> None:
        # copies taken on the call, like the jobs: later changes to the caller's experts
        # reach neither the fine-tunings nor the experts assembled from them
        self._experts = {f: copy.deepcopy(e) for f, e in experts.items()}
        self._sizes, self._pending = sizes, pending
        self._out: dict[str, nn.Module] | None = None

    def result(self) -> dict[str, nn.Module]:
        if self._out is None:
            results, out, k = self._pending.result(), {}, 0
            for (family, expert), size in zip(self._experts.items(), self._sizes, strict=True):
                out[family] = _with_members_of(expert, results[k : k + size])
                k += size
            self._out = out
        return self._out


def start_finetune_experts(
    experts: Mapping[str, nn.Module],
    returns: pd.DataFrame,
    regimes: pd.Series | None,
    settings: Any,
    out_dir: str | Path,
    *,
    device: str = "cpu",
    replay_data: Any = None,
) -> PendingExperts:
    """:func:`stage_finetune_expert` of every ``{family: expert}`` (checkpoints in
    ``out_dir/<family>``), all members' fine-tunings in one pool of ``settings.workers``
    processes started in the background (:func:`shrinklab.training.parallel.start_in_processes`):
    the compression stage distils its student meanwhile. Each expert is the one
    :func:`stage_finetune_expert` returns (the same jobs, one torch thread each)."""
    folders = {family: Path(out_dir) / family for family in experts}
    return _start_experts(experts, folders, returns, regimes, settings, device, replay_data)


def _start_experts(
    experts: Mapping[str, nn.Module],
    folders: Mapping[str, Path],
    returns: pd.DataFrame,
    regimes: pd.Series | None,
    settings: Any,
    device: str,
    replay_data: Any,
) -> PendingExperts:
    """The fine-tunings of every ``{family: expert}`` (checkpoints in ``folders[family]``),
    started in one background pool: the one home of :func:`stage_finetune_expert` and
    :func:`start_finetune_experts`."""
    jobs: list[_SoupMember] = []
    sizes: list[int] = []
    for family, expert in experts.items():
        part = _expert_jobs(
            expert, family, returns, regimes, settings, folders[family], device, replay_data
        )
        jobs += part
        sizes.append(len(part))
    return PendingExperts(
        experts, sizes, start_in_processes(_finetune_member, jobs, settings.workers)
    )
