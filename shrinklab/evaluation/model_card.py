"""The bundled model and its model card (Mitchell et al. 2019, "Model Cards for Model
Reporting"): the pipeline's last stage copies the deployed model into the package
(:mod:`shrinklab.models.bundled`) and writes, beside it, what a user needs to judge it —
training data and period, feature schema, version, sha256, headline metrics with their
standard errors, intended use and limits. Every number comes from the evaluation
metrics of the same run."""

from __future__ import annotations

import hashlib
import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shrinklab.core.volatility_timing import timing_of_extra
from shrinklab.models.persistence import load_model_payload

__all__ = ["bundle_model", "model_card", "sha256_of"]

FINAL = "ML (final)"


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _prial_rows(metrics: Mapping[str, Any]) -> list[str]:
    rows = []
    for row in metrics["headline"]["rows"]:
        setting, metric, best, learned, diff = row[:5]
        if metric == "PRIAL %":
            rows.append(f"| {setting} | {learned} | {best} | {diff} |")
    return rows


def _backtest_rows(metrics: Mapping[str, Any], key: str = "backtest") -> list[str]:
    rows = []
    for cell, r in sorted(metrics[key].items(), key=lambda kv: int(kv[0].split("/")[0])):
        window, name = cell.split("/", 1)
        if name != FINAL:
            continue
        lw = metrics[key].get(f"{window}/ledoit_wolf", {})
        rows.append(
            f"| {window} | {100 * r['ann_vol']:.2f} | {100 * lw.get('ann_vol', float('nan')):.2f} | "
            f"{100 * r['diff_vs_benchmark']:+.2f} [{100 * r['ci_low']:+.2f}, {100 * r['ci_high']:+.2f}]"
            f" | {r['p_value']:.3f} |"
        )
    return rows


def _variance_forecast_rows(metrics: Mapping[str, Any]) -> list[str]:
    cells = [(*cell.split("/", 2), r) for cell, r in metrics.get("variance_forecast", {}).items()]
    return [
        f"| {universe} | {window} | {r['qlike']:.3f} | "
        f"{r['difference']:+.3f} ± {r['difference se']:.3f} |"
        for universe, window, name, r in sorted(cells, key=lambda c: (c[0], int(c[1])))
        if name == FINAL
    ]


def _later_sections(metrics: Mapping[str, Any]) -> list[str]:
    """The card's sections for the ETF backtest and the variance forecasts, where the
    metrics have them (evaluation runs before they existed do not)."""
    lines: list[str] = []
    if metrics.get("backtest_etf"):
        lines += [
            "## Global-minimum-variance backtest, five factor ETFs and the S&P 500 index, 2016–2022",
            "A second universe of the test period (p = 6), as above.",
            "",
            "| window | this model | Ledoit–Wolf | difference [95 % CI] | p |",
            "|---|---|---|---|---|",
            *_backtest_rows(metrics, "backtest_etf"),
            "",
        ]
    rows = _variance_forecast_rows(metrics)
    if rows:
        lines += [
            "## Variance forecasts, 2016–2022",
            "Each asset's variance forecast (the diagonal of Σ̂) against the mean squared "
            "return of the next 21 days, by Patton's (2011) QLIKE (0 = perfect; "
            "`shrinklab.evaluation.variance_forecast`); difference to Ledoit–Wolf ± SE over "
            "the rebalance dates.",
            "",
            "| universe | window | QLIKE | difference |",
            "|---|---|---|---|",
            *rows,
            "",
        ]
    return lines


