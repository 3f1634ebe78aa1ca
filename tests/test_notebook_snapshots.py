"""Output snapshots of the notebooks (tests/notebook_snapshots/), run by nbval in CI.

`notebooks/` carries no outputs, so nbval has nothing to compare there. Each
snapshot is its notebook executed at the small defaults with only the outputs of
the cells marked `# NBVAL_CHECK_OUTPUT` kept; `pytest tests --nbval-lax` executes
the snapshots and compares exactly those cells. These tests make sure that:

* a snapshot can never drift from its notebook (same code cells, same order);
* every marked cell really has an expected output (nbval silently skips a cell
  with no execution count, the gap this mechanism closes);
* nbval does fail on a changed checked value (a throwaway notebook, run in a
  subprocess) and passes on the regenerated snapshot;
* the fingerprint printed by checked cells (`pipeline.checksum`) equals a direct
  SHA-256 of the canonical bytes, and tolerates float noise below its rounding.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import numpy as np
import pandas as pd
import pytest
import torch

from shrinklab.pipeline.notebooks import notebook_names
from shrinklab.pipeline.snapshots import (
    SNAPSHOT_COMMAND,
    SNAPSHOT_DIR,
    checksum,
    is_checked,
    snapshot_notebook,
    write_snapshots,
)

NAMES = notebook_names()
REGENERATE = f"regenerate the snapshots: {SNAPSHOT_COMMAND}"


def _code(cells) -> list[str]:
    return [c.source.strip() for c in cells if c.cell_type == "code"]


def _snapshot(name: str):
    path = SNAPSHOT_DIR / f"{name}.ipynb"
    assert path.exists(), f"no snapshot {path}: {REGENERATE}"
    return nbformat.read(path, as_version=4)


# ------------------------------------------------------------ committed snapshots
def test_one_snapshot_per_notebook():
    assert NAMES, "no notebooks found"
    snapshots = sorted(p.stem for p in SNAPSHOT_DIR.glob("*.ipynb"))
    assert snapshots == NAMES, f"snapshots {snapshots} != notebooks {NAMES}: {REGENERATE}"


@pytest.mark.parametrize("name", NAMES)
def test_snapshot_code_equals_notebook(name: str):
    notebook = jupytext.read(SNAPSHOT_DIR.parents[1] / "notebooks" / f"{name}.py")
    assert _code(_snapshot(name).cells) == _code(notebook.cells), (
        f"tests/notebook_snapshots/{name}.ipynb differs from notebooks/{name}.py: {REGENERATE}"
    )


@pytest.mark.parametrize("name", NAMES)
def test_snapshot_keeps_exactly_the_checked_outputs(name: str):
    for i, cell in enumerate(_snapshot(name).cells):
        if cell.cell_type != "code":
            continue
        if is_checked(cell):
            # nbval compares only cells with an execution count and outputs.
            assert cell.execution_count is not None and cell.outputs, (
                f"checked cell {i} of {name} has no expected output: {REGENERATE}"
            )
        else:
            assert cell.outputs == [] and cell.execution_count is None, (
                f"cell {i} of {name} is not marked # NBVAL_CHECK_OUTPUT but has outputs: {REGENERATE}"
            )


@pytest.mark.parametrize("name", NAMES)
def test_snapshot_is_in_normal_form(name: str):
    snap = _snapshot(name)
    assert snapshot_notebook(snap) == snap, f"{name} snapshot was edited by hand: {REGENERATE}"


def test_some_outputs_are_checked():
    checked = {n: sum(is_checked(c) for c in _snapshot(n).cells) for n in NAMES}
    assert sum(checked.values()) >= len(NAMES), checked


# ------------------------------------------------- the mechanism, end to end
def _write_text_notebook(root: Path, name: str, body: str) -> None:
    (root / "notebooks").mkdir(parents=True, exist_ok=True)
    (root / "notebooks" / f"{name}.py").write_text(
        '# %% tags=["parameters"]\nn = 10\n\n'
        '# %%\nprint("not checked", id(n))\n\n'
        "# %%\n# NBVAL_CHECK_OUTPUT\n" + body + "\n"
    )


def _nbval(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", str(folder), "--nbval-lax", "--nbval-current-env",
         "-p", "no:cacheprovider", "-q", "-rf", "--rootdir", str(folder)],
        cwd=folder, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_nbval_fails_when_a_checked_value_changes(tmp_path: Path):
    _write_text_notebook(tmp_path, "01_good", "print('sum', sum(range(n)))")
    _write_text_notebook(tmp_path, "02_bad", "print('sum', sum(range(n)))")
    snaps = tmp_path / "snapshots"
    (snaps / "build").mkdir(parents=True)
    (snaps / "build" / "state").write_text("left by an earlier run")
    (snaps / "00_removed_notebook.ipynb").write_text("{}")
    written = write_snapshots(root=tmp_path, snapshot_dir=snaps)
    assert [p.name for p in written] == ["01_good.ipynb", "02_bad.ipynb"]
    assert sorted(p.name for p in snaps.glob("*.ipynb")) == ["01_good.ipynb", "02_bad.ipynb"]
    assert not (snaps / "build").exists(), "a full regeneration starts from a clean build folder"

    good = nbformat.read(written[0], as_version=4)
    assert [c.outputs for c in good.cells if c.cell_type == "code"][:2] == [[], []]
    checked = good.cells[-1]
    assert checked.execution_count == 3 and checked.outputs[0].text == "sum 45\n"

    # A result that changed: the expected output no longer matches what runs.
    bad = nbformat.read(written[1], as_version=4)
    bad.cells[-1].outputs[0].text = "sum 46\n"
    nbformat.write(bad, written[1])

    result = _nbval(snaps)
    report = result.stdout + result.stderr
    assert result.returncode == 1, report
    failed = [line for line in report.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and "02_bad.ipynb::Cell 2" in failed[0], report
    assert "sum 46" in report and "sum 45" in report  # expected vs actual shown
    assert "1 failed, 5 passed" in report, report


def test_snapshot_refuses_a_checked_cell_without_output(tmp_path: Path):
    _write_text_notebook(tmp_path, "01_silent", "x = n + 1")
    with pytest.raises(ValueError, match="no output to compare") as err:
        write_snapshots(root=tmp_path, snapshot_dir=tmp_path / "snapshots")
    assert "notebooks/01_silent.py" in str(err.value.__notes__)


def test_snapshot_of_an_unknown_notebook_is_refused(tmp_path: Path):
    _write_text_notebook(tmp_path, "01_x", "print(n)")
    with pytest.raises(ValueError, match=r"no notebooks \['02_y'\]"):
        write_snapshots(["02_y"], root=tmp_path, snapshot_dir=tmp_path / "snapshots")


def test_snapshot_notebook_strips_unchecked_outputs_and_metadata():
    kernel = {"name": "k", "display_name": "K", "language": "python"}
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": kernel, "jupytext": {"x": 1}})
    plain = nbformat.v4.new_code_cell("print(1)", execution_count=7, metadata={"execution": {}})
    plain.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    marked = nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nfig", execution_count=8)
    marked.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="a "),
        nbformat.v4.new_output("stream", name="stdout", text="b\n"),
        nbformat.v4.new_output(
            "execute_result", data={"text/plain": "F", "image/png": "AAA"}, execution_count=8
        ),
    ]
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), plain, marked]
    snap = snapshot_notebook(nb)
    assert snap.metadata == {"kernelspec": kernel}
    assert snap.cells[1].outputs == [] and snap.cells[1].execution_count is None
    assert snap.cells[1].metadata == {}
    assert snap.cells[2].execution_count == 2
    stream, result = snap.cells[2].outputs
    assert stream.text == "a b\n"  # one stream, as nbval merges them
    assert dict(result.data) == {"text/plain": "F"}  # nbval skips images
    assert result.execution_count == 2
    assert [c.id for c in snap.cells] == ["cell-000", "cell-001", "cell-002"]
    assert nb.cells[1].outputs, "the executed notebook itself is not modified"


# ------------------------------------------------------------------ checksum
def test_checksum_is_sha256_of_canonical_int64_bytes():
    values = np.array([[3, 1], [4, 1]], dtype=np.int32)
    reference = hashlib.sha256(repr((2, 2)).encode() + values.astype("<i8").tobytes())
    assert checksum(values) == reference.hexdigest()[:16]
    # The same data as a tensor, a list or a Series has the same fingerprint.
    assert checksum(torch.tensor(values)) == checksum(values.tolist()) == checksum(values)
    assert checksum(pd.Series([1, 2])) == checksum(np.array([1, 2]))


def test_checksum_changes_with_any_value_shape_or_order():
    base = checksum(np.arange(6), ["a", "b"])
    assert checksum(np.arange(6).reshape(2, 3), ["a", "b"]) != base
    assert checksum(np.array([0, 1, 2, 3, 4, 6]), ["a", "b"]) != base
    assert checksum(np.arange(6), ["b", "a"]) != base
    assert checksum(np.arange(6), ["ab"]) != checksum(np.arange(6), ["a", "b"])
    dates = pd.to_datetime(["2020-01-02", "2020-01-03"])
    assert checksum(dates) != checksum(pd.to_datetime(["2020-01-02", "2020-01-06"]))


def test_checksum_of_floats_is_rounded():
    x = np.random.default_rng(0).normal(size=1000)
    assert checksum(x + 1e-12, decimals=6) == checksum(x, decimals=6)
    assert checksum(x + 1e-3, decimals=6) != checksum(x, decimals=6)
    assert checksum(x, decimals=6) == checksum(np.rint(x * 1e6).astype(np.int64))


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((np.ones(3),), {}, "needs decimals"),
        ((np.array([1.0, np.nan]),), {"decimals": 3}, "NaN or inf"),
        ((np.array([1e60]),), {"decimals": 3}, "too large"),
        ((np.array([1 + 2j]),), {}, "unsupported dtype"),
        ((), {}, "at least one"),
    ],
)
def test_checksum_rejects_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        checksum(*args, **kwargs)
