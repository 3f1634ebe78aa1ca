"""The install files: a lean core install for the estimator, everything else in extras.

``pip install shrinklab`` brings only what ``from shrinklab import
MLShrinkageCovariance`` (and ``python -m shrinklab``) need; the pipeline, export and
test tools are extras (``[skfolio]``, ``[pipeline]``, ``[export]``, ``[dev]``,
``[all]``).  ``scripts/setup.sh`` and ``environment.yml`` install ``.[all]``.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "shrinklab"
PROJECT = "shrinklab"

# Tools that must never be part of the core install.
NOT_CORE = {
    "dvc",
    "dvclive",
    "tensorboard",
    "papermill",
    "jupytext",
    "ipykernel",
    "nbconvert",
    "nbval",
    "pytest",
    "ruff",
    "optuna",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "torchao",
    "matplotlib",
    "seaborn",
    "skfolio",
    "linearmodels",
}
# Everything the project depended on before the split: still installed by `.[all]`.
FULL_INSTALL = NOT_CORE | {
    "torch",
    "numpy",
    "scipy",
    "pandas",
    "scikit-learn",
    "threadpoolctl",
    "tqdm",
    "pyyaml",
    "pyarrow",
}
EXTRAS = {"skfolio", "pipeline", "export", "dev", "all"}


def _name(requirement: str) -> str:
    """Normalised distribution name of a requirement string (PEP 503)."""
    name = re.split(r"[<>=!~;\[ ]", requirement.strip(), maxsplit=1)[0]
    return _norm(name)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@cache
def _project() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["project"]


def _core() -> list[str]:
    return _project()["dependencies"]


def _extra(name: str) -> list[str]:
    """Requirements of an extra, with self-references (``shrinklab[a,b]``) expanded."""
    out: list[str] = []
    for r in _project()["optional-dependencies"][name]:
        req = Requirement(r)
        if _norm(req.name) == PROJECT:
            for sub in sorted(req.extras):
                out += _extra(sub)
        else:
            out.append(r)
    return out


def _closure(requirements: list[str]) -> set[str]:
    """The distributions ``requirements`` install (transitively, no extras of
    dependencies), as far as they are installed in this environment."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = _norm(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            continue
        for r in requires:
            sub = Requirement(r)
            if sub.marker is None or sub.marker.evaluate({"extra": ""}):
                todo.append(sub)
    return seen


@cache
def _module_distributions() -> dict[str, set[str]]:
    return {
        mod: {_norm(d) for d in dists} for mod, dists in metadata.packages_distributions().items()
    }


def _imports(path: Path) -> set[str]:
    """Top-level module names imported anywhere in ``path`` (absolute imports only)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.partition(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names - set(sys.stdlib_module_names) - {PROJECT, "__future__"}


# --------------------------------------------------------------------------- pyproject
def test_core_dependencies_have_no_tooling():
    core = {_name(r) for r in _core()}
    assert not core & NOT_CORE, f"tools in the core install: {sorted(core & NOT_CORE)}"
    assert core == {"torch", "numpy", "scipy", "pandas", "scikit-learn"}


def test_torch_is_pinned_in_core_and_nowhere_else():
    # An unpinned torch pulls a multi-GB CUDA build.
    assert [r for r in _core() if _name(r) == "torch"] == ["torch==2.13.0"]
    for extra in EXTRAS:
        assert "torch" not in {_name(r) for r in _extra(extra)}, extra


def test_extras():
    assert set(_project()["optional-dependencies"]) == EXTRAS
    names = {e: {_name(r) for r in _extra(e)} for e in EXTRAS}
    assert names["skfolio"] == {"skfolio"}
    assert {"dvc", "dvclive", "papermill", "nbval", "optuna", "matplotlib", "seaborn"} <= names[
        "pipeline"
    ]
    assert {"pyyaml", "pyarrow", "tqdm", "threadpoolctl", "skfolio"} <= names["pipeline"]
    assert names["export"] == {"onnx", "onnxruntime", "onnxscript", "torchao"}
    assert {"pytest", "ruff"} | names["pipeline"] | names["export"] <= names["dev"]
    assert names["all"] == set().union(*(names[e] for e in EXTRAS - {"all"}))
    # nothing of the former single dependency list was dropped
    assert FULL_INSTALL <= names["all"] | {_name(r) for r in _core()}


def test_command_line_entry_point():
    assert _project()["scripts"] == {"shrinklab": "shrinklab.cli:main"}


# --------------------------------------------------------------------------- setup.sh, conda
def test_setup_script_installs_every_extra():
    text = (ROOT / "scripts" / "setup.sh").read_text()
    assert re.search(r"pip install [^\n]*-e \"?\.\[all\]\"?", text), "setup.sh must install .[all]"


def _conda_env() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def test_conda_environment_is_python_311():
    env = _conda_env()
    assert "python=3.11" in env["dependencies"]
    assert "pip" in env["dependencies"]
    assert env["name"] == "shrinklab"


def test_conda_environment_installs_the_project_with_all_extras():
    env = _conda_env()
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml needs exactly one pip section"
    lines = [str(x).strip() for x in pip_sections[0]]
    assert "-e .[all]" in lines
    # the package list lives in pyproject.toml only: besides options (--extra-index-url)
    # the pip section may repeat the torch pin, nothing else
    packages = [x for x in lines if not x.startswith("-")]
    assert packages in ([], ["torch==2.13.0"])
    assert not [d for d in env["dependencies"] if isinstance(d, str) and "torch" in d]


# --------------------------------------------------------------------------- what the code imports
def test_every_third_party_import_in_the_package_is_declared():
    """Each module the package imports (anywhere, lazily too) comes from a distribution
    that the core install or an extra brings (directly or as their dependency)."""
    declared = _closure(_core() + _extra("all"))
    missing = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for mod in _imports(path):
            dists = _module_distributions().get(mod, set())
            if not dists & declared:
                missing.setdefault(mod, []).append(str(path.relative_to(ROOT)))
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def _non_core_modules() -> list[str]:
    """Installed top-level modules that no core-install distribution provides."""
    allowed = _closure(_core()) | {PROJECT}
    return sorted(
        mod
        for mod, dists in _module_distributions().items()
        if mod not in sys.stdlib_module_names and not dists & allowed
    )


_ESTIMATOR_PATH = r"""
import importlib.abc, json, sys

