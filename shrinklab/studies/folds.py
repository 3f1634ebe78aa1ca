"""Cross-validation folds that test robustness across worlds (the specification's
hyperparameter-optimization section: "K-Fold Validation: for robustness across
market regimes").

A configuration chosen on one validation set can be tuned to that one world. Two
families of folds guard against it:

* **Real data, walk-forward across market regimes** (:func:`regime_splits`,
  :func:`real_folds`): the expanding-window folds of
  :func:`shrinklab.data.returns.walk_forward_splits` — every validation block lies after its
  training period, blocks do not overlap, nothing reaches the test period (the
  "forward-chaining" scheme of Bergmeir & Benítez, Inf. Sci. 191, 2012, for time
  series). Each fold is labelled with the regime composition of its validation days
  (:func:`shrinklab.data.returns.market_regimes`: calm / volatile / crisis) and scores are
  reported per regime (:func:`windows_by_regime`).
* **Synthetic data, leave-one-family-out** (:func:`leave_one_family_out`,
  :func:`family_folds`): train on every covariance family but one and validate on
  the held-out family ("leave-one-group-out" cross-validation, e.g. scikit-learn's
  ``LeaveOneGroupOut``), so the score measures generalisation to an unseen kind of
  covariance structure.

:func:`cross_validate` runs ``config_fn(config, fold)`` for every configuration and
fold and summarises each metric by its mean over folds and the standard error of that
mean, ``sd / √k`` (folds where a metric is undefined — e.g. a regime absent from a
validation block — are skipped and counted in ``n_<metric>``). :func:`select_config`
picks a configuration by mean, by the pessimistic ``mean + SE`` (the spirit of the
one-standard-error rule, Hastie, Tibshirani & Friedman, ESL §7.10) or by its worst fold.

Ready-made ``config_fn``\\ s: :func:`synthetic_fit_score` (train a network on the
fold, PRIAL and normalised loss on the held-out family) and :func:`real_fit_score`
(fine-tune a pretrained network on the fold's windows with the realised
portfolio-variance loss, score per regime).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from shrinklab.core.metrics import prial_of, quadratic_loss
from shrinklab.data.real_windows import RealWindows, WindowSampling, split_windows
from shrinklab.data.returns import REGIME_NAMES, walk_forward_splits
from shrinklab.data.subsets import take
from shrinklab.data.synthetic import FAMILIES
from shrinklab.models.network import MLShrinkageNetwork, predict_numpy
from shrinklab.training.config import TrainConfig
from shrinklab.training.finetune import evaluate_real, finetune_on_real
from shrinklab.training.loop import train

__all__ = [
    "Fold",
    "RegimeSplit",
    "cross_validate",
    "cv_scores",
    "family_folds",
    "family_labels",
    "leave_one_family_out",
    "paired_difference",
    "real_fit_score",
    "real_folds",
    "regime_splits",
    "select_config",
    "summarise_cv",
    "synthetic_fit_score",
    "windows_by_regime",
]


@dataclass
class Fold:
    """One cross-validation fold: a name, the training and validation data (whatever
    the ``config_fn`` expects: a training-set subset, lists of real windows…), the
    held-out group (family or dominant regime) and free-form ``info``."""

    name: str
    train: Any
    valid: Any
    group: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------ synthetic families
def family_labels(train_set: Any) -> np.ndarray:
    """Family name of every sample of a training set, as a string array.

    ``train_set.family`` may hold names, or integer codes into ``train_set.family_names``
    (if present) or :data:`shrinklab.data.synthetic.FAMILIES`.
    """
    fam = getattr(train_set, "family", None)
    if fam is None:
        raise ValueError("training set has no 'family' field")
    arr = np.asarray(fam.cpu() if torch.is_tensor(fam) else fam)
    if arr.ndim != 1:
        raise ValueError(f"family must be one label per sample, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.integer):
        names = getattr(train_set, "family_names", None)
        if names is None:
            names = FAMILIES
        names = list(names)
        if arr.size and (arr.min() < 0 or arr.max() >= len(names)):
            raise ValueError(f"family codes outside [0, {len(names)})")
        return np.asarray(names, dtype=object)[arr].astype(str)
    return arr.astype(str)


def leave_one_family_out(
    train_set: Any, families: Sequence[str] | None = None
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``[(family, train_idx, valid_idx), …]``: one fold per family (sorted, or the
    given ``families``), validating on every sample of that family and training on all
    other samples. Needs at least two families."""
    labels = family_labels(train_set)
    present = sorted(set(labels.tolist()))
    if len(present) < 2:
        raise ValueError(f"leave-one-family-out needs >= 2 families, found {present}")
    chosen = present if families is None else list(families)
    missing = sorted(set(chosen) - set(present))
    if missing:
        raise ValueError(f"families {missing} have no samples (present: {present})")
    folds = []
    for fam in chosen:
        held = labels == fam
        folds.append((fam, np.flatnonzero(~held), np.flatnonzero(held)))
    return folds


