"""The README's headline table is generated from the metrics, never typed by hand."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from shrinklab.evaluation.reporting import (
    HEADLINE_KEYS,
    README_END,
    README_START,
    grid_average,
    headline_markdown,
    headline_metrics,
    headline_subset,
    readme_block,
    takeaway,
    update_readme,
    write_index,
)
from shrinklab.pipeline.render import REPORT_CSS, with_index_link, with_report_css

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


def _evaluation() -> dict:
    return {
        "prial_constant_oracle": {
            "average": {
                "n_scenarios": 8.0,
                "prial_learned": 85.629239,
                "prial_best_classical": 80.542119,
                "prial_oracle": 93.793537,
                "learned_capture": 0.912955,
            }
        },
        "backtest": {
            f"{w}/{e}": {"ann_vol": v + (0.002 if e == "ledoit_wolf" else 0.0)}
            for w, v in ((60, 0.158204), (120, 0.157635), (250, 0.158111))
            for e in ("ML (final)", "ML (fine-tuned)", "ledoit_wolf", "qis")
        },
    }


def test_headline_metrics_are_a_dozen_rounded_numbers():
    h = headline_metrics(_evaluation())
    assert len(h) == 15  # 6 grid numbers, 3 volatilities at each of 3 windows
    assert h["grid_prial_deployed"] == 85.63 and h["grid_prial_best_classical"] == 80.54
    assert h["grid_prial_deployed_minus_best"] == pytest.approx(85.629239 - 80.542119, abs=0.005)
    assert h["gmv_vol_60_deployed"] == 15.82 and h["gmv_vol_60_lw"] == 16.02
    assert h["grid_scenarios"] == 8 and isinstance(h["grid_scenarios"], int)
    text = takeaway(h)
    assert "85.6" in text and "80.5" in text and "15.82/15.76/15.81 % against" in text
    assert "pre-2016 returns: 15.82/15.76/15.81 %" in text
    assert headline_metrics({}) == {} and "No evaluation" in takeaway({})
    partial = _evaluation()
    partial["backtest"] = {k: v for k, v in partial["backtest"].items() if k.startswith("60/")}
    short = takeaway(headline_metrics(partial))
    assert "15.82 % against" in short and "with 60-day windows" in short


def test_index_has_takeaway_commit_and_stage_thumbnails(tmp_path: Path):
    reports = tmp_path / "reports"
    (reports / "metrics").mkdir(parents=True)
    (reports / "html").mkdir()
    (reports / "figures" / "02_x").mkdir(parents=True)
    (reports / "html" / "02_x.html").write_text("<html></html>")
    (reports / "figures" / "02_x" / "a.png").write_bytes(b"png")
    (reports / "metrics" / "evaluation.json").write_text(json.dumps(_evaluation()))
    index = write_index(tmp_path).read_text()
    assert index.index("takeaway") < index.index("<h2>Headline")
    assert "Built from commit" in index and "85.6" in index
    assert '<a class="card" href="html/02_x.html"><img src="figures/02_x/a.png"' in index
    assert "FSOPT" in index  # what a PRIAL above 100 means
    summary = json.loads((reports / "metrics" / "summary.json").read_text())
    assert summary == headline_metrics(_evaluation())
    h = json.loads((reports / "metrics" / "headline.json").read_text())
    assert h == headline_subset(summary) and set(h) == set(HEADLINE_KEYS) - {"prial_se"}
    assert h["prial"] == summary["grid_prial_deployed"] == 85.63  # no per-scenario SEs here
    assert h["ml060"] == 15.82 and h["lw250"] == summary["gmv_vol_250_lw"] == 16.01


def test_the_compression_card_shows_the_cross_universe_folds(tmp_path: Path):
    reports = tmp_path / "reports"
    (reports / "html").mkdir(parents=True)
    (reports / "html" / "05_compression.html").write_text("<html></html>")
    figures = reports / "figures" / "05_compression"
    figures.mkdir(parents=True)
    for name in ("a_first.png", "tradeoff.png", "cross_universe_folds.png"):
        (figures / name).write_bytes(b"png")
    index = write_index(tmp_path).read_text()
    assert '<img src="figures/05_compression/cross_universe_folds.png"' in index
    (figures / "cross_universe_folds.png").unlink()  # a missing key figure: the first one
    assert '<img src="figures/05_compression/a_first.png"' in write_index(tmp_path).read_text()


def test_dvc_metrics_show_fits_one_screen(tmp_path: Path):
    """``dvc metrics show`` on a headline.json with every key: one row under 120
    characters (dvc sorts the columns: the zero-padded windows stay in order)."""
    pytest.importorskip("dvc")
    import subprocess
    import sys

    from shrinklab.evaluation.reporting import save_metrics

    ev = _evaluation_with_peer()
    h = headline_subset(headline_metrics(ev))
    assert set(h) == set(HEADLINE_KEYS)
    metrics = tmp_path / "reports" / "metrics" / "headline.json"
    save_metrics(metrics, h)
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  s:\n    cmd: 'true'\n    metrics:\n"
        "    - reports/metrics/headline.json:\n        cache: false\n"
    )
    run = lambda *a: subprocess.run(a, cwd=tmp_path, capture_output=True, text=True, check=True)  # noqa: E731
    run("git", "init", "-q")
    run(sys.executable, "-m", "dvc", "init", "-q")
    lines = run(sys.executable, "-m", "dvc", "metrics", "show").stdout.splitlines()
    assert len(lines) == 2 and max(map(len, lines)) <= 120, lines
    cols = lines[0].split()
    assert cols[1:] == sorted(HEADLINE_KEYS) and cols.index("ml060") < cols.index("ml250")
    assert lines[1].split()[cols.index("prial")] == "85.63"


def test_rendered_reports_link_back_to_the_index():
    body = '<html><body class="jp-Notebook" data-x="1"><p>x</p></body></html>'
    linked = with_index_link(body)
    assert linked.startswith('<html><body class="jp-Notebook" data-x="1"><nav')
    assert 'href="../index.html"' in linked and with_index_link(linked) == linked
    with pytest.raises(ValueError, match="body"):
        with_index_link("<html></html>")


def _evaluation_with_peer() -> dict:
    ev = _evaluation()
    ev["prial"] = {
        "s1": {"learned": 90.0, "rienet_peer": 70.0, "qis": 80.0, "oracle": 95.0},
        "s2": {"learned": 60.0, "rienet_peer": 64.0, "qis": 50.0, "oracle": 75.0},
    }
    ev["prial_se"] = {
        "s1": {"learned": 3.0, "rienet_peer": 2.0, "qis": 1.0, "oracle": 1.0},
        "s2": {"learned": 4.0, "rienet_peer": 2.0, "qis": 1.0, "oracle": 1.0},
    }
    for w in (60, 120, 250):
        ev["backtest"][f"{w}/RIEnet peer"] = {"ann_vol": 0.17}
        ev["backtest"][f"{w}/ML (final)"].update(
            diff_vs_benchmark=-0.002,
            ci_low=-0.004 if w == 60 else -0.003,
            ci_high=-0.001 if w == 60 else 0.001,
            rival="RIEnet peer" if w == 60 else "ledoit_wolf",
            diff_vs_rival=0.0012 if w == 60 else -0.002,
            rival_ci_low=-0.0005 if w == 60 else -0.003,
            rival_ci_high=0.003 if w == 60 else 0.001,
        )
    return ev


def test_headline_puts_final_next_to_the_peer_with_standard_errors(tmp_path: Path):
    ev = _evaluation_with_peer()
    assert grid_average(ev, "learned") == pytest.approx((75.0, 5.0 / 2))  # sqrt(9 + 16) / 2
    assert grid_average(ev, "rienet_peer") == pytest.approx((67.0, np.sqrt(8) / 2))
    assert grid_average(ev, "ledoit_wolf") is None
    h = headline_metrics(ev)
    assert h["grid_prial_deployed"] == 85.63  # the feasibility average stays the headline number
    assert h["grid_prial_deployed_se"] == 2.5 and h["grid_prial_peer"] == 67.0
    assert h["gmv_vol_60_peer"] == 17.0 and h["gmv_diff_60_deployed_ci_low"] == -0.4
    assert h["gmv_rival_60"] == "RIEnet peer" and h["gmv_diff_60_deployed_vs_rival"] == 0.12
    assert h["gmv_diff_120_deployed_vs_rival_ci_high"] == 0.1
    text = takeaway(h)
    assert (
        "85.6 ± 2.5, 5.1 points above the best classical estimator of each scenario (80.5)" in text
    )
    assert "18.6 above the learned peer RIEnet (67.0 ± 1.4)" in text
    assert (
        "lowest of the other estimators (points, 95 % bootstrap interval): 60 days RIEnet "
        "peer +0.12 [-0.05, +0.30]; 120 days ledoit_wolf -0.20 [-0.30, +0.10]" in text
    )
    assert (
        "(lower at 3 of 3; 95 % bootstrap interval below zero at 1). RIEnet: 17.00/17.00/17.00 %;"
        in text
    )
    reports = tmp_path / "reports"
    (reports / "metrics").mkdir(parents=True)
    (reports / "metrics" / "evaluation.json").write_text(json.dumps(ev))
    index = write_index(tmp_path).read_text()
    assert (
        index.index("takeaway")
        < index.index('table class="comparison"')
        < index.index("<h2>Headline")
    )
    row = re.search(r'<tr class="deployed">(.*?)</tr>', index).group(1)
    assert "final.pt" in row and "<td>75.0 ± 2.5</td>" in row
    assert "<td>15.82 (-0.20 [-0.40, -0.10])</td>" in row
    assert "<td>67.0 ± 1.4</td>" in index and "overflow-x:auto" in index


def test_rendered_reports_scroll_wide_tables():
    body = "<html><head><title>t</title></head><body></body></html>"
    styled = with_report_css(body)
    assert styled.index(REPORT_CSS) < styled.index("</head>") and "overflow-x:auto" in REPORT_CSS
    assert with_report_css(styled) == styled
    with pytest.raises(ValueError, match="head"):
        with_report_css("<html><body></body></html>")
