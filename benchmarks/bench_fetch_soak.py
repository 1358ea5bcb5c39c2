"""Soak test of the download path: years of 1-minute candles from a local fake Binance, with faults.

Real ccxt talks to tests/fake_exchange.py on 127.0.0.1; a few % of the candle requests fail (429, 500,
503, time-outs, dropped connections, truncated or malformed bodies). At the end the store must equal the
served data exactly. Prints throughput (candles/s, requests/s), the faults seen, the time spent merging
the store, and peak memory (ru_maxrss of this process, which also hosts the server).

    .venv/bin/python benchmarks/bench_fetch_soak.py              # 5 years, ~2.6M candles
    .venv/bin/python benchmarks/bench_fetch_soak.py --years 0.5  # shorter
"""

from __future__ import annotations

import argparse
import importlib
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fake_exchange import FakeBinance, exchange_options, start, synthetic_candles  # noqa: E402

from cryptonorm import pipeline  # noqa: E402
from cryptonorm.config import build_config  # noqa: E402
from cryptonorm.data.exchange import Retry  # noqa: E402
from cryptonorm.data.store import read_store, store_path
from cryptonorm.timeframes import format_ms, parse_date

FAULT_KINDS = ("429", "500", "503", "slow", "reset", "truncated", "malformed")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--years", type=float, default=5.0, help="span of 1m candles to download (default 5)")
    ap.add_argument("--fault-rate", type=float, default=0.03, help="fraction of candle requests that fail")
    ap.add_argument("--timeout", type=float, default=1.0, help="client time-out in seconds (slow answers exceed it)")
    ap.add_argument("--real-sleep", action="store_true", help="really sleep the retry backoff (default: record it)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", type=Path, default=None, help="store folder (default: a temporary one)")
    args = ap.parse_args()

    start_date = "2020-01-01"
    n = int(args.years * 365 * 1440)
    t0 = time.perf_counter()
    candles = synthetic_candles(parse_date(start_date), n, "1m", seed=args.seed, gaps=12)
    state = FakeBinance()
    state.add_candles("BTCUSDT", "1m", candles)
    state.chaos(args.fault_rate, FAULT_KINDS, seed=args.seed, delay=args.timeout + 0.5)
    server = start(state)
    print(f"served: {len(candles):,} 1m candles {format_ms(candles['timestamp'].iloc[0])} .. "
          f"{format_ms(candles['timestamp'].iloc[-1])} (made in {time.perf_counter() - t0:.1f} s); "
          f"faults on {args.fault_rate:.1%} of candle requests: {', '.join(FAULT_KINDS)}")
    rss_before = peak_mb()

    waits: list[float] = []
    retry = Retry(sleep=time.sleep if args.real_sleep else waits.append)
    merge_s = [0.0, 0]
    fetch_step = importlib.import_module("cryptonorm.pipeline.fetch")  # the module (pipeline.fetch is the step)
    consolidate = fetch_step.consolidate

    def timed_consolidate(path: Path) -> pd.DataFrame:
        t = time.perf_counter()
        try:
            return consolidate(path)
        finally:
            merge_s[0] += time.perf_counter() - t
            merge_s[1] += 1

    fetch_step.consolidate = timed_consolidate  # to report the store-merge time, where fetch calls it
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dir or Path(tmp)
        cfg = build_config({"data": {
            "exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m", "since": start_date,
            "dir": str(folder), "exchange_options": exchange_options(server.url, timeout_ms=int(args.timeout * 1000)),
        }})
        last_report = [time.perf_counter()]

        def progress(info: dict[str, Any]) -> None:
            if time.perf_counter() - last_report[0] > 15:
                last_report[0] = time.perf_counter()
                print(f"  ... {info['candles']:,} candles, {info['pages']} pages, {peak_mb():.0f} MB peak",
                      flush=True)

        t1 = time.perf_counter()
        (summary,) = pipeline.fetch(cfg, progress=progress, retry=retry)
        wall = time.perf_counter() - t1
        got = read_store(store_path(folder, "binance", "BTC/USDT", "1m"))
    server.stop()

    expected = state.expected("BTCUSDT", "1m")
    try:
        pd.testing.assert_frame_equal(got, expected)
        verdict = "OK: the store equals the served data exactly"
    except AssertionError as e:
        verdict = f"MISMATCH: {str(e).splitlines()[0]}"
    faults = Counter(r.fault for r in state.log if r.fault)
    requests = state.counts["klines"]
    print(f"stored: {summary.rows:,} candles, {summary.missing_bars:,} missing bars in {len(summary.gaps)} gaps")
    print(f"time: {wall:.1f} s  ->  {summary.rows / wall:,.0f} candles/s, {requests / wall:.1f} requests/s")
    print(f"requests: {requests:,} klines ({requests - sum(faults.values()):,} answered well) + "
          f"{state.counts['exchangeInfo']} exchangeInfo; unexpected: {len(state.unexpected)}")
    print(f"faults: {sum(faults.values())} ({', '.join(f'{k} {v}' for k, v in sorted(faults.items()))}); "
          f"retries {len(waits) if not args.real_sleep else 'slept'}, backoff "
          f"{'slept' if args.real_sleep else 'recorded, not slept'}: {sum(waits):.1f} s")
    print(f"store merges: {merge_s[1]} taking {merge_s[0]:.1f} s ({merge_s[0] / wall:.0%} of the time)")
    print(f"peak memory: {peak_mb():.0f} MB (ru_maxrss; {rss_before:.0f} MB before the download, with the "
          f"served data set and the server in this process)")
    print(verdict)
    return 0 if verdict.startswith("OK") else 1


if __name__ == "__main__":
    sys.exit(main())
