"""Time `cryptonorm monitor` over 100,000 bars of a trained BatchNorm MLP (target: under 30 s on 2 cores).

The market is the offline synthetic one (1h bars, fetched page by page through its ccxt surface, written as
a CSV); the run trains 1 epoch on its first 6 months, then `monitor` reads the whole file. Prints the wall
time of the whole command (best of --repeat) and of its parts; never asserts.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_monitor.py [--bars 100000] [--repeat 2] [--window 168]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from cryptonorm import pipeline
from cryptonorm.atomic import write_csv
from cryptonorm.config import build_config
from cryptonorm.data.synthetic import SyntheticExchange
from cryptonorm.pipeline.monitoring import drift_frame, load_inputs, monitor
from cryptonorm.timeframes import format_ms


def candles(n: int) -> pd.DataFrame:
    ex = SyntheticExchange()
    ex = SyntheticExchange(now_ms=ex.start_ms("1h") + (n + 1) * 3_600_000)  # a clock far enough ahead for n bars
    rows: list[list[float]] = []
    since = ex.start_ms("1h")
    while len(rows) < n:
        page = ex.fetch_ohlcv("BTC/USDT", "1h", since=since, limit=ex.page_limit)
        if not page:
            break
        rows += page
        since = int(page[-1][0]) + 3_600_000
    return pd.DataFrame(rows[:n], columns=["timestamp", "open", "high", "low", "close", "volume"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bars", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--window", type=int, default=168)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        df = candles(args.bars)
        if len(df) < args.bars:
            raise SystemExit(f"the synthetic market has only {len(df)} bars before now; lower --bars")
        data = Path(tmp) / "market.csv"
        df.to_csv(data, index=False)
        t0 = int(df["timestamp"].iloc[0])
        raw = {"name": "bench-monitor", "seed": 0,
               "data": {"exchange": "synthetic", "symbol": "BTC/USDT", "timeframe": "1h", "file": str(data),
                        "since": format_ms(t0)[:10], "until": format_ms(t0 + 183 * 86_400_000)[:10]},
               "features": {"window": 24, "returns": [1, 2, 4, 8, 24]},
               "model": {"kind": "mlp", "norm": "batch", "hidden": [64, 32], "dropout": 0.0},
               "train": {"epochs": 1, "device": "cpu"}}
        run = Path(tmp) / "run"
        pipeline.train(build_config(raw), run)
        times = []
        for _ in range(args.repeat):
            a = time.perf_counter()
            res = monitor(run, data, args.window, Path(tmp) / "out")
            times.append(time.perf_counter() - a)
        a = time.perf_counter()
        inp = load_inputs(run, data)
        b = time.perf_counter()
        frame, _, _ = drift_frame(inp, args.window)
        c = time.perf_counter()
        write_csv(Path(tmp) / "again.csv", frame)
        d = time.perf_counter()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus visible, torch threads "
          f"{torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}")
    print(f"bars monitored: {len(res.frame)} ({len(res.features)} features, layers {res.layers}), "
          f"--window {args.window}")
    print(f"monitor (load + statistics + monitor.csv + monitor.html): best {min(times):.2f} s of {args.repeat}")
    print(f"  load_inputs (run, training rows, --data features): {b - a:.2f} s")
    print(f"  drift_frame (forward pass with hooks, BN drift, PSI/KS): {c - b:.2f} s")
    print(f"  monitor.csv ({frame.shape[1]} columns): {d - c:.2f} s")


if __name__ == "__main__":
    main()
