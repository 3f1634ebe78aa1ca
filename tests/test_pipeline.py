"""The DVC pipeline: stage runner behaviour, and an end-to-end `dvc repro` on a copy.

The end-to-end test copies the working tree to a temporary directory, shrinks
every size parameter in params.yaml to the notebook's small default (paths are
kept), runs `dvc repro` and checks that every stage ran and wrote its outs and
metrics. It is the slowest test (a few minutes on 2 cores).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from shrinklab.core import params as params_mod
from shrinklab.pipeline.notebooks import check_parameters, notebook_parameters, read_notebook
from shrinklab.pipeline.runner import (
    CPU_CAPABILITY_ENV,
    NUMPY_DISABLE_ENV,
    numpy_targets_above_avx2,
    pinned_cpu_capability,
    run_stage,
)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _is_path_key(key: str) -> bool:
    return key.endswith(("_path", "_dir"))


def smoke_params(root: Path = ROOT) -> dict:
    """params.yaml with every non-path value replaced by the notebook's default."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    dvc = yaml.safe_load((root / "dvc.yaml").read_text())
    for stage in dvc["stages"].values():
        notebook, section = re.search(r"pipeline run (\S+) (\S+)", stage["cmd"]).groups()
        defaults = notebook_parameters(read_notebook(notebook, root))
        for key in params[section]:
            if not _is_path_key(key):
                params[section][key] = defaults[key]
    return params


def _write_notebook(root: Path, name: str, body: str) -> None:
    (root / "notebooks").mkdir(parents=True, exist_ok=True)
    (root / "notebooks" / f"{name}.py").write_text(
        '# %% tags=["parameters"]\nvalue = 1\n\n# %%\n' + body + "\n"
    )


@dataclasses.dataclass(frozen=True)
class _Toy(params_mod.Section):
    """The section ``s`` of the toy notebooks below."""

    value: int = 1


@pytest.fixture
def toy_section(monkeypatch):
    """Registers ``s`` as a section (:data:`shrinklab.core.params.REGISTRY`)."""
    monkeypatch.setitem(params_mod.REGISTRY, "s", _Toy)


def _write_params(root: Path, value) -> Path:
    """params.yaml with the shared paths and ``s: {value: <value>}``."""
    paths = {f.name: f"out/{f.name}" for f in dataclasses.fields(params_mod.Paths)}
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump({"paths": paths, "s": {"value": value}}))
    return path


def test_a_bad_params_section_stops_before_the_notebook_runs(tmp_path: Path, toy_section):
    _write_notebook(tmp_path, "01_never", "raise RuntimeError('the notebook ran')")
    for value, message in [("7", r"'s': value = '7' is not int"), (None, "is not int")]:
        with pytest.raises(ValueError, match=message):
            run_stage("01_never", "s", _write_params(tmp_path, value), tmp_path)
    assert not (tmp_path / "reports" / "notebooks" / "01_never.ipynb").exists()


def test_unknown_parameter_is_refused():
    with pytest.raises(ValueError, match="not in the notebook's 'parameters' cell"):
        check_parameters({"epochs": 3, "epoch": 3}, {"epochs": 1}, "02_x")


def test_failing_cell_stops_with_the_real_error(tmp_path: Path, capsys, toy_section):
    _write_notebook(tmp_path, "01_fail", "raise RuntimeError(f'boom {value}')")
    _write_params(tmp_path, 7)
    with pytest.raises(SystemExit) as exc:
        run_stage("01_fail", "s", tmp_path / "params.yaml", tmp_path)
    assert exc.value.code == 1
    assert "RuntimeError: boom 7" in capsys.readouterr().err
    # The partial executed notebook is kept for inspection.
    assert (tmp_path / "reports" / "notebooks" / "01_fail.ipynb").exists()


def test_stage_writes_executed_notebook_and_html(tmp_path: Path, toy_section):
    _write_notebook(tmp_path, "01_ok", "print('value is', value)")
    _write_params(tmp_path, 5)
    executed = run_stage("01_ok", "s", tmp_path / "params.yaml", tmp_path)
    assert "value is 5" in executed.read_text()
    assert (tmp_path / "reports" / "html" / "01_ok.html").exists()


def test_cpu_capability_is_capped_at_avx2_where_the_cpu_has_it(tmp_path: Path):
    """Stages run torch's AVX2 kernels on every x86-64 CPU that has them (AVX-512 kernels
    train other networks from the same seeds); nothing is set elsewhere."""
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx fma avx2 avx512f\n\n")
    assert pinned_cpu_capability(info) == "avx2"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx\n")  # no AVX2
    assert pinned_cpu_capability(info) is None
    info.write_text("processor\t: 0\nFeatures\t: fp asimd sve\n")  # ARM: no flags line
    assert pinned_cpu_capability(info) is None
    assert pinned_cpu_capability(tmp_path / "missing") is None


def test_numpy_targets_above_avx2_are_numpys_avx512_ones():
    import numpy as np

    above = numpy_targets_above_avx2()
    assert all(t == "X86_V4" or t.startswith("AVX512") for t in above)
    if (
        int(np.__version__.split(".")[0]) >= 2
        and "X86_V4" in np._core._multiarray_umath.__cpu_dispatch__
    ):
        assert "X86_V4" in above and "X86_V3" not in above


