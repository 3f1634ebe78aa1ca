"""Progress lines a person can follow while a pipeline stage runs.

A notebook executed by papermill cannot write to the terminal: everything it prints
lands in the rendered report. :func:`report` therefore appends a line to the file named
by the environment variable :data:`PROGRESS_ENV`; ``python -m shrinklab.pipeline run``
sets it and echoes each new line to the terminal while the notebook runs. Without the
variable :func:`report` does nothing, so reports, tests and library users see no output.
"""

from __future__ import annotations

import os
import time

__all__ = ["PROGRESS_ENV", "every", "report"]

PROGRESS_ENV = "SHRINKLAB_PROGRESS"


def report(message: str) -> None:
    """Append ``HH:MM:SS message`` to the progress file, if one is set."""
    path = os.environ.get(PROGRESS_ENV)
    if not path:
        return
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f"{time.strftime('%H:%M:%S')} {message}\n")


def every(done: int, total: int, lines: int = 7) -> bool:
    """Whether step ``done`` (1-based) of ``total`` ends one of about ``lines`` blocks."""
    block = max(1, -(-int(total) // int(lines)))
    return done == total or done % block == 0
