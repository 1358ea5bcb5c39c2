"""freqtrade's data files: read its candles (feather, parquet, json, json.gz) and write the store in its layout.

freqtrade keeps candles under `user_data/data/<exchange>/` as `<PAIR>-<timeframe>.<ext>` with the pair's
`/ : . @ $ + space` replaced by `_` (`BTC_USDT-1h.feather`); futures live in a `futures/` sub-folder with a
candle-type suffix (`futures/BTC_USDT_USDT-1h-futures.feather`, funding rates as `...-8h-funding_rate.feather`
whose `open` column holds the rate). feather/parquet files hold the columns `date` (UTC datetime), open, high,
low, close, volume; json files a list of `[ms, open, high, low, close, volume]` rows (json.gz: the same,
gzipped). This module reads and writes exactly that, nothing of freqtrade is imported.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd

from cryptonorm.atomic import atomic_path
from cryptonorm.data.candles import COLUMNS, clean
from cryptonorm.errors import DataError
from cryptonorm.timeframes import timeframe_ms

FORMATS = ("feather", "parquet", "json", "jsongz")  # freqtrade's dataformat_ohlcv values
_EXT = {"feather": ".feather", "parquet": ".parquet", "json": ".json", "jsongz": ".json.gz"}
FT_COLUMNS = ["date", "open", "high", "low", "close", "volume"]  # freqtrade's DEFAULT_DATAFRAME_COLUMNS


def pair_to_filename(symbol: str) -> str:
    """freqtrade's pair_to_filename: 'BTC/USDT:USDT' -> 'BTC_USDT_USDT'."""
    for ch in ("/", " ", ".", "@", "$", "+", ":"):
        symbol = symbol.replace(ch, "_")
    return symbol


def relative_path(symbol: str, timeframe: str, fmt: str = "feather", candle_type: str = "") -> Path:
    """Where freqtrade keeps a market inside `user_data/data/<exchange>/`. `candle_type`: '' (spot),
    'futures', 'mark' or 'funding_rate' (the last three in the futures/ folder)."""
    if fmt not in _EXT:
        raise DataError(f"freqtrade format {fmt!r} is not one of {', '.join(FORMATS)}")
    suffix = f"-{candle_type}" if candle_type else ""
    name = f"{pair_to_filename(symbol)}-{timeframe}{suffix}{_EXT[fmt]}"
    return Path("futures") / name if candle_type else Path(name)


def is_freqtrade_file(path: str | Path) -> bool:
    """True for the formats only freqtrade uses here (feather, json, json.gz)."""
    name = Path(path).name.lower()
    return name.endswith((".feather", ".json", ".json.gz"))


def read_frame(path: str | Path) -> pd.DataFrame:
    """A freqtrade file as a raw frame with `timestamp` (ms) and the OHLCV columns (not yet validated)."""
    p = Path(path)
    name = p.name.lower()
    try:
        if name.endswith(".feather"):
            df = pd.read_feather(p)
        elif name.endswith(".parquet"):
            df = pd.read_parquet(p)
        elif name.endswith((".json", ".json.gz")):
            opener = gzip.open if name.endswith(".gz") else open
            with opener(p, "rt", encoding="utf-8") as f:
                rows = json.load(f)
            df = _from_json_rows(rows, p)
        else:
            raise DataError(f"{p}: not a freqtrade data file (.feather, .parquet, .json, .json.gz)")
    except DataError:
        raise
    except Exception as e:  # pyarrow / json raise many types for a damaged file
        raise DataError(f"{p} cannot be read as a freqtrade file: {str(e).splitlines()[0] if str(e) else e!r}") \
            from None
    df.columns = [str(c).strip().lower() for c in df.columns]
    if "date" in df.columns and "timestamp" not in df.columns:
        df = df.rename(columns={"date": "timestamp"})
    return df


def _from_json_rows(rows: object, p: Path) -> pd.DataFrame:
    if not isinstance(rows, list) or any(not isinstance(r, list) or len(r) < 6 for r in rows[:5]):
        raise DataError(f"{p}: a freqtrade json file holds a list of [ms, open, high, low, close, volume] rows")
    arr = np.asarray([r[:6] for r in rows], dtype="float64")
    if arr.size == 0:
        return pd.DataFrame(columns=COLUMNS)
    df = pd.DataFrame(arr[:, 1:], columns=COLUMNS[1:])
    df.insert(0, "timestamp", arr[:, 0].astype("int64"))
    return df


