"""`pipeline.fetch` and `cryptonorm fetch` with real ccxt against a local fake Binance.

The store must always hold exactly the closed candles the exchange served: after several pages, after
re-runs (only the tail is asked for), an earlier `since` (prepended), faults, and a SIGKILL mid-download.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from fake_exchange import FakeBinance, RunningServer, exchange_options, real_candles, serving
from typer.testing import CliRunner

from cryptonorm import pipeline
from cryptonorm.cli import app
from cryptonorm.config import Config, build_config
from cryptonorm.data.exchange import Retry
from cryptonorm.data.store import journal_parts, read_store, store_path
from cryptonorm.timeframes import parse_date

HOUR = 3_600_000
BTC = real_candles("BTC_USDT-1h", rows=3_500, end="2021-10-15")  # 2021-05 .. 2021-10, two outages inside
ETH = real_candles("ETH_USDT-1h", rows=3_500, end="2021-10-15")
TS = BTC["timestamp"].to_numpy()
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def server() -> Iterator[RunningServer]:
    state = FakeBinance()
    state.add_candles("BTCUSDT", "1h", BTC)
    state.add_candles("ETHUSDT", "1h", ETH)
    yield from serving(state)


@pytest.fixture
def pinned(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> FakeBinance:
    """ccxt's clock (what fetch calls "now") reads the server's clock; set `server.state.now_ms`."""
    import ccxt

    monkeypatch.setattr(ccxt.binance, "milliseconds", staticmethod(lambda: server.state.now()))
    return server.state


def data(server: RunningServer, tmp_path: Path, **over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h",
                         "dir": str(tmp_path / "store"), "exchange_options": exchange_options(server.url)}
    return d | over


def config(server: RunningServer, tmp_path: Path, **over: Any) -> Config:
    return build_config({"data": data(server, tmp_path, **over)})


def stored(tmp_path: Path, symbol: str = "BTC/USDT") -> pd.DataFrame:
    return read_store(store_path(tmp_path / "store", "binance", symbol, "1h"))


def klines_starts(state: FakeBinance) -> list[int]:
    return [int(r.params["startTime"]) for r in state.log if r.endpoint == "klines"]


# ---------------------------------------------------------------- pipeline.fetch


def test_whole_history_in_several_pages_equals_the_served_data(server: RunningServer, tmp_path: Path,
                                                               retry: Retry) -> None:
    (summary,) = pipeline.fetch(config(server, tmp_path), retry=retry)  # no since: from the first candle
    got = stored(tmp_path)
    pd.testing.assert_frame_equal(got, server.state.expected("BTCUSDT", "1h"))
    assert summary.rows == summary.new_rows == 3_500 and summary.missing_bars == 6  # real outages kept
    assert dict(server.state.counts) == {"exchangeInfo": 1, "klines": 5} and server.state.unexpected == []


def test_rerun_asks_only_for_the_tail_and_adds_no_duplicate(server: RunningServer, pinned: FakeBinance,
                                                            tmp_path: Path, retry: Retry) -> None:
    cfg = config(server, tmp_path)  # no since: from the exchange's first candle, then from the store's last
    pinned.now_ms = int(TS[3_000]) + HOUR // 2  # a live market: candle 3000 is forming
    (first,) = pipeline.fetch(cfg, retry=retry)
    assert first.rows == 3_000 and int(stored(tmp_path)["timestamp"].iloc[-1]) == TS[2_999]
    assert pinned.counts["klines"] == 3  # 1000 + 1000 + 1000 (the forming one dropped), then "now" is reached
    pinned.now_ms = int(TS[3_499]) + HOUR // 2  # 499 more hours have closed
    pinned.log.clear()
    (again,) = pipeline.fetch(cfg, retry=retry)
    assert again.new_rows == 499 and klines_starts(pinned) == [int(TS[2_999]) + HOUR]  # one request, the tail
    got = stored(tmp_path)
    pd.testing.assert_frame_equal(got, pinned.expected("BTCUSDT", "1h"))
    assert got["timestamp"].is_unique and len(got) == 3_499
    pinned.log.clear()
    (idle,) = pipeline.fetch(cfg, retry=retry)  # nothing new has closed: not a single candle request
    assert idle.new_rows == 0 and klines_starts(pinned) == []


def test_an_earlier_since_prepends(server: RunningServer, tmp_path: Path, retry: Retry) -> None:
    pipeline.fetch(config(server, tmp_path, since="2021-09-01"), retry=retry)
    late = stored(tmp_path)
    server.state.log.clear()
    (summary,) = pipeline.fetch(config(server, tmp_path, since="2021-06-01"), retry=retry)
    starts = klines_starts(server.state)
    assert starts[0] == parse_date("2021-06-01") and starts[-1] == int(late["timestamp"].iloc[-1]) + HOUR
    got = stored(tmp_path)
    pd.testing.assert_frame_equal(got, server.state.expected("BTCUSDT", "1h", since=parse_date("2021-06-01")))
    assert summary.new_rows == len(got) - len(late)
    pd.testing.assert_frame_equal(got.iloc[-len(late):].reset_index(drop=True), late)


def test_until_is_respected(server: RunningServer, tmp_path: Path, retry: Retry) -> None:
    pipeline.fetch(config(server, tmp_path, since="2021-08-01", until="2021-08-20T05:00"), retry=retry)
    got = stored(tmp_path)
    expected = server.state.expected("BTCUSDT", "1h", parse_date("2021-08-01"), parse_date("2021-08-20T05:00"))
    pd.testing.assert_frame_equal(got, expected)
    assert int(got["timestamp"].iloc[-1]) == parse_date("2021-08-20T04:00")


def test_the_forming_candle_is_never_stored(server: RunningServer, pinned: FakeBinance, tmp_path: Path,
                                            retry: Retry) -> None:
    cfg = config(server, tmp_path, since="2021-10-01")
    forming = int(TS[-1])
    pinned.now_ms = forming + 59 * 60_000  # one minute before it closes; the server serves it (partial)
    pipeline.fetch(cfg, retry=retry)
    assert int(stored(tmp_path)["timestamp"].iloc[-1]) == forming - HOUR
    pinned.now_ms = forming + HOUR  # now it has closed: stored with its final values, never the partial ones
    pipeline.fetch(cfg, retry=retry)
    pd.testing.assert_frame_equal(stored(tmp_path), pinned.expected("BTCUSDT", "1h", since=parse_date("2021-10-01")))


def test_several_symbols(server: RunningServer, tmp_path: Path, retry: Retry) -> None:
    out = pipeline.fetch(config(server, tmp_path, symbol=["BTC/USDT", "ETH/USDT"], since="2021-09-15"),
                         retry=retry)
    assert [s.symbol for s in out] == ["BTC/USDT", "ETH/USDT"]
    for sym, sid in (("BTC/USDT", "BTCUSDT"), ("ETH/USDT", "ETHUSDT")):
        pd.testing.assert_frame_equal(stored(tmp_path, sym),
                                      server.state.expected(sid, "1h", since=parse_date("2021-09-15")))


def test_faults_are_survived_with_identical_results(server: RunningServer, tmp_path: Path, retry: Retry,
                                                    sleeps: list[float]) -> None:
    server.state.max_limit = 250  # 14 pages plus the last, empty one
    kinds = ("429", "500", "slow", "truncated", "malformed", "502", "reset", "418", "html", "503")
    for kind in kinds:
        server.state.inject(kind, after=1, delay=1.5)  # every other request fails once; timeout is 1 s
    cfg = config(server, tmp_path, exchange_options=exchange_options(server.url, timeout_ms=1_000))
    pipeline.fetch(cfg, retry=retry)
    pd.testing.assert_frame_equal(stored(tmp_path), server.state.expected("BTCUSDT", "1h"))
    # the first backoff step each time, or the 1 s a rate-limit answer's Retry-After asks for
    assert server.state.pending_faults() == 0 and sleeps == [1.0 if k in ("429", "418") else 0.5 for k in kinds]
    assert server.state.counts["klines"] == 15 + 10


@pytest.mark.parametrize("fault", ["duplicate", "shuffle"])
def test_duplicated_or_out_of_order_candles(server: RunningServer, tmp_path: Path, retry: Retry,
                                            fault: str) -> None:
    server.state.inject(fault, times=4)
    pipeline.fetch(config(server, tmp_path), retry=retry)
    pd.testing.assert_frame_equal(stored(tmp_path), server.state.expected("BTCUSDT", "1h"))


@pytest.mark.parametrize("fault", ["empty", "repeat"])
def test_an_empty_or_repeated_page_stops_and_the_rerun_completes(server: RunningServer, tmp_path: Path,
                                                                 retry: Retry, fault: str) -> None:
    # A glitch that looks exactly like "no newer candles": the first run stops there (it cannot know), the
    # store is an exact prefix, and the next run resumes from it.
    server.state.inject(fault, after=2)
    (first,) = pipeline.fetch(config(server, tmp_path), retry=retry)
    expected = server.state.expected("BTCUSDT", "1h")
    assert first.rows == 2_000
    pd.testing.assert_frame_equal(stored(tmp_path), expected.iloc[:2_000])
    pipeline.fetch(config(server, tmp_path), retry=retry)
    pd.testing.assert_frame_equal(stored(tmp_path), expected)


class _Killed(BaseException):
    pass


def test_an_interrupted_prepend_is_completed_by_the_rerun(server: RunningServer, tmp_path: Path,
                                                          retry: Retry) -> None:
    pipeline.fetch(config(server, tmp_path, since="2021-09-01"), retry=retry)
    server.state.max_limit = 200

    def die_after_one_page(info: dict[str, Any]) -> None:
        raise _Killed  # as a SIGKILL would, after the first page of the prepend reached the journal

    with pytest.raises(_Killed):
        pipeline.fetch(config(server, tmp_path, since="2021-06-01"), progress=die_after_one_page, retry=retry)
    pipeline.fetch(config(server, tmp_path, since="2021-06-01"), retry=retry)
    pd.testing.assert_frame_equal(stored(tmp_path), server.state.expected("BTCUSDT", "1h",
                                                                          since=parse_date("2021-06-01")))


# ---------------------------------------------------------------- the CLI

runner = CliRunner()


def write_config(server: RunningServer, tmp_path: Path, **over: Any) -> Path:
    path = tmp_path / "fetch.yaml"
    path.write_text(yaml.safe_dump({"data": data(server, tmp_path, **over)}))
    return path


@pytest.fixture
def cli_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The CLI's fetch builds `Retry()` itself: make its backoff recorded, not slept."""
    import cryptonorm.data.exchange

    waits: list[float] = []
    monkeypatch.setattr(cryptonorm.data.exchange, "Retry", partial(Retry, sleep=waits.append))
    return waits


