"""Command line: ``python -m shrinklab covariance returns.csv --out cov.csv``.

For people who do not write Python.  The input is a table of returns, rows =
dates (or any observations), columns = assets, as CSV (``.csv``, ``.csv.gz``,
``.tsv``, ``.txt``) or Parquet (``.parquet``, ``.pq``; needs ``pyarrow``).  A
first column of dates (or one named ``date``/``time``/…, or an unnamed first
column as written by ``DataFrame.to_csv``) is taken as the row index; choose it
with ``--index-col NAME`` or switch detection off with ``--no-index``.

The covariance is :class:`shrinklab.sklearn.MLShrinkageCovariance` fitted to the
table (same validation, same numbers), written as CSV with the asset names as
index and columns (``--out -`` or no ``--out``: standard output).
``--json-out PATH`` writes a sidecar with the shrinkage intensity ``alpha``, the
target weights per target name, ``alpha · weight`` per target and the predicted
uncertainty of ``alpha``.

``--no-volatility-timing`` leaves out the model's volatility timing (the bundled model
moves the variances towards their recent level, a forecast of the next period): the
shrinkage of the table's own covariance.

Without ``--model`` the model bundled with the package (``shrinklab/weights/final.pt``,
see its model card ``final.md``) is used; ``--model`` takes a model file or the name of
a bundled model.

Exit status: 0 on success, 2 on a user error (missing or unreadable file,
non-numeric column, missing values, too few rows, bad model file, …), reported as
one line on standard error without a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from shrinklab.models.bundled import DEFAULT_MODEL

# shrinklab.sklearn (torch, scikit-learn) and pandas are imported inside the functions
# that need them, not here: `python -m shrinklab --help` then answers at once instead
# of after the ~5 s import of torch.
if TYPE_CHECKING:
    import pandas as pd

__all__ = ["UserError", "main", "read_returns"]

PROG = "shrinklab"
PARQUET_SUFFIXES = (".parquet", ".pq")
INDEX_NAMES = {"date", "dates", "datetime", "time", "timestamp", "day", "period", "index"}


class UserError(Exception):
    """An error in what the user gave (file, columns, values, options): exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _build_parser() -> argparse.ArgumentParser:
    from shrinklab import __version__

    parser = _Parser(
        prog=PROG,
        description="ML-enhanced covariance shrinkage from the command line.",
    )
    parser.add_argument("--version", action="version", version=f"shrinklab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    cov = sub.add_parser(
        "covariance",
        help="estimate the covariance matrix of a table of returns",
        description=(
            "Estimate the covariance of a returns table (rows = dates, columns = assets) "
            "with MLShrinkageCovariance and write it as CSV (asset names as index and columns)."
        ),
    )
    cov.add_argument("input", help="returns table: .csv (.csv.gz, .tsv, .txt) or .parquet")
    cov.add_argument(
        "--out",
        "-o",
        default="-",
        metavar="PATH",
        help="where to write the covariance CSV (default: standard output)",
    )
    cov.add_argument(
        "--model",
        "-m",
        metavar="PATH",
        default=DEFAULT_MODEL,
        help=f"model file or bundled model name (default: the bundled model {DEFAULT_MODEL!r})",
    )
    cov.add_argument(
        "--json-out",
        metavar="PATH",
        help="also write alpha, the target weights per target name and the uncertainty as JSON",
    )
    idx = cov.add_mutually_exclusive_group()
    idx.add_argument(
        "--index-col",
        metavar="NAME",
        help="column holding the row labels (dates); default: detected",
    )
    idx.add_argument(
        "--no-index",
        action="store_true",
        help="the table has no index column: every column is an asset",
    )
    cov.add_argument(
        "--assume-centered",
        action="store_true",
        help="treat the returns as mean zero (S = XᵀX/n)",
    )
    cov.add_argument(
        "--no-volatility-timing",
        action="store_true",
        help="leave out the model's volatility timing: the shrinkage of the window's own "
        "covariance, not a forecast of the next period's (MLShrinkageCovariance(volatility_timing=False))",
    )
    cov.add_argument(
        "--devolatilise",
        action="store_true",
        help="estimate on the returns divided by each asset's volatility and scale back, "
        "for assets of very different volatility (MLShrinkageCovariance(devolatilise=True))",
    )
    cov.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    return parser


