"""Time of each pipeline stage of the last run, and their total.

Two sources, both written by ``python -m shrinklab.pipeline run`` (what every stage of
``dvc.yaml`` runs):

* ``notebook`` — papermill's execution time of the notebook, ``metadata.papermill.duration``
  of ``reports/notebooks/<notebook>.ipynb`` (the committed reports of the last full run);
* ``stage`` — the whole ``pipeline run`` call (kernel start, notebook, HTML rendering),
  the last line of ``build/timings.jsonl`` for the notebook run with the stage's
  params.yaml section (local full-size runs only, not smoke runs; ``-`` if none).

Stages in the order of ``dvc.yaml`` (``--dvc studies/dvc.yaml`` for the studies).

Usage::

    .venv/bin/python bench/stages.py              # or: make bench
    .venv/bin/python bench/stages.py --markdown   # the table of docs/pipeline.md, "Time per stage"
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def stage_notebooks(dvc_file: Path) -> list[tuple[str, str, str | None]]:
    """``(stage, notebook, section)`` for each stage of ``dvc_file`` that runs a notebook."""
    stages = yaml.safe_load(dvc_file.read_text())["stages"]
    out = []
    for name, spec in stages.items():
        match = re.search(r"pipeline run (\S+)(?: ([A-Za-z_]\w*))?", spec["cmd"])
        if match:
            out.append((name, match.group(1), match.group(2)))
    return out


def papermill_seconds(executed: Path) -> float | None:
    """``metadata.papermill.duration`` of an executed notebook (None if absent)."""
    if not executed.is_file():
        return None
    meta = json.loads(executed.read_text(encoding="utf-8")).get("metadata", {})
    duration = meta.get("papermill", {}).get("duration")
    return None if duration is None else float(duration)


def last_timings(path: Path) -> dict[tuple[str, str | None], dict]:
    """The last record per ``(notebook, section)`` of a ``build/timings.jsonl`` file."""
    last: dict[tuple[str, str | None], dict] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                last[(record["notebook"], record.get("section"))] = record
    return last


def stage_table(root: Path, dvc_file: Path) -> list[dict]:
    """One row per stage (``stage, notebook, notebook_s, stage_s``) and a ``total`` row."""
    timings = last_timings(root / "build" / "timings.jsonl")
    rows = []
    for stage, notebook, section in stage_notebooks(dvc_file):
        record = timings.get((notebook, section))
        rows.append(
            {
                "stage": stage,
                "notebook": notebook,
                "notebook_s": papermill_seconds(
                    root / "reports" / "notebooks" / f"{notebook}.ipynb"
                ),
                "stage_s": None if record is None else float(record["seconds"]),
            }
        )

    def total(key: str) -> float | None:
        values = [r[key] for r in rows]
        return None if any(v is None for v in values) else sum(values)

    rows.append({"stage": "total", "notebook": "", "notebook_s": total("notebook_s"),
                 "stage_s": total("stage_s")})  # fmt: skip
    return rows


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds:.0f} s ({seconds / 60:.1f} min)"


def render(rows: list[dict], markdown: bool = False) -> str:
    header = ("stage", "notebook", "notebook time", "stage time")
    body = [(r["stage"], r["notebook"], _fmt(r["notebook_s"]), _fmt(r["stage_s"])) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    return "\n".join(
        "  ".join(str(x).ljust(w) for x, w in zip(row, widths)) for row in (header, *body)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dvc", default="dvc.yaml", help="pipeline file (default dvc.yaml)")
    parser.add_argument("--markdown", action="store_true", help="a Markdown table")
    args = parser.parse_args(argv)
    print(render(stage_table(ROOT, ROOT / args.dvc), args.markdown))


if __name__ == "__main__":
    main()
