"""THE candle store: one module owns its paths, the lock, the journal of pages, the merge and the reads.

Layout: `DIR/<exchange>/<BASE_QUOTE>-<timeframe>.parquet` (the synthetic market's under
`DIR/synthetic/<hash of its parameters>/`). A fetch journals each page as it arrives (one atomic parquet part in
`.NAME.journal/`) and records the ranges it plans (`.NAME.pending.json`), so an interrupted run loses nothing
and is resumed, never left as a hole; `consolidate` merges the journal into the store file under its lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cryptonorm.atomic import atomic_path, write_text_atomic
from cryptonorm.config import Config, DataConfig
from cryptonorm.data import freqtrade
from cryptonorm.data.candles import clean, empty_frame
from cryptonorm.data.funding import clean_funding, empty_funding
from cryptonorm.data.importers import read_user_file
from cryptonorm.errors import ConfigError, DataError
from cryptonorm.timeframes import parse_date, timeframe_ms

# ---------------------------------------------------------------- paths, lock, read, write


def store_path(data_dir: str | Path, exchange: str, symbol: str, timeframe: str) -> Path:
    """DIR/<exchange>/<BASE_QUOTE>-<timeframe>.parquet (':' of derivatives symbols becomes '_')."""
    safe = re.sub(r"[/:]", "_", symbol)
    return Path(data_dir) / exchange / f"{safe}-{timeframe}.parquet"


@dataclass(frozen=True)
class Kind:
    """What a store file holds: how to validate such a frame, and its empty frame."""

    name: str
    clean: Callable[[pd.DataFrame], pd.DataFrame]
    empty: Callable[[], pd.DataFrame]


CANDLES = Kind("candle", clean, empty_frame)
FUNDING = Kind("funding", clean_funding, empty_funding)


def read_store(path: Path, kind: Kind = CANDLES) -> pd.DataFrame:
    """Read a stored file (empty frame if absent)."""
    if not path.exists():
        return kind.empty()
    try:
        df = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises many types for a damaged file
        raise DataError(f"{kind.name} file {path} is unreadable (damaged, or not parquet); delete it and fetch again"
                        ) from e
    return kind.clean(df)


def write_atomic(df: pd.DataFrame, path: Path) -> None:
    """Write parquet atomically (temp file in the same folder, fsync, rename over `path`)."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


@contextlib.contextmanager
def locked(path: Path, timeout: float = 600.0) -> Iterator[None]:
    """Inter-process lock for updates of one store file (a sibling .lock file)."""
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path) + ".lock")
    try:
        with lock.acquire(timeout=timeout):
            yield
    except Timeout:
        raise DataError(f"{path} is locked by another cryptonorm process for over {timeout:.0f}s; "
                        "wait for it to finish or remove the stale .lock file") from None


def merge(*frames: pd.DataFrame, kind: Kind = CANDLES) -> pd.DataFrame:
    """Union of frames, oldest download first; where several have a timestamp, the last one wins."""
    non_empty = [f for f in frames if len(f)]
    return kind.clean(pd.concat(non_empty, ignore_index=True)) if non_empty else kind.empty()



# ---------------------------------------------------------------- the journal of a fetch in progress


def pending_path(path: Path) -> Path:
    return path.parent / f".{path.name}.pending.json"


def read_pending(path: Path) -> list[tuple[int, int | None]]:
    """Ranges an interrupted fetch had planned and not finished (so a hole is never left behind)."""
    p = pending_path(path)
    try:
        return [(int(a), None if b is None else int(b)) for a, b in json.loads(p.read_text())]
    except (OSError, ValueError, TypeError):
        return []


def write_pending(path: Path, ranges: list[tuple[int, int | None]]) -> None:
    if ranges:
        write_text_atomic(pending_path(path), json.dumps([list(r) for r in ranges]))
    else:
        with contextlib.suppress(OSError):
            pending_path(path).unlink()


def journal_dir(path: Path) -> Path:
    return path.parent / f".{path.name}.journal"


