"""Funding rates of perpetual swaps: the frame, its validation, user files and the gap report.

A funding frame has the columns `timestamp` (int64 ms, UTC: the funding time) and `rate` (float64, per
funding interval: 0.0001 = 0.01%), sorted by timestamp with no duplicates. A rate is known from its funding
time on, never before. Binance USD-M charges every 8 h (some markets every 4 h or 1 h); the interval is read
from the data, not assumed.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from cryptonorm.data.candles import Gap
from cryptonorm.errors import DataError

FUNDING_COLUMNS = ["timestamp", "rate"]
_TIME_NAMES = ("timestamp", "fundingtime", "funding_time", "date", "datetime", "time")
_RATE_NAMES = ("rate", "fundingrate", "funding_rate", "open")  # freqtrade's funding_rate files: `open`


def empty_funding() -> pd.DataFrame:
    return pd.DataFrame({"timestamp": pd.Series([], dtype="int64"), "rate": pd.Series([], dtype="float64")})


def clean_funding(df: pd.DataFrame) -> pd.DataFrame:
    """Sorted, unique (the last copy of a funding time wins), finite rates, exactly FUNDING_COLUMNS."""
    if len(df) == 0:
        return empty_funding()
    out = pd.DataFrame({"timestamp": df["timestamp"].astype("int64"), "rate": df["rate"].astype("float64")})
    out = out[np.isfinite(out["rate"].to_numpy())]
    out = out.drop_duplicates("timestamp", keep="last").sort_values("timestamp", kind="stable")
    return out.reset_index(drop=True)


def funding_path(data_dir: str | Path, exchange: str, symbol: str) -> Path:
    """DIR/<exchange>/<BASE_QUOTE_SETTLE>-funding.parquet, beside the market's candles."""
    return Path(data_dir) / exchange / f"{re.sub(r'[/:]', '_', symbol)}-funding.parquet"


def read_funding_file(path: str | Path, time_format: str | None = None) -> pd.DataFrame:
    """A user's funding rates: CSV/parquet (or freqtrade's funding_rate feather/json) with a time column
    (timestamp, fundingTime, date; ms or ISO, or text in `time_format`) and a rate column (rate, fundingRate,
    funding_rate)."""
    from cryptonorm.data import freqtrade
    from cryptonorm.data.importers import check_size, to_ms

    p = Path(path)
    if not p.is_file():
        raise DataError(f"data.funding_file {str(p)!r} not found; give a CSV or parquet of timestamp, rate")
    check_size(p, "data.funding_file")
    name = p.name.lower()
    try:
        if freqtrade.is_freqtrade_file(p):
            df = freqtrade.read_frame(p)
        elif name.endswith((".parquet", ".pq")):
            df = pd.read_parquet(p)
        else:
            df = pd.read_csv(p)
    except DataError:
        raise
    except Exception as e:
        why = str(e).splitlines()[0] if str(e) else "damaged"
        raise DataError(f"data.funding_file {str(p)!r} cannot be read ({why}); "
                        "it is damaged or not a CSV/parquet file: export it again") from None
    cols = {str(c).strip().lower(): c for c in df.columns}
    t = next((cols[n] for n in _TIME_NAMES if n in cols), None)
    r = next((cols[n] for n in _RATE_NAMES if n in cols), None)
    if t is None or r is None:
        raise DataError(f"data.funding_file {str(p)!r} needs a time column ({', '.join(_TIME_NAMES[:3])}) and a "
                        f"rate column ({', '.join(_RATE_NAMES[:3])}); it has {', '.join(map(str, df.columns))}")
    ms = to_ms(df[t], f"data.funding_file {str(p)!r}", time_format)
    rate = pd.to_numeric(df[r], errors="coerce")
    if rate.isna().any():
        raise DataError(f"data.funding_file {str(p)!r}: {int(rate.isna().sum())} rate(s) are not numbers")
    return clean_funding(pd.DataFrame({"timestamp": ms.to_numpy(), "rate": rate.to_numpy()}))


def interval_ms(timestamps: np.ndarray) -> int:
    """The market's funding interval: the most common spacing of funding times (8 h on most markets)."""
    ts = np.asarray(timestamps, dtype="int64")
    if len(ts) < 2:
        return 8 * 3_600_000
    steps, counts = np.unique(np.diff(ts), return_counts=True)
    return int(steps[np.argmax(counts)])


def funding_gaps(timestamps: np.ndarray) -> list[Gap]:
    """Missing funding times: spacings longer than the market's interval (a change of interval, e.g. 8 h to
    4 h, shows as no gap; an outage as the funding times it skipped)."""
    ts = np.asarray(timestamps, dtype="int64")
    if len(ts) < 2:
        return []
    step = interval_ms(ts)
    d = np.diff(ts)
    idx = np.nonzero(d > step)[0]
    return [Gap(int(ts[i]), int(d[i] // step) - 1) for i in idx if d[i] // step > 1]
