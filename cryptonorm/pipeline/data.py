"""Candles for the pipeline: fetch into the store (journaled, resumable), or a user's file; load a range.

Pages are journaled as they arrive (one atomic parquet part each) and merged into the store file under its
lock; the ranges a fetch plans are recorded first, so an interrupted run is resumed, never left as a hole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from cryptonorm.candles import (
    Gap,
    find_gaps,
    from_rows,
    locked,
    merge,
    parse_date,
    read_store,
    read_user_file,
    store_path,
    timeframe_ms,
    write_atomic,
)
from cryptonorm.config import Config, DataConfig
from cryptonorm.errors import ConfigError, DataError
from cryptonorm.pipeline.files import write_text_atomic

if TYPE_CHECKING:
    from cryptonorm.exchange import Retry

ProgressFn = Callable[[dict[str, Any]], None]


# ---------------------------------------------------------------- fetch


@dataclass
class FetchSummary:
    """What one fetch left in the store for one market."""

    exchange: str
    symbol: str
    timeframe: str
    path: Path
    rows: int
    new_rows: int
    first: int | None
    last: int | None
    gaps: list[Gap] = field(default_factory=list)
    source: str = "store"  # "store", or "file" for data.file

    @property
    def missing_bars(self) -> int:
        return sum(g.missing for g in self.gaps)


def _pending_path(path: Path) -> Path:
    return path.parent / f".{path.name}.pending.json"


def _read_pending(path: Path) -> list[tuple[int, int | None]]:
    """Ranges an interrupted fetch had planned and not finished (so a hole is never left behind)."""
    p = _pending_path(path)
    try:
        return [(int(a), None if b is None else int(b)) for a, b in json.loads(p.read_text())]
    except (OSError, ValueError, TypeError):
        return []


def _write_pending(path: Path, ranges: list[tuple[int, int | None]]) -> None:
    if ranges:
        write_text_atomic(_pending_path(path), json.dumps([list(r) for r in ranges]))
    else:
        with contextlib.suppress(OSError):
            _pending_path(path).unlink()


def _journal_dir(path: Path) -> Path:
    return path.parent / f".{path.name}.journal"


def _journal_parts(path: Path) -> list[Path]:
    j = _journal_dir(path)
    return sorted(j.glob("*.parquet")) if j.exists() else []


STALE_TEMP_S = 600.0  # a journal temp file this old belongs to a killed writer


def _remove_stale_temps(path: Path) -> None:
    """Temp files that killed atomic writes left. Called under the store lock: a temp file of the main
    store file is stale (its writer would hold the lock); a journal's only once it is old."""
    now = time.time()
    candidates = [(p, 0.0) for p in path.parent.glob(f".{path.name}.*.tmp")]
    journal = _journal_dir(path)
    if journal.exists():
        candidates += [(p, STALE_TEMP_S) for p in journal.glob(".*.tmp")]
    for p, age in candidates:
        with contextlib.suppress(OSError):
            if now - p.stat().st_mtime >= age:
                p.unlink()
    with contextlib.suppress(OSError):
        journal.rmdir()  # only when empty


def consolidate(path: Path) -> pd.DataFrame:
    """Merge pending journal pages into the main store file (under the file lock), atomically."""
    with locked(path):
        _remove_stale_temps(path)
        parts = _journal_parts(path)
        frame = read_store(path)
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
                    p.rename(p.with_suffix(".unreadable"))
        merged = merge(*pieces)
        write_atomic(merged, path)
        for p in read:
            with contextlib.suppress(OSError):
                p.unlink()
        return merged