def add_page(path: Path, frame: pd.DataFrame) -> None:
    """Journal one downloaded page for the store file at `path` (atomic; merged by `consolidate`). Parts are
    named by first timestamp, writer and a random suffix, so no writer ever replaces another page."""
    journal = journal_dir(path)
    # a unique name per page: a consolidation that read an older page of the same name must never unlink this one
    page = journal / f"{int(frame['timestamp'].min()):015d}.{os.getpid()}.{uuid.uuid4().hex[:12]}.parquet"
    for attempt in range(JOURNAL_RETRIES + 1):
        journal.mkdir(parents=True, exist_ok=True)
        try:
            write_atomic(frame, page)
            return
        except FileNotFoundError:
            # a consolidation (another process, under the store lock, which writers of pages do not take)
            # removes the journal folder once it is empty: between our mkdir and the temp file's creation
            # the folder can vanish. Once the temp file exists the folder is not empty and stays.
            if journal.exists() or attempt == JOURNAL_RETRIES:
                raise


JOURNAL_RETRIES = 5  # add_page: times the journal folder is made again after a consolidation removed it


def journal_parts(path: Path) -> list[Path]:
    j = journal_dir(path)
    return sorted(j.glob("*.parquet")) if j.exists() else []


UNREADABLE = ".unreadable"  # the suffix of a journal page that could not be read, set aside (never deleted)


def set_aside_pages(path: Path) -> list[Path]:
    """Journal pages of the store file at `path` that could not be read and were set aside: their rows are
    not in the store (a fetch reports them; the user deletes them once checked)."""
    j = journal_dir(path)
    return sorted(j.glob(f"*{UNREADABLE}")) if j.exists() else []


STALE_TEMP_S = 600.0  # a journal temp file this old belongs to a killed writer


def _remove_stale_temps(path: Path) -> None:
    """Temp files that killed atomic writes left. Called under the store lock: a temp file of the main
    store file is stale (its writer would hold the lock); a journal's only once it is old."""
    now = time.time()
    candidates = [(p, 0.0) for p in path.parent.glob(f".{path.name}.*.tmp")]
    journal = journal_dir(path)
    if journal.exists():
        candidates += [(p, STALE_TEMP_S) for p in journal.glob(".*.tmp")]
    for p, age in candidates:
        with contextlib.suppress(OSError):
            if now - p.stat().st_mtime >= age:
                p.unlink()
    with contextlib.suppress(OSError):
        journal.rmdir()  # only when empty


def consolidate(path: Path, kind: Kind = CANDLES) -> pd.DataFrame:
    """Merge pending journal pages into the main store file (under the file lock), atomically."""
    with locked(path):
        _remove_stale_temps(path)
        parts = journal_parts(path)
        frame = read_store(path, kind)
        if not parts:
            return frame
        pieces = [frame]
        read = []
        for p in parts:
            try:  # parts are written atomically; one that cannot be read is set aside, never deleted
                pieces.append(pd.read_parquet(p))
                read.append(p)
            except Exception:
                with contextlib.suppress(OSError):
                    p.rename(p.with_suffix(UNREADABLE))  # reported by set_aside_pages (fetch says so)
        merged = merge(*pieces, kind=kind)
        write_atomic(merged, path)
        for p in read:
            with contextlib.suppress(OSError):
                p.unlink()
        return merged



# ---------------------------------------------------------------- what an experiment reads


