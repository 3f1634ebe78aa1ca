"""nbval runs the snapshots in this folder (its cwd), so the notebooks write under build/ here.

A run that includes the first notebook of the chain starts from an empty build/
folder, as CI and ``python -m shrinklab.pipeline snapshots`` do: state left by an
earlier run (the stored Optuna study of 07_model_selection gains trials on every
run) would otherwise change checked outputs. Running a later notebook alone keeps
build/, which holds the inputs it needs from the earlier ones.
"""

import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(session, config, items):
    first = min(HERE.glob("[0-9][0-9]_*.ipynb"), default=None)
    if first is not None and any(Path(str(item.fspath)) == first for item in items):
        shutil.rmtree(HERE / "build", ignore_errors=True)
