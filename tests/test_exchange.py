"""exchange.py against real ccxt talking to a local fake Binance: paging, retry, error translation.

The candles served are real Binance BTC/USDT 1h candles (3,500 of them, with two real outages inside).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fake_exchange import FakeBinance, RunningServer, exchange_options, real_candles, serving

from cryptonorm.config import DataConfig
from cryptonorm.data.candles import clean, find_gaps, from_rows
from cryptonorm.data.exchange import Retry, Source, check_symbol, open_source, pages
from cryptonorm.errors import ConfigError, ExchangeError, TransientExchangeError
from cryptonorm.timeframes import parse_date

HOUR = 3_600_000
BTC = real_candles("BTC_USDT-1h", rows=3_500, end="2021-10-15")  # 2021-05 .. 2021-10, two outages inside


@pytest.fixture
def server() -> Iterator[RunningServer]:
    state = FakeBinance()
    state.add_candles("BTCUSDT", "1h", BTC)
    yield from serving(state)


def binance(server: RunningServer, timeout_ms: int = 1_000) -> Source:
    return open_source(DataConfig(exchange="binance", exchange_options=exchange_options(server.url,
                                                                                      timeout_ms=timeout_ms)))


def download(source: Source, retry: Retry, since: int = 0, until: int | None = None) -> pd.DataFrame:
    frames = [from_rows(rows) for rows in pages(source, "BTC/USDT", "1h", since, until, retry)]
    return clean(pd.concat(frames, ignore_index=True)) if frames else from_rows([])


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# ---------------------------------------------------------------- the fake itself


def test_fake_answers_like_binance(server: RunningServer) -> None:
    status, info = get(server.url + "/api/v3/exchangeInfo")
    assert status == 200 and [s["symbol"] for s in info["symbols"]] == ["BTCUSDT", "ETHUSDT", "BNBUSDT", "ETHBTC"]
    t0 = int(BTC["timestamp"].iloc[0])
    status, rows = get(f"{server.url}/api/v3/klines?symbol=BTCUSDT&interval=1h&startTime={t0 - HOUR}&limit=3")
    assert status == 200 and len(rows) == 3
    first = BTC.iloc[0]
    assert rows[0][0] == t0 and rows[0][6] == t0 + HOUR - 1  # open time, close time
    assert [float(x) for x in rows[0][1:6]] == first[["open", "high", "low", "close", "volume"]].tolist()
    assert all(isinstance(x, str) for x in rows[0][1:6])  # Binance sends decimals as strings
    end = t0 + 5 * HOUR
    _, rows = get(f"{server.url}/api/v3/klines?symbol=BTCUSDT&interval=1h&startTime={t0}&endTime={end}")
    assert [r[0] for r in rows] == [t0 + i * HOUR for i in range(6)]  # endTime is inclusive
    assert get(f"{server.url}/api/v3/klines?symbol=BTCUSDX&interval=1h") == (400, {"code": -1121,
                                                                                 "msg": "Invalid symbol."})
    assert get(f"{server.url}/api/v3/klines?symbol=BTCUSDT&interval=7m")[1]["code"] == -1120
    assert get(f"{server.url}/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=1001")[1]["code"] == -1130


def test_fake_serves_the_forming_candle_with_partial_values(server: RunningServer) -> None:
    forming = int(BTC["timestamp"].iloc[-1])
    server.state.now_ms = forming + HOUR // 2
    _, rows = get(f"{server.url}/api/v3/klines?symbol=BTCUSDT&interval=1h&startTime={forming - HOUR}")
    assert [r[0] for r in rows] == [forming - HOUR, forming]
    assert rows[1][1] == rows[1][2] == rows[1][3] == rows[1][4]  # o = h = l = c: it has only just opened
    server.state.now_ms = forming - HOUR // 2  # nothing after "now" exists yet
    _, rows = get(f"{server.url}/api/v3/klines?symbol=BTCUSDT&interval=1h&startTime={forming - HOUR}")
    assert [r[0] for r in rows] == [forming - HOUR]


# ---------------------------------------------------------------- ccxt against the fake


def test_ccxt_makes_no_other_calls(server: RunningServer) -> None:
    source = binance(server)
    assert source.id == "binance"
    markets = source.load_markets()
    assert {"BTC/USDT", "ETH/USDT", "ETH/BTC"} <= set(markets)
    assert markets["BTC/USDT"]["precision"]["price"] == 0.01 and markets["BTC/USDT"]["limits"]["cost"]["min"] == 5
    source.fetch_ohlcv("BTC/USDT", "1h", int(BTC["timestamp"].iloc[0]), 10)
    assert dict(server.state.counts) == {"exchangeInfo": 1, "klines": 1} and server.state.unexpected == []


def test_multi_page_download_equals_the_served_data(server: RunningServer, retry: Retry,
                                                    sleeps: list[float]) -> None:
    got = download(binance(server), retry)
    pd.testing.assert_frame_equal(got, server.state.expected("BTCUSDT", "1h"))
    assert len(got) == 3_500 and [g.missing for g in find_gaps(got["timestamp"].to_numpy(), "1h")] == [4, 2]
    # 4 full pages of 1000 (the most binance allows) + 1 that finds nothing newer; no retry needed
    assert server.state.counts["klines"] == 5 and sleeps == []
    starts = [int(r.params["startTime"]) for r in server.state.log if r.endpoint == "klines"]
    assert starts[0] == 0 and starts == sorted(starts) and len(set(starts)) == len(starts)


def test_until_is_respected(server: RunningServer, retry: Retry) -> None:
    since, until = parse_date("2021-08-01"), parse_date("2021-08-20T05:00")
    got = download(binance(server), retry, since, until)
    pd.testing.assert_frame_equal(got, server.state.expected("BTCUSDT", "1h", since, until))
    assert int(got["timestamp"].iloc[-1]) == until - HOUR


def test_the_forming_candle_is_never_yielded(server: RunningServer, retry: Retry,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import ccxt

    forming = int(BTC["timestamp"].iloc[-1])
    server.state.now_ms = forming + 20 * 60_000  # 20 minutes into the last served candle
    monkeypatch.setattr(ccxt.binance, "milliseconds", staticmethod(lambda: server.state.now()))
    got = download(binance(server), retry, since=forming - 10 * HOUR)
    assert int(got["timestamp"].iloc[-1]) == forming - HOUR
    pd.testing.assert_frame_equal(got, server.state.expected("BTCUSDT", "1h", forming - 10 * HOUR))
    assert server.state.counts["klines"] == 1  # the cursor reached the forming candle: no second request


TRANSIENT = ["429", "418", "500", "502", "503", "reset", "truncated", "malformed", "html", "slow"]


@pytest.mark.parametrize("fault", TRANSIENT)
def test_transient_faults_are_retried_with_identical_results(server: RunningServer, retry: Retry,
                                                             sleeps: list[float], fault: str) -> None:
    server.state.inject(fault, after=1, delay=1.5)  # the 2nd page fails once; the client times out at 1 s
    got = download(binance(server), retry)
    pd.testing.assert_frame_equal(got, server.state.expected("BTCUSDT", "1h"))
    # one wait: the first step of the schedule, or the 1 s a rate-limit answer's Retry-After asks for
    assert sleeps == ([1.0] if fault in ("429", "418") else [0.5])
    assert server.state.counts["klines"] == 6 and server.state.pending_faults() == 0


def test_rate_limit_waits_as_long_as_the_exchange_asks(server: RunningServer, retry: Retry,
                                                       sleeps: list[float]) -> None:
    server.state.inject("429", after=1, retry_after=7)  # longer than the 0.5 s of the schedule
    server.state.inject("429", retry_after=0)  # shorter: the schedule's 1 s stands
    got = download(binance(server), retry)
    pd.testing.assert_frame_equal(got, server.state.expected("BTCUSDT", "1h"))
    assert sleeps == [7.0, 1.0]


def test_an_ip_ban_longer_than_a_fetch_should_wait_ends_it_with_when_to_return(
        server: RunningServer, retry: Retry, sleeps: list[float]) -> None:
    server.state.inject("418", after=1, retry_after=7200)  # Binance bans for hours
    with pytest.raises(TransientExchangeError, match=r"DDoSProtection.*no request in the next 7200 s "
                                                     r"\(Retry-After\): run the fetch again after that"):
        download(binance(server), retry)
    assert sleeps == [] and server.state.counts["klines"] == 2  # no request after the ban


def test_a_persistent_fault_gives_up_with_a_clear_error(server: RunningServer, retry: Retry,
                                                        sleeps: list[float]) -> None:
    server.state.inject("503", times=6)
    with pytest.raises(TransientExchangeError, match=r"ExchangeNotAvailable.*gave up after 6 tries"):
        download(binance(server), retry)
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_a_symbol_the_exchange_rejects_is_not_retried(server: RunningServer, retry: Retry,
                                                      sleeps: list[float]) -> None:
    source = binance(server)
    source.load_markets()
    server.state.symbols.pop()  # ETH/BTC delisted after ccxt loaded the markets: the server says -1121
    with pytest.raises(ExchangeError, match="bad symbol.*Invalid symbol") as e:
        list(pages(source, "ETH/BTC", "1h", 0, None, retry))
    assert not isinstance(e.value, TransientExchangeError) and sleeps == []


def test_check_symbol_names_close_matches(server: RunningServer, retry: Retry) -> None:
    source = binance(server)
    with pytest.raises(ExchangeError, match=r"binance has no market 'BTC/USDX'; close matches: BTC/USDT"):
        check_symbol(source, "BTC/USDX", "1h", retry)
    with pytest.raises(ExchangeError, match="no timeframe '7m'"):
        check_symbol(source, "BTC/USDT", "7m", retry)
    check_symbol(source, "ETH/USDT", "1h", retry)


def test_an_unknown_exchange_id_suggests_close_ids() -> None:
    with pytest.raises(ConfigError, match="data.exchange: unknown exchange 'binanse'; did you mean binance"):
        open_source(DataConfig(exchange="binanse"))


@pytest.mark.parametrize("fault", ["duplicate", "shuffle"])
def test_duplicated_or_shuffled_candles_still_give_the_exact_series(server: RunningServer, retry: Retry,
                                                                    fault: str) -> None:
    server.state.inject(fault, times=5)
    got = download(binance(server), retry)
    pd.testing.assert_frame_equal(got, server.state.expected("BTCUSDT", "1h"))


@pytest.mark.parametrize("fault", ["empty", "repeat"])
def test_an_empty_or_repeated_page_ends_the_loop_and_a_rerun_resumes(server: RunningServer, retry: Retry,
                                                                     fault: str) -> None:
    """pages() cannot tell a glitch from "nothing newer"; it must stop (never loop) and be resumable."""
    server.state.inject(fault, after=2)
    source = binance(server)
    first = download(source, retry)
    expected = server.state.expected("BTCUSDT", "1h")
    assert len(first) == 2_000 and server.state.counts["klines"] == 3
    pd.testing.assert_frame_equal(first, expected.iloc[:2_000])
    rest = download(source, retry, since=int(first["timestamp"].iloc[-1]) + HOUR)
    pd.testing.assert_frame_equal(clean(pd.concat([first, rest])), expected)


def test_short_pages_from_the_exchange_are_followed(server: RunningServer, retry: Retry) -> None:
    server.state.max_limit = 333  # an exchange that answers fewer candles than asked for
    got = download(binance(server), retry)
    pd.testing.assert_frame_equal(got, server.state.expected("BTCUSDT", "1h"))
    assert server.state.counts["klines"] == int(np.ceil(3_500 / 333)) + 1