def find(freqtrade_dir: str | Path, symbol: str, timeframe: str, candle_type: str = "") -> Path:
    """The freqtrade file of a market in `user_data/data/<exchange>/`, whichever format it was saved in.

    Raises a DataError naming what the folder has instead (another timeframe, another market)."""
    root = Path(freqtrade_dir)
    if not root.is_dir():
        raise DataError(f"data.freqtrade_dir {str(root)!r} is not a folder; point it at freqtrade's "
                        "user_data/data/<exchange>/")
    for fmt in FORMATS:
        p = root / relative_path(symbol, timeframe, fmt, candle_type)
        if p.exists():
            return p
    stem = pair_to_filename(symbol)
    folder = root / "futures" if candle_type else root
    others = sorted(q.name for q in folder.glob(f"{stem}-*")) if folder.is_dir() else []
    hint = (f"it has {', '.join(others[:6])}: another timeframe than data.timeframe={timeframe}?" if others
            else "download it with `freqtrade download-data` or check data.symbol / data.market")
    kind = f" {candle_type}" if candle_type else ""
    raise DataError(f"no freqtrade{kind} file for {symbol} {timeframe} in {folder}; {hint}")


def check_timeframe(df: pd.DataFrame, timeframe: str, path: Path) -> None:
    """Refuse a file whose candles are spaced by another timeframe than the config's (the most common step)."""
    ts = df["timestamp"].to_numpy("int64")
    if len(ts) < 3:
        return
    steps, counts = np.unique(np.diff(np.sort(ts)), return_counts=True)
    step = int(steps[np.argmax(counts)])
    if step != timeframe_ms(timeframe):
        raise DataError(f"{path}: candles are {step // 60_000} minutes apart, but data.timeframe is {timeframe}; "
                        "set data.timeframe to the file's timeframe or pick the matching file")


def _ms(values: pd.Series) -> np.ndarray:
    """Milliseconds since the epoch of a time column read from a freqtrade file (datetimes or numbers)."""
    if pd.api.types.is_numeric_dtype(values):
        return values.to_numpy("int64")
    dt = pd.to_datetime(values, utc=True)
    return ((dt - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)).to_numpy("int64")


def merged(new: pd.DataFrame, path: Path) -> pd.DataFrame:
    """`new` (timestamp + OHLCV, sorted, unique) united with the candles `path` already holds: a longer history
    there is kept. Overlapping candles must be identical; a conflict is a DataError and nothing is written."""
    if not path.exists():
        return new
    old = read_frame(path)
    missing = [c for c in COLUMNS if c not in old.columns]
    if missing:
        raise DataError(f"{path} exists and is not a freqtrade candle file (no {', '.join(missing)}); nothing was "
                        "written: move it away or export into another folder")
    old = pd.DataFrame({"timestamp": _ms(old["timestamp"]),
                        **{c: old[c].to_numpy("float64") for c in COLUMNS[1:]}})
    both = old.merge(new, on="timestamp", suffixes=("_old", ""))
    differ = np.zeros(len(both), dtype=bool)
    for c in COLUMNS[1:]:
        a, b = both[f"{c}_old"].to_numpy(), both[c].to_numpy()
        differ |= ~((a == b) | (np.isnan(a) & np.isnan(b)))
    if differ.any():
        from cryptonorm.timeframes import format_ms

        first = int(both["timestamp"].to_numpy()[differ][0])
        raise DataError(f"{path} already holds {int(differ.sum())} candle(s) that differ from the exported ones "
                        f"(the first at {format_ms(first)}); nothing was written: export into another folder, "
                        "or move that file away to replace it")
    keep = old[~old["timestamp"].isin(new["timestamp"])]
    return pd.concat([keep, new], ignore_index=True).sort_values("timestamp", kind="stable").reset_index(drop=True)


def write(candles: pd.DataFrame, freqtrade_dir: str | Path, symbol: str, timeframe: str, *,
          fmt: str = "feather", candle_type: str = "") -> Path:
    """Write a candle frame where and how freqtrade keeps it (atomically), united with the candles the file
    already holds (`merged`: an existing longer history is never cut). Returns the file."""
    path = Path(freqtrade_dir) / relative_path(symbol, timeframe, fmt, candle_type)
    if candle_type == "funding_rate":  # rates in the price columns: negative values are normal, no candle checks
        df = merged(candles[COLUMNS].sort_values("timestamp").reset_index(drop=True), path)
    else:
        df = clean(merged(clean(candles[COLUMNS]), path))
    out = pd.DataFrame({"date": pd.to_datetime(df["timestamp"].to_numpy("int64"), unit="ms", utc=True)})
    for c in COLUMNS[1:]:
        out[c] = df[c].to_numpy("float64")
    with atomic_path(path) as tmp:
        if fmt == "feather":
            out.to_feather(tmp, compression_level=9, compression="lz4")
        elif fmt == "parquet":
            out.to_parquet(tmp, index=False)
        else:
            rows = [[int(t), *map(float, r)] for t, r in zip(df["timestamp"].to_numpy("int64"),
                                                              df[COLUMNS[1:]].to_numpy("float64"), strict=True)]
            text = json.dumps(rows, separators=(",", ":"))
            if fmt == "jsongz":
                tmp.write_bytes(gzip.compress(text.encode()))
            else:
                tmp.write_text(text, encoding="utf-8")
    return path

