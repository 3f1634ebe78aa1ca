"""evaluation.compression."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from shrinklab.core.features import extract_features
from shrinklab.core.metrics import (
    as_float64,
    field_of,
    normalised_prial,
    prial,
    quadratic_loss,
    ratio_of_means_se,
)
from shrinklab.models.compressed import count_parameters, model_file_size
from shrinklab.models.experts import GatedExpertModel
from shrinklab.models.guarded import checked_guard_spec, guard_of
from shrinklab.models.network import predict_numpy

__all__ = [
    "NON_MARKET_FAMILIES",
    "choose_deployable",
    "choose_final",
    "deployed_form",
    "expert_modules",
    "experts_rule",
    "feature_latency",
    "fold_delta",
    "gains",
    "grids_not_worse",
    "latency",
    "normalised_prial_delta",
    "not_worse",
    "server_rule",
    "tradeoff_table",
    "with_ensemble_for_non_market",
    "with_experts_of",
    "with_experts_replaced",
    "with_guarded_experts",
    "with_sole_servers",
    "without_guarded_experts",
    "with_mixing",
    "with_server_families_added",
    "with_server_for",
]


NON_MARKET_FAMILIES: tuple[str, ...] = ("discrete", "lognormal", "near_singular", "toeplitz")
"""Training families that no real market resembles (synthetic spectra and structures of
the shrinkage literature, not calibrated on returns): where the gate is sure of one of
them, the pretrained ensemble may serve (docs/decisions/0035-ensemble-for-non-market-families.md).
``block`` is not among them: sector blocks do look like a market, and the gate calls about
1 % of real 10-stock windows block worlds
(docs/decisions/0036-ensemble-for-non-market-families-without-block.md)."""


def latency(model: Any, features: Any, batch: int, repeats: int = 50, warmup: int = 5) -> float:
    """Median wall time (s) of ``model.predict`` on a batch of ``batch`` rows of
    ``features`` (rows repeated if needed), **per estimate** (divided by ``batch``)."""
    x = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    if x.shape[0] < batch:
        x = x.repeat(math.ceil(batch / x.shape[0]), 1)
    x = x[:batch].contiguous()
    for _ in range(warmup):
        model.predict(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.predict(x)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) / batch


def feature_latency(X: Any, repeats: int = 20, warmup: int = 2) -> float:
    """Median wall time (s) of :func:`shrinklab.core.features.extract_features` on one
    return window ``X (n, p)`` — the part of an end-to-end estimate that comes before
    the model (pass it to :func:`tradeoff_table` as ``feature_cost_s``)."""

    x = torch.as_tensor(np.asarray(X))
    if x.ndim != 2:
        raise ValueError(f"X must be one (n, p) return window, got shape {tuple(x.shape)}")
    for _ in range(warmup):
        extract_features(x)
    times = []
    for _ in range(int(repeats)):
        t0 = time.perf_counter()
        extract_features(x)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def tradeoff_table(
    models: Mapping[str, Any],
    eval_set: Any,
    *,
    lw_intensities: Any = None,
    reference: str = "ensemble",
    repeats: int = 50,
    feature_cost_s: float | None = None,
    min_family_size: int = 50,
    min_family_gain: float = 1.0,
) -> pd.DataFrame:
    """Size / speed / accuracy of each model on ``eval_set``.

    Columns: ``parameters``, ``nonzero_parameters`` (−1 where unknown),
    ``file_bytes``, ``latency_b1_s`` and ``latency_b1024_s`` (median seconds per
    estimate, features → intensities, this CPU), ``e2e_b1_s`` (plus
    ``feature_cost_s``, the cost of extracting one sample's features, when given),
    ``prial`` (%, pooled losses), ``norm_prial`` (%, per-world normalised losses,
    :func:`shrinklab.core.metrics.normalised_prial_of`) and
    ``gain_kept = (norm_PRIAL − norm_PRIAL_LW) / (norm_PRIAL_ref − norm_PRIAL_LW)``
    where ``lw_intensities (N, K)`` writes Ledoit–Wolf in the family (its intensity
    on the identity target; default: the stored ``eval_set.loss_lw`` of a
    :class:`shrinklab.data.dataset.TrainingSet`) and ``reference`` names the ensemble row;
    when ``eval_set`` has a ``family`` label per world, ``gain_kept_worst_family`` is
    the smallest ``gain_kept`` computed within one family, over the families with at
    least ``min_family_size`` worlds where the reference beats Ledoit–Wolf by at least
    ``min_family_gain`` normalised-PRIAL points (NaN if there is none).

    The gain is measured on normalised losses so that every world of the evaluation
    set counts the same: pooled over a mixture of worlds, PRIAL follows the few worlds
    with the largest losses, and a compressed model that is better there but worse
    in most worlds would look like it keeps (or beats) the reference's gain.
    """
    if reference not in models:
        raise ValueError(f"reference model {reference!r} not in models {list(models)}")
    feats = np.asarray(field_of(eval_set, "features"), dtype=np.float32)

    G, c = field_of(eval_set, "G"), field_of(eval_set, "c")
    d = np.asarray(field_of(eval_set, "d"), dtype=np.float64)
    fsopt = np.asarray(field_of(eval_set, "loss_fsopt"), dtype=np.float64)
    if lw_intensities is not None:
        lw_loss = quadratic_loss(lw_intensities, G, c, d).numpy()
    elif _optional(eval_set, "loss_lw") is not None:
        lw_loss = np.asarray(_optional(eval_set, "loss_lw"), dtype=np.float64)
    else:
        raise ValueError("give lw_intensities, or an eval_set with a loss_lw field")
    family = _optional(eval_set, "family")
    masks = _family_masks(np.asarray(family), len(d), min_family_size) if family is not None else {}

    def by_family(loss: np.ndarray) -> dict[Any, float]:
        return {f: normalised_prial(loss[m], d[m], fsopt[m]) for f, m in masks.items()}

    losses: dict[str, np.ndarray] = {}
    rows = []
    for name, model in models.items():
        w = predict_numpy(model, feats).intensities
        losses[name] = loss = quadratic_loss(w, G, c, d).numpy()
        lat1 = latency(model, feats, 1, repeats=repeats)
        row = {
            "model": name,
            "parameters": count_parameters(model),
            "nonzero_parameters": count_parameters(model, nonzero=True),
            "file_bytes": model_file_size(model),
            "latency_b1_s": lat1,
            "latency_b1024_s": latency(model, feats, 1024, repeats=max(3, repeats // 5)),
            "e2e_b1_s": lat1 + feature_cost_s if feature_cost_s is not None else float("nan"),
            "prial": prial(loss, d, fsopt),
            "norm_prial": normalised_prial(loss, d, fsopt),
        }
        rows.append(row)
    prial_lw, norm_prial_lw = prial(lw_loss, d, fsopt), normalised_prial(lw_loss, d, fsopt)
    table = pd.DataFrame(rows).set_index("model")
    denom = table.loc[reference, "norm_prial"] - norm_prial_lw
    if not denom > 0:
        warnings.warn(
            f"the reference {reference!r} does not beat Ledoit–Wolf (normalised PRIAL "
            f"{table.loc[reference, 'norm_prial']:.2f} vs {norm_prial_lw:.2f}); gain_kept is NaN",
            stacklevel=2,
        )
        table["gain_kept"] = float("nan")
    else:
        table["gain_kept"] = (table["norm_prial"] - norm_prial_lw) / denom
    if family is not None:
        lw_f, ref_f = by_family(lw_loss), by_family(losses[reference])
        fams = [f for f in ref_f if ref_f[f] - lw_f[f] >= min_family_gain]
        table["gain_kept_worst_family"] = [
            min(
                ((by_family(losses[name])[f] - lw_f[f]) / (ref_f[f] - lw_f[f]) for f in fams),
                default=float("nan"),
            )
            for name in table.index
        ]
    table.attrs["prial_lw"] = prial_lw
    table.attrs["norm_prial_lw"] = norm_prial_lw
    table.attrs["reference"] = reference
    return table


def _optional(data: Any, name: str) -> Any:
    """Field ``name`` of a mapping or an object, ``None`` when it has none."""
    return data.get(name) if isinstance(data, Mapping) else getattr(data, name, None)


def _family_masks(family: np.ndarray, n: int, min_size: int) -> dict[Any, np.ndarray]:
    """``{family label: boolean mask}`` of the families with at least ``min_size`` of
    the ``n`` worlds."""
    if family.shape != (n,):
        raise ValueError(f"family labels have shape {family.shape}, expected ({n},)")
    labels = [f for f in np.unique(family) if int((family == f).sum()) >= int(min_size)]
    return {f.item() if hasattr(f, "item") else f: family == f for f in labels}


def choose_deployable(
    table: pd.DataFrame,
    min_gain_kept: float = 0.99,
    reference: str | None = None,
    latency_col: str = "latency_b1_s",
    *,
    max_latency_ratio: float = 0.5,
    size_col: str = "nonzero_parameters",
    max_size_ratio: float = 0.5,
) -> tuple[str, str]:
    """The deployable model: among the models that keep at least ``min_gain_kept`` of
    the reference's gain over Ledoit–Wolf (``gain_kept`` of :func:`tradeoff_table`, on
    per-world normalised losses; and ``gain_kept_worst_family`` too, in every world
    family, when the table has it) *and* are clearly faster than it
    (``latency_col`` at most ``max_latency_ratio`` × the reference's) *or* clearly
    smaller (``size_col`` at most ``max_size_ratio`` × the reference's), the smallest
    by ``size_col`` (ties: higher ``norm_prial``, or ``prial`` without it, then name); the reference itself if there is
    none.

    Latency only gates (a factor of two does not flip with timing noise); size is
    deterministic, and the choice among the eligible models is by size, so rerunning
    the pipeline deploys the same model whenever the latency gate is not needed.
    Without ``size_col`` in the table only latency gates and the fastest eligible
    model is taken. Returns ``(name, reason)``.
    """
    reference = reference or table.attrs.get("reference", "ensemble")
    if reference not in table.index:
        raise ValueError(f"reference {reference!r} not in the table")
    for name, ratio in (
        ("max_latency_ratio", max_latency_ratio),
        ("max_size_ratio", max_size_ratio),
    ):
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"{name} must be in (0, 1], got {ratio}")
    ref_lat = float(table.loc[reference, latency_col])
    others = table.drop(index=reference)
    keeps_ok = others["gain_kept"] >= min_gain_kept
    where = ""
    if "gain_kept_worst_family" in others:
        # in every family as well: a pooled 99 % can hide a loss in most families that
        # one family where the compressed model is better makes up for
        worst = others["gain_kept_worst_family"]
        keeps_ok &= worst.isna() | (worst >= min_gain_kept)
        where = " overall and in every world family"
    keeps = others[keeps_ok]
    if keeps.empty:
        return reference, (
            f"no compressed model keeps >= {100 * min_gain_kept:.0f}% of the {reference}'s "
            f"PRIAL gain over Ledoit-Wolf{where}; deploying the {reference}"
        )
    faster = keeps[latency_col] <= max_latency_ratio * ref_lat
    smaller = (
        keeps[size_col] <= max_size_ratio * float(table.loc[reference, size_col])
        if size_col in keeps
        else pd.Series(False, index=keeps.index)
    )
    ok = keeps[faster | smaller]
    if ok.empty:
        return reference, (
            f"models keeping >= {100 * min_gain_kept:.0f}% of the gain are neither clearly faster "
            f"(<= {max_latency_ratio:g}x latency) nor clearly smaller (<= {max_size_ratio:g}x "
            f"{size_col}) than the {reference}; deploying the {reference}"
        )
    score = "norm_prial" if "norm_prial" in ok else "prial"
    if size_col in ok:
        order = ok.assign(_name=ok.index).sort_values(
            [size_col, score, "_name"], ascending=[True, False, True]
        )
        best, how = str(order.index[0]), f"the smallest ({size_col})"
    else:
        best, how = str(ok[latency_col].idxmin()), "the fastest"
    lat = float(ok.loc[best, latency_col])
    size = (
        f", {int(ok.loc[best, size_col])} vs {int(table.loc[reference, size_col])} {size_col}"
        if size_col in ok
        else ""
    )
    return best, (
        f"{best}, {how} of the models clearly faster or smaller than the {reference}, keeps "
        f"{100 * float(ok.loc[best, 'gain_kept']):.1f}% of its {score.replace('_', ' ')} gain over "
        f"Ledoit-Wolf ({score} {float(ok.loc[best, score]):.2f} vs "
        f"{float(table.loc[reference, score]):.2f}) "
        f"at {lat / ref_lat:.3f}x its latency "
        f"({lat * 1e6:.1f} vs {ref_lat * 1e6:.1f} us per estimate, batch 1){size}"
    )


def _per_fold_rel_vol(fold_rows: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    """Mean ``rel_vol`` over windows per fold (rows) and estimator (columns), checked:
    every one of ``models`` on every fold, at least two folds."""
    per_fold = fold_rows.groupby(["fold", "estimator"])["rel_vol"].mean().unstack("estimator")
    missing = [m for m in models if m not in per_fold]
    if missing:
        raise ValueError(f"candidates {missing} are not in the fold rows")
    if per_fold.isna().any().any() or len(per_fold) < 2:
        raise ValueError("need every candidate on every fold, and at least two folds")
    return per_fold


def _paired_delta(per_fold: pd.DataFrame, model: str, reference: str) -> tuple[pd.Series, float]:
    """Per-fold ``model − reference`` and the SE of its mean (sd/√folds)."""
    d = per_fold[model] - per_fold[reference]
    return d, float(d.std(ddof=1) / math.sqrt(len(d)))


def fold_delta(fold_rows: pd.DataFrame, model: str, reference: str) -> tuple[float, float, int]:
    """Mean paired difference ``model − reference`` over the folds of the per-fold mean
    ``rel_vol`` (percentage points of volatility relative to Ledoit–Wolf; rows of
    :func:`shrinklab.evaluation.universe_backtest.fold_backtest`), its SE and the number of
    folds: the fold part of :func:`experts_rule` and :func:`server_rule`."""
    d, se = _paired_delta(_per_fold_rel_vol(fold_rows, [reference, model]), model, reference)
    return float(d.mean()), se, int(len(d))


def choose_final(
    fold_rows: pd.DataFrame,
    incumbent: str,
    challengers: list[str],
    gain_kept: Mapping[str, float],
    *,
    min_gain_kept: float = 0.9,
) -> tuple[str, str, pd.DataFrame]:
    """The model written to ``final.pt`` (docs/decisions/0021-deploy-rule-cross-universe-folds.md).

    ``fold_rows``: :func:`shrinklab.evaluation.universe_backtest.fold_backtest` rows
    (``fold``, ``window``, ``estimator``, ``rel_vol`` = percent vs Ledoit–Wolf) on the
    pre-2016 cross-universe folds; ``gain_kept``: each challenger's share of the
    ensemble's normalised-PRIAL gain over Ledoit–Wolf on the synthetic validation
    worlds. Per fold, the mean ``rel_vol`` over windows; ``Δ`` = challenger −
    incumbent paired over folds. A challenger qualifies when ``mean Δ < −SE(Δ)``
    (SE = sd/√folds) and ``gain_kept >= min_gain_kept``; the qualifying one with the
    lowest mean wins, else the incumbent. Returns ``(name, reason, scores)``,
    ``scores`` one row per candidate: ``mean_rel_vol``, ``delta``, ``delta_se``,
    ``gain_kept``, ``qualifies``.
    """
    per_fold = _per_fold_rel_vol(fold_rows, [incumbent, *challengers])
    rows = []
    for name in [incumbent, *challengers]:
        d, se = _paired_delta(per_fold, name, incumbent)
        kept = float(gain_kept.get(name, float("nan"))) if name != incumbent else 1.0
        ok = name != incumbent and float(d.mean()) < -se and kept >= min_gain_kept
        rows.append(
            {
                "model": name,
                "mean_rel_vol": float(per_fold[name].mean()),
                "delta": float(d.mean()),
                "delta_se": se,
                "gain_kept": kept,
                "qualifies": bool(ok),
            }
        )
    scores = pd.DataFrame(rows).set_index("model")
    ok = scores[scores["qualifies"]]
    k = len(per_fold)
    if ok.empty:
        why = "; ".join(
            f"{n}: {r.delta:+.2f} +- {r.delta_se:.2f} % vol vs {incumbent}, gain kept {r.gain_kept:.2f}"
            for n, r in scores.drop(index=incumbent).iterrows()
        )
        return (
            incumbent,
            (
                f"{incumbent}: no challenger is lower by more than one SE over {k} folds "
                f"with >= {min_gain_kept:.0%} of the gain on the validation worlds ({why})"
            ),
            scores,
        )
    best = str(ok["mean_rel_vol"].idxmin())
    r = scores.loc[best]
    return (
        best,
        (
            f"{best}: {r.delta:+.2f} +- {r.delta_se:.2f} % GMV volatility vs {incumbent} over {k} "
            f"pre-2016 cross-universe folds, keeps {r.gain_kept:.2f} of the gain on the validation worlds"
        ),
        scores,
    )


def not_worse(delta: float, se: float, tolerance: float = 0.01) -> bool:
    """The fold part of the rules of decisions 0033–0044: a paired difference (candidate −
    reference, points of volatility relative to Ledoit–Wolf) at most max(1 SE, tolerance)."""
    return delta <= max(se, float(tolerance))


def gains(delta: float, se: float) -> bool:
    """The synthetic part of those rules: a paired PRIAL gain, positive and above its SE."""
    return delta > 0 and delta > se


def experts_rule(
    fold_rows: pd.DataFrame,
    network: str,
    gated: str,
    valid_delta: float,
    valid_delta_se: float,
    *,
    tolerance: float = 0.01,
) -> tuple[bool, str, dict[str, float]]:
    """Whether the deployed ``network`` gets the family experts behind the gate (the
    model ``gated``): docs/decisions/0033-family-experts-in-final.md.

    ``fold_rows`` as for :func:`choose_final` (both models on every fold); per fold the
    mean ``rel_vol`` over windows, ``Δ`` = gated − network paired over folds. Rule:
    (1) ``mean Δ ≤ max(SE(Δ), tolerance)`` (percentage points of volatility relative to
    Ledoit–Wolf) and (2) ``valid_delta``, the paired PRIAL difference gated − network
    on the synthetic validation worlds (points), positive and above ``valid_delta_se``.
    Returns ``(deploy_gated, reason, numbers)``."""
    mean, se, n_folds = fold_delta(fold_rows, gated, network)
    if not (math.isfinite(valid_delta) and math.isfinite(valid_delta_se) and valid_delta_se >= 0):
        raise ValueError(
            f"valid_delta and a non-negative valid_delta_se must be finite, got "
            f"{valid_delta!r}, {valid_delta_se!r}"
        )
    folds_ok = not_worse(mean, se, tolerance)
    valid_ok = gains(valid_delta, valid_delta_se)
    numbers = {
        "fold_delta": mean, "fold_delta_se": se, "folds": n_folds,
        "valid_prial_delta": float(valid_delta), "valid_prial_delta_se": float(valid_delta_se),
        "rule1_folds": bool(folds_ok), "rule2_valid": bool(valid_ok),
    }  # fmt: skip
    deploy = bool(folds_ok and valid_ok)
    reason = (
        f"{gated if deploy else network}: folds {gated} − {network} {mean:+.3f} ± {se:.3f} % vol "
        f"({'ok' if folds_ok else 'worse'}), validation PRIAL {valid_delta:+.2f} ± "
        f"{valid_delta_se:.2f} ({'gain' if valid_ok else 'no gain by 1 SE'})"
    )
    return deploy, reason, numbers


def with_experts_of(general: Any, source: GatedExpertModel) -> GatedExpertModel:
    """``general`` with the family experts, gate and threshold of ``source``: the deployed
    network with the ensemble's experts (docs/decisions/0033-family-experts-in-final.md).
    The experts and the gate are shared with ``source``, not copied."""
    if not isinstance(source, GatedExpertModel):
        raise TypeError(f"source must be a GatedExpertModel, got {type(source).__name__}")
    if isinstance(general, GatedExpertModel):
        raise TypeError("general already has experts: attach them to its general model")
    # a guarded expert keeps its guard (decision 0058); a new general model: no pooling
    return source.with_changes(general=general, pool_shared=False)


def with_server_for(
    model: GatedExpertModel, server: Any, families: Sequence[str], *, pooled: bool = False
) -> GatedExpertModel:
    """``model`` with one more module, ``server``, behind its gate for each of ``families``
    (families of the gate without an expert): where the gate gives one of them more than
    the threshold, ``server`` serves (docs/decisions/0035-ensemble-for-non-market-families.md:
    the pretrained ensemble for the non-market families); with ``pooled``, where the gate
    gives them *together* more than the threshold
    (:func:`shrinklab.models.experts.choose_expert`; decision 0043). The gate, threshold,
    general model and experts are shared with ``model``, not copied."""
    if not isinstance(model, GatedExpertModel):
        raise TypeError(f"model must be a GatedExpertModel, got {type(model).__name__}")
    families = [str(f) for f in families]
    if not families or len(set(families)) != len(families):
        raise ValueError(f"families must be distinct and non-empty, got {families}")
    unknown = sorted(set(families) - set(model.gate.families))
    taken = sorted(set(families) & set(model.expert_families))
    if unknown or taken:
        raise ValueError(
            f"families {unknown} are not among the gate's {model.gate.families}"
            if unknown
            else f"families {taken} already have an expert"
        )
    experts = model.expert_map() | dict.fromkeys(families, server)
    return model.with_changes(experts=experts, pool_shared=pooled)


def with_mixing(model: GatedExpertModel, mixing: str) -> GatedExpertModel:
    """``model``'s modules, gate and threshold combined by ``mixing`` (``"hard"``: the
    switch; ``"soft"``: the gate-weighted average of the modules' intensities, decision
    0044; :class:`shrinklab.models.experts.GatedExpertModel`). Shares the modules, does
    not copy them."""
    if not isinstance(model, GatedExpertModel):
        raise TypeError(f"model must be a GatedExpertModel, got {type(model).__name__}")
    return model.with_changes(mixing=mixing)


def expert_modules(model: Any, families: Sequence[str]) -> dict[str, Any]:
    """``{family: the module of model that serves it}`` for each of ``families``, with a
    clear error when ``model`` is not a gated model or has no expert for one of them (the
    experts that decision 0045 fine-tunes); no families: ``{}``, whatever the model."""
    if not families:
        return {}
    if not isinstance(model, GatedExpertModel):
        raise TypeError(f"model must be a GatedExpertModel, got {type(model).__name__}")
    experts = model.expert_map()
    missing = sorted(set(families) - set(experts))
    if missing:
        raise ValueError(f"the model has no expert for {missing} (it has {sorted(experts)})")
    return {str(f): experts[f] for f in families}


def with_experts_replaced(model: GatedExpertModel, experts: Mapping[str, Any]) -> GatedExpertModel:
    """``model`` with the module that serves each family of ``experts`` replaced by the
    given one (decision 0045: the S&P expert fine-tuned on real returns); a module that
    serves several families is replaced for all of them. The gate, threshold, pooling,
    mixing and the other modules are shared with ``model``, not copied."""
    if not isinstance(model, GatedExpertModel):
        raise TypeError(f"model must be a GatedExpertModel, got {type(model).__name__}")
    old = expert_modules(model, list(experts))
    replaced = {id(old[f]): new for f, new in experts.items()}
    current = model.expert_map()
    return model.with_changes(experts={f: replaced.get(id(m), m) for f, m in current.items()})


def with_ensemble_for_non_market(
    model: GatedExpertModel, ensemble: Any, *, pooled: bool = True
) -> GatedExpertModel:
    """``model`` with ``ensemble``'s general model serving the worlds the gate calls
    non-market, i.e. where the total probability of :data:`NON_MARKET_FAMILIES` passes the
    threshold (decision 0043; ``pooled=False``: where one of them does, decision 0036;
    :func:`with_server_for`): how ``final.pt`` is assembled from the fine-tuned network
    with the experts (:func:`with_experts_of`), in notebook 05 and in the studies that
    rebuild it."""
    return with_server_for(model, ensemble.general, NON_MARKET_FAMILIES, pooled=pooled)


def with_server_families_added(
    model: GatedExpertModel, families: Sequence[str]
) -> GatedExpertModel:
    """``model`` with its non-market server (the module that serves
    :data:`NON_MARKET_FAMILIES`, :func:`with_ensemble_for_non_market`) serving ``families``
    too: in the soft mixture it then weighs the gate's probability of those families as well
    (the research log's "pretrained ensemble for the diversified worlds", an exploration
    that ``final.pt`` did not adopt). The gate, threshold, pooling, mixing and modules are shared with
    ``model``, not copied; no families: ``model`` itself."""
    if not isinstance(model, GatedExpertModel):
        raise TypeError(f"model must be a GatedExpertModel, got {type(model).__name__}")
    families = [str(f) for f in families]
    if not families:
        return model
    current = model.expert_map()
    missing = sorted(set(NON_MARKET_FAMILIES) - set(current))
    if missing or len({id(current[f]) for f in NON_MARKET_FAMILIES}) != 1:
        raise ValueError(
            "the model has no single module serving the non-market families "
            f"{list(NON_MARKET_FAMILIES)} (missing: {missing}); build it with "
            "with_ensemble_for_non_market first"
        )
    unknown = sorted(set(families) - set(model.gate.families))
    taken = sorted(set(families) & set(current))
    if unknown or taken or len(set(families)) != len(families):
        raise ValueError(
            f"families {families} must be distinct gate families without a module "
            f"(not among the gate's: {unknown}; already served: {taken})"
        )
    server = current[NON_MARKET_FAMILIES[0]]
    return model.with_changes(experts=current | dict.fromkeys(families, server))


def with_guarded_experts(
    model: GatedExpertModel, guarded: Mapping[str, tuple[Any, Mapping[str, Any]]]
) -> GatedExpertModel:
    """``model`` (a soft mixture) with each expert of ``guarded`` (``{family: (module,
    {threshold, max_p_over_n})}``, :func:`shrinklab.models.guarded.load_guarded_experts`)
    serving its family behind its guard (decision 0058): the gate's probability of the
    family counts for the expert only where it exceeds the threshold and p/n is at most
    the limit; elsewhere it stays where it was in ``model``: with the module that served
    the family (through another family that module serves), or with the general model
    where none did. The gate, threshold, pooling and the other modules are shared with
    ``model``, not copied; no guarded experts: ``model`` itself."""
    if not guarded:
        return model
    if not isinstance(model, GatedExpertModel) or model.mixing != "soft":
        raise ValueError("guarded experts need a gated model with the soft mixture (decision 0044)")
    current = model.expert_map()
    experts, guards = dict(current), dict(model.guards)
    for family, (module, spec) in guarded.items():
        family = str(family)
        if family not in model.gate.families:
            raise ValueError(f"{family!r} is not among the gate's families {model.gate.families}")
        if family in model.guards:
            raise ValueError(f"{family!r} already has a guarded expert")
        fallback = None
        if family in current:
            fallback = next(
                (f for f, m in current.items() if f != family and m is current[family]), None
            )
            if fallback is None:
                raise ValueError(
                    f"{family!r} has an expert of its own; a guarded expert replaces only a "
                    "module that serves other families too"
                )
        experts[family] = module
        guards[family] = guard_of(checked_guard_spec(family, spec), fallback)
    return model.with_changes(experts=experts, guards=guards)


def without_guarded_experts(model: GatedExpertModel) -> GatedExpertModel:
    """``model`` without its guarded experts (the inverse of :func:`with_guarded_experts`):
    each guarded family back with its fallback's module, or with no module (the general
    model) where the fallback is ``None``. A ``final.pt`` from before decision 0058 is
    this of the current one; a model without guards: itself."""
    if not isinstance(model, GatedExpertModel):
        raise TypeError(f"model must be a GatedExpertModel, got {type(model).__name__}")
    if not model.guards:
        return model
    current = model.expert_map()
    experts = {f: m for f, m in current.items() if f not in model.guards}
    for family, guard in model.guards.items():
        if guard["fallback"] is not None:
            experts[family] = current[guard["fallback"]]
    order = [f for f in current if f in experts]  # the families' order, as before 0058
    return model.with_changes(experts={f: experts[f] for f in order}, guards=None)


def with_sole_servers(
    model: GatedExpertModel, servers: Mapping[str, Mapping[str, Any]]
) -> GatedExpertModel:
    """``model`` (a soft mixture) with the module of each family of ``servers``
    (``{family: {threshold, max_p_over_n}}``, as ``params.yaml`` states it) taking the
    whole weight where the gate's probability of the family exceeds the threshold (at
    least 0.5) and p/n is at most the limit (``None``: no limit); elsewhere the mixture
    is unchanged (decision 0075, :func:`shrinklab.models.experts.apply_sole`). The
    modules, gate and guards are shared with ``model``; no servers: ``model`` itself."""
    if not servers:
        return model
    if not isinstance(model, GatedExpertModel) or model.mixing != "soft":
        raise ValueError("sole servers need a gated model with the soft mixture (decision 0044)")
    sole = dict(model.sole)
    for family, spec in servers.items():
        checked = checked_guard_spec(str(family), spec)
        limit = checked["max_p_over_n"]
        sole[str(family)] = {
            "threshold": checked["threshold"],
            "max_log_ratio": None if limit is None else math.log(limit),
        }
    return model.with_changes(sole=sole)


def deployed_form(
    model: GatedExpertModel,
    mixing: str,
    tuned_experts: Mapping[str, Any] | None = None,
    extra_server_families: Sequence[str] = (),
    guarded_experts: Mapping[str, tuple[Any, Mapping[str, Any]]] | None = None,
    sole_servers: Mapping[str, Mapping[str, Any]] | None = None,
) -> GatedExpertModel:
    """The form in which ``final.pt`` deploys a gated model: its modules combined by
    ``mixing`` (:func:`with_mixing`, decision 0044), the experts of ``tuned_experts``
    replaced by their fine-tuned versions (:func:`with_experts_replaced`, decision 0045),
    the non-market server serving ``extra_server_families`` too
    (:func:`with_server_families_added`; none in ``final.pt``) and the experts of
    ``guarded_experts`` behind their guards (:func:`with_guarded_experts`, decision 0058;
    soft mixing only) and the sole servers of ``sole_servers`` (:func:`with_sole_servers`,
    decision 0075). Notebook 05 and the studies that rebuild ``final.pt`` assemble it
    here."""
    form = with_mixing(model, mixing)
    if tuned_experts:
        form = with_experts_replaced(form, tuned_experts)
    form = with_server_families_added(form, extra_server_families)
    form = with_guarded_experts(form, guarded_experts or {})
    return with_sole_servers(form, sole_servers or {})


def normalised_prial_delta(w: Any, reference_w: Any, data: Any) -> tuple[float, float]:
    """Paired difference of the normalised PRIAL (:func:`shrinklab.core.metrics.normalised_prial`,
    every world weighs the same) of intensities ``w`` minus ``reference_w`` on ``data``
    (``G, c, d, loss_fsopt``), in points, and its standard error over the worlds (delta
    method, :func:`shrinklab.core.metrics.ratio_of_means_se`)."""
    G, c = field_of(data, "G"), field_of(data, "c")
    d = as_float64(field_of(data, "d"))
    dn = d.numpy()
    fs = as_float64(field_of(data, "loss_fsopt")).numpy()
    loss = quadratic_loss(w, G, c, d).numpy()
    loss_ref = quadratic_loss(reference_w, G, c, d).numpy()
    delta, se = ratio_of_means_se((loss_ref - loss) / dn, 1.0 - fs / dn)
    return 100.0 * delta, 100.0 * se


def grids_not_worse(before: Mapping[str, float], after: Mapping[str, float]) -> bool:
    """The grid part of the rules of decisions 0035, 0036, 0043 and 0044: ``after`` fails in
    no more scenarios of the selection and wide grids than ``before`` and its mean PRIAL is
    not lower (``grid_fails`` and ``grid_mean_prial`` of
    :func:`shrinklab.studies.selection_grid.grid_scores` for each)."""
    return int(after["grid_fails"]) <= int(before["grid_fails"]) and float(
        after["grid_mean_prial"]
    ) >= float(before["grid_mean_prial"])


def server_rule(
    fold_rows: pd.DataFrame,
    model: str,
    candidate: str,
    valid_delta: float,
    valid_delta_se: float,
    grid_model: Mapping[str, float],
    grid_candidate: Mapping[str, float],
    *,
    tolerance: float = 0.01,
) -> tuple[bool, str, dict[str, Any]]:
    """Whether ``candidate`` (the deployed ``model`` with the pretrained ensemble serving
    the non-market families) replaces it: docs/decisions/0035-ensemble-for-non-market-families.md.

    (1) and (2) are :func:`experts_rule`'s, with ``valid_delta`` the paired *normalised*
    PRIAL difference candidate − model on the synthetic validation worlds
    (:func:`normalised_prial_delta`); (3) on the selection and wide grids
    (``grid_fails`` and ``grid_mean_prial`` of
    :func:`shrinklab.studies.selection_grid.grid_scores` for each), the candidate fails in
    no more scenarios and its mean PRIAL is not lower. Returns ``(deploy, reason, numbers)``."""
    _, _, numbers = experts_rule(
        fold_rows, model, candidate, valid_delta, valid_delta_se, tolerance=tolerance
    )
    for name, grid in (("grid_model", grid_model), ("grid_candidate", grid_candidate)):
        missing = {"grid_fails", "grid_mean_prial"} - set(grid)
        if missing:
            raise ValueError(f"{name} lacks {sorted(missing)}")
    fails, fails0 = int(grid_candidate["grid_fails"]), int(grid_model["grid_fails"])
    mean, mean0 = float(grid_candidate["grid_mean_prial"]), float(grid_model["grid_mean_prial"])
    grid_ok = grids_not_worse(grid_model, grid_candidate)
    numbers = numbers | {
        "grid_fails": fails, "grid_fails_before": fails0,
        "grid_mean_prial": mean, "grid_mean_prial_before": mean0, "rule3_grids": bool(grid_ok),
    }  # fmt: skip
    deploy = bool(numbers["rule1_folds"] and numbers["rule2_valid"] and grid_ok)
    reason = (
        f"{candidate if deploy else model}: folds {candidate} − {model} "
        f"{numbers['fold_delta']:+.3f} ± {numbers['fold_delta_se']:.3f} % vol "
        f"({'ok' if numbers['rule1_folds'] else 'worse'}), validation normalised PRIAL "
        f"{valid_delta:+.2f} ± {valid_delta_se:.2f} "
        f"({'gain' if numbers['rule2_valid'] else 'no gain by 1 SE'}), grids {fails0} → {fails} "
        f"failures, mean PRIAL {mean0:.2f} → {mean:.2f} ({'ok' if grid_ok else 'worse'})"
    )
    return deploy, reason, numbers
