"""``python -m shrinklab``: the command line (see :mod:`shrinklab.cli`)."""

from shrinklab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
