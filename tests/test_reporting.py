"""The README's headline table is generated from the metrics, never typed by hand."""

from __future__ import annotations

import json
from pathlib import Path

from shrinklab.evaluation.reporting import (
    README_END,
    README_START,
    headline_markdown,
    readme_block,
    update_readme,
    write_index,
)

ROOT = Path(__file__).resolve().parents[1]


def test_readme_headline_matches_metrics():
    assert readme_block(ROOT) in (ROOT / "README.md").read_text(), (
        "README headline is stale: run `python -c 'from pathlib import Path; "
        'from shrinklab.evaluation.reporting import update_readme; update_readme(Path("."))\'`'
    )


def test_headline_markdown_renders_every_cell():
    headline = {"columns": ["estimator", "PRIAL"], "rows": [["LW", "41.2 ± 0.3"], ["ML", "55.0"]]}
    md = headline_markdown(headline)
    assert md.splitlines()[0] == "| estimator | PRIAL |"
    assert "| ML | 55.0 |" in md and "| LW | 41.2 ± 0.3 |" in md


def test_update_readme_and_index_on_a_copy(tmp_path: Path):
    (tmp_path / "reports" / "metrics").mkdir(parents=True)
    (tmp_path / "reports" / "html").mkdir()
    (tmp_path / "reports" / "html" / "01_x.html").write_text("<html></html>")
    (tmp_path / "README.md").write_text(f"# t\n{README_START}\nold\n{README_END}\ntail\n")
    metrics = {"headline": {"columns": ["a"], "rows": [["1"]], "caption": "cap"}}
    (tmp_path / "reports" / "metrics" / "evaluation.json").write_text(json.dumps(metrics))
    assert update_readme(tmp_path) is True
    text = (tmp_path / "README.md").read_text()
    assert "| a |" in text and "old" not in text and text.endswith("tail\n")
    assert update_readme(tmp_path) is False  # idempotent
    index = write_index(tmp_path).read_text()
    assert 'href="html/01_x.html"' in index and "<td>1</td>" in index
