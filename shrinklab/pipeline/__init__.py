"""The DVC pipeline's machinery: run a jupytext notebook as a stage, key training
runs, compute each stage's code deps and check notebook outputs.

One module per job:

* :mod:`~shrinklab.pipeline.notebooks` — read a text notebook, its ``parameters``
  cell and the parameters a stage gives it;
* :mod:`~shrinklab.pipeline.runner` — execute a notebook as a stage (papermill);
* :mod:`~shrinklab.pipeline.render` — its HTML report;
* :mod:`~shrinklab.pipeline.runs` — what a stage notebook calls: ``stage_setup``,
  ``run_dir`` (keyed training-run folders);
* :mod:`~shrinklab.pipeline.snapshots` — the nbval output snapshots and ``checksum``;
* :mod:`~shrinklab.pipeline.deps` — the ``shrinklab/`` deps of each DVC stage;
* :mod:`~shrinklab.pipeline.cli` — ``python -m shrinklab.pipeline run|index|snapshots|deps``.

The package exports what the stage notebooks import (``from shrinklab.pipeline import
run_dir, stage_setup``), and nothing that needs papermill, nbconvert or nbval.
"""

from shrinklab.pipeline.notebooks import REPO_ROOT
from shrinklab.pipeline.runs import run_dir, stage_setup
from shrinklab.pipeline.snapshots import checksum

__all__ = ["REPO_ROOT", "checksum", "run_dir", "stage_setup"]
