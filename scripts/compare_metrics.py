"""How close a rerun of the pipeline came to the committed results (a report)::

    .venv/bin/python scripts/compare_metrics.py [root] [--rev HEAD] [--top 15]
                                                [--fail-above REL]

``root`` (default: the current directory) is a clone in which ``make repro`` (or ``dvc
repro``) ran. Prints, against the files of git revision ``rev``:

1. every file output of ``dvc.lock`` and ``studies/dvc.lock``: reproduced byte for byte,
   different, or missing;
2. per file of ``reports/metrics/``: how many leaves are identical, how many numbers
   moved and by how much (largest and median relative difference), how many other
   leaves changed (strings and flags such as the deployed form or a significance
   verdict: a change there is a different outcome, not a last-bit difference), how many
   strings differ only in the numbers written in them (formatted table rows) and how many
   timings (durations, throughputs: never reproduced) moved;
3. the ``--top`` largest relative differences, and every non-numeric difference.

With ``--fail-above REL`` it exits with status 1 when a number moved by more than ``REL``
(relative) or any other leaf changed (text numbers and timings excepted). On a CPU whose kernels differ from the
committed files' machines (docs/pipeline.md, "Across CPUs") the trained models differ
in their last bits; this table says how far the numbers moved.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd

from shrinklab.pipeline.compare import committed_text, compare_metric_files, output_hashes

LOCK_FILES = ("dvc.lock", "studies/dvc.lock")


def metric_paths(root: Path, rev: str) -> list[str]:
    """The JSON files under reports/metrics/ in the working tree or at ``rev``."""
    here = {p.relative_to(root).as_posix() for p in (root / "reports" / "metrics").glob("*.json")}
    listed = subprocess.run(
        ["git", "-C", str(root), "ls-tree", "--name-only", rev, "reports/metrics/"],
        capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    return sorted(here | {p for p in listed if p.endswith(".json")})


def file_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per file: leaves, identical, numbers moved, other changes, missing on one side,
    largest and median |relative difference| of the numbers that moved."""
    rows = []
    for file, df in table.groupby("file", sort=True):
        numeric = df["abs_diff"].notna()
        moved = df[numeric & (df["status"] == "differs")]
        rel = moved["rel_diff"].abs()
        rows.append({
            "file": Path(file).name,
            "leaves": len(df),
            "identical": int((df["status"] == "identical").sum()),
            "numbers moved": len(moved),
            "other changes": int(((df["status"] == "differs") & ~numeric).sum()),
            "text numbers": int((df["status"] == "text numbers").sum()),
            "timings": int((df["status"] == "timing").sum()),
            "one side only": int(df["status"].str.startswith("only").sum()),
            "max |rel|": rel.max() if len(rel) else 0.0,
            "median |rel|": rel.median() if len(rel) else 0.0,
        })  # fmt: skip
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, nargs="?", default=Path("."))
    ap.add_argument("--rev", default="HEAD", help="git revision of the reference (default HEAD)")
    ap.add_argument("--top", type=int, default=15, help="largest relative differences to list")
    ap.add_argument("--fail-above", type=float, default=None, metavar="REL")
    a = ap.parse_args(argv)
    root = a.root.resolve()
    pd.set_option("display.width", 200)
    pd.set_option("display.max_colwidth", 70)

    outs = []
    for lock in LOCK_FILES:
        text = committed_text(root, lock, a.rev)
        if text is not None:
            outs.append(output_hashes(root, text).assign(lock=lock))
    if outs:
        outs_df = pd.concat(outs, ignore_index=True)
        print(f"Stage outputs against {a.rev}'s lock files:\n")
        print(outs_df[["lock", "stage", "path", "status"]].to_string(index=False))
        counts = outs_df["status"].value_counts().to_dict()
        print(f"\n{counts.get('identical', 0)} of {len(outs_df)} files byte-identical\n")

    table = compare_metric_files(root, metric_paths(root, a.rev), a.rev)
    print(f"Metrics (reports/metrics/*.json) against {a.rev}:\n")
    print(file_summary(table).to_string(index=False, float_format=lambda x: f"{x:.2e}"))
    moved = table[table["abs_diff"].notna() & (table["status"] == "differs")]
    if len(moved):
        top = moved.reindex(moved["rel_diff"].abs().sort_values(ascending=False).index).head(a.top)
        print(f"\nLargest relative differences ({len(top)} of {len(moved)}):\n")
        print(top[["file", "key", "reference", "rerun", "rel_diff"]].to_string(index=False))
    other = table[table["status"].isin(["differs", "only reference", "only rerun"])]
    other = other[other["abs_diff"].isna()]
    if len(other):
        print(f"\nOther differences ({len(other)}; not last bits):\n")
        shown = other[["file", "key", "reference", "rerun", "status"]].copy()
        for col in ("reference", "rerun"):  # long strings (captions) cut to a glance
            shown[col] = shown[col].map(lambda v: v if len(str(v)) <= 60 else f"{str(v)[:57]}...")
        print(shown.to_string(index=False))
    if a.fail_above is None:
        return 0
    too_far = moved["rel_diff"].abs() > a.fail_above
    return 1 if bool(too_far.any()) or len(other) else 0


if __name__ == "__main__":
    sys.exit(main())
