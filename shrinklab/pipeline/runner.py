"""Run a jupytext notebook as a pipeline stage (papermill), and render it.

It exists because a stage is more than executing a notebook; a stage:

1. reads its section of ``params.yaml``, checks it against the section's typed
   dataclass (:func:`shrinklab.core.params.load_section`: unknown key, missing
   key, wrong type) and every key against the notebook's cell tagged
   ``parameters`` (a typo fails here instead of deep inside the notebook);
2. executes the notebook with papermill (kernel ``shrinklab``, cwd = repo root),
   writing the executed copy to ``reports/notebooks/NN_name.ipynb``, while the
   progress lines of :func:`shrinklab.core.progress.report` go to the terminal;
3. renders self-contained HTML without code cells to ``reports/html/NN_name.html``
   (:mod:`shrinklab.pipeline.render`) and appends its time to ``build/timings.jsonl``.

A failing cell keeps the partial executed notebook and exits non-zero with the
cell's real error, so ``dvc repro`` stops at that stage.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from shrinklab.core.params import load_section
from shrinklab.core.progress import PROGRESS_ENV
from shrinklab.pipeline.notebooks import (
    KERNEL_NAME,
    REPO_ROOT,
    check_parameters,
    notebook_parameters,
    read_notebook,
    stage_parameters,
)
from shrinklab.pipeline.render import render_html
from shrinklab.pipeline.runs import CPUINFO, cpu_fields, numpy_dispatch_targets


def run_stage(
    name: str,
    section: str | None,
    params_file: Path = REPO_ROOT / "params.yaml",
    root: Path = REPO_ROOT,
) -> Path:
    """Execute ``notebooks/<name>.py`` with ``params_file[section]``; return the executed path."""
    import papermill

    nb = read_notebook(name, root)
    defaults = notebook_parameters(nb)
    if section:
        load_section(section, params_file)  # unknown / missing key, wrong type: ValueError
    params = stage_parameters(section, params_file, defaults) if section else {}
    check_parameters(params, defaults, name)

    out_dir = root / "reports" / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / f"{name}.ipynb"
    os.environ.setdefault("SHRINKLAB_QUIET", "1")  # no tqdm bars in executed notebooks
    capability = pinned_cpu_capability()
    if capability is not None:  # the kernel (and every worker it starts) inherits them
        os.environ.setdefault(CPU_CAPABILITY_ENV, capability)
        above = numpy_targets_above_avx2()
        if above:
            os.environ.setdefault(NUMPY_DISABLE_ENV, " ".join(above))
    progress = root / "build" / "progress" / f"{name}.log"
    progress.parent.mkdir(parents=True, exist_ok=True)
    progress.write_text("")
    os.environ[PROGRESS_ENV] = str(progress)  # the kernel inherits it (core.progress.report)
    started = time.perf_counter()
    print(f"[{name}] running notebooks/{name}.py", file=sys.stderr, flush=True)
    try:
        with _echo(progress, name):
            papermill.execute_notebook(
                nb,
                str(executed),
                parameters=params,
                kernel_name=KERNEL_NAME,
                cwd=str(root),
                progress_bar=False,
            )
    except papermill.PapermillExecutionError as err:
        sys.stderr.write(
            f"\nstage {name} failed in cell {err.exec_count}: {err.ename}: {err.evalue}\n"
            f"{''.join(err.traceback)}\npartial notebook: {executed}\n"
        )
        raise SystemExit(1) from None
    finally:
        os.environ.pop(PROGRESS_ENV, None)
    render_html(executed, root / "reports" / "html" / f"{name}.html")
    seconds = time.perf_counter() - started
    record_timing(root / TIMINGS_FILE, name, section, seconds)
    print(f"[{name}] done in {seconds:.0f} s", file=sys.stderr, flush=True)
    return executed


#: The environment variable that caps the vectorised CPU kernels torch dispatches to
#: (ATen's ``DispatchStub``: ``default``, ``avx2``, ``avx512``, …).
CPU_CAPABILITY_ENV = "ATEN_CPU_CAPABILITY"


def pinned_cpu_capability(cpuinfo: Path = CPUINFO) -> str | None:
    """``"avx2"`` on a machine whose CPU has AVX2 and FMA (read from ``cpuinfo``, Linux),
    else ``None``.

    :func:`run_stage` sets :data:`CPU_CAPABILITY_ENV` to it (unless already set), so that
    the stages run torch's AVX2 kernels on every x86-64 CPU, as on the machines that made
    the committed models: with AVX-512 kernels the same seeds train other networks (float32
    sums in another order; on an AVX-512 VM the pretrain stage's best validation loss was
    0.522512 with torch's default kernels and the committed 0.521972 with this cap). On
    the same CPUs it also sets :data:`NUMPY_DISABLE_ENV` to numpy's AVX-512 targets
    (:func:`numpy_targets_above_avx2`), whose kernels move the last bits of the cleaned
    returns and the synthetic worlds (docs/pipeline.md, "Across CPUs"). Elsewhere (no
    ``/proc/cpuinfo``, ARM, an x86 CPU without AVX2) nothing is set."""
    flags = set(cpu_fields(cpuinfo).get("flags", "").split())
    return "avx2" if {"avx2", "fma"} <= flags else None


#: numpy's switch for its runtime SIMD dispatch: the targets listed are not used.
NUMPY_DISABLE_ENV = "NPY_DISABLE_CPU_FEATURES"


def numpy_targets_above_avx2() -> list[str]:
    """numpy's dispatch targets beyond AVX2, by the names of the installed numpy
    (``X86_V4`` and every ``AVX512*``; e.g. ``["X86_V4", "AVX512_ICL", "AVX512_SPR"]`` for
    numpy 2.4): disabled, numpy runs the AVX2 kernels the committed files were made
    with. A target the CPU lacks is ignored by numpy."""
    targets, _ = numpy_dispatch_targets()
    return [t for t in targets if t == "X86_V4" or t.startswith("AVX512")]


TIMINGS_FILE = Path("build") / "timings.jsonl"
"""Where :func:`run_stage` appends one line per finished stage (read by bench/stages.py)."""


def record_timing(path: Path, name: str, section: str | None, seconds: float) -> None:
    """Append ``{"notebook", "section", "seconds", "finished", "cpus"}`` as a JSON line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = {
        "notebook": name,
        "section": section,
        "seconds": round(float(seconds), 2),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
    }
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")


@contextlib.contextmanager
def _echo(path: Path, name: str, interval: float = 1.0) -> Iterator[None]:
    """Print the lines appended to ``path`` to the terminal (stderr) while the block runs."""
    stop = threading.Event()

    def follow() -> None:
        with open(path, encoding="utf-8") as fh:
            while True:
                line = fh.readline()
                if line:
                    print(f"[{name}] {line.rstrip()}", file=sys.stderr, flush=True)
                elif stop.is_set():
                    return
                else:
                    stop.wait(interval)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)
