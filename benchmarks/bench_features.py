"""Feature speed beside TA-Lib, and peak memory of building a large dataset (prepare + split).

    .venv/bin/python benchmarks/bench_features.py [--rows 1000000] [--mem-rows 3500000] [--window 64]

Part 1 times `compute_features` (every default column) and the TA-Lib-covered subset (SMA x3, EMA x2,
RSI, MACD, BBANDS, ATR) beside TA-Lib itself on the same synthetic 1-minute candles (a seeded random
walk with fat-tailed, clustered volatility): cryptonorm's numpy path (what runs without TA-Lib) and with
TA-Lib installed (SMA, EMA, RSI, MACD and ATR handed to it), round-robin, best wall and CPU time.
Part 2 builds the dataset for `--mem-rows` candles with `features.inputs: all` (32 columns) and a 64-bar
window in a fresh child process, and reports the peak memory traced by tracemalloc and the growth of the
process's peak RSS. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptonorm.config import Config, FeaturesConfig, build_config  # noqa: E402
from cryptonorm.features import indicators as ind  # noqa: E402


def synthetic_candles(n: int, seed: int = 0) -> pd.DataFrame:
    """n gap-free 1-minute candles: random walk with GARCH-like volatility, OHLC consistent."""
    rng = np.random.default_rng(seed)
    vol = 0.0008 * np.exp(np.convolve(rng.normal(0, 0.3, n), np.ones(200) / 14, mode="same"))
    r = vol * rng.standard_t(4, n) / np.sqrt(2)
    close = 30_000 * np.exp(np.cumsum(r))
    open_ = np.r_[close[0], close[:-1]]
    wick = np.abs(rng.normal(0, 0.5, (2, n))) * vol
    high = np.maximum(open_, close) * (1 + wick[0])
    low = np.minimum(open_, close) * (1 - wick[1])
    volume = rng.lognormal(2.0, 1.0, n) * (1 + 50 * np.abs(r))
    ts = 1_600_000_000_000 + np.arange(n, dtype=np.int64) * 60_000
    return pd.DataFrame({"timestamp": ts, "open": open_, "high": high, "low": low, "close": close,
                         "volume": volume})


def round_robin(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, tuple[float, float]]:
    """name -> (best wall s, best CPU s of this process), the functions taking turns `repeat` times."""
    best = {k: (float("inf"), float("inf")) for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            w, c = time.perf_counter() - w0, time.process_time() - c0
            best[k] = (min(best[k][0], w), min(best[k][1], c))
    return best


def bench_speed(rows: int, repeat: int) -> None:
    import talib

    df = synthetic_candles(rows)
    h, lo, c = (df[k].to_numpy() for k in ("high", "low", "close"))
    f = FeaturesConfig()

    def ours_subset() -> None:
        for n in f.sma:
            ind.sma(c, n)
        for n in f.ema:
            ind.ema(c, n)
        ind.rsi(c, 14)
        ind.macd(c, 12, 26, 9)
        ind.bbands(c, 20, 2.0)
        ind.atr(h, lo, c, 14)

    def talib_subset() -> None:
        for n in f.sma:
            talib.SMA(c, n)
        for n in f.ema:
            talib.EMA(c, n)
        talib.RSI(c, 14)
        talib.MACD(c, 12, 26, 9)
        talib.BBANDS(c, 20, 2.0, 2.0, talib.MA_Type.SMA)
        talib.ATR(h, lo, c, 14)

    def numpy_path(fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            ind._TALIB = False  # the pure numpy path, as where TA-Lib is not installed
            try:
                return fn()
            finally:
                ind._TALIB = talib
        return run

    ind._TALIB = talib
    ind.compute_features(df.iloc[:1000], f)  # warm imports
    best = round_robin({"all_np": numpy_path(lambda: ind.compute_features(df, f)),
                        "all_ta": lambda: ind.compute_features(df, f),
                        "sub_np": numpy_path(ours_subset), "sub_ta": ours_subset, "talib": talib_subset}, repeat)
    ncol = len(ind.feature_columns(f))
    print(f"== indicators on {rows:,} candles (best of {repeat}, round-robin, one process, "
          f"{os.cpu_count()} cores visible, load average {os.getloadavg()[0]:.1f})")
    print("                                                      wall s    CPU s   CPU / TA-Lib")
    ta_cpu = best["talib"][1]
    for key, label in (("all_np", f"compute_features, all {ncol} columns, numpy path"),
                       ("all_ta", f"compute_features, all {ncol} columns, TA-Lib engine"),
                       ("sub_np", "TA-Lib subset, cryptonorm numpy path"),
                       ("sub_ta", "TA-Lib subset, cryptonorm with TA-Lib engine"),
                       ("talib", "TA-Lib subset, talib itself")):
        wall, cpu = best[key]
        ratio = f"{cpu / ta_cpu:8.1f}x" if key.startswith("sub") or key == "talib" else ""
        print(f"{label:<52} {wall:7.3f}  {cpu:7.3f} {ratio}")
    print("(TA-Lib subset: SMA x3, EMA x2, RSI, MACD, BBANDS, ATR; the engine hands all but BBANDS to TA-Lib)")


def bench_each(rows: int, repeat: int) -> None:
    """Each indicator on the numpy path beside its TA-Lib call, and the EMA recursion beside scipy's lfilter."""
    import talib
    from scipy.signal import lfilter

    df = synthetic_candles(rows)
    h, lo, c = (df[k].to_numpy() for k in ("high", "low", "close"))
    a = 2.0 / 13
    pairs: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
        "SMA 20": (lambda: ind.sma(c, 20), lambda: talib.SMA(c, 20)),
        "EMA 12": (lambda: ind.ema(c, 12), lambda: talib.EMA(c, 12)),
        "RSI 14": (lambda: ind.rsi(c, 14), lambda: talib.RSI(c, 14)),
        "MACD 12/26/9": (lambda: ind.macd(c, 12, 26, 9), lambda: talib.MACD(c, 12, 26, 9)),
        "BBANDS 20, 2 (+ %B, width)": (lambda: ind.bbands(c, 20, 2.0),
                                       lambda: talib.BBANDS(c, 20, 2.0, 2.0, talib.MA_Type.SMA)),
        "ATR 14": (lambda: ind.atr(h, lo, c, 14), lambda: talib.ATR(h, lo, c, 14)),
        "EMA 12 recursion vs scipy lfilter": (
            lambda: ind._recursive(c, a, 11, 1.0),
            lambda: lfilter([a], [1.0, a - 1.0], c[12:], zi=[(1.0 - a) * 1.0])),
    }
    ind._TALIB = False  # the numpy path throughout
    fns = {f"{k}|{j}": fn for k, pair in pairs.items() for j, fn in enumerate(pair)}
    best = round_robin(fns, repeat)
    print(f"== each indicator, numpy path, {rows:,} candles (best of {repeat} round-robin, CPU ms; "
          f"load average {os.getloadavg()[0]:.1f})")
    for k in pairs:
        ours, ref = best[f"{k}|0"][1], best[f"{k}|1"][1]
        print(f"{k:<36} cryptonorm {ours * 1e3:7.2f}   reference {ref * 1e3:7.2f}   {ours / ref:5.1f}x")


