"""shrinklab.pipeline.compare and scripts/compare_metrics.py: which stage outputs a rerun
reproduced byte for byte, and how far each metric moved, against a git revision."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
import yaml

from shrinklab.pipeline.compare import (
    compare_metric_files,
    compare_metrics,
    flatten,
    output_hashes,
)
from tests._scripts import load_script

script = load_script("scripts/compare_metrics.py")

MD5_ABC = "900150983cd24fb0d6963f7d28e17f72"  # RFC 1321, appendix A.5: MD5("abc")


def test_flatten_names_every_leaf_by_its_path():
    doc = {"a": {"b": [1, {"c": "x"}], "d": {}}, "e": 2.5, "f": []}
    assert flatten(doc) == {"a.b[0]": 1, "a.b[1].c": "x", "a.d": {}, "e": 2.5, "f": []}


def test_compare_metrics_statuses_and_relative_differences():
    ref = {"loss": 0.5, "n": 6, "form": "experts", "zero": 0, "nan": math.nan, "gone": 1}
    new = {"loss": 0.51, "n": 6, "form": "alone", "zero": 0.2, "nan": math.nan, "new": [3]}
    t = compare_metrics(ref, new).set_index("key")
    assert t.loc["loss", "status"] == "differs"
    assert t.loc["loss", "abs_diff"] == pytest.approx(0.01, abs=1e-15)
    assert t.loc["loss", "rel_diff"] == pytest.approx(0.02, rel=1e-12)
    assert t.loc["n", "status"] == "identical" and t.loc["n", "rel_diff"] == 0
    assert t.loc["form", "status"] == "differs" and math.isnan(t.loc["form", "abs_diff"])
    assert t.loc["zero", "rel_diff"] == math.inf
    assert t.loc["nan", "status"] == "identical"
    assert t.loc["gone", "status"] == "only reference"
    assert t.loc["new[0]", "status"] == "only rerun"
    assert list(t.index) == ["loss", "n", "form", "zero", "nan", "gone", "new[0]"]


def test_timings_and_numbers_in_text_have_their_own_status():
    ref = {"peer": {"seconds": 19.9, "rows": ["15.88", "x 1.5 ± 0.2"]}, "fit_ms": 3, "sec": 1}
    new = {"peer": {"seconds": 9.9, "rows": ["15.87", "y 1.5 ± 0.2"]}, "fit_ms": 4, "sec": 2}
    t = compare_metrics(ref, new).set_index("key")["status"].to_dict()
    assert t == {
        "peer.seconds": "timing",
        "peer.rows[0]": "text numbers",
        "peer.rows[1]": "differs",  # the words changed
        "fit_ms": "timing",
        "sec": "differs",  # not a timing name
    }


def test_a_boolean_is_not_a_number():
    t = compare_metrics({"passed": True}, {"passed": False})
    assert t.loc[0, "status"] == "differs" and math.isnan(t.loc[0, "abs_diff"])


def test_output_hashes_reads_file_outputs_and_skips_directories(tmp_path: Path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "a.pt").write_bytes(b"abc")
    (tmp_path / "models" / "b.pt").write_bytes(b"abd")
    lock = {
        "schema": "2.0",
        "stages": {
            "train": {
                "outs": [
                    {"path": "models/a.pt", "hash": "md5", "md5": MD5_ABC, "size": 3},
                    {"path": "models/b.pt", "hash": "md5", "md5": MD5_ABC, "size": 3},
                    {"path": "models/c.pt", "hash": "md5", "md5": MD5_ABC, "size": 3},
                    {"path": "models/onnx", "hash": "md5", "md5": "0123.dir", "size": 9},
                ]
            },
            "plain": {"cmd": "true"},
        },
    }
    t = output_hashes(tmp_path, yaml.safe_dump(lock))
    assert t.to_dict("list") == {
        "stage": ["train"] * 3,
        "path": ["models/a.pt", "models/b.pt", "models/c.pt"],
        "status": ["identical", "differs", "missing"],
    }


def _git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    metrics = tmp_path / "reports" / "metrics"
    metrics.mkdir(parents=True)
    (metrics / "finetune.json").write_text(json.dumps({"loss": 0.9373, "form": "experts"}))
    (metrics / "peer.json").write_text(json.dumps({"vol": [15.7, 15.6]}))
    (tmp_path / "model.pt").write_bytes(b"abc")
    lock = {"stages": {"s": {"outs": [{"path": "model.pt", "md5": MD5_ABC}]}}}
    (tmp_path / "dvc.lock").write_text(json.dumps(lock))  # JSON is YAML
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "reference")
    return tmp_path


def test_compare_metric_files_against_the_committed_version(clone: Path):
    (clone / "reports" / "metrics" / "finetune.json").write_text(
        json.dumps({"loss": 0.9358, "form": "experts"})
    )
    (clone / "reports" / "metrics" / "peer.json").unlink()
    t = compare_metric_files(clone, ["reports/metrics/finetune.json", "reports/metrics/peer.json"])
    loss = t[t["key"] == "loss"].iloc[0]
    assert loss["rel_diff"] == pytest.approx((0.9358 - 0.9373) / 0.9373, rel=1e-12)
    assert t[t["file"] == "reports/metrics/peer.json"]["status"].tolist() == ["only reference"]


def test_script_exit_status_follows_the_tolerance(clone: Path, capsys):
    assert script.main([str(clone), "--fail-above", "0"]) == 0  # nothing moved
    out = capsys.readouterr().out
    assert "1 of 1 files byte-identical" in out
    (clone / "reports" / "metrics" / "finetune.json").write_text(
        json.dumps({"loss": 0.9358, "form": "experts"})
    )
    assert script.main([str(clone), "--fail-above", "0.01"]) == 0  # moved by 0.16 %
    assert script.main([str(clone), "--fail-above", "0.001"]) == 1
    (clone / "reports" / "metrics" / "finetune.json").write_text(
        json.dumps({"loss": 0.9373, "form": "alone"})  # another deployed form: never last bits
    )
    assert script.main([str(clone), "--fail-above", "1"]) == 1
    (clone / "reports" / "metrics" / "finetune.json").write_text(
        json.dumps({"loss": 0.9373, "form": "experts", "seconds": 3.0})  # a new key
    )
    assert script.main([str(clone), "--fail-above", "1"]) == 1
    (clone / "model.pt").write_bytes(b"abd")
    script.main([str(clone)])
    assert "0 of 1 files byte-identical" in capsys.readouterr().out
