"""evaluation.selection."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from shrinklab.core.metrics import field_of, prial_of, prial_with_se, quadratic_loss
from shrinklab.data import dataset
from shrinklab.models.calibration import (
    check_levels,
    coverage_within_tolerance,
    gaussian_nll,
    reliability_curve,
)
from shrinklab.models.ensemble import EnsembleModel
from shrinklab.models.network import predict_numpy
from shrinklab.training.ensembles import alpha_star

__all__ = [
    "coverage_table",
    "prial_table",
    "reliability_curves",
    "select_ensemble",
    "best_classical_family_loss",
    "family_loss_table",
    "family_ratios",
]


def _level_tag(level: float) -> str:
    return f"{100 * level:g}".replace(".", "_")


def _calibration_inputs(
    model: Any, data: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """``(α, σ², α*, conformal scores or None)`` of ``model`` on ``data``."""
    out = predict_numpy(model, field_of(data, "features"))
    scores = None
    if isinstance(model, EnsembleModel) and model.has_conformal:
        scores = model.conformal_scores.cpu().numpy()
    return out.alpha.numpy(), out.log_var.exp().numpy(), alpha_star(data), scores


def coverage_table(
    models: Mapping[str, Any], data: Any, levels: Sequence[float] = (0.5, 0.9)
) -> pd.DataFrame:
    """Calibration of each model's intensity intervals on ``data`` (fields
    ``features``, ``oracle_w``; truth ``α* = Σ_k w*_k``), one row per model (index
    ``model``): ``temperature``, ``within_weight``, ``n_calibration`` (number of
    conformal scores, 0 if none), per level ``ℓ`` (tag ``50``, ``90``…) the observed
    coverage of the Gaussian (``gaussian_50``) and conformal (``conformal_50``; NaN
    without scores) intervals and their mean widths (``width_50_gaussian``,
    ``width_50_conformal``), the Gaussian NLL ``nll`` and ``n``. Use it on data that
    played no part in the calibration."""
    lv = check_levels(levels)
    rows = []
    for name, model in models.items():
        mu, var, y, scores = _calibration_inputs(model, data)
        row: dict[str, Any] = {
            "model": name,
            "temperature": float(getattr(model, "temperature", torch.tensor(1.0))),
            "within_weight": float(getattr(model, "within_weight", torch.tensor(1.0))),
            "n_calibration": 0 if scores is None else int(scores.size),
        }
        for method, sc in (("gaussian", None), ("conformal", scores)):
            if method == "conformal" and sc is None:
                curve = pd.DataFrame({"observed": np.nan, "mean_width": np.nan}, index=lv)
            else:
                curve = reliability_curve(mu, var, y, lv, scores=sc).set_index("nominal")
            for v in lv:
                row[f"{method}_{_level_tag(v)}"] = float(curve.loc[v, "observed"])
                row[f"width_{_level_tag(v)}_{method}"] = float(curve.loc[v, "mean_width"])
        row["nll"] = gaussian_nll(mu, var, y)
        row["n"] = int(y.size)
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def reliability_curves(
    models: Mapping[str, Any],
    data: Any,
    methods: Sequence[str] = ("conformal", "gaussian"),
    levels: Sequence[float] | None = None,
) -> dict[str, pd.DataFrame]:
    """:func:`reliability_curve` of each model on ``data`` for each interval method
    (``"conformal"``: skipped for a model without scores; ``"gaussian"``), keyed
    ``"name (method)"`` — the input of :func:`shrinklab.plots.reliability_diagram`."""
    bad = sorted(set(methods) - {"conformal", "gaussian"})
    if bad:
        raise ValueError(f"methods must be 'conformal' or 'gaussian', got {bad}")
    curves = {}
    for name, model in models.items():
        mu, var, y, scores = _calibration_inputs(model, data)
        for method in methods:
            if method == "conformal" and scores is None:
                continue
            sc = scores if method == "conformal" else None
            curves[f"{name} ({method})"] = reliability_curve(mu, var, y, levels, scores=sc)
    return curves


def _row_calibrated(row: pd.Series, levels: np.ndarray, n_se: float, one_sided: bool) -> bool:
    """:func:`coverage_within_tolerance` for a :func:`coverage_table` row (conformal
    coverage when the model has scores, else Gaussian)."""
    m = int(row["n_calibration"])
    method = "conformal" if m > 0 else "gaussian"
    cov = {float(v): float(row[f"{method}_{_level_tag(v)}"]) for v in levels}
    return coverage_within_tolerance(
        cov, int(row["n"]), n_calibration=m or None, n_se=n_se, one_sided=one_sided
    )


def select_ensemble(
    models: Mapping[str, Any],
    data: Any,
    *,
    levels: Sequence[float] = (0.5, 0.9),
    n_se: float = 3.0,
    one_sided: bool = True,
    tie_se: float = 1.0,
) -> tuple[str, pd.DataFrame]:
    """Choose the deployed model on held-out ``data`` (validation worlds not used for
    calibration): ``(name, table)``.

    1. *Calibration gate*: a model is ``calibrated`` when its interval coverage on
       ``data`` at every level (conformal when it has scores, else Gaussian) passes
       :func:`coverage_within_tolerance` with ``n_se`` standard errors (the calibration
       draw counted via its number of scores); with ``one_sided`` (default) only
       under-coverage fails: when ``data`` is the validation set that early stopping
       used, the members fit it a little better than fresh worlds and every kind
       over-covers it somewhat. If none passes, all are kept.
    2. *PRIAL*: among those, the best PRIAL and every model ``tied`` with it: whose
       PRIAL is below the best by at most ``tie_se`` paired standard errors
       (:func:`shrinklab.core.metrics.prial_with_se`, delta method on the same samples),
       and every model with a PRIAL above such a model's.
    3. *Sharpness*: among the tied, the narrowest mean interval at the highest level.

    "Maximise sharpness subject to calibration" [Gneiting, Balabdaoui & Raftery,
    "Probabilistic forecasts, calibration and sharpness", JRSS B 2007], with the
    covariance's PRIAL first because the covariance is the product. ``table`` (one row
    per model) holds ``prial``, ``prial_vs_best`` and its ``prial_vs_best_se``, the
    coverage and width columns of :func:`coverage_table`, ``calibrated``, ``tied``
    and ``chosen``.
    """

    if not models:
        raise ValueError("models is empty")
    if not math.isfinite(tie_se) or tie_se < 0:
        raise ValueError(f"tie_se must be finite and >= 0, got {tie_se}")
    lv = check_levels(levels)
    table = coverage_table(models, data, lv)
    w = {k: predict_numpy(m, field_of(data, "features")).intensities for k, m in models.items()}
    table["prial"] = [prial_with_se(w[k], data)[0] for k in table.index]
    table["calibrated"] = [_row_calibrated(row, lv, n_se, one_sided) for _, row in table.iterrows()]
    pool = [k for k in table.index if table.loc[k, "calibrated"]] or list(table.index)
    best = max(pool, key=lambda k: float(table.loc[k, "prial"]))
    gaps = {k: prial_with_se(w[k], data, reference_w=w[best])[2:] for k in table.index}
    table["prial_vs_best"] = [gaps[k][0] for k in table.index]
    table["prial_vs_best_se"] = [gaps[k][1] for k in table.index]
    close = [k for k in pool if k == best or gaps[k][0] >= -tie_se * gaps[k][1]]
    # monotone in PRIAL: a kind above a tied kind is tied too (a noisier kind must not
    # be tied while a better, steadier one is not)
    floor = min(float(table.loc[k, "prial"]) for k in close)
    table["tied"] = [k in pool and float(table.loc[k, "prial"]) >= floor for k in table.index]
    top = _level_tag(float(lv.max()))
    width = table[f"width_{top}_conformal"].fillna(table[f"width_{top}_gaussian"])
    chosen = str(width[table["tied"]].idxmin())
    table["chosen"] = table.index == chosen
    return chosen, table


def prial_table(
    models: Mapping[str, Any],
    data: Any,
    *,
    include_members: bool = True,
    extra_intensities: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """PRIAL of each model (and, for ensembles, each member) and the multi-target
    oracle on ``data`` (fields ``features, G, c, d, loss_fsopt, oracle_w``).

    ``extra_intensities`` adds rows from given intensities ``(N, K)`` (e.g. a
    classical estimator written in the family). Columns: ``model``, ``kind``
    (``model``/``member``/``oracle``/``reference``), ``prial``, ``mean_norm_loss``
    (mean of ``L(w)/d``).
    """
    feats = field_of(data, "features")
    d = torch.as_tensor(np.asarray(field_of(data, "d"))).double()
    rows: list[dict[str, Any]] = []

    def add(name: str, kind: str, w: Any) -> None:
        loss = quadratic_loss(w, field_of(data, "G"), field_of(data, "c"), d)
        rows.append(
            {
                "model": name,
                "kind": kind,
                "prial": prial_of(w, data),
                "mean_norm_loss": float((loss / d.clamp_min(1e-300)).mean()),
            }
        )

    for name, model in models.items():
        if include_members and isinstance(model, EnsembleModel):
            for i, out in enumerate(model.predict_members(feats)):
                add(f"{name}[{i}]", "member", out.intensities.double())
        add(name, "model", predict_numpy(model, feats).intensities)
    for name, w in (extra_intensities or {}).items():
        add(name, "reference", w)
    add("oracle", "oracle", field_of(data, "oracle_w"))
    return pd.DataFrame(rows)


def best_classical_family_loss(data: Any) -> dict[str, float]:
    """Per world family of ``data`` (a :class:`~shrinklab.data.dataset.TrainingSet`): the
    lowest mean Frobenius loss of a classical estimator over the family's worlds
    (:func:`shrinklab.data.dataset.classical_intensities`)."""

    fam = np.asarray(data.families)
    classical = [
        data.quadratic_loss(w).numpy() for w in dataset.classical_intensities(data).values()
    ]
    return {str(f): float(min(v[fam == f].mean() for v in classical)) for f in sorted(set(fam))}


def family_ratios(
    loss: Any, data: Any, best: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Per world family of ``data``: the mean of ``loss`` (one Frobenius loss per world)
    over the family's worlds divided by the family's best classical mean loss
    (``best``, computed by :func:`best_classical_family_loss` when not given).
    Below 1: better than every classical estimator in that family."""
    loss = np.asarray(loss, dtype=np.float64)
    fam = np.asarray(data.families)
    if loss.shape != fam.shape:
        raise ValueError(f"loss must have one entry per world ({fam.shape}), got {loss.shape}")
    best = best_classical_family_loss(data) if best is None else best
    return {f: float(loss[fam == f].mean() / b) for f, b in best.items()}


def family_loss_table(models: Mapping[str, Any], data: Any) -> pd.DataFrame:
    """One row per model (``predict(features) -> ShrinkageOutput``) on the worlds of
    ``data``: ``prial`` (pooled losses, against the sample covariance as in
    :func:`shrinklab.core.metrics.prial_of`), ``norm_loss`` (mean ``L/d``), the geometric
    mean of the family ratios and ``ratio_<family>`` (:func:`family_ratios`)."""

    best = best_classical_family_loss(data)
    rows = {}
    for name, model in models.items():
        w = model.predict(data.features).intensities.double()
        loss = data.quadratic_loss(w)
        ratios = family_ratios(loss.numpy(), data, best)
        rows[name] = {
            "prial": prial_of(w, data),
            "norm_loss": float((loss / data.d.double()).mean()),
            "geo_ratio": float(np.exp(np.mean(np.log(list(ratios.values()))))),
            **{f"ratio_{f}": r for f, r in ratios.items()},
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")
