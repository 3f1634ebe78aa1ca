"""Run a jupytext notebook as a pipeline stage (papermill), and render it.

The text notebook ``notebooks/NN_name.py`` is the source of truth. A stage:

1. reads its section of ``params.yaml`` and checks every key against the
   notebook's cell tagged ``parameters`` (an unknown key is a typo: it fails
   here instead of being silently ignored by papermill);
2. executes the notebook with papermill (kernel ``shrinklab``, cwd = repo root),
   writing the executed copy to ``reports/notebooks/NN_name.ipynb``;
3. renders self-contained HTML without code cells to ``reports/html/NN_name.html``.

A failing cell keeps the partial executed notebook and exits non-zero with the
cell's real error, so ``dvc repro`` stops at that stage.

Usage::

    python -m shrinklab.pipeline run 01_data_prep data_prep
    python -m shrinklab.pipeline index     # reports/index.html
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
KERNEL_NAME = "shrinklab"


def read_notebook(name: str, root: Path = REPO_ROOT):
    """Read ``notebooks/<name>.py`` (jupytext percent format) as a notebook."""
    import jupytext

    path = root / "notebooks" / f"{name}.py"
    if not path.exists():
        raise FileNotFoundError(f"no notebook {path}")
    nb = jupytext.read(path)
    nb.metadata["kernelspec"] = {
        "name": KERNEL_NAME,
        "display_name": "shrinklab (Python 3.11)",
        "language": "python",
    }
    return nb


def notebook_parameters(nb) -> dict[str, Any]:
    """Defaults of the cell tagged ``parameters`` (literal assignments only)."""
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"expected exactly one cell tagged 'parameters', found {len(cells)}")
    out: dict[str, Any] = {}
    for node in ast.parse(cells[0].source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                out[target.id] = ast.literal_eval(node.value)
    return out


def stage_parameters(section: str, params_file: Path) -> dict[str, Any]:
    """The ``section`` of ``params_file`` as a flat dict."""
    with open(params_file) as fh:
        params = yaml.safe_load(fh) or {}
    if section not in params:
        raise KeyError(f"{params_file} has no section {section!r} (sections: {sorted(params)})")
    return dict(params[section])


def check_parameters(given: dict[str, Any], defaults: dict[str, Any], name: str) -> None:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(
            f"{name}: parameters {unknown} are not in the notebook's 'parameters' cell "
            f"(known: {sorted(defaults)})"
        )


def run_stage(
    name: str,
    section: str | None,
    params_file: Path = REPO_ROOT / "params.yaml",
    root: Path = REPO_ROOT,
) -> Path:
    """Execute ``notebooks/<name>.py`` with ``params_file[section]``; return the executed path."""
    import papermill

    nb = read_notebook(name, root)
    defaults = notebook_parameters(nb)
    params = stage_parameters(section, params_file) if section else {}
    check_parameters(params, defaults, name)

    out_dir = root / "reports" / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / f"{name}.ipynb"
    os.environ.setdefault("SHRINKLAB_QUIET", "1")  # no tqdm bars in executed notebooks
    try:
        papermill.execute_notebook(
            nb,
            str(executed),
            parameters=params,
            kernel_name=KERNEL_NAME,
            cwd=str(root),
            progress_bar=False,
        )
    except papermill.PapermillExecutionError as err:
        sys.stderr.write(
            f"\nstage {name} failed in cell {err.exec_count}: {err.ename}: {err.evalue}\n"
            f"{''.join(err.traceback)}\npartial notebook: {executed}\n"
        )
        raise SystemExit(1) from None
    render_html(executed, root / "reports" / "html" / f"{name}.html")
    return executed


def run_dir(stage: str, config: dict[str, Any], *inputs: str | Path, root: Path | None = None) -> Path:
    """Checkpoint folder of a training run: ``build/runs/<stage>-<hash>``.

    The hash covers the run's configuration and the bytes of its input files, so a
    killed run resumes from its checkpoint while a run with other parameters or
    data never picks up a stale one.
    """
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for path in inputs:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    out = (root or Path.cwd()) / "build" / "runs" / f"{stage}-{digest.hexdigest()[:12]}"
    out.mkdir(parents=True, exist_ok=True)
    return out


def render_html(executed: Path, html_path: Path) -> None:
    """Self-contained HTML of an executed notebook, code cells hidden."""
    import nbformat
    from nbconvert import HTMLExporter

    html_path.parent.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    exporter.embed_images = True
    body, _ = exporter.from_notebook_node(nbformat.read(executed, as_version=4))
    html_path.write_text(body, encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shrinklab.pipeline")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute one notebook stage")
    run.add_argument("notebook", help="e.g. 01_data_prep")
    run.add_argument("section", nargs="?", help="params.yaml section (default: none)")
    run.add_argument("--params", default=str(REPO_ROOT / "params.yaml"))
    sub.add_parser("index", help="write reports/index.html and the README headline")
    args = parser.parse_args(argv)
    if args.command == "run":
        run_stage(args.notebook, args.section, Path(args.params))
    else:
        from shrinklab.reporting import update_readme, write_index

        write_index(REPO_ROOT)
        update_readme(REPO_ROOT)


if __name__ == "__main__":
    main()
