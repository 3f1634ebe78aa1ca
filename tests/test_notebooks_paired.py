"""Each notebooks/NN_x.py has a paired .ipynb with the same cells and no outputs.

Expected outputs live outside notebooks/, in the nbval snapshots
tests/notebook_snapshots/ (see test_notebook_snapshots.py).
"""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import pytest

from shrinklab.pipeline.notebooks import notebook_parameters

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def test_there_are_notebooks():
    assert len(SOURCES) >= 1


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_py_and_ipynb_are_in_sync(source: Path):
    ipynb = source.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} missing: run `jupytext --sync {source}`"
    text_nb = jupytext.read(source)
    json_nb = nbformat.read(ipynb, as_version=4)
    strip = lambda cells: [(c.cell_type, c.source.strip()) for c in cells]  # noqa: E731
    assert strip(text_nb.cells) == strip(json_nb.cells), (
        f"{source.name} and {ipynb.name} drifted apart: run `jupytext --sync {source}`"
    )


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_no_outputs_committed(source: Path):
    json_nb = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    for cell in json_nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{source.with_suffix('.ipynb').name} carries outputs: rewrite it without "
                f"(`jupytext --to ipynb {source}`); checked outputs belong in "
                "tests/notebook_snapshots/ (python -m shrinklab.pipeline snapshots)"
            )


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_one_parameters_cell(source: Path):
    params = notebook_parameters(jupytext.read(source))
    assert params, "the parameters cell defines no parameter"
