"""Importers: a user's candle file (CSV, parquet, or freqtrade's feather/json) into a validated candle frame.

Timestamps may be epoch numbers (s, ms, us or ns, told apart by magnitude) or ISO 8601 text; the column
may be called timestamp, datetime, date, time or open_time. Everything is validated strictly (`clean`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cryptonorm.data import freqtrade
from cryptonorm.data.candles import COLUMNS, clean
from cryptonorm.errors import DataError


def read_user_file(path: str | Path, timeframe: str) -> pd.DataFrame:
    """Load a user's CSV/parquet (timestamps in ms or ISO), validated strictly."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"data.file {str(p)!r} not found; give the path of a CSV or parquet of OHLCV candles")
    if p.is_dir():
        raise DataError(f"data.file {str(p)!r} is a directory; give a CSV or parquet file")
    name = p.name.lower()
    if p.stat().st_size == 0:
        raise DataError(f"data.file {str(p)!r} cannot be read: it is empty (0 bytes); it needs a header "
                        f"{','.join(COLUMNS)} and one row per candle")
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
        raise DataError(f"data.file {str(p)!r} cannot be read as {'parquet' if 'parq' in name else 'CSV'}: "
                        f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
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
    df["timestamp"] = _to_ms(df["timestamp"], p)
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


def _to_ms(col: pd.Series, p: Path) -> pd.Series:
    if pd.api.types.is_numeric_dtype(col):
        if col.isna().any():
            raise DataError(f"data.file {str(p)!r}: {int(col.isna().sum())} empty timestamp(s)")
        v = col.astype("float64")
        if not np.isfinite(v.to_numpy()).all():
            raise DataError(f"data.file {str(p)!r}: {int((~np.isfinite(v.to_numpy())).sum())} infinite "
                            "timestamp(s); give epoch numbers (s or ms) or ISO 8601 dates")
        # the unit by magnitude, as for any date between 1973 and 5138: s, ms, us or ns since the epoch
        biggest = float(v.abs().max()) if len(v) else 0.0
        for limit, to_ms in ((1e11, 1000.0), (1e14, 1.0), (1e17, 1e-3), (1e19, 1e-6)):
            if biggest < limit:
                return (v * to_ms).round().astype("int64")
        raise DataError(f"data.file {str(p)!r}: timestamps up to {biggest:g} are not epoch times in s, ms, us or "
                        "ns; give epoch numbers or ISO 8601 dates")
    try:
        dt = pd.to_datetime(col, utc=True, format="mixed")
    except (ValueError, TypeError) as e:
        raise DataError(f"data.file {str(p)!r}: timestamps are neither ms numbers nor ISO dates ({e})") from None
    if dt.isna().any():
        raise DataError(f"data.file {str(p)!r}: {int(dt.isna().sum())} empty or unparseable timestamp(s)")
    return pd.Series(dt.dt.as_unit("ms").astype("int64").to_numpy(), index=col.index)