def fetch(cfg: Config, *, progress: ProgressFn | None = None, retry: Retry | None = None) -> list[FetchSummary]:
    """Download every `data.symbol` into the store (incremental, resumable), or validate `data.file`."""
    from cryptonorm.exchange import Retry, check_symbol, open_source, pages

    data = cfg.data
    if data.file:
        df = _filter_range(read_user_file(data.file, data.timeframe), cfg)
        if len(df) == 0:
            raise DataError(f"data.file {data.file!r} has no candles between data.since and data.until")
        ts = df["timestamp"].to_numpy()
        return [FetchSummary("file", data.symbols[0], data.timeframe, Path(data.file), len(df), 0,
                             int(ts[0]), int(ts[-1]), find_gaps(ts, data.timeframe), source="file")]
    retry = retry or Retry()
    source = open_source(data)
    step = timeframe_ms(data.timeframe)
    until = parse_date(data.until) if data.until else None
    out = []
    for symbol in data.symbols:
        check_symbol(source, symbol, data.timeframe, retry)
        path = store_path(data.dir, store_folder(data), symbol, data.timeframe)
        stored = consolidate(path)  # a killed earlier run may have left journal pages: keep them
        before = len(stored)
        since = parse_date(data.since) if data.since else _first_available(source, stored)
        ranges = _plan(stored, since, until, step, _read_pending(path))
        _write_pending(path, ranges)
        now = source.milliseconds()
        expected = sum(((min(u, now) if u else now) - s) // step for s, u in ranges if (u or now) > s)
        got = 0
        journal = _journal_dir(path)
        for i, (s, u) in enumerate(ranges):
            n_pages = 0
            for rows in pages(source, symbol, data.timeframe, s, u, retry):
                frame = from_rows(rows)
                journal.mkdir(parents=True, exist_ok=True)
                write_atomic(frame, journal / f"{int(frame['timestamp'].min()):015d}.parquet")
                got += len(frame)
                n_pages += 1
                if progress:
                    progress({"symbol": symbol, "candles": got, "expected": max(expected, got), "pages": n_pages})
            _write_pending(path, ranges[i + 1:])
        final = consolidate(path)
        with contextlib.suppress(OSError):
            journal.rmdir()
        ts = final["timestamp"].to_numpy()
        out.append(FetchSummary(source.id, symbol, data.timeframe, path, len(final), len(final) - before,
                                int(ts[0]) if len(ts) else None, int(ts[-1]) if len(ts) else None,
                                find_gaps(ts, data.timeframe)))
    return out


def _plan(stored: pd.DataFrame, since: int, until: int | None, step: int,
          pending: list[tuple[int, int | None]]) -> list[tuple[int, int | None]]:
    """The ranges still to download: before the first stored candle, after the last, and whatever an
    interrupted run had planned (resumed after the last candle it stored inside that range)."""
    ts = stored["timestamp"].to_numpy()
    ranges: list[tuple[int, int | None]] = []
    for s, u in pending:
        inside = ts[(ts >= s) & ((ts < u) if u is not None else True)]
        ranges.append((int(inside[-1]) + step if len(inside) else s, u))
    if len(ts):
        first, last = int(ts[0]), int(ts[-1])
        if since < first:
            ranges.append((since, first))  # prepend what an earlier `since` asks for
        if until is None or last + step < until:
            ranges.append((max(since, last + step), until))
    else:
        ranges.append((since, until))
    return [(s, u) for s, u in ranges if u is None or s < u]


def _first_available(source: Any, stored: pd.DataFrame) -> int:
    """With no data.since: the synthetic market's start, or the exchange's earliest candle (since=0)."""
    start = getattr(source, "start_ms", None)
    if callable(start):
        return int(start("1m"))
    return int(stored["timestamp"].iloc[0]) if len(stored) else 0


def _filter_range(df: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    ts = df["timestamp"]
    mask = pd.Series(True, index=df.index)
    if cfg.data.since:
        mask &= ts >= parse_date(cfg.data.since)
    if cfg.data.until:
        mask &= ts < parse_date(cfg.data.until)
    return df[mask].reset_index(drop=True)


def candle_path(cfg: Config) -> Path:
    """The store file (or data.file) that train/backtest read for this config."""
    if cfg.data.file:
        return Path(cfg.data.file)
    return store_path(cfg.data.dir, store_folder(cfg.data), _one_symbol(cfg), cfg.data.timeframe)


def store_folder(data: DataConfig) -> str:
    """The store's folder for an exchange. The synthetic market's depends on its parameters: two markets
    with another seed or signal must never share (and silently mix) one file."""
    if data.exchange != "synthetic":
        return data.exchange
    params = json.dumps(data.synthetic.model_dump(mode="json"), sort_keys=True)
    return f"synthetic/{hashlib.sha256(params.encode()).hexdigest()[:10]}"


def _one_symbol(cfg: Config) -> str:
    syms = cfg.data.symbols
    if len(syms) != 1:
        raise ConfigError(f"data.symbol lists {len(syms)} markets; training and backtests take one: "
                          f"set data.symbol to one of {', '.join(syms)}")
    return syms[0]


def load_candles(cfg: Config) -> pd.DataFrame:
    """The candles an experiment uses: data.file, or the store, cut to [data.since, data.until)."""
    if cfg.data.file:
        df = read_user_file(cfg.data.file, cfg.data.timeframe)
    else:
        path = candle_path(cfg)
        if not path.exists() and not _journal_parts(path):
            raise DataError(f"no candles stored at {path}; run `cryptonorm fetch -c CONFIG` first "
                            "(or `cryptonorm run CONFIG`, which fetches what is missing)")
        df = consolidate(path) if _journal_parts(path) else read_store(path)
    df = _filter_range(df, cfg)
    if len(df) == 0:
        raise DataError(f"no candles in {candle_path(cfg)} between data.since={cfg.data.since} and "
                        f"data.until={cfg.data.until}; widen the range or fetch again")
    return df


def have_candles(cfg: Config) -> bool:
    """True when the store already covers data.since .. data.until (what `run` needs before training)."""
    if cfg.data.file:
        return True
    path = candle_path(cfg)
    if _journal_parts(path) or not path.exists():
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
