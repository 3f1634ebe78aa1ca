"""Trained weights shipped inside the package (``shrinklab/weights/``, package data).

The evaluation stage of the pipeline copies the deployed model, ``models/final.pt``,
to ``shrinklab/weights/final.pt`` and writes its model card ``final.md`` beside it, so
``pip install shrinklab`` brings a trained estimator: ``MLShrinkageCovariance()`` with
no argument uses :data:`DEFAULT_MODEL`, and ``from_pretrained("final")`` names it.
"""

from __future__ import annotations

import functools
import os
from importlib import resources
from pathlib import Path

__all__ = ["DEFAULT_MODEL", "bundled_dir", "bundled_model_path", "bundled_names", "model_source"]

DEFAULT_MODEL = "final"
"""Name of the bundled model the estimator uses by default."""


@functools.lru_cache(maxsize=1)
def _package_root() -> Path:
    return Path(str(resources.files("shrinklab")))  # the installed package (fixed)


def bundled_dir() -> Path:
    """The folder of the bundled weights inside the installed package."""
    return _package_root() / "weights"


def bundled_names() -> list[str]:
    """Names of the bundled models (``<name>.pt`` files), sorted."""
    folder = bundled_dir()
    return sorted(p.stem for p in folder.glob("*.pt")) if folder.is_dir() else []


def bundled_model_path(name: str = DEFAULT_MODEL) -> Path:
    """Path of the bundled model ``name``; ``ValueError`` naming the bundled models if
    there is none of that name."""
    path = bundled_dir() / f"{name}.pt"
    if not path.is_file():
        have = bundled_names()
        raise ValueError(
            f"no bundled model {name!r} in {bundled_dir()} (bundled: {have or 'none'}); "
            "pass a model file, or run `make repro`, whose evaluation stage bundles models/final.pt"
        )
    return path


def model_source(source: str | os.PathLike | None) -> Path:
    """The model file for ``source``: ``None`` → the default bundled model; an existing
    file → that file; a bare name (no folder, no suffix) of a bundled model → it;
    anything else → the path as given (the loader then reports what is wrong)."""
    if source is None:
        return bundled_model_path(DEFAULT_MODEL)
    path = Path(source)
    if path.is_file():
        return path
    if isinstance(source, str) and path.suffix == "" and path.name == source:
        return bundled_model_path(source)
    return path
