"""The feature table and the look-ahead audit of a user's config and data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptonorm.atomic import write_csv
from cryptonorm.config import Config
from cryptonorm.data.store import load_candles, load_funding, write_atomic
from cryptonorm.errors import ConfigError
from cryptonorm.timeframes import timeframe_ms


def features(cfg: Config, out: Path) -> tuple[Path, int, int]:
    """Write the raw (unscaled) feature table with timestamp and OHLCV to `out` (.parquet or .csv)."""
    from cryptonorm.features.indicators import compute_features

    suffix = out.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise ConfigError(f"-o {out}: use a .parquet or .csv file name")
    candles = load_candles(cfg)
    table = compute_features(candles, cfg.features)
    funding = load_funding(cfg, candles["timestamp"])
    if funding is not None:  # a swap: the funding features beside the indicators
        from cryptonorm.features.funding import funding_features

        step = timeframe_ms(cfg.data.timeframe)
        for name, col in funding_features(table["timestamp"].to_numpy("int64"), step, funding,
                                          cfg.features.funding).items():
            table[name] = col
    if suffix == ".parquet":
        write_atomic(table, out)
    else:
        write_csv(out, table)
    return out, len(table), table.shape[1]


def audit(cfg: Config) -> Any:
    """Run the look-ahead audit on the user's own config and data (a universe: every coin's future cut)."""
    from cryptonorm.features.audit import audit as run_audit

    if cfg.data.universe is not None:
        from cryptonorm.data.universe import load_universe
        from cryptonorm.features.audit import audit_panel

        return audit_panel(load_universe(cfg), cfg)

    candles = load_candles(cfg)
    return run_audit(candles, cfg, funding=load_funding(cfg, candles["timestamp"]))
