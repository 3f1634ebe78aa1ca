"""Run a jupytext notebook as a pipeline stage (papermill), and render it.

The text notebook ``notebooks/NN_name.py`` is the source of truth. A stage:

1. reads its section of ``params.yaml``, checks it against the section's typed
   dataclass (:func:`shrinklab.core.params.load_section`: unknown key, missing
   key, wrong type) and every key against the notebook's cell tagged
   ``parameters`` (a typo fails here instead of deep inside the notebook);
2. executes the notebook with papermill (kernel ``shrinklab``, cwd = repo root),
   writing the executed copy to ``reports/notebooks/NN_name.ipynb``;
3. renders self-contained HTML without code cells to ``reports/html/NN_name.html``.

A failing cell keeps the partial executed notebook and exits non-zero with the
cell's real error, so ``dvc repro`` stops at that stage.

Notebook checks in CI use *output snapshots* (``tests/notebook_snapshots/``): each
notebook executed at its small defaults, with every output stripped except those of
cells marked ``# NBVAL_CHECK_OUTPUT``. ``pytest --nbval-lax`` runs the snapshots and
compares exactly those cells (``notebooks/`` itself carries no outputs). See
:func:`write_snapshots` and :func:`checksum`.

Usage::

    python -m shrinklab.pipeline run 01_data_prep data_prep
    python -m shrinklab.pipeline index       # reports/index.html
    python -m shrinklab.pipeline snapshots   # regenerate tests/notebook_snapshots/
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from shrinklab.core.params import SHARED_SECTION, load_section, read_params
from shrinklab.core.progress import PROGRESS_ENV
from shrinklab.evaluation.reporting import update_readme, write_index

REPO_ROOT = Path(__file__).resolve().parents[1]
KERNEL_NAME = "shrinklab"
SNAPSHOT_DIR = REPO_ROOT / "tests" / "notebook_snapshots"
SNAPSHOT_COMMAND = "python -m shrinklab.pipeline snapshots  (or: make snapshots)"


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


def stage_parameters(
    section: str, params_file: Path, declared: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``section`` of ``params_file`` as a flat dict, plus the keys of the shared
    :data:`SHARED_SECTION` that the notebook declares (all of them if ``declared`` is
    None). A key in both is an error: each setting has one home."""
    params = read_params(params_file)
    if section not in params:
        raise KeyError(f"{params_file} has no section {section!r} (sections: {sorted(params)})")
    own = dict(params[section])
    shared = dict(params.get(SHARED_SECTION) or {}) if section != SHARED_SECTION else {}
    twice = sorted(set(own) & set(shared))
    if twice:
        raise ValueError(f"{params_file}: {twice} set in both {section!r} and {SHARED_SECTION!r}")
    own.update({k: v for k, v in shared.items() if declared is None or k in declared})
    return own


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
    if section:
        load_section(section, params_file)  # unknown / missing key, wrong type: ValueError
    params = stage_parameters(section, params_file, defaults) if section else {}
    check_parameters(params, defaults, name)

    out_dir = root / "reports" / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / f"{name}.ipynb"
    os.environ.setdefault("SHRINKLAB_QUIET", "1")  # no tqdm bars in executed notebooks
    progress = root / "build" / "progress" / f"{name}.log"
    progress.parent.mkdir(parents=True, exist_ok=True)
    progress.write_text("")
    os.environ[PROGRESS_ENV] = str(progress)  # the kernel inherits it (core.progress.report)
    started = time.perf_counter()
    print(f"[{name}] running notebooks/{name}.py", file=sys.stderr, flush=True)
    try:
        with _echo(progress, name):
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
    finally:
        os.environ.pop(PROGRESS_ENV, None)
    render_html(executed, root / "reports" / "html" / f"{name}.html")
    seconds = time.perf_counter() - started
    record_timing(root / TIMINGS_FILE, name, section, seconds)
    print(f"[{name}] done in {seconds:.0f} s", file=sys.stderr, flush=True)
    return executed