def test_cli_fetch_survives_a_rate_limit(server: RunningServer, tmp_path: Path, cli_sleeps: list[float]) -> None:
    server.state.inject("429", after=1)
    r = runner.invoke(app, ["fetch", "--config", str(write_config(server, tmp_path)), "--since", "2021-07-01",
                            "--until", "2021-09-01"])
    assert r.exit_code == 0, r.stderr
    pd.testing.assert_frame_equal(stored(tmp_path), server.state.expected(
        "BTCUSDT", "1h", parse_date("2021-07-01"), parse_date("2021-09-01")))
    assert cli_sleeps == [1.0]  # the Retry-After of the fake's 429 (the schedule's first step is 0.5 s)


def test_cli_fetch_stops_at_an_ip_ban_and_keeps_what_it_fetched(server: RunningServer, tmp_path: Path,
                                                                 cli_sleeps: list[float]) -> None:
    server.state.inject("418", after=1, retry_after=7200)
    r = runner.invoke(app, ["fetch", "--config", str(write_config(server, tmp_path)), "--since", "2021-07-01",
                            "--until", "2021-09-01"])
    assert r.exit_code == 1 and cli_sleeps == []
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]  # beside the progress line
    assert len(errors) == 1 and "no request in the next 7200 s (Retry-After)" in errors[0], r.stderr
    assert "Traceback" not in r.stderr
    path = store_path(tmp_path / "store", "binance", "BTC/USDT", "1h")
    assert len(journal_parts(path)) == 1  # the page before the ban is kept, in the fetch's journal
    before = server.state.counts["klines"]
    again = runner.invoke(app, ["fetch", "--config", str(write_config(server, tmp_path)), "--since", "2021-07-01",
                                "--until", "2021-09-01"])  # after the ban: resumes after the kept page
    assert again.exit_code == 0, again.stderr
    pd.testing.assert_frame_equal(stored(tmp_path), server.state.expected(
        "BTCUSDT", "1h", parse_date("2021-07-01"), parse_date("2021-09-01")))
    resumed = klines_starts(server.state)[before:]  # no request asks for the kept page's candles again
    assert resumed and min(resumed) >= parse_date("2021-07-01") + 1000 * 3_600_000, resumed


