"""The install files agree: pyproject.toml and environment.yml name the same packages."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    """Normalised distribution name of a requirement string (PEP 503)."""
    name = re.split(r"[<>=!~;\[ ]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject_requirements() -> list[str]:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["project"]["dependencies"]


def _conda_pip_requirements() -> list[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml needs exactly one pip section"
    return [r for r in pip_sections[0] if not r.startswith("-e")]


def test_same_packages_in_pyproject_and_environment():
    assert {_name(r) for r in _pyproject_requirements()} == {
        _name(r) for r in _conda_pip_requirements()
    }


def test_same_version_specifiers():
    assert sorted(r.replace(" ", "") for r in _pyproject_requirements()) == sorted(
        r.replace(" ", "") for r in _conda_pip_requirements()
    )


def test_torch_is_pinned_everywhere():
    # An unpinned torch pulls a multi-GB CUDA build.
    for reqs in (_pyproject_requirements(), _conda_pip_requirements()):
        torch = [r for r in reqs if _name(r) == "torch"]
        assert torch == ["torch==2.13.0"]


def test_conda_environment_is_python_311():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    assert "pip" in env["dependencies"]
    assert env["name"] == "shrinklab"