TIMINGS_FILE = Path("build") / "timings.jsonl"
"""Where :func:`run_stage` appends one line per finished stage (read by bench/stages.py)."""


def record_timing(path: Path, name: str, section: str | None, seconds: float) -> None:
    """Append ``{"notebook", "section", "seconds", "finished", "cpus"}`` as a JSON line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = {
        "notebook": name,
        "section": section,
        "seconds": round(float(seconds), 2),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
    }
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")


@contextlib.contextmanager
def _echo(path: Path, name: str, interval: float = 1.0) -> Iterator[None]:
    """Print the lines appended to ``path`` to the terminal (stderr) while the block runs."""
    stop = threading.Event()

    def follow() -> None:
        with open(path, encoding="utf-8") as fh:
            while True:
                line = fh.readline()
                if line:
                    print(f"[{name}] {line.rstrip()}", file=sys.stderr, flush=True)
                elif stop.is_set():
                    return
                else:
                    stop.wait(interval)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


class StagePaths(NamedTuple):
    """Folders of a stage: its inputs (``processed``, ``models``), its reports and figures."""

    processed: Path
    models: Path
    reports: Path
    figures: Path


def stage_setup(
    name: str, seed: int, processed_dir: str, models_dir: str, reports_dir: str
) -> StagePaths:
    """The first cell of every stage notebook: the figure style, 3-decimal tables,
    torch's global seed and the stage's folders (figures under ``<reports>/figures/<name>``)."""
    import pandas as pd
    import seaborn as sns
    import torch

    sns.set_theme(style="whitegrid", context="notebook")
    pd.set_option("display.precision", 3)  # tables in the reports: 3 decimals
    torch.manual_seed(seed)
    reports = Path(reports_dir)
    return StagePaths(Path(processed_dir), Path(models_dir), reports, reports / "figures" / name)


TRAINING_CODE = ("core", "data", "models", "training")
"""Subpackages whose code a training run executes; their source is part of a run's key."""


