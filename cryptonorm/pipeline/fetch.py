"""The fetch step: plan the ranges still missing, page through the exchange, journal every page in the store.

The store (paths, lock, journal, merge, reads) is `cryptonorm.data.store`; this module only drives it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from cryptonorm.config import Config, DataConfig
from cryptonorm.data.candles import Gap, find_gaps, from_rows
from cryptonorm.data.funding import FUNDING_COLUMNS, funding_gaps, funding_path
from cryptonorm.data.importers import read_user_file
from cryptonorm.data.store import (
    FUNDING,
    add_page,
    consolidate,
    filter_range,
    journal_dir,
    read_pending,
    set_aside_pages,
    store_folder,
    store_path,
    user_file,
    write_pending,
)
from cryptonorm.errors import ConfigError, DataError
from cryptonorm.pipeline.validate import validate_config
from cryptonorm.timeframes import parse_date, timeframe_ms

if TYPE_CHECKING:
    from cryptonorm.data.exchange import Retry

ProgressFn = Callable[[dict[str, Any]], None]


# ---------------------------------------------------------------- fetch


@dataclass(kw_only=True)
class Stored:
    """What one fetch left in one store file: rows, how many are new, first and last time, gaps."""

    path: Path
    rows: int
    new_rows: int
    first: int | None
    last: int | None
    gaps: list[Gap] = field(default_factory=list)
    set_aside: list[Path] = field(default_factory=list)  # journal pages that could not be read (store.py)

    @property
    def set_aside_note(self) -> str | None:
        """One line about journal pages set aside as unreadable (their rows are missing), or None."""
        if not self.set_aside:
            return None
        n = len(self.set_aside)
        return (f"note: {n} downloaded page(s) for {self.path} could not be read and were set aside "
                f"({self.set_aside[0]}{', ...' if n > 1 else ''}); their rows are missing from the store (they show "
                "as gaps): to download them anew, delete the store file and fetch again; delete the set-aside "
                "page(s) once checked")

    @classmethod
    def of(cls, path: Path, frame: pd.DataFrame, before: int, gaps: list[Gap], **more: Any) -> Any:
        ts = frame["timestamp"].to_numpy()
        return cls(path=path, rows=len(frame), new_rows=len(frame) - before, first=int(ts[0]) if len(ts) else None,
                   last=int(ts[-1]) if len(ts) else None, gaps=gaps, **more)


@dataclass(kw_only=True)
class FundingSummary(Stored):
    """What one fetch left in the store for one swap's funding rates."""


@dataclass(kw_only=True)
class FetchSummary(Stored):
    """What one fetch left in the store for one market."""

    exchange: str
    symbol: str
    timeframe: str
    source: str = "store"  # "store", or "file" for data.file
    funding: FundingSummary | None = None  # a swap's funding rates, fetched beside its candles

    @property
    def missing_bars(self) -> int:
        return sum(g.missing for g in self.gaps)


def fetch(cfg: Config, *, progress: ProgressFn | None = None, retry: Retry | None = None) -> list[FetchSummary]:
    """Download every `data.symbol` into the store (incremental, resumable), or validate `data.file`."""
    from cryptonorm.data.exchange import Retry, check_symbol, open_source, pages

    data = cfg.data
    _check_fetchable(data)
    own = user_file(data)
    if own is not None:
        df = filter_range(read_user_file(own, data.timeframe, data.time_format), cfg)
        if len(df) == 0:
            raise DataError(f"{own} has no candles between data.since and data.until")
        gaps = find_gaps(df["timestamp"].to_numpy(), data.timeframe)
        return [FetchSummary.of(own, df, len(df), gaps, exchange="file", symbol=data.symbols[0],
                                timeframe=data.timeframe, source="file")]
    validate_config(cfg)
    retry = retry or Retry()
    if progress is not None and retry.notify is None:  # a retrying fetch says so instead of sitting silent
        retry = replace(retry, notify=lambda msg: progress({"retry": msg}))
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
        ranges = _plan(stored, since, until, step, read_pending(path))
        write_pending(path, ranges)
        now = source.milliseconds()
        expected = sum(((min(u, now) if u else now) - s) // step for s, u in ranges if (u or now) > s)
        got = 0
        journal = journal_dir(path)
        for i, (s, u) in enumerate(ranges):
            n_pages = 0
            for rows in pages(source, symbol, data.timeframe, s, u, retry):
                frame = from_rows(rows)
                add_page(path, frame)
                got += len(frame)
                n_pages += 1
                if progress:
                    progress({"symbol": symbol, "candles": got, "expected": max(expected, got), "pages": n_pages})
            write_pending(path, ranges[i + 1:])
        final = consolidate(path)
        with contextlib.suppress(OSError):
            journal.rmdir()
        summary = FetchSummary.of(path, final, before, find_gaps(final["timestamp"].to_numpy(), data.timeframe),
                                  exchange=source.id, symbol=symbol, timeframe=data.timeframe,
                                  set_aside=set_aside_pages(path))
        ts = final["timestamp"].to_numpy()
        if data.market == "swap" and not data.funding_file:
            start = int(ts[0]) if len(ts) else since
            summary.funding = fetch_funding(source, symbol, data, start, until, retry, progress)
        out.append(summary)
    return out


def _check_fetchable(data: DataConfig) -> None:
    """A universe of local files or the synthetic universe has nothing to download."""
    uni = data.universe
    if uni is not None and (uni.synthetic is not None or uni.files is not None or uni.files_dir is not None):
        raise ConfigError("nothing to fetch: data.universe reads "
                          + ("the offline synthetic universe, generated on demand" if uni.synthetic is not None
                             else "local files (data.universe.files / files_dir)")
                          + "; run `cryptonorm panel CONFIG` directly")


def fetch_funding(source: Any, symbol: str, data: DataConfig, since: int, until: int | None, retry: Retry,
                  progress: ProgressFn | None = None) -> FundingSummary:
    """Funding rates of one swap into the store beside its candles: journaled, incremental, resumable."""
    from cryptonorm.data.exchange import funding_pages

    path = funding_path(data.dir, store_folder(data), symbol)
    stored = consolidate(path, FUNDING)
    before = len(stored)
    ranges = _plan(stored, since, until, 1, read_pending(path))  # step 1 ms: resume right after a stored time
    write_pending(path, ranges)
    got = 0
    for i, (s, u) in enumerate(ranges):
        for rows in funding_pages(source, symbol, s, u, retry):
            add_page(path, pd.DataFrame(rows, columns=FUNDING_COLUMNS))
            got += len(rows)
            if progress:
                progress({"symbol": f"{symbol} funding", "candles": got, "expected": got, "pages": 0})
        write_pending(path, ranges[i + 1:])
    final = consolidate(path, FUNDING)
    with contextlib.suppress(OSError):
        journal_dir(path).rmdir()
    return FundingSummary.of(path, final, before, funding_gaps(final["timestamp"].to_numpy()),
                             set_aside=set_aside_pages(path))


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
