"""The OHLCV frame: columns, timeframes, cleaning, gap report, and the parquet store.

A candle frame has exactly the columns in `COLUMNS`: `timestamp` (int64 ms since the epoch, UTC, candle
open) and float64 `open, high, low, close, volume`, sorted by timestamp with no duplicates. Gaps (missing
bars) are detected and reported, never filled here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cryptonorm.errors import DataError
from cryptonorm.timeframes import format_ms, timeframe_ms

COLUMNS = ["timestamp", "open", "high", "low", "close", "volume"]
PRICE_COLUMNS = ["open", "high", "low", "close"]

def empty_frame() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="int64" if c == "timestamp" else "float64") for c in COLUMNS})


def from_rows(rows: list[list[float]] | np.ndarray) -> pd.DataFrame:
    """ccxt's [[ts, o, h, l, c, v], ...] -> a candle frame (not yet cleaned)."""
    if len(rows) == 0:
        return empty_frame()
    arr = np.asarray(rows, dtype="float64")
    if arr.ndim != 2 or arr.shape[1] < 6:
        raise DataError(f"candles must have 6 fields [timestamp, open, high, low, close, volume], "
                        f"got shape {arr.shape}")
    df = pd.DataFrame(arr[:, :6], columns=COLUMNS)
    df["timestamp"] = df["timestamp"].astype("int64")
    return df


def clean(df: pd.DataFrame, timeframe: str | None = None, *, strict: bool = False) -> pd.DataFrame:
    """Sort, drop duplicate timestamps (keeping the last seen), check values.

    With `strict`, rows that are off the timeframe grid, NaN or inconsistent raise a DataError instead of
    being dropped (used for user files, where silently dropping would hide a problem).
    """
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"candles lack column(s) {', '.join(missing)}; need {', '.join(COLUMNS)}")
    out = df[COLUMNS].copy()
    if len(out) == 0:
        return empty_frame()
    for c in PRICE_COLUMNS + ["volume"]:
        out[c] = pd.to_numeric(out[c], errors="coerce").astype("float64")
    vals = out[PRICE_COLUMNS + ["volume"]].to_numpy()
    bad = ~np.isfinite(vals).all(axis=1)
    if bad.any():
        if strict:
            i = int(np.argmax(bad))
            raise DataError(f"{int(bad.sum())} candle(s) have NaN or infinite values (first at row {i}); "
                            "remove or repair those rows")
        out = out[~bad]
    out = out.sort_values("timestamp", kind="stable")
    dup = out["timestamp"].duplicated(keep="last")
    if dup.any() and strict:
        ts = int(out.loc[dup, "timestamp"].iloc[0])
        raise DataError(f"{int(dup.sum())} duplicated timestamp(s), first {format_ms(ts)}; "
                        "deduplicate the file")
    out = out[~dup]
    o, h, low, c = (out[k].to_numpy() for k in PRICE_COLUMNS)
    inconsistent = (h < np.maximum(o, c) - 1e-12 * np.abs(h)) | (low > np.minimum(o, c) + 1e-12 * np.abs(low))
    inconsistent |= (low <= 0) | (out["volume"].to_numpy() < 0)
    if inconsistent.any():
        if strict:
            i = int(np.argmax(inconsistent))
            raise DataError(
                f"{int(inconsistent.sum())} candle(s) are inconsistent (high < max(open, close), "
                f"low > min(open, close), a non-positive price or negative volume), first at "
                f"{format_ms(int(out['timestamp'].iloc[i]))}; repair the file"
            )
        out = out[~inconsistent]
    if timeframe is not None:
        off = out["timestamp"].to_numpy() % timeframe_ms(timeframe) != 0
        if timeframe_ms(timeframe) <= 86_400_000 and off.any():
            if strict:
                i = int(np.argmax(off))
                raise DataError(f"{int(off.sum())} timestamp(s) are not on the {timeframe} grid, first "
                                f"{format_ms(int(out['timestamp'].iloc[i]))}; check data.timeframe")
            out = out[~off]
    return out.reset_index(drop=True)


@dataclass(frozen=True)
class Gap:
    """Missing bars: `after` is the last candle before the gap."""

    after: int  # ms
    missing: int  # bars


def find_gaps(timestamps: np.ndarray, timeframe: str) -> list[Gap]:
    """Every place where consecutive candles are more than one bar apart."""
    ts = np.asarray(timestamps, dtype="int64")
    if len(ts) < 2:
        return []
    step = timeframe_ms(timeframe)
    d = np.diff(ts)
    idx = np.flatnonzero(d > step)
    return [Gap(int(ts[i]), int(d[i] // step - 1)) for i in idx]


def gap_flags(timestamps: np.ndarray, timeframe: str) -> np.ndarray:
    """Boolean per row: True where the bar does NOT directly follow the previous one (a gap before it)."""
    ts = np.asarray(timestamps, dtype="int64")
    flags = np.zeros(len(ts), dtype=bool)
    if len(ts) > 1:
        flags[1:] = np.diff(ts) != timeframe_ms(timeframe)
    return flags


def data_hash(df: pd.DataFrame) -> str:
    """sha256 of the candle values, to record exactly which data a run saw."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(df["timestamp"].to_numpy(dtype="int64")).tobytes())
    h.update(np.ascontiguousarray(df[["open", "high", "low", "close", "volume"]].to_numpy("float64")).tobytes())
    return h.hexdigest()[:16]