# --------------------------------------------------------------------------- reading
def _read_table(path: Path) -> pd.DataFrame:
    import pandas as pd

    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, not a returns table")
    name = path.name.lower()
    try:
        if name.endswith(PARQUET_SUFFIXES):
            try:
                return pd.read_parquet(path)
            except ImportError as exc:
                raise UserError(
                    f"{path}: reading Parquet needs pyarrow: pip install pyarrow "
                    "(or shrinklab[pipeline]), or save the table as CSV"
                ) from exc
        sep = "\t" if name.endswith((".tsv", ".tsv.gz", ".tab")) else None
        if sep is None:
            return pd.read_csv(path)
        return pd.read_csv(path, sep=sep)
    except UserError:
        raise
    except pd.errors.EmptyDataError as exc:
        raise UserError(f"{path}: the file is empty") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot parse as CSV: {_one_line(exc)}") from exc
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read: {_one_line(exc)}") from exc


def _looks_like_index(col: pd.Series, name: Any) -> bool:
    """Whether a first column holds row labels (dates) rather than an asset's returns."""
    import pandas as pd

    label = str(name).strip().lower()
    if label == "" or label.startswith("unnamed:") or label in INDEX_NAMES:
        return True
    if pd.api.types.is_datetime64_any_dtype(col) or isinstance(col.dtype, pd.PeriodDtype):
        return True
    if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        return False
    values = col.dropna()
    if values.empty:
        return False
    try:
        pd.to_datetime(values.astype(str), format="mixed")
    except (ValueError, TypeError, OverflowError):
        return False
    return True


def read_returns(
    path: str | Path, *, index_col: str | None = None, no_index: bool = False
) -> pd.DataFrame:
    """The returns table at ``path``: assets as string-named columns, row labels as index.

    Only the file format and the index column are handled here; the values are
    validated by :class:`~shrinklab.sklearn.MLShrinkageCovariance` itself (see
    :func:`main`), except that non-numeric columns are named.
    """
    import pandas as pd

    path = Path(path)
    df = _read_table(path)
    has_index = not isinstance(df.index, pd.RangeIndex) or df.index.name is not None
    if index_col is not None:
        if has_index and df.index.name == index_col:
            pass
        elif index_col in df.columns:
            df = df.set_index(index_col)
        else:
            raise UserError(
                f"{path}: no column {index_col!r} for --index-col; columns: {_names(df.columns)}"
            )
    elif not no_index and not has_index and len(df.columns) > 0:
        first = df.columns[0]
        if _looks_like_index(df[first], first):
            df = df.set_index(first)
    if len(df.columns) == 0:
        raise UserError(f"{path}: no asset columns found")
    df.columns = [str(c) for c in df.columns]
    dupes = sorted({c for c in df.columns if list(df.columns).count(c) > 1})
    if dupes:
        raise UserError(f"{path}: duplicate column names {dupes}")
    bad = [
        c
        for c in df.columns
        if len(df)  # a header-only file: "too few rows" (from the estimator) says more
        and not (pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]))
    ]
    if len(df) == 0:
        df = df.astype("float64")
    if bad:
        c = bad[0]
        values = df[c].dropna()
        numeric = pd.to_numeric(values, errors="coerce")
        offending = values[numeric.isna()]
        example = f" (row {offending.index[0]}: {offending.iloc[0]!r})" if len(offending) else ""
        more = f"; also not numeric: {_names(bad[1:])}" if len(bad) > 1 else ""
        hint = ""
        if c == df.columns[0] and index_col is None and not no_index:
            hint = f"; if it labels the rows, pass --index-col {c}"
        raise UserError(f"{path}: column {c!r} is not numeric{example}{hint}{more}")
    return df


# --------------------------------------------------------------------------- fitting
def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _names(names: Sequence[Any], limit: int = 5) -> str:
    names = [str(n) for n in names]
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", … ({len(names)} in all)" if len(names) > limit else "")


