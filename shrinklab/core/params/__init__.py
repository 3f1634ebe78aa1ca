"""Typed settings of the pipeline: one frozen dataclass per section of ``params.yaml``.

Each stage's notebook has a ``parameters`` cell (its small, fast defaults; papermill
injects the section's values after it). The dataclasses mirror those sections,
field for field and with the same names, so a setting has one name everywhere; their
defaults are the notebooks' ``parameters`` cell values (smoke size). The folders every
stage shares live once, in the ``paths`` section (:class:`Paths`); a section exposes
them as its ``paths`` attribute.

Two ways in, with the same checks (an unknown key, a missing key or a value of the
wrong type is a :class:`ValueError` naming the section and the key):

- :func:`load_section` reads a section of ``params.yaml``
  (``python -m shrinklab.pipeline run`` calls it before papermill starts, so a typo
  fails at once instead of deep inside a notebook);
- :func:`notebook_section` builds a section from a notebook's variables (the line
  after the ``parameters`` cell), so a notebook run by hand is checked too.

The checks only read: the values the notebooks receive are those of ``params.yaml``,
unchanged (an integer where a float is declared stays an integer). Lists stay lists,
so "frozen" means the fields cannot be reassigned, not that a list cannot be mutated.

One module per section: ``shrinklab/core/params/<section>.py`` holds the section's
dataclass (its ``SECTION``) and the notebook-only names of its ``parameters`` cell
(``NOTEBOOK_ONLY``); this package holds what they share (the checks, :class:`Paths`,
:class:`Section`) and loads a section's module by name (:func:`section_class`). A stage
therefore depends on the modules of the sections it reads, not on every section's:
``shrinklab.pipeline.deps`` lists them, so a new key in one section reruns only the
stages that read that section.

This package sits in ``core`` (the lowest layer, standard library and PyYAML only) so
that the stage runner, the notebooks and any layer above can import it.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import pkgutil
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "SHARED_SECTION",
    "Paths",
    "REGISTRY",
    "Section",
    "check_value",
    "load_section",
    "mutable_default",
    "notebook_only",
    "notebook_section",
    "read_params",
    "section_class",
    "section_from_dict",
    "section_names",
]

SHARED_SECTION = "paths"
"""The params.yaml section of folders every stage shares (defined once)."""


def mutable_default(value: Any) -> Any:
    """A dataclass default for a mutable value (a fresh copy per instance)."""
    return field(default_factory=lambda: copy.deepcopy(value))


def check_value(value: Any, hint: Any) -> bool:
    """Whether ``value`` conforms to the type ``hint`` (``int``, ``float``, ``str``,
    ``bool``, ``Any``, ``list[X]``, ``tuple[X, ...]``, ``dict[K, V]``, ``X | None``).
    A float field accepts an integer (YAML writes ``4`` for 4.0); ``bool`` is never
    taken for a number; a list field accepts a tuple."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(check_value(value, a) for a in args)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (str, bool) or dataclasses.is_dataclass(hint):
        return isinstance(value, hint)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and all(check_value(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            check_value(k, args[0]) and check_value(v, args[1]) for k, v in value.items()
        )
    raise TypeError(f"check_value: unsupported type hint {hint!r}")


@dataclass(frozen=True)
class _Checked:
    """Checks every field's value against its annotation (:func:`check_value`)."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not check_value(value, hints[f.name]):
                raise ValueError(
                    f"params section {self.section_name()!r}: {f.name} = {value!r} is not "
                    f"{_type_name(hints[f.name])}"
                )

    @classmethod
    def section_name(cls) -> str:
        """The section's name in ``params.yaml`` (its ``section`` class attribute)."""
        own = getattr(cls, "section", None)
        if isinstance(own, str):
            return own
        return next((k for k, v in REGISTRY.items() if v is cls), cls.__name__)


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


@dataclass(frozen=True)
class Paths(_Checked):
    """The ``paths`` section: folders shared by the stages (defaults: smoke size)."""

    processed_dir: str = "build/smoke/data"
    models_dir: str = "build/smoke/models"
    reports_dir: str = "build/smoke/reports"
    runs_dir: str = "build/smoke/runs/model_selection"
    studies_cache_dir: str = "build/smoke/studies"  # worlds drawn once by two studies
    weights_dir: str = "build/smoke/weights"  # the bundled model (package data)


@dataclass(frozen=True)
class Section(_Checked):
    """A stage's section. ``paths`` is the shared :class:`Paths`, not a key of the
    section in ``params.yaml``; every other field is one."""

    paths: Paths = field(default_factory=Paths, kw_only=True)

    @classmethod
    def keys(cls) -> list[str]:
        """The section's keys in ``params.yaml`` (its fields but ``paths``)."""
        return [f.name for f in dataclasses.fields(cls) if f.name != "paths"]


REGISTRY: dict[str, type[_Checked]] = {SHARED_SECTION: Paths}
"""The sections loaded so far, by name (:func:`section_class` fills it)."""


def section_names() -> list[str]:
    """Every section of ``params.yaml``: the shared paths and one module per stage section."""
    here = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    return [SHARED_SECTION, *sorted(here)]


def _section_module(name: str) -> Any:
    if name == SHARED_SECTION or name not in section_names():
        raise ValueError(f"unknown params section {name!r} (known: {sorted(section_names())})")
    return importlib.import_module(f"{__name__}.{name}")


def section_class(name: str) -> type[_Checked]:
    """The dataclass of section ``name`` (imports ``shrinklab.core.params.<name>``)."""
    if name not in REGISTRY:
        REGISTRY[name] = _section_module(name).SECTION
    return REGISTRY[name]


def notebook_only(name: str) -> tuple[str, ...]:
    """Parameters the notebook of section ``name`` declares that are not settings of the
    section (never in ``params.yaml``)."""
    if name == SHARED_SECTION or (name in REGISTRY and name not in section_names()):
        return ()
    return tuple(_section_module(name).NOTEBOOK_ONLY)


def _build(cls: type[_Checked], name: str, values: dict[str, Any], **extra: Any) -> Any:
    keys = cls.keys() if issubclass(cls, Section) else [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(keys))
    if unknown:
        raise ValueError(f"params section {name!r}: unknown keys {unknown} (known: {keys})")
    missing = [k for k in keys if k not in values]
    if missing:
        raise ValueError(f"params section {name!r}: missing keys {missing}")
    return cls(**values, **extra)


def read_params(params_path: str | Path = "params.yaml") -> dict[str, Any]:
    """``params.yaml`` as a dict of sections; every section must be a mapping."""
    with open(params_path, encoding="utf-8") as fh:
        params = yaml.safe_load(fh) or {}
    if not isinstance(params, dict):
        raise ValueError(f"{params_path}: expected a mapping of sections")
    for name, section in params.items():
        if not isinstance(section, dict):
            raise ValueError(f"{params_path}: section {name!r} is not a mapping")
    return params


def section_from_dict(name: str, params: dict[str, Any]) -> Any:
    """Section ``name`` of the parsed ``params`` (sections as dicts), with the shared
    :class:`Paths`; every key must be a field and every field a key."""
    cls = section_class(name)
    if name not in params:
        raise ValueError(f"params has no section {name!r} (sections: {sorted(params)})")
    paths = _build(Paths, SHARED_SECTION, dict(params.get(SHARED_SECTION) or {}))
    if cls is Paths:
        return paths
    twice = sorted(set(params[name]) & {f.name for f in dataclasses.fields(Paths)})
    if twice:
        raise ValueError(f"params section {name!r}: {twice} set here and in {SHARED_SECTION!r}")
    return _build(cls, name, dict(params[name]), paths=paths)


def load_section(name: str, params_path: str | Path = "params.yaml") -> Any:
    """Section ``name`` of ``params_path`` as its typed dataclass (:func:`section_class`)."""
    try:
        return section_from_dict(name, read_params(params_path))
    except ValueError as err:
        raise ValueError(f"{params_path}: {err}") from None


def notebook_section(name: str, namespace: dict[str, Any]) -> Any:
    """Section ``name`` built from a notebook's variables (``globals()`` after the
    ``parameters`` cell): every field of the section must be defined; the shared paths
    the notebook defines replace :class:`Paths`' defaults."""
    cls = section_class(name)
    path_names = [f.name for f in dataclasses.fields(Paths)]
    paths = Paths(**{k: namespace[k] for k in path_names if k in namespace})
    if cls is Paths:
        return paths
    missing = [k for k in cls.keys() if k not in namespace]
    if missing:
        raise ValueError(f"params section {name!r}: the notebook does not define {missing}")
    return cls(**{k: namespace[k] for k in cls.keys()}, paths=paths)
