"""studies.specialists."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import torch

from shrinklab.core.features import extract_features
from shrinklab.core.metrics import quadratic_form_loss, ratio_se
from shrinklab.core.targets import TARGET_NAMES
from shrinklab.data.synthetic import make_scenario
from shrinklab.evaluation.scenarios import (
    FSOPT,
    family_statistics,
    model_target_names,
    predict_outputs,
    replication_chunk_size,
)
from shrinklab.models.network import MLShrinkageNetwork
from shrinklab.training.config import TrainConfig
from shrinklab.training.loop import train
from shrinklab.training.parallel import map_in_processes

__all__ = [
    "scenario_training_rows",
    "score_on_replications",
    "specialist_network",
    "specialist_table",
]


def scenario_training_rows(spec: Mapping[str, Any], n_draws: int, seed: int) -> SimpleNamespace:
    """Training rows drawn from one scenario (``make_scenario(spec, n_draws, seed)``,
    in chunks): ``features``, oracle weights ``oracle_w``, the quadratic form ``G``,
    ``c``, ``d`` and ``loss_fsopt`` — the fields :func:`shrinklab.training.loop.train` reads,
    computed exactly as in :func:`evaluate_scenario`."""
    if int(n_draws) < 2:
        raise ValueError(f"n_draws must be >= 2, got {n_draws}")
    make_spec = {k: v for k, v in dict(spec).items() if k != "name"}
    p, n = int(make_spec["p"]), int(make_spec["n"])
    step = replication_chunk_size(n, p, len(TARGET_NAMES))
    parts: dict[str, list[torch.Tensor]] = {
        k: [] for k in ("features", "G", "c", "d", "oracle_w", "loss_fsopt")
    }
    for i, s in enumerate(range(0, int(n_draws), step)):
        # each chunk its own seed stream (make_scenario derives the replications from it)
        chunk_seed = np.random.SeedSequence([int(seed), i]).generate_state(1, dtype=np.uint64)[0]
        sigma, X = make_scenario(make_spec, min(step, int(n_draws) - s), int(chunk_seed >> 2))
        G, c, d, w_star, loss_fsopt = family_statistics(X, sigma)
        for k, v in zip(parts, (extract_features(X), G, c, d, w_star, loss_fsopt)):
            parts[k].append(v)
    return SimpleNamespace(**{k: torch.cat(v) for k, v in parts.items()})


def specialist_network(
    spec: Mapping[str, Any],
    n_draws: int,
    seed: int,
    epochs: int = 60,
    hidden_dims: Sequence[int] = (64, 32),
) -> Any:
    """A *scenario specialist*: the network of :mod:`shrinklab.models.network` trained only on
    ``n_draws`` worlds of one scenario (plus ``n_draws // 4`` for early stopping),
    with the normalised Frobenius loss alone.

    It answers "how much of the per-replication oracle can an estimator that reads
    only the sample reach, if it *knows the scenario* (its family, p, n, tails and the
    distribution of its Σ)?" — the Bayes rule under that narrow prior, approximated by
    a network. A general model, trained over all worlds, cannot know which scenario
    it is in, so the specialist is an optimistic yardstick for it, and a pessimistic
    one for the oracle (which knows each Σ).
    """
    train_rows = scenario_training_rows(spec, n_draws, seed)
    valid_rows = scenario_training_rows(spec, max(int(n_draws) // 4, 2), seed + 1)
    torch.manual_seed(int(seed))
    model = MLShrinkageNetwork(
        input_dim=train_rows.features.shape[1],
        num_targets=len(TARGET_NAMES),
        hidden_dims=list(hidden_dims),
        dropout=0.1,
        input_dropout=0.0,
    )
    cfg = TrainConfig(
        lr=3e-3,
        epochs=int(epochs),
        batch_size=min(256, int(n_draws)),
        patience=30,
        intensity_weight=0.0,
        matrix_weight=1.0,
        uncertainty_weight=0.0,
        device="cpu",
        seed=int(seed),
    )
    with tempfile.TemporaryDirectory() as tmp:
        train(model, train_rows, valid_rows, cfg, out_dir=tmp)
    return model.eval()


def score_on_replications(model: Any, result: Mapping[str, Any]) -> tuple[float, float]:
    """PRIAL ± SE of ``model`` on the replications of an :func:`evaluate_scenario`
    result, without evaluating the classical estimators again: the draws are
    regenerated from the result's spec and seed for their features, and the losses come
    from the stored quadratic forms (``G``, ``c``, ``d``) and FSOPT losses."""
    for key in ("G", "c", "losses", "spec", "seed", "n_reps"):
        if key not in result:
            raise ValueError(f"result has no {key!r}: pass an evaluate_scenario dict")
    model_target_names(model)
    make_spec = {k: v for k, v in dict(result["spec"]).items() if k != "name"}
    _, X_all = make_scenario(make_spec, int(result["n_reps"]), int(result["seed"]))
    G = torch.as_tensor(result["G"], dtype=torch.float64)
    c = torch.as_tensor(result["c"], dtype=torch.float64)
    d = np.asarray(result["losses"]["sample"], dtype=np.float64)
    n, p = X_all.shape[1:]
    step = replication_chunk_size(n, p, len(TARGET_NAMES))
    losses = []
    for s in range(0, X_all.shape[0], step):
        alpha, weights, _ = predict_outputs(model, extract_features(X_all[s : s + step]))
        w = alpha[:, None] * weights
        losses.append(
            quadratic_form_loss(
                w, G[s : s + step], c[s : s + step], torch.as_tensor(d[s : s + step])
            )
        )
    loss = torch.cat(losses).numpy()
    return ratio_se(d - loss, d - np.asarray(result["losses"][FSOPT], dtype=np.float64))


def _specialist_row(job: tuple[Mapping[str, Any], int, int]) -> dict[str, Any]:
    r, n_draws, epochs = job
    # numpy-compatible (32-bit) training seed, independent of the evaluation draws
    train_seed = int(np.random.SeedSequence([int(r["seed"]), 1]).generate_state(1)[0]) >> 1
    model = specialist_network(r["spec"], n_draws, train_seed, epochs=epochs)
    prial, se = score_on_replications(model, r)
    return {
        "scenario": r["scenario"],
        "prial_specialist": prial,
        "se_specialist": se,
        "n_draws": int(n_draws),
        "seed": int(r["seed"]),
        "n_reps": int(r["n_reps"]),
    }


def specialist_table(
    results: Sequence[Mapping[str, Any]], n_draws: int, epochs: int = 60, workers: int = 1
) -> pd.DataFrame:
    """PRIAL ± SE of a :func:`specialist_network` per scenario of :func:`evaluate_grid`'s
    ``results``, scored on the same replications (:func:`score_on_replications`); its
    training draws come from seeds derived from, and distinct from, the scenario's.
    The scenarios are independent: ``workers`` processes share them
    (:func:`shrinklab.training.parallel.map_in_processes`; the same table for any number).
    Index ``scenario``; columns ``prial_specialist``, ``se_specialist``, ``n_draws`` and the
    scenario's ``seed`` and ``n_reps`` (checked by
    :func:`shrinklab.evaluation.feasibility.read_specialist_table`)."""
    keep = ("scenario", "spec", "seed", "n_reps", "G", "c", "losses")
    jobs = [({k: r[k] for k in keep if k in r}, int(n_draws), int(epochs)) for r in results]
    rows = map_in_processes(_specialist_row, jobs, workers)
    return pd.DataFrame(rows).set_index("scenario")