def filter_range(df: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    ts = df["timestamp"]
    mask = pd.Series(True, index=df.index)
    if cfg.data.since:
        mask &= ts >= parse_date(cfg.data.since)
    if cfg.data.until:
        mask &= ts < parse_date(cfg.data.until)
    return df[mask].reset_index(drop=True)


def user_file(data: DataConfig) -> Path | None:
    """The user's own candle file for this config: data.file, or the freqtrade file of data.symbol and
    data.timeframe in data.freqtrade_dir (futures/ for a swap); None when candles come from the store."""
    if data.file:
        return Path(data.file)
    if data.freqtrade_dir:
        return freqtrade.find(data.freqtrade_dir, _one_symbol(data), data.timeframe,
                              "futures" if data.market == "swap" else "")
    return None


def candle_path(cfg: Config) -> Path:
    """The store file (or the user's file) that train/backtest read for this config."""
    own = user_file(cfg.data)
    if own is not None:
        return own
    return store_path(cfg.data.dir, store_folder(cfg.data), _one_symbol(cfg.data), cfg.data.timeframe)


def store_folder(data: DataConfig) -> str:
    """The store's folder for an exchange. The synthetic market's depends on its parameters: two markets
    with another seed or signal must never share (and silently mix) one file."""
    if data.exchange != "synthetic":
        return data.exchange
    params = json.dumps(data.synthetic.model_dump(mode="json"), sort_keys=True)
    return f"synthetic/{hashlib.sha256(params.encode()).hexdigest()[:10]}"


def _one_symbol(data: DataConfig) -> str:
    syms = data.symbols
    if len(syms) != 1:
        raise ConfigError(f"data.symbol lists {len(syms)} markets; training and backtests take one: "
                          f"set data.symbol to one of {', '.join(syms)}")
    return syms[0]


def load_candles(cfg: Config) -> pd.DataFrame:
    """The candles an experiment uses: data.file, or the store, cut to [data.since, data.until)."""
    own = user_file(cfg.data)
    if own is not None:
        df = read_user_file(own, cfg.data.timeframe, cfg.data.time_format)
    else:
        path = candle_path(cfg)
        if not path.exists() and not journal_parts(path):
            raise DataError(f"no candles stored at {path}; run `cryptonorm fetch -c CONFIG` first "
                            "(or `cryptonorm run CONFIG`, which fetches what is missing)")
        df = consolidate(path) if journal_parts(path) else read_store(path)
    df = filter_range(df, cfg)
    if len(df) == 0:
        raise DataError(f"no candles in {candle_path(cfg)} between data.since={cfg.data.since} and "
                        f"data.until={cfg.data.until}; widen the range or fetch again")
    return df


def have_candles(cfg: Config) -> bool:
    """True when the store already covers data.since .. data.until (what `run` needs before training)."""
    if cfg.data.file or cfg.data.freqtrade_dir:
        return True
    path = candle_path(cfg)
    if journal_parts(path) or not path.exists():
        return False
    ts = read_store(path)["timestamp"]
    if len(ts) == 0:
        return False
    step = timeframe_ms(cfg.data.timeframe)
    if cfg.data.since and int(ts.iloc[0]) > parse_date(cfg.data.since) + step:
        return False
    if cfg.data.until:
        until = min(parse_date(cfg.data.until), int(time.time() * 1000) // step * step)
        if int(ts.iloc[-1]) + step < until:
            return False
    return True


def load_funding(cfg: Config, bars: np.ndarray | pd.Series | None = None) -> pd.DataFrame | None:
    """A swap's funding rates (timestamp, rate): data.funding_file, the freqtrade folder's funding_rate file,
    or the store (fetched beside the candles). None for spot. Rates are not cut to data.since/until: the
    bars' positions need the funding times around them. With `bars` (candle open times), rates that do not
    cover them, or miss funding times inside their span, are refused (`check_coverage`)."""
    data = cfg.data
    if data.market != "swap":
        return None
    from cryptonorm.data.funding import check_coverage

    source, rates = _read_funding(cfg)
    if bars is not None:
        check_coverage(rates, np.asarray(bars, dtype="int64"), timeframe_ms(data.timeframe), source)
    return rates


def _read_funding(cfg: Config) -> tuple[str, pd.DataFrame]:
    """(what names the funding rates in a message, the rates)."""
    from cryptonorm.data.funding import funding_path, read_funding_file

    data = cfg.data
    if data.funding_file:
        return f"data.funding_file {data.funding_file!r}", read_funding_file(data.funding_file, data.time_format)
    if data.freqtrade_dir:
        folder = Path(data.freqtrade_dir) / "futures"
        stem = freqtrade.pair_to_filename(_one_symbol(data))
        found = sorted(folder.glob(f"{stem}-*-funding_rate.*")) if folder.is_dir() else []
        if not found:
            raise DataError(f"no freqtrade funding_rate file for {_one_symbol(data)} in {folder}; download it with "
                            "freqtrade (download-data --trading-mode futures) or give data.funding_file")
        return f"funding file {str(found[0])!r}", read_funding_file(found[0], data.time_format)
    path = funding_path(data.dir, store_folder(data), _one_symbol(data))
    if not path.exists() and not journal_parts(path):
        raise DataError(f"no funding rates stored at {path}; run `cryptonorm fetch -c CONFIG` (data.market: swap "
                        "fetches them with the candles) or give data.funding_file")
    rates = consolidate(path, FUNDING) if journal_parts(path) else read_store(path, FUNDING)
    return f"funding file {str(path)!r}", rates
