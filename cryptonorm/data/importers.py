"""Importers: a user's candle file (CSV, parquet, or freqtrade's feather/json) into a validated candle frame.

Timestamps may be epoch numbers (s, ms, us or ns, told apart by magnitude) or ISO 8601 text; the column
may be called timestamp, datetime, date, time or open_time. Everything is validated strictly (`clean`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from cryptonorm.data import freqtrade
from cryptonorm.data.candles import COLUMNS, clean
from cryptonorm.errors import DataError

# Files are read whole into memory: above these sizes on disk (a compressed CSV expands ~4x) the read would
# exhaust the memory of a laptop; 2 GB of CSV is ~25 million candles, 47 years of 1m bars.
MAX_FILE_BYTES = 2_000_000_000
MAX_COMPRESSED_BYTES = 500_000_000


def check_size(p: Path, key: str) -> None:
    """Refuse, before reading, a file too large to hold in memory (one line naming it and what to do)."""
    size = p.stat().st_size
    limit = MAX_COMPRESSED_BYTES if _compression(p) not in (None, "infer") or p.suffix.lower() in (
        ".gz", ".bz2", ".zip", ".xz") else MAX_FILE_BYTES
    if size > limit:
        raise DataError(f"{key} {str(p)!r} is {size / 1e9:,.1f} GB, above the {limit / 1e9:g} GB cryptonorm reads "
                        "into memory; cut it to the span you study (or resample it to a longer timeframe) first")


def read_user_file(path: str | Path, timeframe: str, time_format: str | None = None) -> pd.DataFrame:
    """Load a user's CSV/parquet (timestamps in ms or ISO, or text in `time_format`), validated strictly."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"data.file {str(p)!r} not found; give the path of a CSV or parquet of OHLCV candles")
    if p.is_dir():
        raise DataError(f"data.file {str(p)!r} is a directory; give a CSV or parquet file")
    name = p.name.lower()
    if p.stat().st_size == 0:
        raise DataError(f"data.file {str(p)!r} cannot be read: it is empty (0 bytes); it needs a header "
                        f"{','.join(COLUMNS)} and one row per candle")
    check_size(p, "data.file")
    try:
        if freqtrade.is_freqtrade_file(p):
            df = freqtrade.read_frame(p)
        elif name.endswith(".parquet") or name.endswith(".pq"):
            df = pd.read_parquet(p)
        elif name.endswith((".csv", ".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz", ".txt")):
            df = pd.read_csv(p, compression=_compression(p))
        else:
            raise DataError(f"data.file {str(p)!r}: unknown format; use .csv, .csv.gz, .parquet, or freqtrade's "
                            ".feather / .json")
    except DataError:
        raise
    except Exception as e:
        what = "parquet" if "parq" in name else "CSV"
        why = str(e).splitlines()[0] if str(e) else "damaged"
        raise DataError(f"data.file {str(p)!r} cannot be read as {what} ({why}); "
                        f"it is damaged or not a {what} file: export it again") from None
    if len(df) == 0:
        raise DataError(f"data.file {str(p)!r} has no rows; it needs OHLCV candles")
    df.columns = [str(c).strip().lower() for c in df.columns]
    _check_separator(df, p)
    if "timestamp" not in df.columns:
        for alt in ("datetime", "date", "time", "open_time"):
            if alt in df.columns:
                df = df.rename(columns={alt: "timestamp"})
                break
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"data.file {str(p)!r} lacks column(s) {', '.join(missing)}; "
                        f"need {', '.join(COLUMNS)} (timestamp in ms or ISO 8601)")
    twice = [c for c in COLUMNS if list(df.columns).count(c) > 1]
    if twice:  # e.g. "Close" and "close", or "date" and "time" both taken as the timestamp
        raise DataError(f"data.file {str(p)!r} has column(s) {', '.join(twice)} more than once (names are "
                        "case-insensitive; date/time/datetime/open_time count as timestamp); keep one of each")
    df = df.copy()
    df["timestamp"] = to_ms(df["timestamp"], f"data.file {str(p)!r}", time_format)
    if freqtrade.is_freqtrade_file(p):
        freqtrade.check_timeframe(df, timeframe, p)
    try:
        return clean(df, timeframe, strict=True)
    except DataError as e:
        raise DataError(f"data.file {str(p)!r}: {e}") from None


