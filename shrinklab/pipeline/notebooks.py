"""The text notebooks of the pipeline: reading them, their ``parameters`` cell and
the parameters a stage gives them.

It exists so that the stage runner, the snapshot writer and the tests read a
notebook and its parameters one way: ``notebooks/NN_name.py`` (jupytext percent
format) is the source of truth, run in the kernel :data:`KERNEL_NAME`, and a stage
may set only the names its cell tagged ``parameters`` assigns.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from shrinklab.core.params import SHARED_SECTION, read_params

REPO_ROOT = Path(__file__).resolve().parents[2]
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


def notebook_names(root: Path = REPO_ROOT) -> list[str]:
    """Names ``NN_x`` of the text notebooks ``notebooks/NN_x.py``, in pipeline order."""
    return sorted(p.stem for p in (root / "notebooks").glob("[0-9][0-9]_*.py"))