def test_cli_bad_symbol_is_one_line_naming_close_matches(server: RunningServer, tmp_path: Path) -> None:
    r = runner.invoke(app, ["fetch", "--config", str(write_config(server, tmp_path)), "--symbol", "BTC/USDX"])
    assert r.exit_code == 1
    assert r.stderr.startswith("error: binance has no market 'BTC/USDX'; close matches: BTC/USDT")
    assert len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stdout + r.stderr and server.state.counts["klines"] == 0


def test_cli_unknown_exchange_is_a_config_error(server: RunningServer, tmp_path: Path) -> None:
    r = runner.invoke(app, ["fetch", "--config", str(write_config(server, tmp_path)), "--exchange", "binanse"])
    assert r.exit_code == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "did you mean binance" in r.stderr
    assert dict(server.state.counts) == {}


def test_cli_gives_up_on_a_dead_exchange_with_one_line(server: RunningServer, tmp_path: Path,
                                                       cli_sleeps: list[float]) -> None:
    server.state.inject("502", times=6)
    r = runner.invoke(app, ["fetch", "--config", str(write_config(server, tmp_path)), "--since", "2021-10-01"])
    assert r.exit_code == 1 and "Traceback" not in r.stderr
    *retries, error = r.stderr.strip().splitlines()  # a line per retry as it happens, then the one error line
    assert error.startswith("error: ") and "gave up after 6 tries" in error
    assert [line.split("; ")[-1] for line in retries] == [
        f"attempt {n} of 6 failed, retrying in {s:g} s" for n, s in enumerate([0.5, 1, 2, 4, 8], 1)]
    assert cli_sleeps == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_sigkill_mid_download_loses_nothing_and_resumes(server: RunningServer, tmp_path: Path) -> None:
    server.state.max_limit = 100  # 35 pages
    server.state.delay = 0.05  # a slow exchange, so the kill lands mid-download
    cfg = write_config(server, tmp_path, since="2021-06-01")
    cmd = [sys.executable, "-m", "cryptonorm", "-q", "fetch", "--config", str(cfg)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while server.state.counts["klines"] < 24 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # 20 pages are consolidated into the store, a few more sit in the journal
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    expected = server.state.expected("BTCUSDT", "1h", since=parse_date("2021-06-01"))
    path = store_path(tmp_path / "store", "binance", "BTC/USDT", "1h")
    journal = sorted((path.parent / f".{path.name}.journal").glob("*.parquet"))
    kept = pd.concat([read_store(path), *map(pd.read_parquet, journal)], ignore_index=True)
    assert 2_000 <= len(kept) < len(expected)  # the kill came mid-way; what was written is readable
    pd.testing.assert_frame_equal(kept.sort_values("timestamp", ignore_index=True), expected.iloc[:len(kept)])

    server.state.delay = 0.0
    server.state.log.clear()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    pd.testing.assert_frame_equal(read_store(path), expected)
    assert klines_starts(server.state)[0] == int(kept["timestamp"].max()) + HOUR  # resumed, not restarted