def family_folds(train_set: Any, families: Sequence[str] | None = None) -> list[Fold]:
    """:func:`leave_one_family_out` as :class:`Fold` objects whose ``train``/``valid``
    are subsets of ``train_set`` (``train_set.subset`` when it has one, e.g.
    :meth:`shrinklab.data.dataset.TrainingSet.subset`, which keeps ``rebuild_matrices``;
    else :func:`shrinklab.data.subsets.take`)."""

    def sub(idx: np.ndarray) -> Any:
        if hasattr(train_set, "subset"):
            return train_set.subset(idx)
        return take(train_set, idx)

    out = []
    for fam, tr, va in leave_one_family_out(train_set, families):
        out.append(
            Fold(
                name=f"without {fam}",
                train=sub(tr),
                valid=sub(va),
                group=fam,
                info={"n_train": len(tr), "n_valid": len(va)},
            )
        )
    return out


# ------------------------------------------------------------- real walk-forward
@dataclass(frozen=True)
class RegimeSplit:
    """A walk-forward fold (positions into the returns' index) with the regime
    composition of its validation days: ``regime_share`` (name → fraction) and
    ``dominant`` (the most frequent regime)."""

    fold: int
    train: np.ndarray
    val: np.ndarray
    train_end: pd.Timestamp
    val_start: pd.Timestamp
    val_end: pd.Timestamp
    regime_share: dict[str, float]
    dominant: str


def regime_splits(
    index: pd.DatetimeIndex,
    regimes: pd.Series | np.ndarray,
    *,
    n_folds: int = 6,
    val_years: int = 2,
    gap: int = 0,
    **split_kw: Any,
) -> list[RegimeSplit]:
    """Expanding-window walk-forward folds (:func:`shrinklab.data.returns.walk_forward_splits`)
    labelled with the regimes of their validation days (``regimes``: a code per date
    of ``index``, :func:`shrinklab.data.returns.market_regimes`)."""

    index = pd.DatetimeIndex(index)
    if isinstance(regimes, pd.Series):
        codes = regimes.reindex(index)
        if codes.isna().any():
            raise ValueError("regimes has no code for some dates of the index")
        codes = codes.to_numpy()
    else:
        codes = np.asarray(regimes)
        if codes.shape != (len(index),):
            raise ValueError(
                f"regimes must have one code per date ({len(index)}), got {codes.shape}"
            )
    codes = codes.astype(np.int64)
    if codes.size and (codes.min() < 0 or codes.max() >= len(REGIME_NAMES)):
        raise ValueError(f"regime codes must be in [0, {len(REGIME_NAMES)})")
    out = []
    for s in walk_forward_splits(index, n_folds=n_folds, val_years=val_years, gap=gap, **split_kw):
        counts = np.bincount(codes[s.val], minlength=len(REGIME_NAMES))
        share = {name: float(c) / len(s.val) for name, c in zip(REGIME_NAMES, counts, strict=True)}
        out.append(
            RegimeSplit(
                fold=int(s.fold),
                train=np.asarray(s.train),
                val=np.asarray(s.val),
                train_end=index[s.train[-1]],
                val_start=index[s.val[0]],
                val_end=index[s.val[-1]],
                regime_share=share,
                dominant=REGIME_NAMES[int(np.argmax(counts))],
            )
        )
    return out


