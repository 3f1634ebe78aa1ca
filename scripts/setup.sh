#!/usr/bin/env bash
# Create .venv (Python 3.11), install shrinklab editable with its pinned
# dependencies and every extra (`.[all]`: pipeline, export, skfolio and dev, i.e.
# what `make repro` and `make test` need), and register the Jupyter kernel
# "shrinklab" inside the venv.
# Idempotent: a second run only re-checks the install.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" - <<'PY'
import sys
if sys.version_info[:2] != (3, 11):
    sys.exit(f"shrinklab needs Python 3.11, found {sys.version.split()[0]} (set PYTHON=python3.11)")
PY
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.shrinklab-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet -e ".[all]"
  touch "$stamp"
fi
.venv/bin/python -m ipykernel install --sys-prefix --name shrinklab --display-name "shrinklab (Python 3.11)" >/dev/null
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
