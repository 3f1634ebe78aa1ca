"""Reports a reviewer reads without running anything.

* ``write_index(root)`` — ``reports/index.html``: takeaway and headline first, the
  commit it was built from, one card (key-figure thumbnail) per stage report; and the
  headline numbers (``headline_metrics``): all of them in ``reports/metrics/summary.json``
  (a plain file, what the index reads), a handful under short names in
  ``reports/metrics/headline.json``, the one file ``dvc metrics show`` lists (one row that
  fits a screen, :data:`HEADLINE_KEYS`).
* ``headline_markdown(metrics)`` / ``update_readme(root)`` — the README's
  headline table, generated from ``reports/metrics/evaluation.json`` (never typed
  by hand; ``tests/test_reporting.py`` checks the README matches the metrics).

The headline is stored in the metrics file as
``{"headline": {"columns": [...], "rows": [[...], ...], "caption": "..."}}``.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

README_START = "<!-- headline:start (generated from reports/metrics/evaluation.json) -->"


README_END = "<!-- headline:end -->"


EVALUATION_METRICS = Path("reports/metrics/evaluation.json")


def load_headline(root: Path) -> dict | None:
    path = root / EVALUATION_METRICS
    if not path.exists():
        return None
    return json.loads(path.read_text()).get("headline")


def headline_markdown(headline: dict | None) -> str:
    """Markdown table of the headline (or a note that the pipeline has not run)."""
    if not headline:
        return "_No evaluation yet: run `make repro`._"
    cols = headline["columns"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in headline["rows"]]
    if headline.get("caption"):
        lines += ["", headline["caption"]]
    return "\n".join(lines)


def readme_block(root: Path) -> str:
    return f"{README_START}\n{headline_markdown(load_headline(root))}\n{README_END}"


def update_readme(root: Path) -> bool:
    """Rewrite the README's headline block; return True when it changed."""
    readme = root / "README.md"
    text = readme.read_text()
    start, end = text.index(README_START), text.index(README_END) + len(README_END)
    new = text[:start] + readme_block(root) + text[end:]
    readme.write_text(new)
    return new != text


def _headline_html(headline: dict | None) -> str:
    if not headline:
        return "<p>No evaluation yet.</p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in headline["columns"])
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
        for row in headline["rows"]
    )
    caption = html.escape(headline.get("caption", ""))
    return f'<div class="scroll"><table><caption>{caption}</caption><tr>{head}</tr>{rows}</table></div>'


HEADLINE_METRICS = Path("reports/metrics/headline.json")
SUMMARY_METRICS = Path("reports/metrics/summary.json")
DEPLOYED = "ML (final)"
"""The deployed model's name in the backtest (``models/final.pt`` = ``shrinklab/weights/final.pt``)."""
FINETUNED = ("ML (fine-tuned, secondary)", "ML (fine-tuned)")
"""Names of the walk-forward fine-tuned network (notebook 03) in the backtest: a
secondary row beside the deployed model."""
PEER = ("rienet_peer", "RIEnet peer")
"""The learned peer (RIEnet) in the scenario grid and in the backtest."""
BENCHMARK = "ledoit_wolf"
WINDOWS = (60, 120, 250)
CLASSICAL = ("ledoit_wolf", "oas", "qis", "constant_correlation", "single_factor")
"""The classical estimators of the headline comparison (names in both the grid and the backtest)."""
COMPARISON = (
    ("final.pt (deployed)", "learned", DEPLOYED),
    ("RIEnet (learned peer)", PEER[0], PEER[1]),
    *((c, c, c) for c in CLASSICAL),
    ("equal weights", None, "equal_weight"),
    ("fine-tuned network (secondary)", None, FINETUNED[0]),
    ("oracle (knows Σ)", "oracle", None),
)
"""Rows of the index's comparison table: (label, name in the grid, name in the backtest)."""


def grid_average(evaluation: dict, estimator: str) -> tuple[float, float] | None:
    """Mean PRIAL of ``estimator`` over the public-grid scenarios and its standard error
    ``sqrt(Σ se²) / S`` (scenarios are independent draws; NaN when the per-scenario SEs,
    ``prial_se``, are not stored); None when the estimator is not in the grid."""
    prial, ses = evaluation.get("prial", {}), evaluation.get("prial_se", {})
    vals = [row[estimator] for row in prial.values() if estimator in row]
    if not vals or len(vals) != len(prial):
        return None
    se = [ses.get(s, {}).get(estimator) for s in prial]
    err = (
        math.sqrt(sum(float(x) ** 2 for x in se)) / len(se)
        if all(x is not None for x in se)
        else math.nan
    )
    return sum(map(float, vals)) / len(vals), err


