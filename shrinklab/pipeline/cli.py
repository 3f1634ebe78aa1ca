"""The command line of the pipeline: ``python -m shrinklab.pipeline run|index|snapshots|deps``.

It exists so that ``dvc.yaml``, ``studies/dvc.yaml``, the Makefile and CI call one
entry point, whose subcommands are the modules of :mod:`shrinklab.pipeline`.

Usage::

    python -m shrinklab.pipeline run 01_data_prep data_prep
    python -m shrinklab.pipeline index       # reports/index.html and the README headline
    python -m shrinklab.pipeline snapshots   # regenerate tests/notebook_snapshots/
    python -m shrinklab.pipeline deps        # rewrite the shrinklab/ deps of dvc.yaml
"""

from __future__ import annotations

import argparse
from pathlib import Path

from shrinklab.evaluation.reporting import update_readme, write_index
from shrinklab.pipeline.deps import DVC_FILES, write_stage_deps
from shrinklab.pipeline.notebooks import REPO_ROOT
from shrinklab.pipeline.runner import run_stage
from shrinklab.pipeline.snapshots import SNAPSHOT_DIR, write_snapshots


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shrinklab.pipeline")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute one notebook stage")
    run.add_argument("notebook", help="e.g. 01_data_prep")
    run.add_argument("section", nargs="?", help="params.yaml section (default: none)")
    run.add_argument("--params", default=str(REPO_ROOT / "params.yaml"))
    sub.add_parser("index", help="write reports/index.html and the README headline")
    snap = sub.add_parser(
        "snapshots", help=f"regenerate the nbval output snapshots in {SNAPSHOT_DIR}"
    )
    snap.add_argument(
        "notebooks", nargs="*", help="only these (default: all, from a clean build folder)"
    )
    sub.add_parser(
        "deps", help="rewrite the shrinklab/ deps of each stage of dvc.yaml and studies/dvc.yaml"
    )
    args = parser.parse_args(argv)
    if args.command == "run":
        run_stage(args.notebook, args.section, Path(args.params))
    elif args.command == "snapshots":
        write_snapshots(args.notebooks or None)
    elif args.command == "deps":
        for dvc_file in DVC_FILES:
            if (REPO_ROOT / dvc_file).is_file():
                changed = write_stage_deps(REPO_ROOT, dvc_file)
                print(f"{dvc_file}: deps of {changed or 'no stage'} rewritten")
    else:
        write_index(REPO_ROOT)
        update_readme(REPO_ROOT)
