"""The HTML report of an executed stage notebook.

It exists so that every report under ``reports/html/`` looks and links the same:
code cells hidden, images embedded, a link back to ``reports/index.html`` and a
style that keeps wide tables and figures inside the page.
"""

from __future__ import annotations

import re
from pathlib import Path


def render_html(executed: Path, html_path: Path) -> None:
    """Self-contained HTML of an executed notebook, code cells hidden, with a link
    back to the index (:func:`with_index_link`)."""
    import nbformat
    from nbconvert import HTMLExporter

    html_path.parent.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter(
        exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True
    )
    exporter.embed_images = True
    body, _ = exporter.from_notebook_node(nbformat.read(executed, as_version=4))
    html_path.write_text(with_report_css(with_index_link(body)), encoding="utf-8")


INDEX_LINK = (
    '<nav style="font-family:sans-serif;padding:.5em 1em"><a href="../index.html">'
    "&larr; all reports (index)</a></nav>"
)


REPORT_CSS = (
    '<style id="shrinklab-report-css">'
    ".jp-RenderedHTMLCommon table{display:block;max-width:100%;overflow-x:auto}"
    ".jp-RenderedText pre{max-width:100%;overflow-x:auto}"
    ".jp-OutputArea-output img{max-width:100%;height:auto}"
    "</style>"
)
"""Wide tables and long text outputs scroll sideways inside the page instead of
running past it; figures shrink to the page width."""


def with_report_css(body: str) -> str:
    """``body`` with :data:`REPORT_CSS` at the end of ``<head>``; unchanged if present."""
    if REPORT_CSS in body:
        return body
    at = body.find("</head>")
    if at < 0:
        raise ValueError("rendered report has no </head> tag")
    return body[:at] + REPORT_CSS + body[at:]


def with_index_link(body: str) -> str:
    """``body`` (a rendered report under ``reports/html/``) with a link back to
    ``reports/index.html`` right after ``<body>``; unchanged if it has one already."""
    if INDEX_LINK in body:
        return body
    match = re.search(r"<body[^>]*>", body)
    if match is None:
        raise ValueError("rendered report has no <body> tag")
    return body[: match.end()] + INDEX_LINK + body[match.end() :]