def real_folds(
    returns: pd.DataFrame,
    regimes: pd.Series,
    splits: Sequence[RegimeSplit] | None = None,
    *,
    windows: Sequence[int] = (60, 120),
    split_kw: Mapping[str, Any] | None = None,
    **sampling: Any,
) -> list[Fold]:
    """Folds of real estimation windows (:func:`shrinklab.data.real_windows.split_windows`, one
    :class:`~shrinklab.data.real_windows.RealWindows` per window length) over ``splits``
    (default :func:`regime_splits` of the returns' index with ``split_kw``), drawn as
    ``sampling`` says (the fields of :class:`~shrinklab.data.real_windows.WindowSampling`;
    fold ``k`` draws its asset subsets with ``seed + 1000 k``). Windows carry the regime
    known at their rebalance date; no realised return of a training window reaches its
    fold's validation block."""
    ws = WindowSampling(**sampling)
    if splits is None:
        splits = regime_splits(returns.index, regimes, **(split_kw or {}))
    out = []
    for s in splits:
        tr, va = [], []
        for wl in windows:
            a, b = split_windows(
                returns,
                s,
                int(wl),
                ws.horizon,
                ws.step,
                val_step=ws.val_step,
                asset_subsets=ws.asset_subsets,
                min_assets=ws.min_assets,
                seed=ws.seed + 1000 * s.fold,
                regimes=regimes,
            )
            tr.append(a)
            va.append(b)
        out.append(
            Fold(
                name=f"fold {s.fold} ({s.val_start.date()}..{s.val_end.date()})",
                train=tr,
                valid=va,
                group=s.dominant,
                info={
                    "fold": s.fold,
                    "train_end": s.train_end,
                    "val_start": s.val_start,
                    "val_end": s.val_end,
                    **{f"share_{k}": v for k, v in s.regime_share.items()},
                },
            )
        )
    return out


def windows_by_regime(windows: Any) -> dict[str, list[Any]]:
    """Split real windows (a ``RealWindows`` or a list of them) by the regime code of
    each window: ``{regime name: [RealWindows, …]}`` (regimes without windows omitted)."""

    items = [windows] if isinstance(windows, RealWindows) else list(windows)
    out: dict[str, list[Any]] = {}
    for code, name in enumerate(REGIME_NAMES):
        for rw in items:
            groups = []
            for g in rw:
                if g.regime is None:
                    raise ValueError("windows carry no regime (build them with regimes=...)")
                mask = (g.regime.cpu() == code).numpy()
                if mask.any():
                    groups.append(g.select(mask))
            if groups:
                out.setdefault(name, []).append(
                    RealWindows(groups, rw.window, rw.horizon, list(rw.columns), rw.target_names)
                )
    return out


# ------------------------------------------------------------------ cross-validation
def cv_scores(
    config_fn: Callable[[Any, Fold], Mapping[str, float] | float],
    folds: Sequence[Fold],
    configs: Mapping[str, Any],
) -> pd.DataFrame:
    """Per-fold scores: one row per (configuration, fold) with columns ``config``,
    ``fold``, ``group`` and every metric ``config_fn(config, fold)`` returned (a float
    is named ``score``)."""
    if not folds:
        raise ValueError("no folds")
    if not configs:
        raise ValueError("no configurations")
    rows = []
    for cname, cfg in configs.items():
        for fold in folds:
            res = config_fn(cfg, fold)
            metrics = {"score": float(res)} if np.isscalar(res) else dict(res)
            rows.append({"config": cname, "fold": fold.name, "group": fold.group, **metrics})
    return pd.DataFrame(rows)


