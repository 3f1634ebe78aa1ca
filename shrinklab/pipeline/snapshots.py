"""Notebook output snapshots: what CI compares a notebook's outputs with.

It exists because notebooks carry no outputs: ``tests/notebook_snapshots/`` holds
each notebook executed at its small defaults, with every output stripped except
those of cells marked ``# NBVAL_CHECK_OUTPUT``. ``pytest --nbval-lax`` runs the
snapshots and compares exactly those cells. See :func:`write_snapshots` and
:func:`checksum` (the fingerprint such cells print).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from shrinklab.pipeline.notebooks import REPO_ROOT, notebook_names, read_notebook

SNAPSHOT_DIR = REPO_ROOT / "tests" / "notebook_snapshots"
SNAPSHOT_COMMAND = "python -m shrinklab.pipeline snapshots  (or: make snapshots)"


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
