"""bench/stages.py: the stage-time table from papermill metadata and build/timings.jsonl."""

from __future__ import annotations

import json

from shrinklab.pipeline.runner import record_timing
from tests._scripts import load_script

stages = load_script("bench/stages.py")


def test_table_reads_papermill_durations_and_the_last_full_size_timing(tmp_path):
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n"
        "  a:\n    cmd: python -m shrinklab.pipeline run 01_a sec_a\n"
        "  b:\n    cmd: python -m shrinklab.pipeline run 02_b sec_b && python -m x index\n"
    )
    nbs = tmp_path / "reports" / "notebooks"
    nbs.mkdir(parents=True)
    for name, seconds in (("01_a", 12.5), ("02_b", 100.0)):
        meta = {"metadata": {"papermill": {"duration": seconds}}, "cells": []}
        (nbs / f"{name}.ipynb").write_text(json.dumps(meta))
    timings = tmp_path / "build" / "timings.jsonl"
    record_timing(timings, "01_a", "sec_a", 20.0)
    record_timing(timings, "01_a", "sec_a", 14.0)  # the last run counts
    record_timing(timings, "01_a", None, 1.0)  # a smoke run (no section) does not
    rows = stages.stage_table(tmp_path, tmp_path / "dvc.yaml")
    assert [r["stage"] for r in rows] == ["a", "b", "total"]
    assert [r["notebook_s"] for r in rows] == [12.5, 100.0, 112.5]
    assert [r["stage_s"] for r in rows] == [14.0, None, None]  # b has no timing: no total
    text = stages.render(rows, markdown=True)
    assert "| a | 01_a | 12 s | 14 s |" in text and "| total |  | 112 s | - |" in text