def code_digest(packages: tuple[str, ...] = TRAINING_CODE, root: Path | None = None) -> str:
    """sha256 of the source of ``shrinklab/<package>/**/*.py`` (paths and bytes, sorted):
    it changes whenever the loss, the trainer, the model or the data code changes."""
    base = (root or REPO_ROOT) / "shrinklab"
    digest = hashlib.sha256()
    for package in packages:
        for path in sorted((base / package).rglob("*.py")):
            digest.update(path.relative_to(base).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def run_dir(
    stage: str,
    config: dict[str, Any],
    *inputs: str | Path,
    root: Path | None = None,
    code: str | None = None,
) -> Path:
    """Checkpoint folder of a training run: ``build/runs/<stage>-<hash>``.

    The hash covers the run's configuration, the bytes of its input files and the
    training code (:func:`code_digest`, or ``code`` if given), so a killed run resumes
    from its checkpoint while a run with other parameters, other data or changed code
    (a new loss, a new trainer) never picks up a stale one.
    """
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for path in inputs:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    digest.update((code if code is not None else code_digest()).encode())
    out = (root or Path.cwd()) / "build" / "runs" / f"{stage}-{digest.hexdigest()[:12]}"
    out.mkdir(parents=True, exist_ok=True)
    return out


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


# --------------------------------------------------------------- output snapshots
def notebook_names(root: Path = REPO_ROOT) -> list[str]:
    """Names ``NN_x`` of the text notebooks ``notebooks/NN_x.py``, in pipeline order."""
    return sorted(p.stem for p in (root / "notebooks").glob("[0-9][0-9]_*.py"))


def checksum(*arrays: Any, decimals: int | None = None) -> str:
    """Short SHA-256 fingerprint (16 hex digits) of integer, boolean, date or string data.

    Meant for printed notebook checks (``# NBVAL_CHECK_OUTPUT``): a seeded pipeline
    must reproduce such data exactly (sizes, labels, seeds, dates), so a changed
    result changes the fingerprint without the data being printed. Floats are
    accepted only with ``decimals``: their last bits vary with the BLAS build and the
    CPU, so they are hashed as the integers ``rint(x * 10**decimals)``. Shapes are
    part of the fingerprint. Accepts NumPy arrays, pandas objects, torch tensors,
    lists.
    """
    import hashlib

    import numpy as np

    if not arrays:
        raise ValueError("checksum needs at least one array")
    digest = hashlib.sha256()
    for a in arrays:
        arr = np.asarray(a.detach().cpu().numpy() if hasattr(a, "detach") else a)
        digest.update(repr(arr.shape).encode())
        digest.update(_canonical_bytes(arr, decimals))
    return digest.hexdigest()[:16]


def _canonical_bytes(arr: Any, decimals: int | None) -> bytes:
    import numpy as np

    kind = arr.dtype.kind
    if kind in "biu":
        return arr.astype("<i8").tobytes()
    if kind == "M":
        return arr.astype("datetime64[ns]").view("<i8").tobytes()
    if kind == "f":
        if decimals is None:
            raise ValueError(
                "checksum of float data needs decimals= (float bits differ across machines)"
            )
        if not np.isfinite(arr).all():
            raise ValueError("checksum of float data with NaN or inf")
        scaled = np.rint(arr.astype(np.float64) * 10.0**decimals)
        if scaled.size and np.abs(scaled).max() >= 2.0**62:
            raise ValueError(f"checksum: values too large for decimals={decimals}")
        return scaled.astype("<i8").tobytes()
    if kind in "UO" and all(isinstance(x, str) for x in arr.ravel()):
        return "\x1f".join(arr.ravel().tolist()).encode()
    raise ValueError(
        f"checksum: unsupported dtype {arr.dtype} (integers, bools, dates, strings, floats)"
    )


def is_checked(cell) -> bool:
    """Whether nbval compares this cell's output under ``--nbval-lax``.

    True for a code cell marked ``# NBVAL_CHECK_OUTPUT`` (or tagged
    ``nbval-check-output``); uses nbval's own marker parsing.
    """
    from nbval.plugin import find_comment_markers, find_metadata_tags

    if cell.get("cell_type") != "code":
        return False
    options = dict(find_metadata_tags(cell.get("metadata", {})))
    options.update(find_comment_markers(cell.get("source", "")))
    return bool(options.get("check", False))


def execute_notebook(nb, cwd: Path):
    """Execute ``nb`` in place with cwd ``cwd``, in the kernel nbval uses.

    That is ``--nbval-current-env``: IPython of this interpreter, with this
    process's environment, so the snapshot's outputs come from the same setting as
    the check in CI.
    """
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbval.kernel import CURRENT_ENV_KERNEL_NAME, NbvalKernelspecManager

    km = KernelManager(
        kernel_name=CURRENT_ENV_KERNEL_NAME, kernel_spec_manager=NbvalKernelspecManager()
    )
    NotebookClient(nb, km=km, timeout=None, resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


_SKIPPED_MIME = ("image/png", "image/jpeg", "image/svg+xml")  # nbval does not compare images


def _snapshot_output(output, execution_count: int):
    import nbformat

    kind = output["output_type"]
    if kind == "stream":
        return nbformat.v4.new_output("stream", name=output["name"], text=output["text"])
    if kind == "error":
        raise ValueError(
            f"checked cell {execution_count} raised {output['ename']}: {output['evalue']}"
        )
    data = {k: v for k, v in output["data"].items() if k not in _SKIPPED_MIME}
    if not data:
        return None
    if kind == "execute_result":
        return nbformat.v4.new_output(kind, data=data, execution_count=execution_count)
    return nbformat.v4.new_output(kind, data=data)


def _merge_streams(outputs: list) -> list:
    """Consecutive writes to one stream as one output (nbval merges them too)."""
    merged: list = []
    for out in outputs:
        last = merged[-1] if merged else None
        if out.output_type == "stream" and last is not None and last.output_type == "stream":
            if last.name == out.name:
                last.text += out.text
                continue
        merged.append(out)
    return merged


def snapshot_notebook(executed):
    """Expected-output snapshot of an executed notebook.

    Keeps the cells (sources, tags), and the outputs of the checked cells only
    (:func:`is_checked`; images dropped, nbval skips them); every other output is
    removed. Checked cells get a stable execution count (their position among the
    code cells: nbval compares only cells with a count), other cells none; cell ids
    and metadata are normalised so a regenerated snapshot differs only where an
    output did. A checked cell without output, or with an error, is a ValueError.
    """
    import copy

    import nbformat

    nb = copy.deepcopy(executed)
    kernelspec = executed.metadata.get("kernelspec")
    nb.metadata = nbformat.from_dict({"kernelspec": kernelspec} if kernelspec else {})
    nb.nbformat, nb.nbformat_minor = 4, 5
    position = 0
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:03d}"
        tags = cell.get("metadata", {}).get("tags")
        cell.metadata = nbformat.from_dict({"tags": tags} if tags else {})
        if cell.cell_type != "code":
            cell.pop("attachments", None)
            continue
        position += 1
        if not is_checked(cell):
            cell.outputs, cell.execution_count = [], None
            continue
        outputs = [_snapshot_output(o, position) for o in cell.outputs]
        cell.outputs = _merge_streams([o for o in outputs if o is not None])
        if not cell.outputs:
            raise ValueError(f"checked cell {position} has no output to compare:\n{cell.source}")
        cell.execution_count = position
    nbformat.validate(nb)
    return nb


def write_snapshots(
    names: list[str] | None = None,
    root: Path = REPO_ROOT,
    snapshot_dir: Path | None = None,
) -> list[Path]:
    """Execute notebooks at their small defaults and write their output snapshots.

    ``names=None`` (or empty) regenerates every notebook from a clean ``<snapshot_dir>/build``
    (what CI starts from) and removes snapshots of notebooks that no longer exist.
    Notebooks run in pipeline order with cwd ``snapshot_dir`` (where nbval runs
    the snapshots), since each reads what the earlier ones wrote under
    ``build/smoke/``; a subset of names keeps the existing build folder.
    """
    import shutil
    import time

    import nbformat

    snapshot_dir = SNAPSHOT_DIR if snapshot_dir is None else Path(snapshot_dir)
    available = notebook_names(root)
    unknown = sorted(set(names or ()) - set(available))
    if unknown:
        raise ValueError(f"no notebooks {unknown} (available: {available})")
    snapshot_dir.mkdir(parents=True, exist_ok=True)
    if not names:
        shutil.rmtree(snapshot_dir / "build", ignore_errors=True)
        for stale in set(snapshot_dir.glob("*.ipynb")) - {
            snapshot_dir / f"{n}.ipynb" for n in available
        }:
            stale.unlink()
    written = []
    for name in sorted(names or available):
        start = time.perf_counter()
        try:
            snapshot = snapshot_notebook(execute_notebook(read_notebook(name, root), snapshot_dir))
        except Exception as err:
            err.add_note(f"while writing the snapshot of notebooks/{name}.py")
            raise
        path = snapshot_dir / f"{name}.ipynb"
        nbformat.write(snapshot, path)
        checked = sum(is_checked(c) for c in snapshot.cells)
        print(
            f"{path}: {checked} checked cells ({time.perf_counter() - start:.0f} s)",
            file=sys.stderr,
        )
        written.append(path)
    return written


def imported_modules(source: str, root: Path = REPO_ROOT, top_level: bool = False) -> set[str]:
    """``shrinklab.*`` modules named by the import statements of ``source`` (only the
    module body's with ``top_level``). ``from shrinklab import NAME`` of a name the
    package provides lazily counts the modules its ``__getattr__`` imports."""
    found: set[str] = set()
    tree = ast.parse(source)
    for node in tree.body if top_level else ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "shrinklab"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "shrinklab":
                continue
            found.add(node.module)
            for alias in node.names:  # `from shrinklab.core import targets` names a module
                if (root / node.module.replace(".", "/") / f"{alias.name}.py").exists():
                    found.add(f"{node.module}.{alias.name}")
                elif node.module == "shrinklab" and alias.name != "__version__":
                    found |= imported_modules(
                        (root / "shrinklab" / "__init__.py").read_text(), root
                    )
    return found


def _module_path(module: str, root: Path) -> Path:
    rel = Path(*module.split("."))
    return rel / "__init__.py" if (root / rel).is_dir() else rel.with_suffix(".py")


def module_closure(source: str, root: Path = REPO_ROOT) -> set[str]:
    """Repository paths of the shrinklab modules ``source`` runs, transitively (lazy
    imports included; a package's ``__init__`` runs whenever one of its modules does)."""
    todo = imported_modules(source, root) | {"shrinklab"}
    seen: set[str] = set()
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        for parent in range(1, mod.count(".") + 1):
            todo.add(".".join(mod.split(".")[:parent]))
        path = _module_path(mod, root)
        # a package's __init__ runs only its body on import (lazy exports count where used)
        todo |= imported_modules((root / path).read_text(), root, path.name == "__init__.py")
    return {_module_path(m, root).as_posix() for m in seen}


def stage_code_deps(cmd: str, root: Path = REPO_ROOT) -> list[str]:
    """The shrinklab modules a ``dvc.yaml`` stage command runs: its notebook's closure,
    the stage runner's, and the index writer's when the command writes the index."""
    import re

    match = re.search(r"pipeline run (\S+)", cmd)
    if not match:
        raise ValueError(f"stage command {cmd!r} runs no notebook")
    source = (root / "notebooks" / f"{match.group(1)}.py").read_text()
    needed = module_closure(source, root) | module_closure("import shrinklab.pipeline\n", root)
    return sorted(needed)


DVC_FILES = ("dvc.yaml", "studies/dvc.yaml")
"""The pipeline (``make repro``) and the studies kept out of it (``make studies``)."""


def write_stage_deps(root: Path = REPO_ROOT, dvc_file: str = "dvc.yaml") -> list[str]:
    """Rewrite the ``shrinklab/...`` deps of every stage in ``dvc_file`` (its stages run
    in the repository root) to exactly the modules the stage runs
    (:func:`stage_code_deps`), right after the stage's notebook; returns the names of
    the stages whose deps changed."""
    path = root / dvc_file
    stages = yaml.safe_load(path.read_text())["stages"]
    kept, block = [], None
    for line in path.read_text().splitlines(keepends=True):
        if line.startswith("    ") and not line.startswith("    -") and line.rstrip().endswith(":"):
            block = line.strip()[:-1]  # deps / params / outs / metrics / plots
        elif not line.startswith("    "):
            block = None
        if not (block == "deps" and line.startswith("    - shrinklab/")):
            kept.append(line)
    text = "".join(kept)
    changed = []
    for name, spec in stages.items():
        deps = stage_code_deps(spec["cmd"], root)
        if [d for d in spec.get("deps", []) if d.startswith("shrinklab/")] != deps:
            changed.append(name)
        start = text.index(f"  {name}:\n")
        notebook = text.index("\n", text.index("    deps:\n", start) + len("    deps:\n")) + 1
        text = text[:notebook] + "".join(f"    - {d}\n" for d in deps) + text[notebook:]
    path.write_text(text)
    return changed


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


if __name__ == "__main__":
    main()
