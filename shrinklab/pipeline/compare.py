"""How close a rerun of the pipeline came to the committed results.

``make repro`` is byte-identical only on CPUs that run the kernels of the machines that
made the committed files (docs/pipeline.md, "Across CPUs"); elsewhere the trained
networks differ in their last bits and every downstream number moves a little. This
module says which stage outputs came out byte for byte and by how much each metric
moved, so that a rerun on another machine can be judged rather than eyeballed:

* :func:`output_hashes` — every file output of ``dvc.lock`` with its committed md5 and
  the md5 of the file in the working tree (``identical`` / ``differs`` / ``missing``);
* :func:`flatten` and :func:`compare_metrics` — every leaf of two metric JSON documents,
  numbers as absolute and relative differences, anything else (the deployed form, the
  verdict of a rule) as equal or not.

``scripts/compare_metrics.py`` prints both as tables against a git revision.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
from pathlib import Path

import pandas as pd
import yaml

__all__ = [
    "TIMING_KEY",
    "committed_text",
    "compare_metrics",
    "compare_metric_files",
    "flatten",
    "output_hashes",
]


def flatten(doc: object, prefix: str = "") -> dict[str, object]:
    """The leaves of a JSON document as ``{"a.b[2].c": value}`` (dict keys joined by ``.``,
    list positions in brackets); an empty dict or list is a leaf of its own."""
    if isinstance(doc, dict) and doc:
        out: dict[str, object] = {}
        for key, value in doc.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(doc, list) and doc:
        out = {}
        for i, value in enumerate(doc):
            out.update(flatten(value, f"{prefix}[{i}]"))
        return out
    return {prefix: doc}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


#: A leaf whose last name matches this is a duration or a throughput: machine-dependent.
TIMING_KEY = re.compile(r"(^|_)(seconds|ms|per_s)$")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def _is_timing(key: str) -> bool:
    return bool(TIMING_KEY.search(re.sub(r"\[\d+\]$", "", key).rsplit(".", 1)[-1]))


def compare_metrics(reference: object, rerun: object) -> pd.DataFrame:
    """One row per leaf of either document: ``key``, ``reference``, ``rerun``, ``status``
    (``identical``, ``differs``, ``only reference``, ``only rerun``; ``timing`` for a
    number named as a duration or throughput (:data:`TIMING_KEY`), which no rerun
    reproduces; ``text numbers`` for two strings that differ only in the numbers written
    in them, e.g. a formatted table row), and for two numbers
    ``abs_diff`` = rerun − reference and ``rel_diff`` = ``abs_diff / |reference|`` (infinite
    where the reference is 0 and the rerun is not). Two NaNs count as identical; a NaN
    against a number differs, with no ``abs_diff``."""
    ref, new = flatten(reference), flatten(rerun)
    rows = []
    for key in list(ref) + [k for k in new if k not in ref]:
        a, b = ref.get(key, _MISSING), new.get(key, _MISSING)
        row = {"key": key, "reference": a, "rerun": b, "abs_diff": math.nan, "rel_diff": math.nan}
        if a is _MISSING or b is _MISSING:
            row["status"] = "only rerun" if a is _MISSING else "only reference"
            row["reference" if a is _MISSING else "rerun"] = None
        elif _is_number(a) and _is_number(b):
            both_nan = math.isnan(a) and math.isnan(b)
            row["status"] = "identical" if a == b or both_nan else "differs"
            if row["status"] == "differs" and _is_timing(key):
                row["status"] = "timing"
            if not both_nan:
                row["abs_diff"] = float(b) - float(a)
                if a != 0:
                    row["rel_diff"] = row["abs_diff"] / abs(float(a))
                else:
                    row["rel_diff"] = 0.0 if b == 0 else math.copysign(math.inf, float(b))
        elif a == b:
            row["status"] = "identical"
        elif (
            isinstance(a, str) and isinstance(b, str) and _NUMBER.sub("#", a) == _NUMBER.sub("#", b)
        ):
            row["status"] = "text numbers"
        else:
            row["status"] = "differs"
        rows.append(row)
    cols = ["key", "reference", "rerun", "status", "abs_diff", "rel_diff"]
    return pd.DataFrame(rows, columns=cols)


_MISSING = object()


def committed_text(root: Path, path: str, rev: str = "HEAD") -> str | None:
    """The text of ``path`` (relative to ``root``) at git revision ``rev``, ``None`` where
    that revision has no such file."""
    done = subprocess.run(
        ["git", "-C", str(root), "show", f"{rev}:{path}"], capture_output=True, text=True
    )
    return done.stdout if done.returncode == 0 else None


def compare_metric_files(root: Path, paths: list[str], rev: str = "HEAD") -> pd.DataFrame:
    """:func:`compare_metrics` of each JSON file in ``paths`` (relative to ``root``): its
    version at ``rev`` against the working tree's, with a ``file`` column. A file missing
    on one side gives one row with status ``only reference`` / ``only rerun``."""
    frames = []
    for path in paths:
        old = committed_text(root, path, rev)
        file = root / path
        if old is None or not file.is_file():
            status = "only rerun" if old is None else "only reference"
            frames.append(
                pd.DataFrame([{"key": "(whole file)", "status": status}]).assign(file=path)
            )
            continue
        frames.append(
            compare_metrics(json.loads(old), json.loads(file.read_text())).assign(file=path)
        )
    if not frames:
        return pd.DataFrame(
            columns=["file", "key", "reference", "rerun", "status", "abs_diff", "rel_diff"]
        )
    out = pd.concat(frames, ignore_index=True)
    return out[["file"] + [c for c in out.columns if c != "file"]]


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def output_hashes(root: Path, lock_text: str) -> pd.DataFrame:
    """Every file output of a ``dvc.lock`` (its text, e.g. the committed one from
    :func:`committed_text`): ``stage``, ``path``, ``status`` (``identical`` where the file
    under ``root`` has the locked md5, ``differs``, ``missing``). Directory outputs (md5
    ending in ``.dir``) are skipped: their hash is of DVC's listing, not of a file."""
    lock = yaml.safe_load(lock_text) or {}
    rows = []
    for stage, entry in (lock.get("stages") or {}).items():
        for out in entry.get("outs") or []:
            md5 = str(out.get("md5", ""))
            if md5.endswith(".dir"):
                continue
            file = root / out["path"]
            status = (
                "missing"
                if not file.is_file()
                else ("identical" if _md5(file) == md5 else "differs")
            )
            rows.append({"stage": stage, "path": out["path"], "status": status})
    return pd.DataFrame(rows, columns=["stage", "path", "status"])
