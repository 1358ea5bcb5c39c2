"""Time `backtest.simulate` on 1e5 and 1e6 hourly bars (random walk, random forecasts: the worst case for
trades, about one every two bars). Prints best-of-N wall times; never asserts.

    .venv/bin/python benchmarks/bench_backtest.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from cryptonorm.config import BacktestConfig
from cryptonorm.trade.backtest import simulate
from cryptonorm.trade.performance import performance

HOUR = 3_600_000


def market(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ts = 1_500_000_000_000 // HOUR * HOUR + np.arange(n, dtype=np.int64) * HOUR
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.008, n)))
    return ts, close, rng.normal(0.0, 1e-3, n)


def best(fn: object, repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return min(times), float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} CPU(s), "
          f"best / median of {args.repeat}")
    ts, close, fc = market(1000)
    simulate(ts, close, fc, BacktestConfig.model_validate({}), "1h", "return")  # warm imports and caches
    print(f"{'bars':>10}  {'what':<44} {'best s':>8} {'median s':>9}")
    for n in (100_000, 1_000_000):
        ts, close, fc = market(n)
        for sizing in ("fixed", "forecast", "volatility"):
            cfg = BacktestConfig.model_validate({"sizing": sizing})
            b, m = best(lambda cfg=cfg, ts=ts, close=close, fc=fc: simulate(ts, close, fc, cfg, "1h", "return"),
                        args.repeat)
            print(f"{n:>10,}  {'simulate, sizing=' + sizing + ' (all metrics)':<44} {b:8.3f} {m:9.3f}")
        cfg = BacktestConfig.model_validate({})
        b, m = best(lambda cfg=cfg, ts=ts, close=close, fc=fc:
                    simulate(ts, close, fc, cfg, "1h", "return", forecast_stats=False), args.repeat)
        print(f"{n:>10,}  {'simulate, fixed, forecast_stats=False':<44} {b:8.3f} {m:9.3f}")
        bt = simulate(ts, close, fc, cfg, "1h", "return", forecast_stats=False)
        eq = bt.equity
        r, p, c = (eq[k].to_numpy()[1:] for k in ("strategy_return", "position", "cost"))
        b, m = best(lambda r=r, p=p, c=c, ts=ts: performance(r, p, "1h", c, timestamps=ts), args.repeat)
        print(f"{n:>10,}  {'performance() alone':<44} {b:8.3f} {m:9.3f}   ({len(bt.trades):,} trades)")


if __name__ == "__main__":
    main()
