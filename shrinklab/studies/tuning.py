"""Hyper-parameter search (the specification's hyperparameter-optimization section).

Two tools, one per kind of parameter:

* **Bayesian optimisation of the learning parameters** — :func:`optuna_search`:
  Optuna's Tree-structured Parzen Estimator [Bergstra, Bardenet, Bengio & Kégl,
  "Algorithms for hyper-parameter optimization", NeurIPS 2011; Akiba et al.,
  "Optuna", KDD 2019] over the learning rate and weight decay (log scale), the loss
  weights α (intensity MSE), β (normalised Frobenius), γ (eigenvalue spectrum,
  ``spectrum_weight``) and the uncertainty-head weight, and the gradient-clipping norm. Bad
  trials are stopped early by the median rule [Golovin et al., "Google Vizier",
  KDD 2017] (or Hyperband [Li et al., JMLR 18, 2018]) fed with the trainer's
  per-epoch validation metric through :func:`shrinklab.training.loop.train`'s
  ``on_epoch_end`` hook.

  The *objective* is the validation **mean normalised Frobenius loss**
  ``mean_i L(ŵ_i)/L(S_i)`` of the early-stopped model (1 = no better than the
  sample covariance), not the training objective: the latter depends on the very
  loss weights being searched, so its values are not comparable across trials.
  The validation PRIAL is stored with each trial as a user attribute.

  Reproducible: the sampler is seeded (``seed`` + the number of trials already in
  the study, so a resumed search does not replay its first random points), every
  trial trains with the same model seed, and training is deterministic on CPU.
  Resumable: the study lives in an SQLite file (``sqlite:///<storage_path>``,
  ``load_if_exists``); ``n_trials`` is the size of the study: a call runs only the
  trials still missing (none when the study is complete, so rerunning the search
  reproduces it instead of growing it). A trial that was
  killed (left ``RUNNING`` by a dead process) is marked failed and re-queued with the
  same parameters; its checkpoint folder is keyed by the full configuration, so the
  retry resumes training where it stopped (:func:`shrinklab.training.loop.train` with
  ``resume=True``). Assumes one worker per study (no concurrent processes).

* **Grid search over the architecture** — :func:`grid_configs` expands a grid of
  widths, depth, dropout and attention into configurations, and
  :func:`dvc_queue_commands` writes the ``dvc exp run --queue --set-param …`` lines
  that run each as a DVC experiment of the ``pretrain`` stage (then
  ``dvc queue start -j N`` and ``dvc exp show``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from shrinklab.core.metrics import prial_of
from shrinklab.models.network import MLShrinkageNetwork, predict_numpy
from shrinklab.training.checkpoints import checkpoint_path
from shrinklab.training.config import TrainConfig
from shrinklab.training.loop import evaluate_loss, train

__all__ = [
    "DEFAULT_SEARCH_SPACE",
    "SearchResult",
    "best_config",
    "default_search_space",
    "dvc_queue_commands",
    "grid_configs",
    "optuna_search",
    "suggest_params",
    "update_params_file",
]


OBJECTIVE = "valid_frobenius"


#: Default search space: TrainConfig field → {type, low, high, log} or {type, choices}.
DEFAULT_SEARCH_SPACE: dict[str, dict[str, Any]] = {
    "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
    "intensity_weight": {"type": "float", "low": 0.05, "high": 1.0},
    "matrix_weight": {"type": "float", "low": 0.05, "high": 1.0},
    "uncertainty_weight": {"type": "float", "low": 1e-3, "high": 0.2, "log": True},
    "clip_norm": {"type": "float", "low": 0.1, "high": 10.0, "log": True},
}


_TYPES = ("float", "int", "categorical")


def default_search_space(train_set: Any = None) -> dict[str, dict[str, Any]]:
    """:data:`DEFAULT_SEARCH_SPACE`, plus ``spectrum_weight`` (the specification's γ) in
    ``[0, 0.5]`` when :class:`~shrinklab.training.config.TrainConfig` has that field and the
    training set can rebuild its matrices (``train_set.rebuild_matrices``; ``None``:
    assume it can)."""
    space = {k: dict(v) for k, v in DEFAULT_SEARCH_SPACE.items()}
    has_field = "spectrum_weight" in {f.name for f in dataclasses.fields(TrainConfig)}
    can_rebuild = train_set is None or hasattr(train_set, "rebuild_matrices")
    if has_field and can_rebuild:
        space["spectrum_weight"] = {"type": "float", "low": 0.0, "high": 0.5}
    return space


def _check_space(space: Mapping[str, Mapping[str, Any]]) -> None:
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    if not space:
        raise ValueError("search_space is empty")
    for name, spec in space.items():
        if name not in fields:
            raise ValueError(f"search_space key {name!r} is not a TrainConfig field")
        kind = spec.get("type")
        if kind not in _TYPES:
            raise ValueError(
                f"search_space[{name!r}]['type'] must be one of {_TYPES}, got {kind!r}"
            )
        if kind == "categorical":
            if not spec.get("choices"):
                raise ValueError(f"search_space[{name!r}] needs non-empty 'choices'")
            continue
        lo, hi = spec.get("low"), spec.get("high")
        if lo is None or hi is None or not lo < hi:
            raise ValueError(f"search_space[{name!r}] needs low < high, got {lo}, {hi}")
        if spec.get("log") and lo <= 0:
            raise ValueError(f"search_space[{name!r}]: a log scale needs low > 0, got {lo}")


def suggest_params(trial: Any, space: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Draw one value per entry of ``space`` from an Optuna ``trial``."""
    params: dict[str, Any] = {}
    for name, spec in space.items():
        kind = spec["type"]
        if kind == "float":
            params[name] = trial.suggest_float(
                name, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False))
            )
        elif kind == "int":
            params[name] = trial.suggest_int(
                name, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log", False))
            )
        else:
            params[name] = trial.suggest_categorical(name, list(spec["choices"]))
    return params