def _backtest_row(backtest: dict, window: int, names: str | tuple[str, ...]) -> dict | None:
    for name in (names,) if isinstance(names, str) else names:
        if f"{window}/{name}" in backtest:
            return backtest[f"{window}/{name}"]
    return None


def headline_metrics(evaluation: dict) -> dict[str, float]:
    """The numbers a reviewer reads first, from ``evaluation.json``: the public-grid
    average PRIAL of the deployed model, of the best classical estimator, of the
    learned peer and of the multi-target oracle (with standard errors where the
    per-scenario SEs are stored), and at each estimation window the out-of-sample GMV
    volatility (%, annualised, 2016–2022) of the deployed model, of Ledoit–Wolf, of the
    learned peer and of the walk-forward fine-tuned network, with the deployed model's
    difference to Ledoit–Wolf and its 95 % stationary-bootstrap interval (percentage
    points). Sections missing from ``evaluation`` (a partial run) are left out."""
    out: dict[str, float] = {}
    avg = evaluation.get("prial_constant_oracle", {}).get("average")
    if avg:
        out.update(
            grid_scenarios=int(avg["n_scenarios"]),
            grid_prial_deployed=round(float(avg["prial_learned"]), 2),
            grid_prial_best_classical=round(float(avg["prial_best_classical"]), 2),
            grid_prial_deployed_minus_best=round(
                float(avg["prial_learned"]) - float(avg["prial_best_classical"]), 2
            ),
            grid_prial_oracle=round(float(avg["prial_oracle"]), 2),
            grid_share_of_oracle=round(float(avg["learned_capture"]), 3),
        )
    deployed, peer = grid_average(evaluation, "learned"), grid_average(evaluation, PEER[0])
    if deployed is not None:
        out.setdefault("grid_prial_deployed", round(deployed[0], 2))
        if math.isfinite(deployed[1]):
            out["grid_prial_deployed_se"] = round(deployed[1], 2)
    if peer is not None:
        out["grid_prial_peer"] = round(peer[0], 2)
        if math.isfinite(peer[1]):
            out["grid_prial_peer_se"] = round(peer[1], 2)
    backtest = evaluation.get("backtest", {})
    for w in WINDOWS:
        ml, lw = _backtest_row(backtest, w, DEPLOYED), _backtest_row(backtest, w, BENCHMARK)
        if not (ml and lw):
            continue
        out[f"gmv_vol_{w}_deployed"] = round(100 * float(ml["ann_vol"]), 2)
        out[f"gmv_vol_{w}_lw"] = round(100 * float(lw["ann_vol"]), 2)
        if "ci_low" in ml:
            out[f"gmv_diff_{w}_deployed_ci_low"] = round(100 * float(ml["ci_low"]), 2)
            out[f"gmv_diff_{w}_deployed_ci_high"] = round(100 * float(ml["ci_high"]), 2)
        if ml.get("rival"):  # the lowest of the other estimators, paired bootstrap interval
            out[f"gmv_rival_{w}"] = str(ml["rival"])
            for key, col in (("", "diff_vs_rival"), ("_ci_low", "rival_ci_low"),
                             ("_ci_high", "rival_ci_high")):  # fmt: skip
                out[f"gmv_diff_{w}_deployed_vs_rival{key}"] = round(100 * float(ml[col]), 2)
        for key, names in (("finetuned", FINETUNED), ("peer", PEER[1])):
            row = _backtest_row(backtest, w, names)
            if row:
                out[f"gmv_vol_{w}_{key}"] = round(100 * float(row["ann_vol"]), 2)
    return out


