"""Reports a reviewer reads without running anything.

* ``write_index(root)`` — ``reports/index.html``: takeaway and headline first, the
  commit it was built from, one card (key-figure thumbnail) per stage report; and
  ``reports/metrics/headline.json`` (``headline_metrics``), the file ``dvc metrics show``
  lists.
* ``headline_markdown(metrics)`` / ``update_readme(root)`` — the README's
  headline table, generated from ``reports/metrics/evaluation.json`` (never typed
  by hand; ``tests/test_reporting.py`` checks the README matches the metrics).

The headline is stored in the metrics file as
``{"headline": {"columns": [...], "rows": [[...], ...], "caption": "..."}}``.
"""

from __future__ import annotations

import html
import json
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
    return f"<table><caption>{caption}</caption><tr>{head}</tr>{rows}</table>"


HEADLINE_METRICS = Path("reports/metrics/headline.json")
DEPLOYED = "ML (final)"
"""The deployed model's name in the backtest (``models/final.pt`` = ``shrinklab/weights/final.pt``)."""
FINETUNED = "ML (fine-tuned)"
"""The walk-forward fine-tuned network (notebook 03): the headline table's learned
estimator for portfolios, reported beside the deployed model."""
BENCHMARK = "ledoit_wolf"
WINDOWS = (60, 120, 250)


def headline_metrics(evaluation: dict) -> dict[str, float]:
    """The dozen numbers a reviewer reads first, from ``evaluation.json``: the public-grid
    average PRIAL of the deployed model, of the best classical estimator and of the
    multi-target oracle, and the deployed model's out-of-sample GMV volatility (%,
    annualised, 2016–2022) against Ledoit–Wolf at each estimation window, and the
    walk-forward fine-tuned network's (the headline table's portfolio model). Sections
    missing from ``evaluation`` (a partial run) are left out."""
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
    backtest = evaluation.get("backtest", {})
    for w in WINDOWS:
        ml, lw = backtest.get(f"{w}/{DEPLOYED}"), backtest.get(f"{w}/{BENCHMARK}")
        if ml and lw:
            out[f"gmv_vol_{w}_deployed"] = round(100 * float(ml["ann_vol"]), 2)
            out[f"gmv_vol_{w}_lw"] = round(100 * float(lw["ann_vol"]), 2)
            if f"{w}/{FINETUNED}" in backtest:
                ft = backtest[f"{w}/{FINETUNED}"]
                out[f"gmv_vol_{w}_finetuned"] = round(100 * float(ft["ann_vol"]), 2)
    return out


def write_headline_metrics(root: Path) -> Path | None:
    """``reports/metrics/headline.json`` from ``evaluation.json`` (the one file that
    ``dvc metrics show`` lists); None when the evaluation has not run."""
    path = root / EVALUATION_METRICS
    if not path.exists():
        return None
    save_metrics(root / HEADLINE_METRICS, headline_metrics(json.loads(path.read_text())))
    return root / HEADLINE_METRICS


def takeaway(h: dict | None) -> str:
    """One sentence from :func:`headline_metrics`."""
    if not h or "grid_prial_deployed" not in h:
        return "No evaluation yet: run <code>dvc repro</code>."
    windows = [w for w in WINDOWS if f"gmv_vol_{w}_deployed" in h]
    vols = lambda who: "/".join(f"{h[f'gmv_vol_{w}_{who}']:.2f}" for w in windows)  # noqa: E731
    text = (
        f"On the public grid ({h['grid_scenarios']} scenarios) the deployed model "
        f"(<code>shrinklab/weights/final.pt</code>) averages a "
        f"PRIAL of {h['grid_prial_deployed']:.1f} against {h['grid_prial_best_classical']:.1f} "
        f"for the best classical estimator ({h['grid_prial_deployed_minus_best']:+.1f}) and "
        f"{h['grid_prial_oracle']:.1f} for the oracle"
    )
    if not windows:
        return text + "."
    return text + (
        f"; on S&amp;P 500 minimum-variance portfolios (2016–2022) its volatility is "
        f"{vols('deployed')} % against Ledoit–Wolf's {vols('lw')} % with "
        f"{'/'.join(map(str, windows))}-day windows"
        + (
            f" (the network fine-tuned on pre-2016 returns: {vols('finetuned')} %)."
            if all(f"gmv_vol_{w}_finetuned" in h for w in windows)
            else "."
        )
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
    "05_compression": "tradeoff.png",
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
    from, a card with a thumbnail per stage report, then metrics and figures) and
    ``reports/metrics/headline.json``."""
    reports = root / "reports"
    write_headline_metrics(root)
    h_path = root / HEADLINE_METRICS
    h = json.loads(h_path.read_text()) if h_path.exists() else None
    stages = sorted((reports / "html").glob("*.html"))
    metrics = sorted((reports / "metrics").glob("*.json"))
    figures = sorted((reports / "figures").glob("**/*.png"))
    link = lambda p: f'<li><a href="{p.relative_to(reports)}">{p.relative_to(reports)}</a></li>'  # noqa: E731
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>shrinklab reports</title>
<style>body{{font-family:sans-serif;max-width:64em;margin:2em auto;line-height:1.4}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}
caption{{caption-side:bottom;text-align:left;font-size:small;color:#444}}
.takeaway{{font-size:1.15em;border-left:4px solid #d62728;padding-left:.8em}}
.cards{{display:flex;flex-wrap:wrap;gap:1em}}
.card{{display:flex;flex-direction:column;width:15em;border:1px solid #ccc;padding:.5em;text-decoration:none;color:#000}}
.card img{{width:100%;height:9em;object-fit:contain}}.small{{font-size:small;color:#444}}</style>
</head><body><h1>shrinklab — reports</h1>
<p class="takeaway">{takeaway(h)}</p>
<p class="small">Built from commit {html.escape(build_info(root))}. Training curves:
<code>tensorboard --logdir reports/tensorboard</code> or <code>dvc plots show</code>.</p>
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
