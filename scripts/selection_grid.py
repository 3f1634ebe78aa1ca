"""Score a model file on the selection grid (``shrinklab.studies.selection_grid``)::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/selection_grid.py [models/final.pt] [--n-reps 100]

The studies that use the grid are stages of ``studies/dvc.yaml`` (``make studies``).
"""

from __future__ import annotations

import argparse

from shrinklab.models.registry import load_model
from shrinklab.studies import selection_grid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", nargs="?", default="models/final.pt")
    ap.add_argument("--n-reps", type=int, default=100)
    args = ap.parse_args()
    table = selection_grid.score(load_model(args.model), args.n_reps)
    print(table.round(3).to_string())
    print(selection_grid.summary(table))


if __name__ == "__main__":
    main()
