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
from cryptonorm.timeframes import format_ms

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


def _regular_interval(ts: np.ndarray) -> int:
    """The longest spacing (to the minute: exchanges' funding times carry ms of jitter) that makes at least a
    fifth of all spacings. A market that moved from 8 h to 4 h funding has both as regular intervals: its 8 h
    spacings are no gap; an outage's spacing occurs once and is one."""
    d = np.round(np.diff(ts) / 60_000).astype("int64") * 60_000
    steps, counts = np.unique(d[d > 0], return_counts=True)
    if len(steps) == 0:
        return 8 * 3_600_000
    regular = steps[counts >= 0.2 * counts.sum()]
    return int(regular.max()) if len(regular) else int(steps[np.argmax(counts)])


def funding_gaps(timestamps: np.ndarray) -> list[Gap]:
    """Missing funding times: spacings longer than the market's interval (a change of interval, e.g. 8 h to
    4 h or back, shows as no gap; an outage as the funding times it skipped)."""
    ts = np.asarray(timestamps, dtype="int64")
    if len(ts) < 2:
        return []
    step = _regular_interval(ts)
    d = np.diff(ts)
    tolerance = 60_000  # the jitter of exchanges' funding times
    idx = np.nonzero(d > step + tolerance)[0]
    return [Gap(int(ts[i]), int((d[i] + tolerance) // step) - 1) for i in idx if (d[i] + tolerance) // step > 1]


def check_coverage(funding: pd.DataFrame, timestamps: np.ndarray, step: int, source: str) -> None:
    """Refuse funding rates that do not cover the bars with open times `timestamps` (bar length `step` ms):
    rates that start late or end early, or funding times missing inside the bars' span. Features would
    carry the last known rate over them for months, and a backtest would charge nothing: a gap is never
    filled over. `source` names the file in the message."""
    ts = np.asarray(timestamps, dtype="int64")
    if len(ts) == 0:
        return
    fts = funding["timestamp"].to_numpy("int64")
    first_close, last_close = int(ts[0]) + step, int(ts[-1]) + step
    span = f"the candles run {format_ms(int(ts[0]))} -> {format_ms(last_close)}"
    if len(fts) == 0:
        raise DataError(f"{source} has no funding rates but {span}; fetch them again or give data.funding_file")
    interval = _regular_interval(fts) if len(fts) > 1 else 8 * 3_600_000
    late = (int(fts[0]) - first_close) // interval
    early = (last_close - int(fts[-1])) // interval
    if late > 0 or early > 0:
        edge = (f"end {format_ms(int(fts[-1]))}: {early} funding time(s) missing at the end" if early > 0 else
                f"start {format_ms(int(fts[0]))}: {late} funding time(s) missing at the start")
        raise DataError(f"{source}: funding rates {edge}, but {span}; extend the funding rates (fetch again or a "
                        "longer data.funding_file), or cut data.since/data.until to the span they cover")
    inside = []  # the gaps, cut to the funding times the bars need: from the one before the first close on
    for g in funding_gaps(fts):
        times = g.after + interval * np.arange(1, g.missing + 1)
        need = int(((times > first_close - interval) & (times <= last_close)).sum())
        if need:
            inside.append(Gap(int(times[times > first_close - interval][0]) - interval, need))
    long = [g for g in inside if g.missing > SKIPPED_SETTLEMENTS]
    if long:
        worst = max(long, key=lambda g: g.missing)
        raise DataError(f"{source}: {sum(g.missing for g in long)} funding time(s) missing inside the candles' "
                        f"span ({len(long)} gap(s) of more than {SKIPPED_SETTLEMENTS}, the longest {worst.missing} "
                        f"after {format_ms(worst.after)}); fetch them again or repair the file: funding is never "
                        "filled over a gap")


# An exchange skips a settlement now and then (maintenance): that funding time never existed and charged
# nothing, so up to this many missing in a row are taken as skipped (the fetch summary lists them); a longer
# hole is missing data and refused.
SKIPPED_SETTLEMENTS = 3
