"""training.experts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shrinklab.models.ensemble import EnsembleModel
from shrinklab.models.experts import FamilyGate
from shrinklab.training.parallel import MemberJob, train_members

__all__ = [
    "family_expert_jobs",
    "group_experts",
    "train_family_experts",
    "train_family_gate",
]


def _labels(families: Sequence[str], classes: Sequence[str]) -> torch.Tensor:
    unknown = sorted(set(families) - set(classes))
    if unknown:
        raise ValueError(f"family labels {unknown} are not among the gate's families {classes}")
    index = {f: i for i, f in enumerate(classes)}
    return torch.tensor([index[f] for f in families], dtype=torch.long)


def train_family_gate(
    features: Any,
    families: Sequence[str],
    *,
    hidden_dims: Sequence[int] = (128, 128),
    epochs: int = 30,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    logger: Any = None,
) -> FamilyGate:
    """Fit a :class:`FamilyGate` by cross-entropy (AdamW, fixed epochs) on
    ``features (N, F)`` and their family labels (one per row); the classes are the
    sorted distinct labels. Deterministic on CPU for a given ``seed``. ``logger`` (a
    :class:`~shrinklab.training.monitor.RunLogger`) receives the mean training
    cross-entropy ``train/cross_entropy`` per epoch."""
    x = torch.as_tensor(np.asarray(features, dtype=np.float32))
    families = [str(f) for f in families]
    if x.ndim != 2 or x.shape[0] != len(families):
        raise ValueError(
            f"features must be (N, F) with one family label per row; got {tuple(x.shape)} "
            f"and {len(families)} labels"
        )
    if not bool(torch.isfinite(x).all()):
        raise ValueError("features contain NaN or inf")
    if int(epochs) < 1 or int(batch_size) < 1:
        raise ValueError("epochs and batch_size must be positive")
    classes = sorted(set(families))
    y = _labels(families, classes)
    torch.manual_seed(int(seed))
    gate = FamilyGate(x.shape[1], classes, hidden_dims)
    gate.feature_mean.copy_(x.mean(0))
    gate.feature_scale.copy_(x.std(0).clamp_min(1e-6))
    opt = torch.optim.AdamW(gate.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(int(seed))
    gate.train()
    for _ in range(int(epochs)):
        perm = torch.randperm(len(x), generator=gen)
        total = 0.0
        for start in range(0, len(x), int(batch_size)):
            batch = perm[start : start + int(batch_size)]
            loss = nn.functional.cross_entropy(gate.logits(x[batch]), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * batch.numel()
        if logger is not None:
            logger.log_metric("train/cross_entropy", total / len(x))
            logger.next_step()
    return gate.eval()


def train_family_experts(
    train_set: Any,
    valid_set: Any,
    families: Sequence[str],
    out_dir: str | Path,
    *,
    workers: int = 1,
    **job_options: Any,
) -> dict[str, nn.Module]:
    """One expert per family in ``families``: an
    :class:`~shrinklab.models.network.MLShrinkageNetwork` (``model_config``) trained by
    :func:`shrinklab.training.loop.train` (``config``, a ``TrainConfig``) on that family's
    training worlds and early-stopped on its validation worlds; with ``n_members > 1``
    a deep ensemble (:class:`~shrinklab.models.ensemble.EnsembleModel`) of that many such
    networks from seeds ``seed, seed + 1, …``. Member ``i`` of the expert of family
    ``f`` writes to ``out_dir/<f>/member_<i>``. All members of all experts are trained in
    ``workers`` processes (:func:`shrinklab.training.parallel.train_members`: identical
    members for any number); with ``monitor`` (a reports folder) member ``i`` of
    family ``f`` logs the run ``ensemble/experts/<f>/member_<i>`` there.

    ``job_options`` are the keyword arguments of :func:`family_expert_jobs`
    (``model_config``, ``config``, ``seed``, ``n_members``, ``monitor``)."""

    jobs = family_expert_jobs(train_set, valid_set, families, out_dir, **job_options)
    n_members = job_options.get("n_members", 1)
    return group_experts(families, train_members(jobs, workers), n_members)


def family_expert_jobs(
    train_set: Any,
    valid_set: Any,
    families: Sequence[str],
    out_dir: str | Path,
    *,
    model_config: Mapping[str, Any],
    config: Any,
    seed: int = 0,
    n_members: int = 1,
    monitor: str | Path | None = None,
) -> list[MemberJob]:
    """The member jobs of :func:`train_family_experts`, family by family, for
    :func:`shrinklab.training.parallel.train_members` together with other jobs;
    :func:`group_experts` assembles the experts from the trained members."""
    families = [str(f) for f in families]
    if len(set(families)) != len(families):
        raise ValueError(f"expert families repeat: {families}")
    if int(n_members) < 1:
        raise ValueError(f"n_members must be at least 1, got {n_members}")
    jobs = []
    for fam in families:
        sets = []
        for name, data in (("training", train_set), ("validation", valid_set)):
            idx = np.flatnonzero(np.asarray(data.families) == fam)
            if idx.size == 0:
                raise ValueError(f"no {name} worlds of family {fam!r}")
            sets.append(data.subset(idx.tolist()))
        jobs += [
            MemberJob(
                model_config,
                int(seed) + i,
                *sets,
                config,
                Path(out_dir) / fam / f"member_{i}",
                run=f"ensemble/experts/{fam}/member_{i}",
                monitor=None if monitor is None else Path(monitor),
            )
            for i in range(int(n_members))
        ]
    return jobs


def group_experts(
    families: Sequence[str], members: Sequence[nn.Module], n_members: int
) -> dict[str, nn.Module]:
    """``{family: expert}`` from the members trained for :func:`family_expert_jobs` (in
    its order): the network itself for one member per family, else their
    :class:`~shrinklab.models.ensemble.EnsembleModel`."""
    families, k = [str(f) for f in families], int(n_members)
    if len(members) != k * len(families):
        raise ValueError(f"expected {k * len(families)} members, got {len(members)}")
    experts: dict[str, nn.Module] = {}
    for j, fam in enumerate(families):
        group = list(members[j * k : (j + 1) * k])
        experts[fam] = group[0] if k == 1 else EnsembleModel(group, label=fam)
    return experts