def _explain_values(df: pd.DataFrame, path: Path, exc: ValueError) -> UserError:
    """The estimator's validation error, with the offending columns named."""
    import numpy as np

    msg = _one_line(exc)
    values = df.to_numpy(dtype=np.float64)
    nan_cols = [c for c, bad in zip(df.columns, np.isnan(values).any(axis=0)) if bad]
    inf_cols = [c for c, bad in zip(df.columns, np.isinf(values).any(axis=0)) if bad]
    if nan_cols and "nan" in msg.lower():
        c = nan_cols[0]
        rows = df.index[np.isnan(df[c].to_numpy(dtype=np.float64))]
        more = f"; also in {_names(nan_cols[1:])}" if len(nan_cols) > 1 else ""
        return UserError(
            f"{path}: column {c!r} has missing values (NaN) in {len(rows)} row(s), first "
            f"at row {rows[0]}{more}; drop or fill them"
        )
    if inf_cols and "infinity" in msg.lower():
        c = inf_cols[0]
        rows = df.index[np.isinf(df[c].to_numpy(dtype=np.float64))]
        return UserError(f"{path}: column {c!r} has infinite values, first at row {rows[0]}")
    if "minimum of" in msg and "sample" in msg:
        return UserError(
            f"{path}: too few rows: {len(df)} row(s) of returns, at least 2 are needed"
        )
    return UserError(f"{path}: {msg}")


def _load_estimator(
    model: str,
    assume_centered: bool,
    device: str,
    volatility_timing: bool = True,
    devolatilise: bool = False,
):
    from shrinklab.sklearn import MLShrinkageCovariance  # lazy: see the module imports

    try:
        return MLShrinkageCovariance.from_pretrained(
            model,
            assume_centered=assume_centered,
            device=device,
            volatility_timing=volatility_timing,
            devolatilise=devolatilise,
        )
    except ValueError as exc:
        raise UserError(f"model: {_one_line(exc)}") from exc
    except OSError as exc:
        raise UserError(f"model: cannot read {model}: {_one_line(exc)}") from exc
    except (RuntimeError, EOFError, KeyError, pickle.UnpicklingError) as exc:
        raise UserError(
            f"model: {model} is not a shrinklab model file (torch.load: {type(exc).__name__})"
        ) from exc


def _write(text: str, out: str, what: str) -> None:
    if out == "-":
        sys.stdout.write(text)
        return
    try:
        Path(out).write_text(text)
    except OSError as exc:
        raise UserError(f"cannot write the {what} to {out}: {_one_line(exc)}") from exc


def covariance(args: argparse.Namespace) -> int:
    import pandas as pd

    path = Path(args.input)
    df = read_returns(path, index_col=args.index_col, no_index=args.no_index)
    est = _load_estimator(
        args.model,
        args.assume_centered,
        args.device,
        not args.no_volatility_timing,
        args.devolatilise,
    )
    try:
        est.fit(df)
    except ValueError as exc:
        raise _explain_values(df, path, exc) from exc
    assets = list(df.columns)
    cov = pd.DataFrame(est.covariance_, index=assets, columns=assets)
    cov.index.name = "asset"
    _write(cov.to_csv(), args.out, "covariance")
    if args.json_out:
        names = list(est.target_weights_)
        info = {
            "input": str(path),
            "model": str(args.model),
            "n_samples": len(df),
            "n_assets": len(assets),
            "assume_centered": bool(args.assume_centered),
            "alpha": float(est.shrinkage_),
            "target_weights": {k: float(v) for k, v in est.target_weights_.items()},
            "intensities": {k: float(v) for k, v in zip(names, est.intensities_)},
            "uncertainty": float(est.uncertainty_) if math.isfinite(est.uncertainty_) else None,
        }
        _write(json.dumps(info, indent=2) + "\n", args.json_out, "JSON sidecar")
    return 0


# --------------------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (one line, code 2)
        return exc.code if isinstance(exc.code, int) else 0
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return covariance(args)
    except UserError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