def _gated_config(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    """The config of the gated model in a model file: its own, or its near model's in a
    ``domain_switch`` file (:class:`shrinklab.models.switched.SwitchedModel`)."""
    config = payload.get("config", {})
    if payload.get("kind") == "domain_switch":
        return config["near"]["config"]
    return config


def _fund_switch(payload: Mapping[str, Any]) -> list[str]:
    """The line on decision 0068's switch of a ``domain_switch`` file (none otherwise)."""
    if payload.get("kind") != "domain_switch":
        return []
    info = dict(payload.get("extra", {}).get("fund_switch", {}))
    families = ", ".join(info.get("synthetic_families", [])) or "some"
    share = info.get("share_valid_worlds")
    served = "" if share is None else f" ({100 * share:.1f} % of the synthetic validation worlds)"
    scale = float(payload.get("config", {}).get("far_scale", 1.0))
    scaled = (
        ""
        if scale == 1.0
        else f"; there its shrinkage intensity α is multiplied by {scale:g} (docs/decisions/0069)"
    )
    return [
        "- Windows most like universes of diversified funds are served with the pretrained "
        "network (synthetic worlds only) in place of the fine-tuned one, the experts and the "
        "gate unchanged: a quadratic discriminant of the window's features with three "
        "classes — the windows of stock-based universes of the 20 stocks, of funds of those "
        f"stocks, and the synthetic training worlds of the {families} families — picks "
        f"them where the fund class is the most likely{served} (docs/decisions/0068){scaled}."
    ]


def _gaussian_move(payload: Mapping[str, Any]) -> list[str]:
    """The line on decision 0073's step of a ``domain_switch`` file that has it."""
    step = (
        payload.get("config", {}).get("gaussian")
        if payload.get("kind") == "domain_switch"
        else None
    )
    if not step:
        return []
    info = dict(payload.get("extra", {}).get("gaussian_move", {}))
    share = info.get("share_valid_worlds")
    served = "" if share is None else f" ({100 * share:.1f} % of the synthetic validation worlds)"
    return [
        f"- Windows whose tails pre-test as Gaussian{served} move {float(step['share']):g} of "
        "the identity target's intensity to the QIS target: the assets' mean excess kurtosis "
        f"at most {float(step['z']):g} normal-theory standard errors above its mean under "
        f"normality, that standard error at most {float(step['se']):g} (many assets and "
        "observations; docs/decisions/0073). No real window of this repository passes it."
    ]


def _long_fund_qis(payload: Mapping[str, Any]) -> list[str]:
    """The line on decision 0074's step of a ``domain_switch`` file that has it."""
    step = (
        payload.get("config", {}).get("long_fund_qis")
        if payload.get("kind") == "domain_switch"
        else None
    )
    if not step:
        return []
    return [
        f"- Fund-like windows of at least {float(step['n']):g} observations move "
        f"{float(step['share']):g} of every target weight to the QIS target, which shrinks "
        "less than the linear targets (docs/decisions/0074)."
    ]


def _training_data(extra: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """What the deployed model was trained on: the synthetic worlds only, or (when the
    deploy rule chose the fine-tuned network, with or without the family experts of
    decision 0033, and with the pretrained ensemble for the non-market worlds of decision
    0035, firing on their pooled probability when ``config`` says so: decision 0043; or all
    of them averaged by the gate, decision 0044, with the experts of ``extra``'s
    ``finetuned_experts`` fine-tuned too, decision 0045) those and the pre-2016 real
    returns."""
    chosen = extra.get("chosen")
    if chosen in ("finetuned", "finetuned_experts", "finetuned_experts_ensemble"):
        experts = []
        if chosen != "finetuned" and config.get("mixing") == "soft":
            server = (
                " and the pretrained ensemble of five networks (synthetic worlds only) for the "
                "families no market resembles (discrete, lognormal, near-singular, Toeplitz)"
                if chosen == "finetuned_experts_ensemble"
                else ""
            )
            experts.append(
                "- Family experts (factor, sp500, 1/3/10 worlds), each trained on that "
                f"family's synthetic worlds only,{server} join the network above: each "
                "module's intensities α π weigh with a family classifier's (the gate's) "
                "probability of the families it serves, the network above with the rest "
                "(docs/decisions/0014, 0033" + (", 0035, 0036, 0043" if server else "") + ", 0044)."
            )
            tuned = list(extra.get("finetuned_experts", []))
            if tuned:
                experts.append(
                    f"- The members of the {', '.join(tuned)} expert"
                    + ("s" if len(tuned) > 1 else "")
                    + " were then fine-tuned on the same pre-2016 real returns by the "
                    "network's recipe, rehearsing their own family's synthetic worlds "
                    "(docs/decisions/0045)."
                )
            for family, guard in dict(config.get("guards", {})).items():
                limit = guard.get("max_log_ratio")
                in_range = "" if limit is None else f" and p/n is at most {math.exp(limit):.3g}"
                before = (
                    "the module that served it before"
                    if guard.get("fallback") is not None
                    else "the network above"
                )
                experts.append(
                    f"- An expert for the {family} worlds (trained like the family experts, "
                    f"on those worlds only) takes the gate's probability of {family} where it "
                    f"exceeds {guard['threshold']:g}{in_range} (the training worlds' range); "
                    f"elsewhere {before} keeps it (docs/decisions/0058)."
                )
        elif chosen != "finetuned":
            experts.append(
                "- Family experts (factor, sp500, 1/3/10 worlds), each trained on that "
                "family's synthetic worlds only, serve the samples that a family classifier "
                "(the gate) is more than 70 % sure of; every other sample gets the network "
                "above (docs/decisions/0014, 0033)."
            )
        if chosen == "finetuned_experts_ensemble" and config.get("mixing") != "soft":
            which = (
                "that a world is one of the families no market resembles (discrete, "
                "lognormal, near-singular, Toeplitz; their probabilities added up)"
                if config.get("pool_shared")
                else "of a world family that no market resembles (discrete, lognormal, "
                "near-singular, Toeplitz)"
            )
            experts.append(
                f"- Where the gate is more than 70 % sure {which}, the pretrained ensemble of "
                "five networks (synthetic worlds only) serves (docs/decisions/0035, 0036"
                + (", 0043)." if config.get("pool_shared") else ").")
            )
        return [
            "- Pretrained on synthetic worlds with a known covariance (the `data_prep` stage "
            "of `params.yaml`: world families, p, n and p/n ranges), then fine-tuned on the "
            "realised out-of-sample GMV variance of the 20 bundled S&P 500 stocks (and, "
            "when the `finetune` stage says so, derived long-only portfolios of them), every "
            "window ending before 2016, with replay of the pretraining loss on the "
            "synthetic worlds, and the weights of several fine-tuning seeds averaged (the "
            "`finetune` stage; docs/decisions/0016, 0025, 0041, 0042).",
            *experts,
            "- Real data before 2016 also serves for validation (cross-universe folds, partly "
            "in-sample for this model: docs/decisions/0021); 2016–2022 only as a report.",
        ]
    return [
        "- Synthetic worlds with a known covariance only (the `data_prep` stage of "
        "`params.yaml`: world families, p, n and p/n ranges), no real returns: real data "
        "before 2016 is used for validation, 2016–2022 only as a report."
    ]


def model_card(
    model_file: str | Path, metrics: Mapping[str, Any], version: str, name: str = "final"
) -> str:
    """Markdown model card of ``model_file`` from the evaluation ``metrics``
    (``reports/metrics/evaluation.json`` of the same run)."""
    payload = load_model_payload(model_file)
    extra = payload.get("extra", {})
    timing = timing_of_extra(extra)
    n_reps = metrics.get("n_reps")
    lines = [
        f"# Model card: `{name}` (bundled with shrinklab {version})",
        "",
        "Generated by the pipeline's evaluation stage; do not edit by hand.",
        "",
        "## The model",
        f"- File: `shrinklab/weights/{name}.pt`, sha256 `{sha256_of(model_file)}`.",
        f"- Kind: `{payload['kind']}`"
        + (f" (deployed candidate: {extra['chosen']})" if "chosen" in extra else "")
        + f"; targets: {', '.join(payload['target_names'])}.",
        f"- Feature schema: `{payload.get('feature_schema')}` "
        f"({len(payload['feature_names'])} p-agnostic features of the returns).",
        "- Output: the intensity α and target weights π of "
        "Σ̂ = S + Σ_k α π_k (T_k − S), from which `MLShrinkageCovariance` builds Σ̂.",
        *(
            [
                "- Volatility timing (decisions 0047–0049): Σ̂'s correlations are kept and "
                "its volatilities rescaled towards exponentially weighted ones (half-life "
                f"{timing[0]:g} × the window), by a James–Stein pre-test "
                f"(`{timing[1]}`) that leaves Σ̂ unchanged when the "
                "volatilities show no more than sampling noise "
                "(`shrinklab.core.volatility_timing`). The estimate is then a forecast of "
                "the next period's covariance; `MLShrinkageCovariance(volatility_timing=False)` "
                "(command line: `--no-volatility-timing`) gives the shrinkage of the window's "
                "own covariance."
            ]
            if timing[0] is not None
            else []
        ),
        "",
        "## Training data",
        *_training_data(extra, _gated_config(payload)),
        *_fund_switch(payload),
        *_gaussian_move(payload),
        *_long_fund_qis(payload),
        "",
        f"## Headline metrics (public scenario grid, {n_reps} replications per scenario)",
        "PRIAL in % with its standard error over replications; the learned − best column is "
        "the paired difference to the best classical estimator of that scenario. A PRIAL "
        "above 100 means the estimator beats the rotation-equivariant finite-sample "
        "oracle (FSOPT), which a multi-target estimator can.",
        "",
        "| scenario | this model | best classical | learned − best |",
        "|---|---|---|---|",
        *_prial_rows(metrics),
        "",
        "## Global-minimum-variance backtest, S&P 500 (20 stocks), 2016–2022",
        "Annualised volatility in %, rebalanced every 21 days; difference to Ledoit–Wolf with "
        "its stationary-bootstrap 95 % interval and p-value.",
        "",
        "| window | this model | Ledoit–Wolf | difference [95 % CI] | p |",
        "|---|---|---|---|---|",
        *_backtest_rows(metrics),
        "",
        *_later_sections(metrics),
        "## Intended use",
        "- A covariance estimate for T×p asset returns (any p ≥ 1, n ≥ 2), e.g. as the "
        "risk model of a minimum-variance or mean-variance portfolio, through "
        "`MLShrinkageCovariance` (scikit-learn) or `MLShrinkageCovarianceSkfolio`.",
        "",
        "## Limits",
        "- Validated on synthetic worlds and on real universes built from the 20 bundled "
        "S&P 500 stocks before 2016 (halves, derived long-only portfolios, mixtures; also "
        "stocks the fine-tuning never saw) and one ETF universe (2015; reported for 2016–2022 "
        "above); gains on other "
        "markets, asset classes or eras are not established.",
        "- Trained on p/n up to 4 and p up to 200; outside that range the features are "
        "extrapolated.",
        "- Assumes (approximately) stationary returns within the estimation window.",
        "",
    ]
    return "\n".join(lines)


def bundle_model(
    model_file: str | Path,
    weights_dir: str | Path,
    metrics: Mapping[str, Any],
    version: str,
    name: str = "final",
) -> tuple[Path, Path]:
    """Copy ``model_file`` to ``<weights_dir>/<name>.pt`` (bytes unchanged) and write its
    model card ``<name>.md``; returns both paths."""
    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    target = weights_dir / f"{name}.pt"
    shutil.copyfile(model_file, target)
    card = weights_dir / f"{name}.md"
    card.write_text(model_card(target, metrics, version, name))
    return target, card