def summarise_cv(per_fold: pd.DataFrame, by: str = "config") -> pd.DataFrame:
    """Mean, standard error of the mean (``sd/√k``, ddof 1), min, max and count over
    folds of every numeric metric, per ``by``. Columns ``<metric>_mean``,
    ``<metric>_se``, ``<metric>_min``, ``<metric>_max``, ``n_<metric>``."""
    metrics = [
        c
        for c in per_fold.columns
        if c not in ("config", "fold", "group") and pd.api.types.is_numeric_dtype(per_fold[c])
    ]
    out = {}
    for name, grp in per_fold.groupby(by, sort=False):
        row: dict[str, float] = {}
        for m in metrics:
            v = grp[m].to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            k = len(v)
            row[f"{m}_mean"] = float(v.mean()) if k else math.nan
            row[f"{m}_se"] = float(v.std(ddof=1) / math.sqrt(k)) if k > 1 else math.nan
            row[f"{m}_min"] = float(v.min()) if k else math.nan
            row[f"{m}_max"] = float(v.max()) if k else math.nan
            row[f"n_{m}"] = k
        out[name] = row
    df = pd.DataFrame.from_dict(out, orient="index")
    df.index.name = by
    return df


def cross_validate(
    config_fn: Callable[[Any, Fold], Mapping[str, float] | float],
    folds: Sequence[Fold],
    configs: Mapping[str, Any],
) -> pd.DataFrame:
    """Run ``config_fn(config, fold)`` for every configuration and fold; return
    :func:`summarise_cv` of the scores (one row per configuration, mean and SE of each
    metric over folds). The per-fold table is in ``result.attrs["folds"]``."""
    per_fold = cv_scores(config_fn, folds, configs)
    summary = summarise_cv(per_fold)
    summary.attrs["folds"] = per_fold
    return summary


def paired_difference(per_fold: pd.DataFrame, a: str, b: str, metric: str) -> dict[str, float]:
    """Fold-paired difference ``a − b`` of ``metric`` between two configurations.

    Both were scored on the same folds, so the fold-to-fold spread (e.g. some held-out
    families are simply harder) cancels: the standard error is that of the per-fold
    differences, ``sd(a_i − b_i)/√k`` (ddof 1), not of either mean. Returns ``mean``,
    ``se``, ``n`` (folds scored by both, finite) and ``wins`` (folds where ``a < b``).
    """
    for name in (a, b):
        if name not in set(per_fold["config"]):
            raise ValueError(f"no configuration {name!r} in the per-fold table")
    if metric not in per_fold:
        raise ValueError(f"no metric {metric!r} in the per-fold table")
    wide = per_fold.pivot(index="fold", columns="config", values=metric)[[a, b]].astype(float)
    diff = (wide[a] - wide[b]).to_numpy()
    diff = diff[np.isfinite(diff)]
    k = len(diff)
    if k == 0:
        raise ValueError(f"no fold has a finite {metric!r} for both {a!r} and {b!r}")
    return {
        "mean": float(diff.mean()),
        "se": float(diff.std(ddof=1) / math.sqrt(k)) if k > 1 else math.nan,
        "n": k,
        "wins": int((diff < 0).sum()),
    }


def select_config(
    summary: pd.DataFrame, metric: str, *, lower_is_better: bool = True, rule: str = "mean_se"
) -> str:
    """The configuration that is best by ``rule``: ``"mean"`` (best mean over folds),
    ``"mean_se"`` (best pessimistic mean, ``mean + SE`` for a loss and ``mean − SE`` for
    a score: robust to lucky folds) or ``"worst"`` (best worst fold)."""
    if f"{metric}_mean" not in summary:
        raise ValueError(f"no metric {metric!r} in the summary")
    sign = 1.0 if lower_is_better else -1.0
    mean = summary[f"{metric}_mean"]
    se = summary[f"{metric}_se"].fillna(0.0)
    if rule == "mean":
        crit = sign * mean
    elif rule == "mean_se":
        crit = sign * mean + se
    elif rule == "worst":
        crit = sign * (summary[f"{metric}_max"] if lower_is_better else summary[f"{metric}_min"])
    else:
        raise ValueError(f"rule must be 'mean', 'mean_se' or 'worst', got {rule!r}")
    if crit.isna().all():
        raise ValueError(f"metric {metric!r} is undefined for every configuration")
    return str(crit.idxmin())