def test_the_stage_kernel_inherits_the_cpu_capability(tmp_path: Path, toy_section, monkeypatch):
    for var in (CPU_CAPABILITY_ENV, NUMPY_DISABLE_ENV):
        monkeypatch.setenv(var, "unset")  # teardown restores the variable
        monkeypatch.delenv(var)  # run_stage sets it: unset here
    code = (
        "import os\nprint('cap:', os.environ.get('ATEN_CPU_CAPABILITY'))\n"
        "print('npy:', os.environ.get('NPY_DISABLE_CPU_FEATURES'))\n"
        "from numpy._core._multiarray_umath import __cpu_features__ as f\n"
        "print('npy avx512 in use:', any(v for k, v in f.items() if k in ('X86_V4', 'AVX512_ICL', 'AVX512_SPR')))"
    )
    _write_notebook(tmp_path, "01_cap", code)
    _write_params(tmp_path, 1)
    text = run_stage("01_cap", "s", tmp_path / "params.yaml", tmp_path).read_text()
    assert f"cap: {pinned_cpu_capability()}" in text
    if pinned_cpu_capability() is not None:
        assert f"npy: {' '.join(numpy_targets_above_avx2())}" in text
        assert "npy avx512 in use: False" in text  # the kernel's numpy runs its AVX2 kernels
    # a value set by the user is kept
    monkeypatch.setenv(CPU_CAPABILITY_ENV, "default")
    text = run_stage("01_cap", "s", tmp_path / "params.yaml", tmp_path).read_text()
    assert "cap: default" in text


def _copy_tree(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        text=True,
    ).stdout.split("\0")
    # Outputs of the pipeline (a developer's previous run) are not part of the copy.
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values()
    outs = [
        next(iter(o)) if isinstance(o, dict) else o
        for st in stages
        for o in st.get("outs", []) + st.get("metrics", []) + st.get("plots", [])
    ]
    for rel in filter(None, files):
        if any(rel == o or rel.startswith(o.rstrip("/") + "/") for o in outs):
            continue
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


@pytest.mark.slow
def test_dvc_repro_end_to_end(tmp_path: Path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _copy_tree(repo)
    (repo / "params.yaml").write_text(yaml.safe_dump(smoke_params(repo), sort_keys=False))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "SHRINKLAB_QUIET": "1"}
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    git("-c", "user.email=ci@x", "-c", "user.name=ci", "add", "-A")
    git("-c", "user.email=ci@x", "-c", "user.name=ci", "commit", "-qm", "copy")
    # A private cache: never touch the developer's DVC cache or remote.
    subprocess.run(
        [BIN / "dvc", "cache", "dir", "--local", str(tmp_path / "cache")],
        cwd=repo,
        env=env,
        check=True,
    )
    # what `make repro` runs: the root pipeline only, never the studies (studies/dvc.yaml)
    run = subprocess.run(
        [BIN / "dvc", "repro", "dvc.yaml"], cwd=repo, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "ensemble_kinds" not in run.stdout

    dvc = yaml.safe_load((repo / "dvc.yaml").read_text())
    assert len(dvc["stages"]) == 7
    for name, stage in dvc["stages"].items():
        assert f"Running stage '{name}'" in run.stdout
        for out in stage.get("outs", []):
            path = next(iter(out)) if isinstance(out, dict) else out
            assert (repo / path).exists(), f"{name} did not write {path}"
        for metric in stage.get("metrics", []):
            path = next(iter(metric)) if isinstance(metric, dict) else metric
            assert json.loads((repo / path).read_text()), f"{name}: empty metrics {path}"
    status = subprocess.run(
        [BIN / "dvc", "status", "dvc.yaml"], cwd=repo, env=env, capture_output=True, text=True
    )
    assert "up to date" in status.stdout.lower(), status.stdout


def test_shared_paths_reach_the_stages_that_declare_them(tmp_path: Path):
    params = tmp_path / "params.yaml"
    params.write_text("paths:\n  models_dir: m\n  runs_dir: r\ns:\n  value: 3\n")
    from shrinklab.pipeline.notebooks import stage_parameters

    assert stage_parameters("s", params, {"value": 1, "models_dir": "x"}) == {
        "value": 3,
        "models_dir": "m",
    }
    assert stage_parameters("s", params) == {"value": 3, "models_dir": "m", "runs_dir": "r"}
    params.write_text("paths:\n  models_dir: m\ns:\n  models_dir: other\n")
    with pytest.raises(ValueError, match="set in both"):
        stage_parameters("s", params)


def test_params_yaml_defines_each_path_once():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in params.items():
        if section != "paths":
            assert not [k for k in values if _is_path_key(k)], section


def test_stage_progress_reaches_the_terminal_not_the_report(tmp_path: Path, capsys, toy_section):
    _write_notebook(
        tmp_path,
        "01_progress",
        "from shrinklab.core.progress import report\nreport(f'step {value} of 9')",
    )
    _write_params(tmp_path, 4)
    executed = run_stage("01_progress", "s", tmp_path / "params.yaml", tmp_path)
    err = capsys.readouterr().err
    assert "[01_progress] running notebooks/01_progress.py" in err
    assert "step 4 of 9" in err and "[01_progress] done in" in err
    assert "step 4 of 9" not in executed.read_text()  # the report stays clean


def test_progress_is_silent_without_a_progress_file(tmp_path, monkeypatch):
    from shrinklab.core import progress

    monkeypatch.delenv(progress.PROGRESS_ENV, raising=False)
    progress.report("nothing")  # no file, no output, no error
    monkeypatch.setenv(progress.PROGRESS_ENV, str(tmp_path / "p.log"))
    progress.report("a line")
    assert (tmp_path / "p.log").read_text().endswith(" a line\n")
    assert [d for d in range(1, 71) if progress.every(d, 70)] == [10, 20, 30, 40, 50, 60, 70]
    assert [d for d in range(1, 4) if progress.every(d, 3)] == [1, 2, 3]