def best_config(base_config: TrainConfig, params: Mapping[str, Any]) -> TrainConfig:
    """``base_config`` with the searched fields replaced by ``params``."""
    return dataclasses.replace(base_config, **dict(params))


@dataclass
class SearchResult:
    """Outcome of :func:`optuna_search`: the best trial's parameters and objective
    value, the corresponding :class:`TrainConfig`, one row per trial of the whole
    study (``trials``), and the study itself."""

    best_params: dict[str, Any]
    best_value: float
    best_config: TrainConfig
    trials: pd.DataFrame
    study: Any

    @property
    def n_complete(self) -> int:
        return int((self.trials["state"] == "COMPLETE").sum())

    @property
    def n_pruned(self) -> int:
        return int((self.trials["state"] == "PRUNED").sum())


def _config_key(cfg: TrainConfig, model_config: Mapping[str, Any]) -> str:
    blob = json.dumps(
        {"train": cfg.to_dict(), "model": dict(model_config)}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _make_pruner(pruner: str | Any, n_startup_trials: int, n_warmup_steps: int, epochs: int):
    import optuna

    if not isinstance(pruner, str):
        return pruner
    if pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=n_startup_trials, n_warmup_steps=n_warmup_steps
        )
    if pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1))
    if pruner == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"pruner must be 'median', 'hyperband', 'none' or a pruner, got {pruner!r}")


def _requeue_stale(study: Any, storage: Any, study_name: str) -> int:
    """Mark trials left RUNNING by a dead process as FAIL and re-queue their params."""
    from optuna.trial import TrialState

    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    study_id = storage.get_study_id_from_name(study_name)
    for t in stale:
        tid = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_state_values(tid, TrialState.FAIL)
        if t.params:
            study.enqueue_trial(dict(t.params), user_attrs={"retry_of": int(t.number)})
    return len(stale)


def _prial_of(model: Any, data: Any) -> float | None:
    if getattr(data, "loss_fsopt", None) is None:
        return None

    return prial_of(predict_numpy(model, data.features).intensities, data)


