"""A universe of coins: every coin's candles (store, local files or the synthetic universe), checked once,
on one shared time grid.

Each coin keeps its own candle frame (its gaps handled per coin, as for one market); `Universe.rows` places
them on the universe grid (T,) = every bar from the first coin's first bar to the last coin's last bar. A coin
is absent (row -1) before its first bar, after its last and in its own gaps: at time t the cross-section is
exactly the coins that traded at t, never one listed later (no survivorship look-ahead).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cryptonorm.config import Config
from cryptonorm.config.universe import MIN_CROSS_SECTION, UniverseConfig
from cryptonorm.data import store
from cryptonorm.data.funding import funding_path, read_funding_file
from cryptonorm.data.importers import read_user_file
from cryptonorm.errors import ConfigError, DataError
from cryptonorm.timeframes import format_ms, timeframe_ms


@dataclass(eq=False)
class Universe:
    """The coins' candles (and funding for perpetuals) on one grid."""

    symbols: list[str]  # (C,)
    timeframe: str
    candles: dict[str, pd.DataFrame]  # symbol -> candles, cut to data.since .. data.until
    funding: dict[str, pd.DataFrame]  # symbol -> funding rates (perpetuals only; empty for spot)
    timestamps: np.ndarray  # (T,) int64 ms, the regular grid
    rows: np.ndarray  # (T, C) int64: row of coin c's frame at grid time t, -1 where it has no bar

    def present(self) -> np.ndarray:
        """(T, C) bool: coin c has a bar at t."""
        out: np.ndarray = self.rows >= 0
        return out

    def on_grid(self, column: str) -> np.ndarray:
        """(T, C) float64 of one candle column; NaN where a coin has no bar."""
        out = np.full(self.rows.shape, np.nan)
        for c, sym in enumerate(self.symbols):
            have = self.rows[:, c] >= 0
            out[have, c] = self.candles[sym][column].to_numpy(dtype="float64")[self.rows[have, c]]
        return out


def universe_of(cfg: Config) -> UniverseConfig:
    if cfg.data.universe is None:
        raise ConfigError("this needs a universe of coins: set data.universe.symbols (or data.universe.synthetic)")
    return cfg.data.universe


def load_universe(cfg: Config) -> Universe:
    """Every coin of data.universe, validated, cut to [data.since, data.until), on one grid."""
    u = universe_of(cfg)
    symbols = cfg.data.symbols
    tf = cfg.data.timeframe
    if u.synthetic is not None:
        from cryptonorm.data.synthetic_universe import generate

        raw = generate(u.synthetic, tf, symbols).candles
    else:
        raw = {s: _read_coin(cfg, u, s) for s in symbols}
    candles: dict[str, pd.DataFrame] = {}
    for s in symbols:
        _check_timeframe(raw[s], s, tf)
        df = store.filter_range(raw[s], cfg)
        if len(df) == 0:
            raise DataError(f"{s} has no candles between data.since={cfg.data.since} and data.until="
                            f"{cfg.data.until}; drop it from data.universe.symbols or widen the range")
        candles[s] = df
    funding = {s: _read_funding(cfg, u, s) for s in symbols} if cfg.data.market == "swap" else {}
    ts, rows = align(candles, symbols, tf)
    return Universe(symbols=symbols, timeframe=tf, candles=candles, funding=funding, timestamps=ts, rows=rows)


