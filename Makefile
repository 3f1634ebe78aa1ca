# Two entry points (see README): `make repro` and `make test`.
.PHONY: setup repro studies test snapshots lint bench clean-smoke model-selection
VENV := .venv/bin
# One BLAS/OpenMP thread per process: on a shared 2-core machine two threads
# oversubscribe and run 10-40x slower (measured, see docs/architecture.md).
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export PATH := $(CURDIR)/.venv/bin:$(PATH)

setup:
	bash scripts/setup.sh

# Regenerate every dataset, model, number and figure (dvc repro of the pipeline).
# Only the root dvc.yaml: a bare `dvc repro` would also run the studies below.
repro: setup
	$(VENV)/dvc repro dvc.yaml
	$(VENV)/dvc push || echo "dvc push skipped (remote not reachable)"

# Unit tests, notebook smoke tests (nbval) and the end-to-end pipeline test. nbval runs
# the output snapshots tests/notebook_snapshots/*.ipynb (each notebook at its small
# defaults) and compares the cells marked # NBVAL_CHECK_OUTPUT with their stored output.
# TEST_WORKERS pytest-xdist processes (one a core of the 2-core CI machine); the notebook
# snapshots run together in one of them, in order (tests/conftest.py).
TEST_WORKERS ?= 2
test: setup
	$(VENV)/ruff check .
	$(VENV)/python -m pytest tests --nbval-lax --nbval-current-env -p no:cacheprovider -n $(TEST_WORKERS)

# Regenerate the snapshots after changing a notebook or a checked result (runs every
# notebook in order at its small defaults, ~3 min on 2 cores); review the diff, commit.
snapshots: setup
	$(VENV)/python -m shrinklab.pipeline snapshots

lint: setup
	$(VENV)/ruff check . && $(VENV)/ruff format --check .

# Studies kept out of `make repro` (studies/dvc.yaml, slow; times in docs/pipeline.md):
# model_selection (notebook 07: search, folds, ablation), ensemble_kinds (08, decision
# 0012), selection_grid (09: deployed model on the selection grid, gate threshold) and
# holdout (10: training variants, p/n range).
studies: setup
	$(VENV)/dvc repro studies/dvc.yaml

# Benchmarks; bench/stages.py prints the time of each pipeline stage of the last run.
bench: setup
	$(VENV)/python bench/stages.py
	$(VENV)/python bench/estimators.py
	$(VENV)/python bench/data_throughput.py
	$(VENV)/python bench/train.py

clean-smoke:
	rm -rf build/smoke

# Hyperparameter search, robustness folds and ablations alone: the `model_selection`
# stage of studies/dvc.yaml (slow, not part of `make repro`).
model-selection: setup
	$(VENV)/dvc repro studies/dvc.yaml:model_selection
