"""Reports a reviewer reads without running anything.

* ``write_index(root)`` — ``reports/index.html``: links to every rendered stage
  report and figure, and the headline table.
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


def write_index(root: Path) -> Path:
    """Write ``reports/index.html`` linking every stage report, metric and figure."""
    reports = root / "reports"
    stages = sorted((reports / "html").glob("*.html"))
    metrics = sorted((reports / "metrics").glob("*.json"))
    figures = sorted((reports / "figures").glob("**/*.png"))
    link = lambda p: f'<li><a href="{p.relative_to(reports)}">{p.relative_to(reports)}</a></li>'  # noqa: E731
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>shrinklab reports</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}</style>
</head><body><h1>shrinklab — reports</h1>
<h2>Headline</h2>{_headline_html(load_headline(root))}
<h2>Stage reports</h2><ol>{"".join(link(p) for p in stages)}</ol>
<h2>Metrics</h2><ul>{"".join(link(p) for p in metrics)}</ul>
<h2>Figures</h2><ul>{"".join(link(p) for p in figures)}</ul>
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


def save_metrics(path: str | Path, metrics: dict, digits: int = 6) -> Path:
    """Write a metrics JSON (sorted keys, floats rounded) for ``dvc metrics show``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_round_floats(metrics, digits), indent=2, sort_keys=True) + "\n")
    return path


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG without timestamps (reruns give the same bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return path