def optuna_search(
    train_set: Any,
    valid_set: Any,
    n_trials: int,
    seed: int,
    storage_path: str | Path,
    study_name: str,
    base_config: TrainConfig | None = None,
    search_space: Mapping[str, Mapping[str, Any]] | None = None,
    timeout: float | None = None,
    *,
    model_config: Mapping[str, Any] | None = None,
    pruner: str | Any = "median",
    n_startup_trials: int = 5,
    n_warmup_steps: int = 2,
    checkpoint_dir: str | Path | None = None,
    keep_checkpoints: bool = False,
    enqueue: Sequence[Mapping[str, Any]] = (),
) -> SearchResult:
    """Run (or continue) an Optuna TPE study over the learning parameters.

    Parameters
    ----------
    train_set, valid_set : training-set-like objects (see :func:`shrinklab.training.loop.train`).
    n_trials : total number of finished (complete or pruned) trials the study should
        have; a resumed study keeps its old ones and runs only the missing ones.
    seed : seed of the TPE sampler (offset by the number of trials already stored).
    storage_path : SQLite file of the study (created if missing).
    study_name : name of the study inside the storage.
    base_config : the :class:`TrainConfig` every trial starts from (its ``seed`` is the
        model/training seed of every trial).
    search_space : ``{field: {"type": "float"|"int"|"categorical", "low", "high",
        "log"} | {"type": "categorical", "choices": [...]}}`` over TrainConfig fields;
        default :func:`default_search_space` (with γ = ``spectrum_weight`` when the
        training set has ``rebuild_matrices``).
    timeout : stop starting trials after this many seconds.
    model_config : keyword arguments of :class:`~shrinklab.models.network.MLShrinkageNetwork`
        (``input_dim``/``num_targets`` are inferred from the data).
    pruner : ``"median"`` (MedianPruner), ``"hyperband"``, ``"none"`` or an Optuna pruner.
    n_startup_trials, n_warmup_steps : MedianPruner settings (and TPE's random start).
    checkpoint_dir : per-trial checkpoints (default ``<storage_path>.trials/``).
    keep_checkpoints : keep each finished trial's ``checkpoint.pt`` (default: only
        ``history.json`` is kept).
    enqueue : parameter sets to evaluate first (e.g. the current defaults).

    Returns
    -------
    :class:`SearchResult` (best parameters, best value, best TrainConfig, trials table).
    """
    import optuna


    if valid_set is None:
        raise ValueError("optuna_search needs a validation set")
    if int(n_trials) < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    if not study_name or not isinstance(study_name, str):
        raise ValueError("study_name must be a non-empty string")
    base = base_config or TrainConfig()
    space = dict(search_space) if search_space is not None else default_search_space(train_set)
    _check_space(space)
    mcfg = dict(model_config or {})
    mcfg.setdefault("input_dim", int(np.shape(np.asarray(train_set.features))[1]))
    mcfg.setdefault("num_targets", int(np.shape(np.asarray(train_set.oracle_w))[1]))

    storage_path = Path(storage_path)
    storage_path.parent.mkdir(parents=True, exist_ok=True)
    ckpt_root = Path(checkpoint_dir) if checkpoint_dir else Path(f"{storage_path}.trials")
    storage = optuna.storages.RDBStorage(f"sqlite:///{storage_path.resolve()}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    # The sampler seed depends on the stored history, so a resumed search continues
    # deterministically without replaying its first random points.
    try:
        existing = len(
            optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)
        )
    except KeyError:
        existing = 0
    sampler = optuna.samplers.TPESampler(
        seed=int(seed) + existing, n_startup_trials=n_startup_trials
    )
    study = optuna.create_study(
        storage=storage,
        sampler=sampler,
        pruner=_make_pruner(pruner, n_startup_trials, n_warmup_steps, base.epochs),
        study_name=study_name,
        direction="minimize",
        load_if_exists=True,
    )
    _requeue_stale(study, storage, study_name)
    for params in enqueue:
        study.enqueue_trial(dict(params))

    def objective(trial: Any) -> float:
        params = suggest_params(trial, space)
        cfg = best_config(base, params)
        out = ckpt_root / _config_key(cfg, mcfg)
        ckpt = checkpoint_path(out)
        if ckpt.is_file():  # a retried trial: replay the intermediate values it had
            old = torch.load(ckpt, map_location="cpu", weights_only=True)
            for ep, v in zip(old["history"]["epoch"], old["history"][OBJECTIVE], strict=True):
                trial.report(float(v), int(ep))
        trial.set_user_attr("checkpoint_dir", str(out))

        def on_epoch_end(epoch: int, record: dict[str, Any]) -> None:
            value = float(record[OBJECTIVE])
            trial.report(value if math.isfinite(value) else 1e30, int(epoch))
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        torch.manual_seed(int(cfg.seed))
        model = MLShrinkageNetwork(**mcfg)
        try:
            history = train(
                model, train_set, valid_set, cfg, out, resume=True, on_epoch_end=on_epoch_end
            )
        finally:
            if not keep_checkpoints and ckpt.is_file():
                ckpt.unlink()
        ev = evaluate_loss(model, valid_set, cfg)
        trial.set_user_attr("best_epoch", int(history["best_epoch"]))
        trial.set_user_attr("epochs_run", len(history["epoch"]))
        trial.set_user_attr("valid_loss", float(ev["loss"]))
        prial = _prial_of(model, valid_set)
        if prial is not None:
            trial.set_user_attr("valid_prial", float(prial))
        value = float(ev["frobenius"])
        if not math.isfinite(value):
            raise optuna.TrialPruned("non-finite validation loss")
        return value

    finished = sum(
        t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        for t in study.get_trials(deepcopy=False)
    )
    missing = int(n_trials) - finished
    if missing > 0:
        study.optimize(objective, n_trials=missing, timeout=timeout, catch=())
    trials = study.trials_dataframe(
        attrs=("number", "value", "state", "params", "user_attrs", "duration")
    )
    if "state" in trials:
        trials["state"] = trials["state"].astype(str)
    try:
        best = study.best_trial
    except ValueError as err:  # every trial pruned or failed
        raise ValueError(f"study {study_name!r} has no completed trial") from err
    return SearchResult(
        best_params=dict(best.params),
        best_value=float(best.value),
        best_config=best_config(base, best.params),
        trials=trials,
        study=study,
    )


