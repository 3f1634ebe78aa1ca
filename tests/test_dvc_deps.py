"""Every DVC stage depends on every ``shrinklab`` module its notebook runs.

A stage whose notebook imports a module (directly or through other modules, lazy
imports inside functions included) but does not list it in ``dvc.yaml`` would not
rerun when that module changes, and ``dvc.lock`` would no longer describe the code
that produced the committed reports.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _imported_modules(source: str) -> set[str]:
    """``shrinklab.*`` modules named by the import statements of ``source``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "shrinklab"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "shrinklab":
                continue
            found.add(node.module)
            for alias in node.names:  # `from shrinklab import dataset` names a module
                if (ROOT / node.module.replace(".", "/") / f"{alias.name}.py").exists():
                    found.add(f"{node.module}.{alias.name}")
    return found


def _path(module: str) -> Path:
    rel = Path(*module.split("."))
    return rel / "__init__.py" if (ROOT / rel).is_dir() else rel.with_suffix(".py")


def module_closure(source: str) -> set[str]:
    """Repository paths of the shrinklab modules ``source`` runs, transitively
    (a package's ``__init__`` runs whenever one of its modules is imported)."""
    todo = _imported_modules(source) | {"shrinklab"}
    seen: set[str] = set()
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        todo |= _imported_modules((ROOT / _path(mod)).read_text())
    return {_path(m).as_posix() for m in seen}


def _notebook_of(cmd: str) -> str | None:
    m = re.search(r"pipeline run (\S+)", cmd)
    return m.group(1) if m else None


def test_closure_follows_imports(tmp_path):
    """The closure of a one-line import reaches modules two imports away."""
    closure = module_closure("from shrinklab.sklearn import MLShrinkageCovariance\n")
    assert "shrinklab/sklearn.py" in closure
    assert "shrinklab/core/features.py" in closure  # imported by sklearn
    assert "shrinklab/__init__.py" in closure


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_depends_on_every_module_it_runs(stage):
    spec = STAGES[stage]
    nb = _notebook_of(spec["cmd"])
    assert nb is not None, f"stage {stage} does not run a notebook"
    source = (ROOT / "notebooks" / f"{nb}.py").read_text()
    needed = module_closure(source) | {"shrinklab/pipeline.py"}
    if "pipeline index" in spec["cmd"]:
        needed |= module_closure("import shrinklab.pipeline\n")
    deps = [Path(d) for d in spec.get("deps", [])]
    # a directory dependency covers every file below it
    missing = sorted(n for n in needed if not any(Path(n).is_relative_to(d) for d in deps))
    assert not missing, f"dvc.yaml stage {stage!r} lacks deps {missing}"