HEADLINE_KEYS = {
    "prial": "grid_prial_deployed",
    "prial_se": "grid_prial_deployed_se",
    "of_oracle": "grid_share_of_oracle",
    **{f"ml{w:03d}": f"gmv_vol_{w}_deployed" for w in WINDOWS},
    **{f"lw{w:03d}": f"gmv_vol_{w}_lw" for w in WINDOWS},
}
"""The numbers of ``headline.json`` (short name: key of :func:`headline_metrics`): the
deployed model's public-grid average PRIAL, its SE and its share of the oracle's, and
its GMV volatility (%) with Ledoit–Wolf's at each window, zero-padded (``ml060``) so
that ``dvc metrics show``, which sorts the columns, keeps the windows in order. Nine
short names keep that one row under 120 characters."""


def headline_subset(summary: dict[str, float]) -> dict[str, float]:
    """The :data:`HEADLINE_KEYS` of ``summary`` (a :func:`headline_metrics` dict) under
    their short names; the values are the same objects (no rounding again)."""
    return {short: summary[key] for short, key in HEADLINE_KEYS.items() if key in summary}


def write_headline_metrics(root: Path) -> Path | None:
    """From ``evaluation.json``: every :func:`headline_metrics` number to
    ``reports/metrics/summary.json`` and the :data:`HEADLINE_KEYS` to
    ``reports/metrics/headline.json`` (the one file that ``dvc metrics show`` lists);
    returns the latter, or None when the evaluation has not run."""
    path = root / EVALUATION_METRICS
    if not path.exists():
        return None
    summary = headline_metrics(json.loads(path.read_text()))
    save_metrics(root / SUMMARY_METRICS, summary)
    save_metrics(root / HEADLINE_METRICS, headline_subset(summary))
    return root / HEADLINE_METRICS


def _pm(value: float, se: float | None, digits: int = 1) -> str:
    if se is None or not math.isfinite(se):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} ± {se:.{digits}f}"


def takeaway(h: dict | None) -> str:
    """One sentence written from :func:`headline_metrics` (nothing in it is typed by
    hand: each number and each comparison word comes from ``h``)."""
    if not h or "grid_prial_deployed" not in h:
        return "No evaluation yet: run <code>dvc repro</code>."
    windows = [w for w in WINDOWS if f"gmv_vol_{w}_deployed" in h]
    vols = lambda who: "/".join(f"{h[f'gmv_vol_{w}_{who}']:.2f}" for w in windows)  # noqa: E731
    diff = h["grid_prial_deployed_minus_best"]
    text = (
        f"On the public grid ({h['grid_scenarios']} scenarios) the deployed model "
        f"(<code>shrinklab/weights/final.pt</code>) averages a PRIAL of "
        f"{_pm(h['grid_prial_deployed'], h.get('grid_prial_deployed_se'))}, "
        f"{abs(diff):.1f} points {'above' if diff >= 0 else 'below'} the best classical "
        f"estimator of each scenario ({h['grid_prial_best_classical']:.1f})"
    )
    if "grid_prial_peer" in h:
        gap = h["grid_prial_deployed"] - h["grid_prial_peer"]
        text += (
            f" and {abs(gap):.1f} {'above' if gap >= 0 else 'below'} the learned peer RIEnet "
            f"({_pm(h['grid_prial_peer'], h.get('grid_prial_peer_se'))})"
        )
    text += f"; the oracle reaches {h['grid_prial_oracle']:.1f}"
    if not windows:
        return text + "."
    lower = sum(h[f"gmv_vol_{w}_deployed"] < h[f"gmv_vol_{w}_lw"] for w in windows)
    sig = sum(h.get(f"gmv_diff_{w}_deployed_ci_high", 0.0) < 0 for w in windows)
    has_ci = all(f"gmv_diff_{w}_deployed_ci_high" in h for w in windows)
    text += (
        f". On S&amp;P 500 minimum-variance portfolios (2016–2022) its volatility is "
        f"{vols('deployed')} % against Ledoit–Wolf's {vols('lw')} % with "
        f"{'/'.join(map(str, windows))}-day windows (lower at {lower} of {len(windows)}"
        + (f"; 95 % bootstrap interval below zero at {sig}" if has_ci else "")
        + ")."
    )
    extras = [
        f"{label}: {vols(key)} %"
        for key, label in (
            ("peer", "RIEnet"),
            ("finetuned", "the network fine-tuned on pre-2016 returns"),
        )
        if all(f"gmv_vol_{w}_{key}" in h for w in windows)
    ]
    rival = ""
    if all(f"gmv_rival_{w}" in h for w in windows):
        margins = "; ".join(
            f"{w} days {h[f'gmv_rival_{w}']} {h[f'gmv_diff_{w}_deployed_vs_rival']:+.2f} "
            f"[{h[f'gmv_diff_{w}_deployed_vs_rival_ci_low']:+.2f}, "
            f"{h[f'gmv_diff_{w}_deployed_vs_rival_ci_high']:+.2f}]"
            for w in windows
        )
        rival = (
            " Its volatility minus the lowest of the other estimators (points, 95 % "
            f"bootstrap interval): {margins}."
        )
    return text + (f" {'; '.join(extras)}." if extras else "") + rival