def _memory_child(rows: int, window: int) -> None:
    """Runs in a fresh process: build the dataset, print a JSON line of measurements."""
    from cryptonorm.features import dataset, splits

    df = synthetic_candles(rows)
    cfg: Config = build_config({"data": {"timeframe": "1m"}, "features": {"inputs": "all", "window": window}})
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    tracemalloc.start()
    t0 = time.perf_counter()
    prep = dataset.prepare(df, cfg)
    t1 = time.perf_counter()
    ds = splits.split(prep, cfg)
    t2 = time.perf_counter()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rows": rows, "features": len(ds.feature_names), "window": window,
                      "prepare_s": t1 - t0, "split_s": t2 - t1, "traced_peak": peak,
                      "rss_peak_growth": (rss1 - rss0) * 1024, "candles": int(df.memory_usage().sum()),
                      "X": ds.X.nbytes, "features_f64": prep.features.nbytes,
                      "samples": [len(ds.train_idx), len(ds.val_idx), len(ds.test_idx)]}))


def bench_memory(rows: int, window: int) -> None:
    print(f"== dataset (prepare + split) for {rows:,} 1m candles, features.inputs=all, window {window}")
    out = subprocess.run([sys.executable, __file__, "--child", str(rows), "--window", str(window)],
                         capture_output=True, text=True, check=True)
    m = json.loads(out.stdout.strip().splitlines()[-1])
    gib = 1024**3
    print(f"features: {m['features']}; samples train/val/test: {m['samples']}")
    print(f"time: prepare {m['prepare_s']:.2f} s, split (scaler + X) {m['split_s']:.2f} s")
    print(f"arrays kept: X float32 {m['X'] / gib:.3f} GiB, raw features float64 {m['features_f64'] / gib:.3f} GiB "
          f"(input candles {m['candles'] / gib:.3f} GiB)")
    print(f"peak memory traced by tracemalloc during prepare + split: {m['traced_peak'] / gib:.2f} GiB")
    print(f"peak RSS growth during prepare + split:                   {m['rss_peak_growth'] / gib:.2f} GiB")
    per_row = m["traced_peak"] / rows
    print(f"that is {per_row:.0f} bytes per candle: 3.5M candles ~ {per_row * 3.5e6 / gib:.2f} GiB, "
          f"10M ~ {per_row * 1e7 / gib:.2f} GiB (linear in rows x features; no rows x window x features array)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rows", type=int, default=1_000_000, help="candles for the speed test")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--mem-rows", type=int, default=3_500_000, help="candles for the memory test (0: skip)")
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        _memory_child(a.child, a.window)
        return
    bench_speed(a.rows, a.repeat)
    bench_each(a.rows, a.repeat)
    if a.mem_rows:
        bench_memory(a.mem_rows, a.window)


if __name__ == "__main__":
    main()