# the first bytes of the compressed formats pandas reads; a file's content wins over its name
_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"PK\x03\x04": "zip", b"\xfd7zXZ\x00": "xz"}


def _compression(p: Path) -> str | None:
    """The compression of a CSV by its content (a gzipped file named .csv is read), else by its name."""
    with open(p, "rb") as f:
        head = f.read(6)
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            return kind
    return "infer" if p.name.lower().endswith((".gz", ".bz2", ".zip", ".xz")) else None


def _check_separator(df: pd.DataFrame, p: Path) -> None:
    """A CSV read as one column whose header holds ';' or a tab was written with another separator."""
    if len(df.columns) != 1:
        return
    header = str(df.columns[0])
    for sep, name in ((";", "semicolons"), ("\t", "tabs")):
        if sep in header:
            raise DataError(f"data.file {str(p)!r}: the columns look separated by {name} (header {header!r}); "
                            "cryptonorm reads comma-separated CSV: save it with ',' as the separator (and '.' as "
                            "the decimal point)")


# text dates that start with two numbers of one or two digits (03/04/2024, 3.4.24, 03-04-2024 10:00): day first
# in Europe, month first in the US; pandas guesses month first, and where that fails, day first, row by row
_AMBIGUOUS = re.compile(r"^\s*\d{1,2}[/.\-]\d{1,2}[/.\-]\d{2,4}")


def to_ms(col: pd.Series, what: str, time_format: str | None = None) -> pd.Series:
    """A timestamp column (epoch numbers in s/ms/us/ns, ISO 8601 text, or text in `time_format`) -> int64 ms.
    Day/month text dates without a `time_format` are refused: guessing their order scrambles the series."""
    if pd.api.types.is_numeric_dtype(col):
        if col.isna().any():
            raise DataError(f"{what}: {int(col.isna().sum())} empty timestamp(s)")
        v = col.astype("float64")
        if not np.isfinite(v.to_numpy()).all():
            raise DataError(f"{what}: {int((~np.isfinite(v.to_numpy())).sum())} infinite "
                            "timestamp(s); give epoch numbers (s or ms) or ISO 8601 dates")
        # the unit by magnitude, as for any date between 1973 and 5138: s, ms, us or ns since the epoch
        biggest = float(v.abs().max()) if len(v) else 0.0
        for limit, to_ms in ((1e11, 1000.0), (1e14, 1.0), (1e17, 1e-3), (1e19, 1e-6)):
            if biggest < limit:
                return (v * to_ms).round().astype("int64")
        raise DataError(f"{what}: timestamps up to {biggest:g} are not epoch times in s, ms, us or "
                        "ns; give epoch numbers or ISO 8601 dates")
    if time_format is None:
        text = col.astype(str)
        odd = text[text.str.match(_AMBIGUOUS)]
        if len(odd):
            raise DataError(f"{what}: timestamps such as {odd.iloc[0]!r} may be day/month or month/day; set "
                            "data.time_format (e.g. '%d/%m/%Y %H:%M' or '%m/%d/%Y %H:%M') or write ISO 8601 dates")
    try:
        dt = pd.to_datetime(col, utc=True, format=time_format or "mixed")
    except (ValueError, TypeError) as e:
        given = f"in data.time_format {time_format!r}" if time_format else "ms numbers nor ISO dates"
        raise DataError(f"{what}: timestamps are neither {given} ({str(e).splitlines()[0]})".replace(
            "neither in", "not in")) from None
    if dt.isna().any():
        raise DataError(f"{what}: {int(dt.isna().sum())} empty or unparseable timestamp(s)")
    return pd.Series(dt.dt.as_unit("ms").astype("int64").to_numpy(), index=col.index)