def _comparison_html(evaluation: dict) -> str:
    """final.pt next to the learned peer, the classical estimators and the oracle: the
    grid-average PRIAL ± SE and, per window, the GMV volatility with the difference to
    Ledoit–Wolf and its 95 % bootstrap interval (percentage points)."""
    backtest = evaluation.get("backtest", {})
    windows = [w for w in WINDOWS if f"{w}/{BENCHMARK}" in backtest]
    n = len(evaluation.get("prial", {}))
    if not n and not windows:
        return ""
    head = f"<th>estimator</th><th>PRIAL, mean of {n} scenarios ± SE</th>" + "".join(
        f"<th>GMV vol. %, {w}-day window (vs Ledoit–Wolf, 95 % interval)</th>" for w in windows
    )
    body = []
    for label, grid_name, bt_name in COMPARISON:
        got = grid_average(evaluation, grid_name) if grid_name else None
        cells = [_pm(*got) if got else "–"]
        for w in windows:
            row = _backtest_row(backtest, w, bt_name) if bt_name else None
            if row is None:
                cells.append("–")
            elif bt_name == BENCHMARK or "ci_low" not in row:
                cells.append(f"{100 * float(row['ann_vol']):.2f}")
            else:
                d, lo, hi = (
                    100 * float(row[k]) for k in ("diff_vs_benchmark", "ci_low", "ci_high")
                )
                cells.append(f"{100 * float(row['ann_vol']):.2f} ({d:+.2f} [{lo:+.2f}, {hi:+.2f}])")
        if all(c == "–" for c in cells):
            continue
        cls = ' class="deployed"' if grid_name == "learned" else ""
        body.append(
            f"<tr{cls}><th>{html.escape(label)}</th>"
            + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
            + "</tr>"
        )
    caption = (
        "PRIAL: mean over the public-grid scenarios, SE = √(Σ SE²) / number of scenarios "
        "(independent replications per scenario). Volatility: annualised out-of-sample "
        "volatility of global minimum-variance portfolios on 20 S&amp;P 500 stocks, "
        "2016–2022; in brackets the difference to Ledoit–Wolf in percentage points with its "
        "95 % stationary-bootstrap interval. –: not evaluated in that setting."
    )
    return (
        f'<div class="scroll"><table class="comparison"><caption>{caption}</caption>'
        f"<tr>{head}</tr>{''.join(body)}</table></div>"
    )


PRIAL_NOTE = (
    "PRIAL (Ledoit &amp; Wolf 2022) = 100 · (E‖S−Σ‖² − E‖Σ̂−Σ‖²) / (E‖S−Σ‖² − E‖FSOPT−Σ‖²): "
    "0 is the sample covariance S, 100 is FSOPT, the finite-sample optimal estimator that "
    "keeps the sample eigenvectors and knows Σ. A PRIAL above 100 means a lower average "
    "Frobenius loss than FSOPT: possible because shrinkage towards structured targets "
    "(diagonal, factor, constant correlation) changes the eigenvectors, which no "
    "rotation-equivariant estimator can."
)

KEY_FIGURES = {
    "01_data_prep": "synthetic_labels.png",
    "02_synthetic_pretraining": "training_curves.png",
    "03_gpu_training": "folds.png",
    "04_ensembling": "prial_members.png",
    "05_compression": "cross_universe_folds.png",
    "06_evaluation": "prial_by_scenario.png",
    "07_model_selection": "ablation.png",
}
"""The figure shown as each stage report's thumbnail in the index (else its first)."""