blocked = set(json.loads(sys.argv[1]))
model, csv, out = sys.argv[2:5]
tried = []


class NotCore(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            tried.append(name)
            raise ModuleNotFoundError(f"{name} is not in the core install", name=name)
        return None


sys.meta_path.insert(0, NotCore())
before = set(sys.modules)

import numpy as np
from shrinklab import MLShrinkageCovariance
from shrinklab.cli import main

X = np.random.default_rng(0).standard_normal((30, 4))
assert MLShrinkageCovariance(model_path=model).fit(X).covariance_.shape == (4, 4)
assert main(["covariance", csv, "--model", model, "--out", out]) == 0
print(json.dumps({"loaded": sorted(set(sys.modules) - before), "tried": sorted(set(tried))}))
"""


@pytest.fixture(scope="module")
def estimator_path_modules(tmp_path_factory) -> dict:
    """Run the estimator and the command line (fit on a tiny model) in a fresh
    interpreter in which every installed module outside the core install's
    distributions fails to import; return the modules it loaded."""
    import numpy as np
    import pandas as pd
    from _forced_model import random_network, save

    tmp = tmp_path_factory.mktemp("core")
    model = save(random_network(), tmp / "m.pt")
    dates = pd.bdate_range("2024-01-01", periods=30, name="date")
    X = np.random.default_rng(1).standard_normal((30, 4))
    pd.DataFrame(X, index=dates, columns=list("abcd")).to_csv(tmp / "r.csv")
    blocked = _non_core_modules()
    run = subprocess.run(
        [sys.executable, "-c", _ESTIMATOR_PATH, json.dumps(blocked), model, tmp / "r.csv"]
        + [tmp / "cov.csv"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert run.returncode == 0, (
        "the estimator or `python -m shrinklab` needs a package outside the core "
        f"dependencies:\n{run.stderr[-3000:]}"
    )
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_estimator_runs_with_only_the_core_install(estimator_path_modules):
    """``from shrinklab import MLShrinkageCovariance``, loading a model, ``fit`` and
    ``python -m shrinklab covariance`` work with every non-core package unimportable,
    and everything they load comes from the core dependencies (or theirs)."""
    core_closure = _closure(_core())
    foreign = {}
    for mod in {m.partition(".")[0] for m in estimator_path_modules["loaded"]}:
        dists = _module_distributions().get(mod)
        if dists and PROJECT not in dists and not dists & core_closure:
            foreign[mod] = sorted(dists)
    assert not foreign, f"loaded outside the core dependencies: {foreign}"
    for tool in ("dvc", "papermill", "nbval", "pytest", "optuna", "onnx", "torchao", "yaml"):
        assert tool not in {m.partition(".")[0] for m in estimator_path_modules["loaded"]}


def test_estimator_path_imports_are_direct_core_dependencies(estimator_path_modules):
    """What shrinklab's own modules on the estimator path import (and load) is a
    *direct* core dependency, not something that merely comes along with one."""
    loaded = set(estimator_path_modules["loaded"])
    loaded_top = {m.partition(".")[0] for m in loaded}
    core = {_name(r) for r in _core()}
    needed: dict[str, set[str]] = {}
    for mod in sorted(m for m in loaded if m == PROJECT or m.startswith(PROJECT + ".")):
        path = PACKAGE.joinpath(*mod.split(".")[1:])
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        if not path.is_file():
            continue
        for name in _imports(path) & loaded_top:
            needed.setdefault(name, set()).add(mod)
    assert {"torch", "numpy", "sklearn"} <= set(needed)
    not_direct = {
        name: sorted(users)
        for name, users in needed.items()
        if not _module_distributions().get(name, set()) & core
    }
    assert not not_direct, f"imported by the estimator path but not core dependencies: {not_direct}"


_README_SNIPPET = (
    _ESTIMATOR_PATH[: _ESTIMATOR_PATH.index("model, csv, out")]
    + _ESTIMATOR_PATH[_ESTIMATOR_PATH.index("tried = []") : _ESTIMATOR_PATH.index("before = set")]
    + 'exec(compile(sys.argv[2], "README.md", "exec"))\n'
)
"""The blocker of :data:`_ESTIMATOR_PATH` (every non-core package unimportable), then the
README's snippet."""


def _readme_usage_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Use the estimator") :]
    return section[
        section.index("```python\n") + 10 : section.index("\n```", section.index("```python"))
    ]


def test_readme_usage_snippet_runs_with_only_the_core_install():
    """The README's usage snippet, verbatim, with the bundled model and every non-core
    package unimportable (what `pip install .` followed by the snippet does)."""
    if not (PACKAGE / "weights" / "final.pt").exists():
        pytest.skip("no bundled model in this checkout yet (written by `make repro`)")
    blocked = _non_core_modules()
    run = subprocess.run(
        [sys.executable, "-c", _README_SNIPPET, json.dumps(blocked), _readme_usage_snippet()],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.startswith("(50, 50)")
