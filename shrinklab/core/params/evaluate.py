"""The ``evaluate`` section of ``params.yaml`` (see :mod:`shrinklab.core.params`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from shrinklab.core.params import Section, mutable_default


@dataclass(frozen=True)
class Evaluate(Section):
    """``evaluate`` (notebooks/06_evaluation.py): the reports on the public grid."""

    section: ClassVar[str] = "evaluate"

    seed: int = 5
    n_reps: int = 20
    windows: list[int] = mutable_default([60, 120])
    example_scenarios: list[str] = mutable_default([])
    specialists_csv: str = ""  # the specialists study's table ("": no yardstick)
    # Ken French's monthly portfolios (section 6.7): windows in months, first backtest month
    french_windows: list[int] = mutable_default([36])
    french_start: str = "2012-01-01"
    scenarios: list[dict[str, Any]] = mutable_default(
        [
            {"name": "1/3/10 p=40 n=40", "family": "spectrum_1_3_10", "p": 40, "n": 40},
            {"name": "factor t6 p=20 n=40", "family": "factor", "p": 20, "n": 40, "df": 6},
            {
                "name": "S&P p=20 n=40 t5",
                "family": "sp500",
                "p": 20,
                "n": 40,
                "df": 5,
                "period": "report",
            },
        ]
    )


SECTION = Evaluate

NOTEBOOK_ONLY: tuple[str, ...] = ("ablation_csv",)
"""Parameters the notebook declares that are not settings of the section (never in
``params.yaml``): the model-selection study's table that 06 shows."""
