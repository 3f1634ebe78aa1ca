"""The ``shrinklab/`` deps of each DVC stage, computed from the imports its notebook runs.

It exists so that a stage reruns exactly when a module it executes changes:
``python -m shrinklab.pipeline deps`` writes each stage's list into ``dvc.yaml``
and ``studies/dvc.yaml``, and ``tests/test_dvc_deps.py`` checks the lists.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

from shrinklab.pipeline.notebooks import REPO_ROOT

RUNNER = "import shrinklab.pipeline.__main__\n"
"""What every stage command executes besides its notebook (``python -m shrinklab.pipeline``)."""


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
    and the closure of the command line that runs it (:data:`RUNNER`: the stage runner and
    the index writer)."""
    match = re.search(r"pipeline run (\S+)", cmd)
    if not match:
        raise ValueError(f"stage command {cmd!r} runs no notebook")
    source = (root / "notebooks" / f"{match.group(1)}.py").read_text()
    needed = module_closure(source, root) | module_closure(RUNNER, root)
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
