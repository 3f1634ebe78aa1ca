"""What a stage notebook calls while it runs: its folders and seed
(:func:`stage_setup`) and the keyed folders of its training runs (:func:`run_dir`).

It exists so that a killed stage resumes its training from checkpoints while a
changed configuration, input or training code never picks up a stale one; it is
light (no papermill, no nbconvert), since every stage notebook imports it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, NamedTuple

from shrinklab.pipeline.notebooks import REPO_ROOT


class StagePaths(NamedTuple):
    """Folders of a stage: its inputs (``processed``, ``models``), its reports and figures."""

    processed: Path
    models: Path
    reports: Path
    figures: Path


def stage_setup(
    name: str, seed: int, processed_dir: str, models_dir: str, reports_dir: str
) -> StagePaths:
    """The first cell of every stage notebook: the figure style, 3-decimal tables,
    torch's global seed and the stage's folders (figures under ``<reports>/figures/<name>``)."""
    import pandas as pd
    import seaborn as sns
    import torch

    sns.set_theme(style="whitegrid", context="notebook")
    pd.set_option("display.precision", 3)  # tables in the reports: 3 decimals
    torch.manual_seed(seed)
    reports = Path(reports_dir)
    return StagePaths(Path(processed_dir), Path(models_dir), reports, reports / "figures" / name)


TRAINING_CODE = ("core", "data", "models", "training")
"""Subpackages whose code a training run executes; their source is part of a run's key."""


def code_digest(packages: tuple[str, ...] = TRAINING_CODE, root: Path | None = None) -> str:
    """sha256 of the source of ``shrinklab/<package>/**/*.py`` (paths and bytes, sorted):
    it changes whenever the loss, the trainer, the model or the data code changes."""
    base = (root or REPO_ROOT) / "shrinklab"
    digest = hashlib.sha256()
    for package in packages:
        for path in sorted((base / package).rglob("*.py")):
            digest.update(path.relative_to(base).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


CPUINFO = Path("/proc/cpuinfo")
"""Where Linux describes the processor (:func:`cpu_fields`)."""


def cpu_fields(cpuinfo: Path = CPUINFO) -> dict[str, str]:
    """The first processor's ``key: value`` lines of ``cpuinfo`` (``vendor_id``, ``model
    name``, ``flags``, …); empty where the file cannot be read (not Linux)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor's block ends at its blank line
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def numpy_dispatch_targets() -> tuple[list[str], list[str]]:
    """numpy's runtime SIMD dispatch (NEP 38): the targets its kernels were built for
    (``X86_V3``, ``X86_V4``, ``AVX512_ICL``, … by numpy version) and those in use on this
    CPU (``NPY_DISABLE_CPU_FEATURES`` removes some); two empty lists on a numpy without
    runtime dispatch."""
    try:
        from numpy._core import _multiarray_umath as umath  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core import _multiarray_umath as umath
    targets = list(getattr(umath, "__cpu_dispatch__", []))
    features = getattr(umath, "__cpu_features__", {})
    return targets, [t for t in targets if features.get(t)]


def kernel_signature(cpuinfo: Path = CPUINFO) -> str:
    """The CPU kernels a training run's numbers depend on: torch's ATen capability,
    numpy's dispatch targets in use, and the processor's vendor and model, by which MKL
    picks its paths (``"AVX2|X86_V3|AuthenticAMD|AMD EPYC"``; the last two empty without
    ``cpuinfo``). The same seeds train other networks under other kernels
    (docs/pipeline.md, "Across CPUs")."""
    import torch

    fields = cpu_fields(cpuinfo)
    capability = torch.backends.cpu.get_cpu_capability()
    numpy_kernels = ",".join(numpy_dispatch_targets()[1])
    return "|".join(
        [capability, numpy_kernels, fields.get("vendor_id", ""), fields.get("model name", "")]
    )


def run_dir(
    stage: str,
    config: dict[str, Any],
    *inputs: str | Path,
    root: Path | None = None,
    code: str | None = None,
    kernels: str | None = None,
) -> Path:
    """Checkpoint folder of a training run: ``build/runs/<stage>-<hash>``.

    The hash covers the run's configuration, the bytes of its input files, the
    training code (:func:`code_digest`, or ``code`` if given) and the CPU kernels
    (:func:`kernel_signature`, or ``kernels`` if given), so a killed run resumes from its
    checkpoint while a run with other parameters, other data, changed code (a new loss, a
    new trainer) or other kernels (another processor, another ``ATEN_CPU_CAPABILITY``)
    never picks up a stale one.
    """
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for path in inputs:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    digest.update((code if code is not None else code_digest()).encode())
    digest.update((kernels if kernels is not None else kernel_signature()).encode())
    out = (root or Path.cwd()) / "build" / "runs" / f"{stage}-{digest.hexdigest()[:12]}"
    out.mkdir(parents=True, exist_ok=True)
    return out