def align(candles: dict[str, pd.DataFrame], symbols: list[str], timeframe: str) -> tuple[np.ndarray, np.ndarray]:
    """The regular grid (T,) over every coin, and (T, C) each coin's row at each time (-1: no bar)."""
    step = timeframe_ms(timeframe)
    firsts = [int(candles[s]["timestamp"].iloc[0]) for s in symbols]
    lasts = [int(candles[s]["timestamp"].iloc[-1]) for s in symbols]
    t0 = min(firsts)
    n = (max(lasts) - t0) // step + 1
    ts = t0 + np.arange(n, dtype=np.int64) * step
    rows = np.full((n, len(symbols)), -1, dtype=np.int64)
    for c, s in enumerate(symbols):
        own = candles[s]["timestamp"].to_numpy(dtype="int64")
        off = (own - t0) % step != 0
        if off.any():
            raise DataError(f"{s}: {int(off.sum())} bar(s) are off the {timeframe} grid of the other coins (first "
                            f"{format_ms(int(own[np.argmax(off)]))}); check data.timeframe and the file")
        rows[(own - t0) // step, c] = np.arange(len(own))
    return ts, rows


def need_cross_section(n: int, key: str) -> None:
    """A cross-sectional target, norm or feature needs MIN_CROSS_SECTION coins."""
    if n < MIN_CROSS_SECTION:
        raise ConfigError(f"{key} is cross-sectional and needs at least {MIN_CROSS_SECTION} coins; "
                          f"data.universe has {n}: add coins to data.universe.symbols or choose another {key}")


def coin_file(u: UniverseConfig, symbol: str, timeframe: str) -> tuple[Path, str]:
    """(the local candle file of one coin, the key that names it)."""
    if u.files is not None:
        return Path(u.files[symbol]), f"data.universe.files[{symbol}]"
    assert u.files_dir is not None
    return Path(u.files_dir) / _name(u.pattern, symbol, timeframe), "data.universe.files_dir"


def _name(pattern: str, symbol: str, timeframe: str) -> str:
    base, rest = symbol.split("/", 1)
    quote, _, settle = rest.partition(":")
    return pattern.format(base=base, quote=quote, settle=settle or quote, timeframe=timeframe,
                          symbol=re.sub(r"[/:]", "_", symbol))


def _read_coin(cfg: Config, u: UniverseConfig, symbol: str) -> pd.DataFrame:
    tf = cfg.data.timeframe
    if u.files is None and u.files_dir is None:
        path = store.store_path(cfg.data.dir, store.store_folder(cfg.data), symbol, tf)
        if not path.exists() and not store.journal_parts(path):
            raise DataError(f"{symbol}: no candles stored at {path}; run `cryptonorm fetch -c CONFIG` (it fetches "
                            "every coin of data.universe.symbols) or give data.universe.files_dir")
        return store.consolidate(path) if store.journal_parts(path) else store.read_store(path)
    path, key = coin_file(u, symbol, tf)
    if not path.is_file():
        raise ConfigError(f"{symbol}: {key} names {str(path)!r}, which does not exist; fix the path (pattern "
                          f"{u.pattern!r}) or drop {symbol} from data.universe.symbols")
    try:
        return read_user_file(path, tf)
    except DataError as e:
        raise DataError(f"{symbol}: {e}") from None


def _check_timeframe(df: pd.DataFrame, symbol: str, timeframe: str) -> None:
    """The coin's bars are spaced by data.timeframe (its most common spacing; gaps are allowed)."""
    ts = df["timestamp"].to_numpy(dtype="int64")
    if len(ts) < 3:
        return
    d = np.diff(ts)
    typical = int(np.median(d))
    step = timeframe_ms(timeframe)
    if typical != step:
        raise ConfigError(f"{symbol}: its bars are {typical // 60_000} minutes apart but data.timeframe is "
                          f"{timeframe}; every coin of data.universe needs {timeframe} candles")


def _read_funding(cfg: Config, u: UniverseConfig, symbol: str) -> pd.DataFrame:
    """The funding rates of one perpetual: data.universe.funding_dir, else the store."""
    if u.funding_dir is not None:
        path = Path(u.funding_dir) / _name(u.funding_pattern, symbol, cfg.data.timeframe)
        key = "data.universe.funding_dir"
    else:
        path = funding_path(cfg.data.dir, store.store_folder(cfg.data), symbol)
        key = "the store (cryptonorm fetch)"
    if not path.is_file():
        raise ConfigError(f"{symbol} is a perpetual but has no funding file at {str(path)!r} ({key}); give "
                          f"data.universe.funding_dir with a file named {u.funding_pattern!r}, or drop the coin")
    return read_funding_file(path)