def build_info(root: Path) -> str:
    """``<short commit> (<commit date>)`` of the checkout ``root``, or ``unknown``."""
    import subprocess

    try:
        out = subprocess.run(
            ["git", "log", "-1", "--format=%h (%cd)", "--date=format:%Y-%m-%d %H:%M %z"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out or "unknown"


def _stage_card(reports: Path, page: Path) -> str:
    figures = reports / "figures" / page.stem
    key = figures / KEY_FIGURES.get(page.stem, "")
    if not key.is_file():
        found = sorted(figures.glob("*.png"))
        key = found[0] if found else None
    href = html.escape(page.relative_to(reports).as_posix())
    title = html.escape(page.stem.replace("_", " "))
    thumb = (
        f'<img src="{html.escape(key.relative_to(reports).as_posix())}" alt="{title}: key figure">'
        if key is not None
        else ""
    )
    return f'<a class="card" href="{href}">{thumb}<span>{title}</span></a>'


def write_index(root: Path) -> Path:
    """Write ``reports/index.html`` (headline and takeaway first, the commit it was built
    from, a card with a thumbnail per stage report, then metrics and figures),
    ``reports/metrics/summary.json`` and ``reports/metrics/headline.json``."""
    reports = root / "reports"
    write_headline_metrics(root)
    h_path = root / SUMMARY_METRICS
    h = json.loads(h_path.read_text()) if h_path.exists() else None
    e_path = root / EVALUATION_METRICS
    evaluation = json.loads(e_path.read_text()) if e_path.exists() else {}
    stages = sorted((reports / "html").glob("*.html"))
    metrics = sorted((reports / "metrics").glob("*.json"))
    figures = sorted((reports / "figures").glob("**/*.png"))
    link = lambda p: f'<li><a href="{p.relative_to(reports)}">{p.relative_to(reports)}</a></li>'  # noqa: E731
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>shrinklab reports</title>
<style>body{{font-family:sans-serif;max-width:64em;margin:2em auto;line-height:1.4}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}td{{white-space:nowrap}}
.scroll{{overflow-x:auto;max-width:100%}}tr.deployed th,tr.deployed td{{background:#fbe3e3;font-weight:bold}}
table.comparison th{{text-align:left}}
caption{{caption-side:bottom;text-align:left;font-size:small;color:#444}}
.takeaway{{font-size:1.15em;border-left:4px solid #d62728;padding-left:.8em}}
.cards{{display:flex;flex-wrap:wrap;gap:1em}}
.card{{display:flex;flex-direction:column;width:15em;border:1px solid #ccc;padding:.5em;text-decoration:none;color:#000}}
.card img{{width:100%;height:9em;object-fit:contain}}.small{{font-size:small;color:#444}}</style>
</head><body><h1>shrinklab — reports</h1>
<p class="takeaway">{takeaway(h)}</p>
<p class="small">Built from commit {html.escape(build_info(root))}. Training curves:
<code>tensorboard --logdir reports/tensorboard</code> or <code>dvc plots show</code>.</p>
<h2>final.pt against the classical estimators and the learned peer</h2>
{_comparison_html(evaluation)}
<h2>Headline</h2>{_headline_html(load_headline(root))}
<p class="small">{PRIAL_NOTE}</p>
<h2>Stage reports</h2><div class="cards">{"".join(_stage_card(reports, p) for p in stages)}</div>
<h2>Metrics</h2><ul>{"".join(link(p) for p in metrics)}</ul>
<details><summary>All figures ({len(figures)})</summary><ul>{"".join(link(p) for p in figures)}</ul></details>
</body></html>
"""
    out = reports / "index.html"
    out.write_text(body, encoding="utf-8")
    return out


def _round_floats(obj, digits: int):
    if isinstance(obj, float):
        return round(obj, digits)
    if isinstance(obj, dict):
        return {k: _round_floats(v, digits) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_round_floats(v, digits) for v in obj]
    return obj


def save_metrics(path: str | Path, metrics: dict, digits: int = 6) -> None:
    """Write a metrics JSON (sorted keys, floats rounded). Returns None, so a notebook
    cell that ends with it shows no ``PosixPath(...)``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_round_floats(metrics, digits), indent=2, sort_keys=True) + "\n")


def save_figure(fig, path: str | Path, dpi: int = 110) -> None:
    """Save a matplotlib figure as PNG without timestamps (reruns give the same bytes).
    Returns None (no ``PosixPath(...)`` under a notebook cell that ends with it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata={"Software": None})
