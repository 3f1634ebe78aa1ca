"""Ken French's monthly portfolios: real universes that are not built from the 20 stocks.

Every other real universe of the repository comes from the 20 bundled S&P 500 stocks
(:mod:`shrinklab.data.universes`), on which the network is fine-tuned, or is the six
factor ETFs of one year. This module gives universes of another kind, era and
frequency: the monthly value-weighted portfolio returns of Kenneth French's Data
Library (Fama & French 1993, "Common risk factors in the returns on stocks and
bonds", JFE 33; industries after Fama & French 1997, JFE 43), 1949-01 to 2017-03, as
the ``linearmodels`` wheel ships them (``linearmodels/datasets/french/french.csv.bz2``,
read as a file: importing ``linearmodels`` is not needed). Three groups of
portfolios, each a diversified universe with a strong common factor:

``industries``
    the 12 industry portfolios (p = 12);
``size_value``
    nine portfolios sorted on size and book-to-market (3 × 3: small, middle, large ×
    low, middle, high value; p = 9);
``size_momentum``
    nine portfolios sorted on size and past return (3 × 3; p = 9);

and all 30 together (``all``). The returns are simple monthly returns (fractions),
not excess returns (the risk-free rate barely moves a covariance). The factor
columns of the file (market, SMB, HML, momentum, risk-free rate) are not assets and
are not read.

Only dates before :data:`shrinklab.data.returns.TEST_START` are returned: the data
serve as validation universes like the cross-universe folds, and the file's
2016–2017 months belong to the test period.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

from shrinklab.data import returns as data
from shrinklab.data.universes import Universe

__all__ = [
    "FRENCH_GROUPS",
    "FRENCH_START",
    "MONTHS_PER_YEAR",
    "french_data_path",
    "french_universes",
    "load_french_portfolios",
]

FRENCH_GROUPS: dict[str, tuple[str, ...]] = {
    "industries": (
        "NoDur",
        "Durbl",
        "Manuf",
        "Enrgy",
        "Chems",
        "BusEq",
        "Telcm",
        "Utils",
        "Shops",
        "Hlth",
        "Money",
        "Other",
    ),
    "size_value": tuple(f"S{s}V{v}" for s in (1, 3, 5) for v in (1, 3, 5)),
    "size_momentum": tuple(f"S{s}M{m}" for s in (1, 3, 5) for m in (1, 3, 5)),
}
"""The portfolio columns of each group, as the file names them."""

FRENCH_START = pd.Timestamp("1959-01-01")
"""First backtest month: after ten years of history (the longest window, 120 months)."""

MONTHS_PER_YEAR = 12

_FILE = ("datasets", "french", "french.csv.bz2")


def french_data_path() -> Path:
    """Where the ``linearmodels`` wheel keeps the file; a clear error without it."""
    spec = importlib.util.find_spec("linearmodels")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "Ken French's portfolios ship inside the `linearmodels` wheel: "
            "pip install 'linearmodels>=6' (it comes with shrinklab's [pipeline] extra)"
        )
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"this linearmodels install has no {'/'.join(_FILE)} ({path})")
    return path


def load_french_portfolios(path: str | Path | None = None) -> pd.DataFrame:
    """The 30 portfolios' monthly returns before 2016 (module docstring), one column
    per portfolio in :data:`FRENCH_GROUPS` order, indexed by the month's first day.

    ``path``: the CSV (default :func:`french_data_path`); it must have a ``dates``
    column and every portfolio column, with finite returns."""
    path = french_data_path() if path is None else Path(path)
    raw = pd.read_csv(path)
    if "dates" not in raw.columns:
        raise ValueError(f"{path} has no 'dates' column")
    cols = [c for group in FRENCH_GROUPS.values() for c in group]
    missing = [c for c in cols if c not in raw.columns]
    if missing:
        raise ValueError(f"{path} lacks the portfolio columns {missing}")
    out = raw.set_index(pd.DatetimeIndex(pd.to_datetime(raw["dates"]), name="date"))[cols]
    out = out.astype("float64")
    if not out.index.is_monotonic_increasing or out.index.has_duplicates:
        raise ValueError(f"{path}: the dates must increase strictly")
    out = data.before_test(out)
    bad = ~(np.isfinite(out) & (out.abs() < 1.0))
    if bad.any().any():
        first = out.index[bad.any(axis=1)][0]
        raise ValueError(
            f"{path}: missing or implausible monthly returns (|r| >= 100 %) on {first.date()}"
        )
    return out


def french_universes(returns: pd.DataFrame | None = None, start=FRENCH_START) -> list[Universe]:
    """One :class:`~shrinklab.data.universes.Universe` per group and one with all 30
    portfolios, each its own family (``french <group>``), monthly
    (``periods_per_year = 12``), backtested from ``start`` (at least 120 months after
    the first date, for the longest window) to 2015-12."""
    returns = load_french_portfolios() if returns is None else data.before_test(returns)
    start = pd.Timestamp(start)
    first = returns.index[0] + pd.DateOffset(months=120)
    if not first <= start < data.TEST_START - pd.DateOffset(years=1):
        raise ValueError(
            f"start must be in [{first.date()}, 2015-01-01) (120 months of history), "
            f"got {start.date()}"
        )
    groups = {**FRENCH_GROUPS, "all": tuple(c for g in FRENCH_GROUPS.values() for c in g)}
    out = []
    for name, cols in groups.items():
        r = returns[list(cols)]
        out.append(
            Universe(f"french {name}", f"french {name} p={r.shape[1]}", r, start, MONTHS_PER_YEAR)
        )
    return out
