"""Perpetual swaps: candles and funding rates through real ccxt against the loopback Binance USD-M API,
funding charged in the backtest, funding features known only after their funding time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fake_exchange import FakeBinance, RunningServer, exchange_options, real_candles, serving
from typer.testing import CliRunner

from cryptonorm import pipeline
from cryptonorm.cli import app
from cryptonorm.config import build_config
from cryptonorm.data.exchange import Retry
from cryptonorm.data.funding import funding_path, read_funding_file
from cryptonorm.data.store import FUNDING, read_store, store_path
from cryptonorm.errors import DataError

HOUR = 3_600_000
SWAP = real_candles("BTC_USDT-1h", rows=2_000, end="2024-03-01")  # real candles, served as the perpetual's
SPOT = real_candles("BTC_USDT-1h", rows=2_000, end="2024-03-01")


def funding_series(start: int, end: int, seed: int = 0, outage: bool = True) -> pd.DataFrame:
    """Funding every 8 h at 00/08/16 UTC (Binance USD-M), rates around +0.01% with sign changes; one
    missing funding time (an outage) when `outage`."""
    first = start - start % (8 * HOUR)
    ts = np.arange(first, end + 8 * HOUR, 8 * HOUR, dtype="int64")
    rates = np.round(np.random.default_rng(seed).normal(1e-4, 2e-4, len(ts)), 8)
    keep = np.ones(len(ts), dtype=bool)
    if outage:
        keep[len(ts) // 2] = False
    return pd.DataFrame({"timestamp": ts[keep], "rate": rates[keep]})


RATES = funding_series(int(SWAP["timestamp"].iloc[0]), int(SWAP["timestamp"].iloc[-1]))


@pytest.fixture
def server() -> Iterator[RunningServer]:
    state = FakeBinance(now_ms=int(SWAP["timestamp"].iloc[-1]) + 2 * HOUR)
    state.add_candles("BTCUSDT", "1h", SWAP, market="swap")
    state.add_funding("BTCUSDT", RATES)
    state.add_candles("BTCUSDT", "1h", SPOT.assign(close=SPOT["close"] * 0.999, low=SPOT["low"] * 0.999))
    yield from serving(state)


@pytest.fixture(autouse=True)
def pinned_clock(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import ccxt

    monkeypatch.setattr(ccxt.binance, "milliseconds", staticmethod(lambda: server.state.now()))


def swap_data(server: RunningServer, tmp_path: Path, **over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"exchange": "binance", "symbol": "BTC/USDT", "market": "swap", "timeframe": "1h",
                         "dir": str(tmp_path / "store"), "exchange_options": exchange_options(server.url,
                                                                                               market="swap")}
    return d | over


def test_swap_candles_and_funding_land_beside_spot_without_mixing(server: RunningServer, tmp_path: Path,
                                                                  retry: Retry) -> None:
    server.state.inject("429", "500")  # the first klines/funding requests fail and are retried
    (s,) = pipeline.fetch(build_config({"data": swap_data(server, tmp_path)}), retry=retry)
    assert s.symbol == "BTC/USDT:USDT"
    swap_file = store_path(tmp_path / "store", "binance", "BTC/USDT:USDT", "1h")
    assert s.path == swap_file and swap_file.name == "BTC_USDT_USDT-1h.parquet"
    pd.testing.assert_frame_equal(read_store(swap_file), server.state.expected("fapi:BTCUSDT", "1h"))
    assert s.funding is not None and s.funding.path == funding_path(tmp_path / "store", "binance", "BTC/USDT:USDT")
    want = server.state.served_funding("BTCUSDT")
    want = want[want["timestamp"] >= SWAP["timestamp"].iloc[0]].reset_index(drop=True)
    pd.testing.assert_frame_equal(read_store(s.funding.path, FUNDING), want)
    assert [g.missing for g in s.funding.gaps] == [1]  # the outage is reported, never filled
    assert server.state.unexpected == []
    # spot of the same pair: its own file, its own (different) candles
    spot = {**swap_data(server, tmp_path), "market": "spot", "exchange_options": exchange_options(server.url)}
    (p,) = pipeline.fetch(build_config({"data": spot}), retry=retry)
    assert p.path.name == "BTC_USDT-1h.parquet" and p.funding is None
    assert not read_store(p.path)["close"].equals(read_store(swap_file)["close"])


def test_funding_fetch_is_incremental(server: RunningServer, tmp_path: Path, retry: Retry) -> None:
    cfg = build_config({"data": swap_data(server, tmp_path)})
    pipeline.fetch(cfg, retry=retry)
    first = server.state.counts["fapi/fundingRate"]
    server.state.now_ms = int(SWAP["timestamp"].iloc[-1]) + 2 * HOUR  # nothing new
    (s,) = pipeline.fetch(cfg, retry=retry)
    assert s.funding is not None and s.funding.new_rows == 0
    assert server.state.counts["fapi/fundingRate"] - first <= 1  # one request that finds nothing newer


def test_swap_on_an_exchange_without_swaps_is_one_clear_line(server: RunningServer, tmp_path: Path) -> None:
    spot_only = exchange_options(server.url)  # the exchange as it lists only spot markets
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {}\n")
    import json

    r = CliRunner().invoke(app, ["fetch", "-c", str(cfg), "--set", "data.exchange=binance",
                                 "--set", "data.market=swap", "--set", f"data.dir={tmp_path / 'store'}",
                                 "--set", f"data.exchange_options={json.dumps(spot_only)}"])
    assert r.exit_code == 1
    assert "lists no perpetual swap markets" in r.output and "Traceback" not in r.output


def test_user_funding_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "funding.csv"
    RATES.rename(columns={"timestamp": "fundingTime", "rate": "fundingRate"}).to_csv(path, index=False)
    got = read_funding_file(path)
    pd.testing.assert_frame_equal(got, RATES.reset_index(drop=True))
    with pytest.raises(DataError, match="needs a time column"):
        bad = tmp_path / "bad.csv"
        bad.write_text("a,b\n1,2\n")
        read_funding_file(bad)
