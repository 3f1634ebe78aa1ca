"""Load a file of the repository (a script or benchmark, not a package module) as a
module, so that tests can call its functions."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script(relative: str) -> ModuleType:
    """The file ``ROOT / relative`` (e.g. ``"scripts/server_rule_folds.py"``), executed as
    a module named after its stem (its ``__main__`` block does not run)."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
