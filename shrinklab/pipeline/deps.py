"""The ``shrinklab/`` deps of each DVC stage, computed from the imports its notebook runs.

It exists so that a stage reruns when a module it executes changes (the modules of the
model kinds it loads from other stages' files included: :func:`loaded_model_modules`):
``python -m shrinklab.pipeline deps`` writes each stage's list into ``dvc.yaml``
and ``studies/dvc.yaml``, and ``tests/test_dvc_deps.py`` checks the lists.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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


SECTION_LOADERS = ("load_section", "notebook_section", "section_class")
"""The functions of :mod:`shrinklab.core.params` that load a section's module by name."""


def named_sections(source: str) -> set[str]:
    """Sections ``source`` loads by a literal name (``notebook_section("finetune", …)``)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and node.args:
            func = node.func.attr if isinstance(node.func, ast.Attribute) else node.func
            name = func.id if isinstance(func, ast.Name) else func
            first = node.args[0]
            if name in SECTION_LOADERS and isinstance(first, ast.Constant):
                found.add(str(first.value))
    return found


def section_modules(sections: set[str], root: Path = REPO_ROOT) -> set[str]:
    """Repository paths of the modules of ``sections`` (one per section; the shared
    ``paths`` lives in the package's ``__init__``, which every stage runs anyway), with
    their own closures."""
    out: set[str] = set()
    for name in sorted(sections):
        path = root / "shrinklab" / "core" / "params" / f"{name}.py"
        if path.exists():
            out |= module_closure(f"import shrinklab.core.params.{name}\n", root)
    return out


def stage_code_deps(cmd: str, root: Path = REPO_ROOT, params: Sequence[Any] = ()) -> list[str]:
    """The shrinklab modules a ``dvc.yaml`` stage command runs: its notebook's closure,
    the closure of the command line that runs it (:data:`RUNNER`: the stage runner and
    the index writer), and the modules of the ``params.yaml`` sections it reads. The
    runner loads a section's module by name (:func:`shrinklab.core.params.section_class`),
    which no import statement shows, so the sections are named here: the command's own
    (``pipeline run <notebook> <section>``), those of the stage's ``params`` entries and
    those loaded by a literal name in any module the stage runs."""
    match = re.search(r"pipeline run (\S+) (\S+)", cmd)
    if not match:
        raise ValueError(f"stage command {cmd!r} runs no notebook with a section")
    notebook, section = match.groups()
    source = (root / "notebooks" / f"{notebook}.py").read_text()
    needed = module_closure(source, root) | module_closure(RUNNER, root)
    sections = {section} | {str(p).split(".")[0] for p in params if isinstance(p, str)}
    sections |= named_sections(source)
    for path in needed:
        sections |= named_sections((root / path).read_text())
    return sorted(needed | section_modules(sections, root))


DVC_FILES = ("dvc.yaml", "studies/dvc.yaml")
"""The pipeline (``make repro``) and the studies kept out of it (``make studies``)."""


def all_stages(root: Path = REPO_ROOT) -> dict[str, dict[str, Any]]:
    """Every stage of the :data:`DVC_FILES` that ``root`` has, by name (the names are
    unique across them)."""
    out: dict[str, dict[str, Any]] = {}
    for dvc_file in DVC_FILES:
        if (root / dvc_file).exists():
            out.update(yaml.safe_load((root / dvc_file).read_text())["stages"])
    return out


def _outs(spec: Mapping[str, Any]) -> list[str]:
    return [o if isinstance(o, str) else next(iter(o)) for o in spec.get("outs", [])]


def loaded_model_modules(
    name: str, stages: Mapping[str, Mapping[str, Any]], root: Path = REPO_ROOT
) -> set[str]:
    """The model modules stage ``name`` may run by loading files that other stages write.
    ``load_model`` imports the class of a file's kind by name
    (:data:`shrinklab.models.registry.BUILTIN_KINDS`), which no import statement shows:
    a stage that loads ``final.pt`` runs :mod:`shrinklab.models.switched` without
    importing it. For each dep of the stage that another stage writes, the
    ``shrinklab/models/`` modules that writer runs (it built the file from them), with
    their closure. An over-estimate where a writer runs model modules of kinds it does not
    write, never an under-estimate for the kinds it does."""
    writers = {out: stage for stage, spec in stages.items() for out in _outs(spec)}
    modules: set[str] = set()
    for dep in stages[name].get("deps", []):
        writer = writers.get(dep)
        if writer is None or writer == name:
            continue
        spec = stages[writer]
        code = stage_code_deps(spec["cmd"], root, spec.get("params", []))
        modules |= {p for p in code if p.startswith("shrinklab/models/")}
    source = "".join(f"import {m[:-3].replace('/', '.')}\n" for m in sorted(modules))
    return module_closure(source, root) if source else set()


def stage_deps(
    name: str, stages: Mapping[str, Mapping[str, Any]] | None = None, root: Path = REPO_ROOT
) -> list[str]:
    """The ``shrinklab/`` deps of stage ``name``: the modules its command runs
    (:func:`stage_code_deps`) and those it runs by loading other stages' model files
    (:func:`loaded_model_modules`)."""
    stages = all_stages(root) if stages is None else stages
    spec = stages[name]
    code = set(stage_code_deps(spec["cmd"], root, spec.get("params", [])))
    return sorted(code | loaded_model_modules(name, stages, root))


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
    everything = all_stages(root)
    for name, spec in stages.items():
        deps = stage_deps(name, everything, root)
        if [d for d in spec.get("deps", []) if d.startswith("shrinklab/")] != deps:
            changed.append(name)
        start = text.index(f"  {name}:\n")
        notebook = text.index("\n", text.index("    deps:\n", start) + len("    deps:\n")) + 1
        text = text[:notebook] + "".join(f"    - {d}\n" for d in deps) + text[notebook:]
    path.write_text(text)
    return changed