# ------------------------------------------------------------ ready-made scorers
def _new_network(model_config: Mapping[str, Any], data: Any, seed: int):

    cfg = dict(model_config)
    cfg.setdefault("input_dim", int(np.shape(np.asarray(data.features))[1]))
    cfg.setdefault("num_targets", int(np.shape(np.asarray(data.oracle_w))[1]))
    torch.manual_seed(int(seed))
    return MLShrinkageNetwork(**cfg)


def synthetic_fit_score(out_dir: str | Path) -> Callable[[Mapping[str, Any], Fold], dict]:
    """A ``config_fn`` for :func:`family_folds`: the configuration is
    ``{"train": TrainConfig, "model": {MLShrinkageNetwork kwargs}}``; a network is
    trained on ``fold.train`` (early stopping on the training loss: the held-out family
    stays unseen) and scored on ``fold.valid``: ``prial`` (%), ``norm_loss`` (mean
    ``L(ŵ)/L(S)``). Checkpoints go to ``out_dir/<config hash>/<fold>``."""

    root = Path(out_dir)

    def fn(config: Mapping[str, Any], fold: Fold) -> dict[str, float]:
        tcfg = config.get("train") or TrainConfig()
        model = _new_network(config.get("model", {}), fold.train, tcfg.seed)
        key = _key({"train": dataclasses.asdict(tcfg), "model": dict(config.get("model", {}))})
        train(model, fold.train, None, tcfg, root / key / _slug(fold.name), resume=False)
        w = predict_numpy(model, fold.valid.features).intensities
        d = torch.as_tensor(np.asarray(fold.valid.d)).double()
        loss = quadratic_loss(w, fold.valid.G, fold.valid.c, d)
        return {
            "prial": prial_of(w, fold.valid),
            "norm_loss": float((loss / d.clamp_min(1e-300)).mean()),
        }

    return fn


def real_fit_score(
    pretrained: Any, out_dir: str | Path, *, baseline: str = "ledoit_wolf"
) -> Callable[[Mapping[str, Any], Fold], dict]:
    """A ``config_fn`` for :func:`real_folds`: a copy of ``pretrained`` is fine-tuned
    (:func:`shrinklab.training.finetune.finetune_on_real`, configuration ``{"train":
    TrainConfig}``) on the fold's training windows, early-stopped on its validation
    windows, and scored there: ``loss`` (mean realised GMV variance relative to
    ``baseline``) overall and per regime (``loss[calm]`` …; NaN when a regime has no
    validation window), and ``pooled_ratio``."""

    root = Path(out_dir)

    def fn(config: Mapping[str, Any], fold: Fold) -> dict[str, float]:

        tcfg = config.get("train") or TrainConfig(lr=3e-4, epochs=10, batch_size=64, patience=3)
        model = copy.deepcopy(pretrained)
        key = _key({"train": dataclasses.asdict(tcfg), "baseline": baseline})
        finetune_on_real(
            model, fold.train, fold.valid, tcfg, root / key / _slug(fold.name),
            baseline=baseline, resume=False,
        )  # fmt: skip
        ev = evaluate_real(model, fold.valid, baseline=baseline)
        out = {"loss": ev["loss"], "pooled_ratio": ev["pooled_ratio"]}
        by = windows_by_regime(fold.valid)
        for name in REGIME_NAMES:
            out[f"loss[{name}]"] = (
                evaluate_real(model, by[name], baseline=baseline)["loss"]
                if name in by
                else math.nan
            )
        return out

    return fn


def _key(obj: Any) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