# ------------------------------------------------------------------ grid search
def _hidden_dims(width: int, depth: int, min_width: int = 8) -> list[int]:
    """Decreasing widths ``width, width/2, …`` (``depth`` blocks, specification: 128 → 64 → 32)."""
    if int(width) < 1 or int(depth) < 1:
        raise ValueError(f"width and depth must be positive, got {width}, {depth}")
    return [max(int(width) // 2**i, min_width) for i in range(int(depth))]


def grid_configs(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Cartesian product of a parameter grid, in a fixed order (last key fastest).

    ``grid`` maps parameter names (keys of the ``pretrain`` section of
    ``params.yaml``: ``hidden_dims``, ``dropout``, ``input_dropout``, ``attention``, …)
    to lists of values. The pseudo-parameters ``width`` and ``depth`` are combined into
    ``hidden_dims = [width, width/2, …]`` (``depth`` entries, halving, at least 8);
    they cannot be mixed with an explicit ``hidden_dims``. Duplicate configurations
    are dropped.
    """
    if not grid:
        raise ValueError("grid is empty")
    for k, v in grid.items():
        if isinstance(v, str | bytes) or not isinstance(v, Sequence) or len(v) == 0:
            raise ValueError(f"grid[{k!r}] must be a non-empty list of values, got {v!r}")
    if ("width" in grid or "depth" in grid) and "hidden_dims" in grid:
        raise ValueError("give either hidden_dims or width/depth, not both")
    keys = list(grid)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for values in itertools.product(*(grid[k] for k in keys)):
        cfg = dict(zip(keys, values, strict=True))
        if "width" in cfg or "depth" in cfg:
            width = cfg.pop("width", 128)
            depth = cfg.pop("depth", 3)
            cfg = {"hidden_dims": _hidden_dims(width, depth), **cfg}
        if "hidden_dims" in cfg:
            cfg["hidden_dims"] = [int(h) for h in cfg["hidden_dims"]]
        key = json.dumps(cfg, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(cfg)
    return out


def _yaml_value(v: Any) -> str:
    """A value as DVC's ``--set-param`` parses it (YAML flow style)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float | np.floating):
        if not math.isfinite(float(v)):
            raise ValueError(f"cannot write non-finite parameter value {v!r}")
        r = repr(float(v))
        mant, e, exp = r.partition("e")
        # PyYAML (YAML 1.1) reads "1e-05" as a string: the mantissa needs a dot
        return f"{mant}.0e{exp}" if e and "." not in mant else r
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, list | tuple):
        return "[" + ",".join(_yaml_value(x) for x in v) + "]"
    if isinstance(v, str):
        return v
    raise ValueError(f"cannot write {v!r} as a parameter value")


def _exp_name(prefix: str, cfg: Mapping[str, Any]) -> str:
    parts = [prefix]
    for k, v in cfg.items():
        short = {"hidden_dims": "h", "dropout": "do", "input_dropout": "ido", "attention": "att"}
        val = "-".join(str(x) for x in v) if isinstance(v, list) else str(v)
        parts.append(f"{short.get(k, k)}{val}")
    name = "_".join(parts).lower().replace(".", "p")
    return re.sub(r"[^a-z0-9_-]", "", name)


def dvc_queue_commands(
    grid: Mapping[str, Sequence[Any]],
    stage: str = "pretrain",
    *,
    params: Mapping[str, Any] | None = None,
    name_prefix: str = "grid",
    jobs: int | None = None,
    sort_by: str | None = None,
) -> list[str]:
    """Shell lines that queue one DVC experiment per grid configuration.

    Each line is ``dvc exp run <stage> --queue --name <name> --set-param
    '<stage>.<key>=<value>' …`` (values in YAML flow syntax, quoted for the shell).
    ``params``: the ``params.yaml`` mapping; if given, every key must already exist in
    its ``stage`` section (the stage runner refuses unknown parameters anyway — this
    fails earlier). With ``jobs``, the lines ``dvc queue start -j <jobs>``,
    ``dvc queue status`` and a ``dvc exp show`` sorted by ``sort_by`` (default
    ``reports/metrics/<stage>.json:best_valid_loss``) follow.
    """
    sort_by = sort_by or f"reports/metrics/{stage}.json:best_valid_loss"
    configs = grid_configs(grid)
    if params is not None:
        if stage not in params:
            raise ValueError(f"params has no section {stage!r}")
        unknown = sorted({k for c in configs for k in c} - set(params[stage]))
        if unknown:
            raise ValueError(f"parameters {unknown} are not in params.yaml section {stage!r}")
    lines = []
    for cfg in configs:
        sets = " ".join(
            f"--set-param {shlex.quote(f'{stage}.{k}={_yaml_value(v)}')}" for k, v in cfg.items()
        )
        lines.append(f"dvc exp run {stage} --queue --name {_exp_name(name_prefix, cfg)} {sets}")
    if jobs is not None:
        if int(jobs) < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        lines.append(f"dvc queue start -j {int(jobs)}")
        lines.append("dvc queue status")
        lines.append(
            f"dvc exp show --only-changed --sort-by {shlex.quote(sort_by)} --sort-order asc"
        )
    return lines


def update_params_file(
    path: str | Path, section: str, updates: Mapping[str, Any], *, write: bool = True
) -> str:
    """Set ``section.key: value`` in a ``params.yaml`` for every item of ``updates``,
    editing only those lines (comments, order and other sections are kept), and
    return the new text (written back unless ``write=False``).

    Every key must already exist in the section (one ``key: value`` line, two-space
    indentation); values are written in YAML flow style. The result is checked by
    re-reading it with ``yaml.safe_load``.
    """
    import yaml

    path = Path(path)
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    try:
        start = next(i for i, ln in enumerate(lines) if ln.rstrip() == f"{section}:")
    except StopIteration:
        raise ValueError(f"{path} has no top-level section {section!r}") from None
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i][:1] not in ("", " ", "\n", "#")),
        len(lines),
    )
    todo = dict(updates)
    for i in range(start + 1, end):
        m = re.match(r"^  ([A-Za-z_][A-Za-z0-9_]*):(\s.*)?$", lines[i].rstrip("\n"))
        if m and m.group(1) in todo:
            lines[i] = f"  {m.group(1)}: {_yaml_value(todo.pop(m.group(1)))}\n"
    if todo:
        raise ValueError(f"keys {sorted(todo)} are not in section {section!r} of {path}")
    new = "".join(lines)
    parsed = yaml.safe_load(new)[section]
    old = yaml.safe_load(text)[section]
    expected = {**old, **{k: _plain(v) for k, v in updates.items()}}
    if parsed != expected:
        raise ValueError(f"updating {path} did not give the expected section {section!r}")
    if write:
        path.write_text(new)
    return new


def _plain(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v
