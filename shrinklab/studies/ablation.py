"""Ablation studies: what each component of the model is worth (the specification's
hyperparameter-optimization section: "Ablation Studies: for component importance
analysis").

Each variant changes one thing relative to the full model and is trained exactly
like it (same seed, same data, same :class:`~shrinklab.training.config.TrainConfig` otherwise):

* ``features`` — each feature group of :data:`FEATURE_GROUPS` removed (its columns of
  :data:`shrinklab.core.features.FEATURE_NAMES` dropped, the network built on the rest,
  its explicit anchors re-indexed by :func:`remap_anchors`, those on a dropped feature
  removed);
* ``loss`` — each loss component switched off through its TrainConfig weight
  (intensity MSE α, normalised Frobenius β, spectrum γ, uncertainty NLL, and the
  regularisers — each only if it is on in the base configuration);
* ``targets`` — single-target shrinkage towards the scaled identity (K = 1, the
  Ledoit–Wolf family [Ledoit & Wolf, JMVA 88, 2004], with its own oracle label
  ``clip(c₀/G₀₀, 0, 1)``) versus the multi-target model;
* ``curriculum`` — the curriculum schedule flipped [Bengio et al., ICML 2009];
* ``components`` — each component of the specification that the base configuration
  does not use, switched *on* (:data:`COMPONENTS`, weights from ``component_weights``):
  the log-determinant (Stein) and GMV portfolio-variance loss terms
  (``TrainConfig.log_det_weight``/``portfolio_weight``,
  :func:`shrinklab.training.losses.log_det_loss` [James & Stein 1961],
  :func:`~shrinklab.training.losses.portfolio_variance_loss` [Engle & Colacito, JBES 24,
  2006], on the matrix pool of the spectrum term), the smoothness and adversarial
  regularisers (:func:`shrinklab.training.losses.smoothness_penalty`,
  :func:`~shrinklab.training.losses.adversarial_penalty`, FGSM of Goodfellow et al.,
  ICLR 2015), curriculum [Bengio et al. 2009], progressive sizes, feature
  self-attention [Vaswani et al., NeurIPS 2017] and, with real windows, market-regime
  inputs (the full model with a regime embedding, fine-tuned on real returns; compare
  it with the ``pretraining`` study's "pretrained + fine-tuned" row). The realised GMV
  variance on real returns is also the fine-tuning objective of the ``pretraining``
  study;
* ``pretraining`` (needs real windows) — fine-tuning on real returns
  (:func:`shrinklab.training.finetune.finetune_on_real`) from the synthetic-pretrained full
  model versus from a randomly initialised one, plus the pretrained model without
  fine-tuning.

Metrics (one row per variant): PRIAL on the synthetic validation set with its
standard error over the validation samples (:func:`prial_with_se`, delta method for a
ratio of means), the change against the full model with a *paired* standard error
(same samples), the mean normalised Frobenius loss and, when real validation windows
are given, the annualised out-of-sample volatility of the global minimum-variance
portfolio built from each model's estimate (:func:`real_volatility`) with its standard
error over windows and its ratio to Ledoit–Wolf's. Windows that overlap in time make
that standard error optimistic.

Caveat on PRIAL over a mixed synthetic set: it is a ratio of *means* of unnormalised
losses, so the worlds with the largest ‖S − Σ‖² (large p, small n, large scale) dominate
it — on a small validation set one sample can carry half of the total loss, and then
neither the delta method nor the bootstrap gives a reliable standard error. The mean
normalised loss ``mean L(ŵ)/L(S)`` (``norm_loss`` with ``norm_loss_se``) weighs every
world equally and is the steadier ablation metric.

PRIAL = 100 (E‖S−Σ‖² − E‖Σ̂−Σ‖²) / (E‖S−Σ‖² − E‖FSOPT−Σ‖²) [Ledoit & Wolf,
"The power of (non-)linear shrinking", J. Financial Econometrics 20, 2022].
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import torch

from shrinklab.core.estimators import ledoit_wolf
from shrinklab.core.features import FEATURE_NAMES
from shrinklab.core.metrics import prial_with_se, quadratic_loss
from shrinklab.core.targets import TARGET_NAMES, combine
from shrinklab.data.real_windows import RealWindows, realised_gmv_variance
from shrinklab.data.subsets import array_fields
from shrinklab.models.network import MLShrinkageNetwork, predict_numpy
from shrinklab.training.checkpoints import checkpoint_path
from shrinklab.training.config import LOSS_WEIGHTS, TrainConfig
from shrinklab.training.finetune import finetune_on_real
from shrinklab.training.loop import train

__all__ = [
    "ALL_STUDIES",
    "COMPONENTS",
    "FEATURE_GROUPS",
    "LOSS_COMPONENTS",
    "drop_features",
    "feature_group_indices",
    "real_volatility",
    "regime_model",
    "remap_anchors",
    "run_ablation",
    "single_target",
]


#: Feature groups: name → prefixes of :data:`shrinklab.core.features.FEATURE_NAMES`.
FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "size": ("log_p_over_n", "log_n"),
    "spectrum": ("spec_q", "top_share", "eff_rank_ratio", "mp_"),
    "correlation": ("corr_",),
    "dispersion": ("logvar_std",),
    "tails": ("kurt_",),
    "classical_intensities": ("int_", "mt_"),
    "target_distances": ("dist_",),
    "temporal": ("log_vol_ratio_recent", "sq_autocorr_market"),
}


#: TrainConfig weights switched off one at a time by the ``loss`` study (all of
#: :data:`shrinklab.training.config.LOSS_WEIGHTS`).
LOSS_COMPONENTS: tuple[str, ...] = LOSS_WEIGHTS


ALL_STUDIES: tuple[str, ...] = (
    "features",
    "loss",
    "targets",
    "curriculum",
    "pretraining",
    "components",
)


#: Components switched on one at a time by the ``components`` study (each only when the
#: base configuration has it off): name → (network overrides, TrainConfig overrides).
#: The weights are defaults: :func:`run_ablation`'s ``component_weights`` (the
#: ``model_selection`` params section) replaces them. 0.1 is the order of the base loss
#: terms' weights (the composite loss is O(1)); a study of a component's weight would
#: come after a row that pays.
COMPONENTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "log-det loss": ({}, {"log_det_weight": 0.1}),
    "portfolio-variance loss": ({}, {"portfolio_weight": 0.1}),
    "smoothness": ({}, {"smoothness_weight": 0.1}),
    "adversarial": ({}, {"adversarial_weight": 0.1}),
    "curriculum": ({}, {"curriculum": True}),
    "progressive sizes": ({}, {"progressive": True}),
    "attention": ({"use_attention": True}, {}),
}


# ------------------------------------------------------------------ data variants
def feature_group_indices(
    feature_names: Sequence[str] | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, list[int]]:
    """Column indices of each feature group (a feature belongs to the group one of
    whose prefixes it starts with). Every feature must fall in exactly one group and
    every group must match at least one feature."""
    if feature_names is None:
        feature_names = FEATURE_NAMES
    groups = FEATURE_GROUPS if groups is None else groups
    names = list(feature_names)
    out: dict[str, list[int]] = {}
    owner: dict[int, str] = {}
    for g, prefixes in groups.items():
        if isinstance(prefixes, str):
            prefixes = (prefixes,)
        idx = [i for i, n in enumerate(names) if any(n.startswith(p) for p in prefixes)]
        if not idx:
            raise ValueError(f"feature group {g!r} matches no feature")
        for i in idx:
            if i in owner:
                raise ValueError(f"feature {names[i]!r} is in groups {owner[i]!r} and {g!r}")
            owner[i] = g
        out[g] = idx
    loose = [names[i] for i in range(len(names)) if i not in owner]
    if loose:
        raise ValueError(f"features {loose} belong to no group")
    return out


def _family_names(data: Any) -> dict[str, Any]:
    """``{"family_names": ...}`` when ``data`` has them (the rows keep their ``family``
    codes, so a configuration that weights world families, e.g. ``edge_weight``, still
    trains on the derived set), else ``{}``."""
    names = getattr(data, "family_names", None)
    return {} if names is None else {"family_names": names}


def drop_features(data: Any, columns: Sequence[int]) -> SimpleNamespace:
    """A copy of a training-set-like object without the feature ``columns`` (other
    fields shared; ``feature_names`` updated when present)."""
    out = array_fields(data)
    feats = out["features"]
    F = int(np.shape(feats)[1])
    cols = sorted({int(c) for c in columns})
    if any(c < 0 or c >= F for c in cols):
        raise ValueError(f"feature columns must be in [0, {F}), got {cols}")
    keep = [i for i in range(F) if i not in set(cols)]
    if not keep:
        raise ValueError("cannot drop every feature")
    if torch.is_tensor(feats):
        out["features"] = feats[:, torch.as_tensor(keep, dtype=torch.long)]
    else:
        out["features"] = np.asarray(feats)[:, keep]
    names = getattr(data, "feature_names", None)
    if names is not None:
        out["feature_names"] = tuple(names[i] for i in keep)
    if hasattr(data, "rebuild_matrices"):  # same rows: the spectrum term still works
        out["rebuild_matrices"] = data.rebuild_matrices
    return SimpleNamespace(**out, **_family_names(data))


def single_target(data: Any, target: int = 0) -> SimpleNamespace:
    """Restrict a training-set-like object to one shrinkage target ``k`` (default the
    scaled identity): ``G[:, k, k]``, ``c[:, k]``, and the one-target oracle
    ``w* = clip(c_k / G_kk, 0, 1)`` (the exact minimiser of ``G_kk w² − 2 c_k w`` on
    ``[0, 1]``). ``d`` and ``loss_fsopt`` are unchanged, so PRIALs stay comparable.
    (No ``rebuild_matrices``: the runner trains the K = 1 model without the spectrum
    term.)"""
    out = array_fields(data)
    G = torch.as_tensor(np.asarray(out["G"])).double()
    c = torch.as_tensor(np.asarray(out["c"])).double()
    K = G.shape[-1]
    if not 0 <= int(target) < K:
        raise ValueError(f"target must be in [0, {K}), got {target}")
    k = int(target)
    g, ck = G[:, k, k], c[:, k]
    w = torch.where(g > 0, ck / g.clamp_min(1e-300), torch.zeros_like(ck)).clamp(0.0, 1.0)
    out["G"] = G[:, k : k + 1, k : k + 1]
    out["c"] = c[:, k : k + 1]
    out["oracle_w"] = w[:, None]
    out["alpha_star"] = w
    return SimpleNamespace(**out, **_family_names(data))


def remap_anchors(
    anchors: Any, keep: Sequence[int] | None = None, target: int | None = None
) -> Any:
    """An explicit anchor list (``[feature, target, candidate]`` triples of
    :func:`shrinklab.models.network.resolve_anchors`) for a variant that keeps the feature
    columns ``keep`` (in that order) and/or only the shrinkage ``target``: each anchor's
    feature re-indexed (``-1``, a fixed corner, stays), anchors on a dropped feature or
    another target removed, candidates renumbered ``0 … G'−1`` in order; ``None`` when no
    anchor is left. ``"auto"``/``None`` are returned unchanged (the network resolves
    them for the variant's layout)."""
    if anchors is None or isinstance(anchors, str):
        return anchors
    pos = None if keep is None else {int(c): i for i, c in enumerate(keep)}
    out, groups = [], {}
    for f, t, g in ([int(a) for a in e] for e in anchors):
        if pos is not None and f != -1:
            if f not in pos:
                continue
            f = pos[f]
        if target is not None:
            if t != int(target):
                continue
            t = 0
        out.append([f, t, groups.setdefault(g, len(groups))])
    return out or None


def _pad(w: torch.Tensor, target: int | None, K: int) -> torch.Tensor:
    if target is None:
        return w
    full = torch.zeros(w.shape[0], K, dtype=w.dtype)
    full[:, target] = w[:, 0]
    return full


def real_volatility(
    model: Any,
    windows: Any,
    *,
    columns: Sequence[int] | None = None,
    target: int | None = None,
    periods_per_year: int = 252,
) -> dict[str, float]:
    """Out-of-sample GMV volatility of a model's estimate on real windows.

    For each window, ``Σ̂ = S + Σ_k w_k (T_k − S)`` with ``w`` the model's intensities
    (features restricted to ``columns``; a single-target model's α placed on
    ``target``), the GMV portfolio's realised variance over the holding period; then
    ``vol = √(periods · mean var)`` with a delta-method SE over windows, the same for
    Ledoit–Wolf, and ``ratio_lw = vol / vol_LW``.
    """

    items = [windows] if isinstance(windows, RealWindows) else list(windows)
    var, var_lw = [], []
    for rw in items:
        for g in rw:
            x = g.features
            if x is None:
                raise ValueError("windows need features")
            if columns is not None:
                x = x[:, torch.as_tensor(list(columns), dtype=torch.long)]
            regime = g.regime if getattr(model, "n_regimes", 0) > 0 else None
            out = model.predict(x.float(), regime)
            w = torch.as_tensor(out.intensities).detach().cpu().double()
            w = _pad(w, target, g.targets.shape[1])
            S, T, R = g.S.double(), g.targets.double(), g.realised.double()
            var.append(realised_gmv_variance(combine(S, T, w), R).numpy())
            var_lw.append(realised_gmv_variance(ledoit_wolf(g.X), R).numpy())
    v, vl = np.concatenate(var), np.concatenate(var_lw)
    n = len(v)
    vol = math.sqrt(periods_per_year * v.mean())
    se = math.sqrt(periods_per_year) * (v.std(ddof=1) / math.sqrt(n)) / (2 * math.sqrt(v.mean()))
    return {
        "real_vol": vol,
        "real_vol_se": float(se),
        "real_vol_lw": math.sqrt(periods_per_year * vl.mean()),
        "real_ratio_lw": vol / math.sqrt(periods_per_year * vl.mean()),
        "real_windows": n,
    }


def regime_model(model: MLShrinkageNetwork, n_regimes: int) -> MLShrinkageNetwork:
    """A copy of ``model`` with a market-regime embedding of ``n_regimes`` codes: every
    tensor whose shape is unchanged is copied; the first block (whose input grows by
    the embedding) keeps ``model``'s weights on the feature columns and starts at zero
    on the embedding's, so that the copy predicts exactly as ``model`` until it is
    trained. The embedding itself is freshly initialised."""
    if int(n_regimes) < 1:
        raise ValueError(f"n_regimes must be >= 1, got {n_regimes}")
    with torch.random.fork_rng():  # the caller's random stream is left as it was
        torch.manual_seed(0)
        out = MLShrinkageNetwork(**{**model.config, "n_regimes": int(n_regimes)})
    src, dst = model.state_dict(), out.state_dict()
    for name, t in dst.items():
        if name not in src:
            continue
        s = src[name]
        if s.shape == t.shape:
            dst[name] = s.clone()
        elif s.dim() == 2 and s.shape[0] == t.shape[0] and s.shape[1] < t.shape[1]:
            grown = torch.zeros_like(t)
            grown[:, : s.shape[1]] = s
            dst[name] = grown
        else:
            raise ValueError(f"cannot carry {name} from shape {tuple(s.shape)} to {tuple(t.shape)}")
    out.load_state_dict(dst)
    return out


def _n_regimes(windows: Any) -> int:
    items = [windows] if isinstance(windows, RealWindows) else list(windows)
    codes = [int(g.regime.max()) for rw in items for g in rw if g.regime is not None]
    if not codes:
        raise ValueError("the regime-inputs row needs windows built with regimes")
    return max(codes) + 1


# -------------------------------------------------------------------------- runner
def _key(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _fit(model_config, data, valid, cfg, out_dir: Path) -> tuple[Any, dict[str, Any]]:

    mcfg = dict(model_config)
    mcfg["input_dim"] = int(np.shape(data.features)[1])
    mcfg["num_targets"] = int(np.shape(data.oracle_w)[1])
    torch.manual_seed(int(cfg.seed))
    model = MLShrinkageNetwork(**mcfg)
    # resumable after a kill; the finished run's checkpoint is removed so that a rerun
    # trains afresh (and deterministically) instead of reloading its last epoch
    out = out_dir / _key({"model": mcfg, "train": dataclasses.asdict(cfg)})
    history = train(model, data, valid, cfg, out, resume=True)
    ck = checkpoint_path(out)
    if ck.is_file():
        ck.unlink()
    return model.cpu().eval(), history


def _predict(model: Any, features: Any) -> torch.Tensor:

    return predict_numpy(model, features).intensities


def run_ablation(
    train_set: Any,
    valid_set: Any,
    out_dir: str | Path,
    *,
    model_config: Mapping[str, Any] | None = None,
    train_config: Any = None,
    studies: Sequence[str] = ALL_STUDIES,
    feature_groups: Mapping[str, Sequence[str]] | None = None,
    feature_names: Sequence[str] | None = None,
    real: tuple[Any, Any] | None = None,
    finetune_config: Any = None,
    single_target_index: int = 0,
    component_weights: Mapping[str, float] | None = None,
    base_label: str = "",
) -> pd.DataFrame:
    """Train the full model and every ablation variant; return one row per variant.

    Parameters
    ----------
    train_set, valid_set : training-set-like objects (:class:`shrinklab.data.dataset.TrainingSet`).
    out_dir : folder for the runs' checkpoints/histories.
    model_config : :class:`~shrinklab.models.network.MLShrinkageNetwork` keyword arguments
        (``input_dim``/``num_targets`` are set per variant).
    train_config : the full model's :class:`~shrinklab.training.config.TrainConfig`.
    studies : subset of :data:`ALL_STUDIES`.
    feature_groups, feature_names : default :data:`FEATURE_GROUPS` and
        ``train_set.feature_names`` (or :data:`shrinklab.core.features.FEATURE_NAMES`).
    real : ``(train_windows, valid_windows)`` of real returns (``RealWindows`` or
        lists of them, with features): adds the real-data volatility columns and, with
        the ``pretraining`` study, the fine-tuning rows.
    finetune_config : TrainConfig of the fine-tuning runs (default: a short one).
    single_target_index : target of the single-target variant (0 = scaled identity).
    component_weights : TrainConfig weight → value for the ``components`` rows that
        switch a loss term or regulariser on (replacing :data:`COMPONENTS`' defaults);
        every key must be a weight of one of those rows.
    base_label : what the base configuration is (e.g. "the deployed member
        configuration"), written in the ``base`` column of every row.

    Returns
    -------
    DataFrame with columns ``study, variant, n_features, num_targets, prial, prial_se,
    delta_prial, delta_prial_se`` (vs the full model, paired), ``norm_loss, norm_loss_se``,
    ``best_epoch``, ``seconds``, ``base`` (``base_label``), ``epochs`` (of the row's
    training or fine-tuning run), ``n_train`` and, with ``real``, ``real_vol, real_vol_se,
    real_vol_lw, real_ratio_lw, real_windows``.
    """

    unknown = sorted(set(studies) - set(ALL_STUDIES))
    if unknown:
        raise ValueError(f"unknown studies {unknown}; choose from {ALL_STUDIES}")
    if "pretraining" in studies and real is None:
        raise ValueError("the 'pretraining' study needs real=(train_windows, valid_windows)")
    components = _component_overrides(component_weights)
    root = Path(out_dir)
    mcfg = dict(model_config or {})
    base = train_config or TrainConfig()
    names = feature_names or getattr(train_set, "feature_names", None)
    F = int(np.shape(train_set.features)[1])
    K = int(np.shape(train_set.oracle_w)[1])
    rows: list[dict[str, Any]] = []
    ref_w: dict[str, torch.Tensor] = {}

    def record(
        study: str,
        variant: str,
        model: Any,
        history: dict[str, Any] | None,
        seconds: float,
        columns: Sequence[int] | None = None,
        target: int | None = None,
        epochs: int | None = None,
    ) -> None:
        feats = valid_set.features
        if columns is not None:
            feats = drop_features(valid_set, sorted(set(range(F)) - set(columns))).features
        w = _pad(_predict(model, feats), target, K)
        if "full" in ref_w:
            prial, se, delta, dse = prial_with_se(w, valid_set, ref_w["full"])
        else:
            prial, se = prial_with_se(w, valid_set)
            delta, dse = 0.0, 0.0
            ref_w["full"] = w
        d = torch.as_tensor(np.asarray(valid_set.d)).double()

        nl = (quadratic_loss(w, valid_set.G, valid_set.c, d) / d.clamp_min(1e-300)).numpy()
        row = {
            "study": study,
            "variant": variant,
            "n_features": F if columns is None else len(columns),
            "num_targets": K if target is None else 1,
            "prial": prial,
            "prial_se": se,
            "delta_prial": delta,
            "delta_prial_se": dse,
            "norm_loss": float(nl.mean()),
            "norm_loss_se": float(nl.std(ddof=1) / math.sqrt(len(nl))),
            "best_epoch": int(history["best_epoch"]) if history else -1,
            "seconds": seconds,
            "base": base_label,
            "epochs": int(base.epochs if epochs is None else epochs),
            "n_train": int(np.shape(train_set.features)[0]),
        }
        if real is not None:
            row.update(real_volatility(model, real[1], columns=columns, target=target))
        rows.append(row)

    def fit(data, valid, cfg, tag, model_config=None):
        t0 = time.perf_counter()
        model, hist = _fit(model_config or mcfg, data, valid, cfg, root / tag)
        return model, hist, time.perf_counter() - t0

    fcfg = finetune_config or TrainConfig(
        lr=3e-4, epochs=10, batch_size=64, patience=3, seed=base.seed, device="cpu"
    )

    def finetune(study: str, variant: str, start: Any) -> None:
        t0 = time.perf_counter()
        h = finetune_on_real(
            start, real[0], real[1], fcfg, root / study / _key([variant, dataclasses.asdict(fcfg)]),
            resume=False,
        )  # fmt: skip
        record(study, variant, start.cpu().eval(), h, time.perf_counter() - t0, epochs=fcfg.epochs)

    full, hist, sec = fit(train_set, valid_set, base, "full")
    record("full", "full model", full, hist, sec)

    if "features" in studies:
        if names is None:
            names = FEATURE_NAMES
        if len(names) != F:
            raise ValueError(f"{len(names)} feature names for {F} feature columns")
        for group, cols in feature_group_indices(names, feature_groups).items():
            keep = [i for i in range(F) if i not in set(cols)]
            m, h, s = fit(
                drop_features(train_set, cols), drop_features(valid_set, cols), base, "features",
                {**mcfg, "anchors": remap_anchors(mcfg.get("anchors", "auto"), keep=keep)},
            )  # fmt: skip
            record("features", f"without {group}", m, h, s, columns=keep)

    if "loss" in studies:
        for comp in LOSS_COMPONENTS:
            if not getattr(base, comp, 0):
                continue
            cfg = dataclasses.replace(base, **{comp: 0.0})
            if cfg.intensity_weight == 0 and cfg.matrix_weight == 0:
                continue
            m, h, s = fit(train_set, valid_set, cfg, "loss")
            record("loss", f"without {comp}", m, h, s)

    if "targets" in studies:
        k = int(single_target_index)
        # the matrix-pool terms need all K targets' matrices: off for the K = 1 model
        cfg = base
        if base.uses_matrix_pool:
            cfg = dataclasses.replace(
                base, spectrum_weight=0.0, log_det_weight=0.0, portfolio_weight=0.0
            )
        # so does the best-classical term of the loss (the classical estimators are
        # points of the K-target family): the K = 1 model is trained on L/d alone
        if cfg.loss_normaliser == "sample_and_best_classical":
            cfg = dataclasses.replace(cfg, loss_normaliser="sample", best_classical_weight=0.0)
        m, h, s = fit(
            single_target(train_set, k), single_target(valid_set, k), cfg, "targets",
            {**mcfg, "anchors": remap_anchors(mcfg.get("anchors", "auto"), target=k)},
        )  # fmt: skip
        label = _target_names(K)[k]
        record("targets", f"single target ({label})", m, h, s, target=k)

    if "curriculum" in studies:
        if getattr(train_set, "difficulty", None) is None:
            raise ValueError("the 'curriculum' study needs train_set.difficulty")
        cfg = dataclasses.replace(base, curriculum=not base.curriculum)
        m, h, s = fit(train_set, valid_set, cfg, "curriculum")
        record("curriculum", "with curriculum" if cfg.curriculum else "without curriculum", m, h, s)

    if "pretraining" in studies:
        record("pretraining", "pretrained, not fine-tuned", full, None, 0.0)
        for variant, start in (
            ("pretrained + fine-tuned", copy.deepcopy(full)),
            ("scratch + fine-tuned", None),
        ):
            if start is None:
                torch.manual_seed(int(fcfg.seed))
                start = MLShrinkageNetwork(**full.config)
            finetune("pretraining", variant, start)

    if "components" in studies:
        for name, (net_over, cfg_over) in components.items():
            if name == "curriculum" and "curriculum" in studies:
                continue  # the curriculum study already has this row
            if any(getattr(base, k) for k in cfg_over) or any(mcfg.get(k) for k in net_over):
                continue  # on in the base configuration: nothing to switch on
            if name == "curriculum" and getattr(train_set, "difficulty", None) is None:
                raise ValueError("the curriculum row needs train_set.difficulty")
            m, h, s = fit(
                train_set,
                valid_set,
                dataclasses.replace(base, **cfg_over),
                "components",
                {**mcfg, **net_over},
            )
            record("components", f"with {name}", m, h, s)
        if real is not None and not full.config.get("n_regimes"):
            start = regime_model(full, _n_regimes(real[0]))
            finetune("components", "with regime inputs (fine-tuned)", start)

    return pd.DataFrame(rows)


def _component_overrides(
    weights: Mapping[str, float] | None,
) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """:data:`COMPONENTS` with the TrainConfig weights of ``weights`` put in."""
    weights = dict(weights or {})
    known = {k for _net, over in COMPONENTS.values() for k in over if k.endswith("_weight")}
    unknown = sorted(set(weights) - known)
    if unknown:
        raise ValueError(f"component_weights {unknown} are not weights of {sorted(known)}")
    bad = {k: v for k, v in weights.items() if not (math.isfinite(float(v)) and float(v) > 0)}
    if bad:
        raise ValueError(f"component_weights must be finite and > 0, got {bad}")
    return {
        name: (net, {k: float(weights.get(k, v)) for k, v in over.items()})
        for name, (net, over) in COMPONENTS.items()
    }


def _target_names(K: int) -> tuple[str, ...]:
    """Names of the K targets (:data:`shrinklab.core.targets.TARGET_NAMES` when K matches)."""

    return TARGET_NAMES if K == len(TARGET_NAMES) else tuple(str(i) for i in range(K))
