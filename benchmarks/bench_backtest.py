"""Time `backtest.simulate` on 1e5 and 1e6 hourly bars (random walk, random forecasts: the worst case for
trades, about one every two bars) side by side with a plain numpy pass over the same bars (returns,
costs, equity, drawdown, Sharpe: the least any backtest must do) and, when it is installed, vectorbt's
`Portfolio.from_orders` on the same target positions (an optional import: `pip install vectorbt`).
Prints best-of-N wall times and the ratio to the plain pass; never asserts.

    .venv/bin/python benchmarks/bench_backtest.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from cryptonorm.config import BacktestConfig
from cryptonorm.trade.backtest import simulate
from cryptonorm.trade.performance import performance
from cryptonorm.trade.positions import target_positions

HOUR = 3_600_000


def market(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ts = 1_500_000_000_000 // HOUR * HOUR + np.arange(n, dtype=np.int64) * HOUR
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.008, n)))
    return ts, close, rng.normal(0.0, 1e-3, n)


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """(best wall seconds, best CPU seconds of this process, every thread) over `repeat` calls.

    CPU time is what the table compares: on a shared, loaded machine a short call often gets a whole time
    slice while a long one is preempted, which biases wall-time ratios against the longer call."""
    walls, cpus = [], []
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus)


def plain_pass(close: np.ndarray, forecast: np.ndarray, cost_rate: float) -> tuple[float, float, float]:
    """The reference: sign positions held over the next bar, returns after costs, equity, max drawdown,
    annualized Sharpe (1h bars). No trades, no baselines, no forecast metrics, no checks."""
    bar_ret = np.empty_like(close)
    bar_ret[0] = 0.0
    bar_ret[1:] = close[1:] / close[:-1] - 1.0
    pos = np.empty_like(close)
    pos[0] = 0.0
    pos[1:] = np.sign(forecast[:-1])
    ret = pos * bar_ret - np.abs(np.diff(pos, prepend=0.0)) * cost_rate
    equity = np.cumprod(1.0 + ret)
    mdd = float(np.min(equity / np.maximum.accumulate(equity))) - 1.0
    sharpe = float(ret[1:].mean() / ret[1:].std(ddof=1)) * np.sqrt(8760.0)
    return float(equity[-1]), mdd, sharpe


def vectorbt_run(ts: np.ndarray, close: np.ndarray, target: np.ndarray, cost_rate: float) -> Callable[[], Any] | None:
    """vectorbt on the same positions (target percent of equity, fees per side), its stats() computed; None
    when vectorbt is not installed."""
    try:
        import pandas as pd
        import vectorbt as vbt
    except ImportError:
        return None
    price = pd.Series(close, index=pd.to_datetime(ts, unit="ms"))
    size = pd.Series(target, index=price.index)

    def run() -> Any:
        pf = vbt.Portfolio.from_orders(price, size, size_type="targetpercent", fees=cost_rate, freq="1h")
        return pf.stats()

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} CPU(s), "
          f"best of {args.repeat}")
    ts, close, fc = market(1000)
    simulate(ts, close, fc, BacktestConfig.model_validate({}), "1h", "return")  # warm imports and caches
    print(f"{'bars':>10}  {'what':<46} {'wall s':>8} {'CPU s':>8} {'x plain (CPU)':>14}")
    for n in (100_000, 1_000_000):
        bench_size(n, args.repeat)


def bench_size(n: int, repeat: int) -> None:
    """One row group of the table: every timing on n bars."""
    ts, close, fc = market(n)
    cfg = BacktestConfig.model_validate({})
    rate = (cfg.fee_bps + cfg.slippage_bps) / 1e4
    w, plain = best(lambda: plain_pass(close, fc, rate), repeat)
    print(f"{n:>10,}  {'plain numpy pass (reference)':<46} {w:8.3f} {plain:8.3f} {1.0:14.2f}")
    for sizing in ("fixed", "forecast", "volatility"):
        cfg = BacktestConfig.model_validate({"sizing": sizing})
        w, c = best(partial(simulate, ts, close, fc, cfg, "1h", "return"), repeat)
        print(f"{n:>10,}  {'simulate, sizing=' + sizing + ' (every metric)':<46} {w:8.3f} {c:8.3f} "
              f"{c / plain:14.2f}")
    cfg = BacktestConfig.model_validate({})
    w, c = best(lambda: simulate(ts, close, fc, cfg, "1h", "return", forecast_stats=False), repeat)
    print(f"{n:>10,}  {'simulate, fixed, forecast_stats=False':<46} {w:8.3f} {c:8.3f} {c / plain:14.2f}")
    bt = simulate(ts, close, fc, cfg, "1h", "return", forecast_stats=False)
    eq = bt.equity
    r, p, fee = (eq[k].to_numpy()[1:] for k in ("strategy_return", "position", "cost"))
    w, c = best(lambda: performance(r, p, "1h", fee, timestamps=ts), repeat)
    print(f"{n:>10,}  {'performance() alone':<46} {w:8.3f} {c:8.3f} {c / plain:14.2f}   "
          f"({len(bt.trades):,} trades)")
    vbt = vectorbt_run(ts, close, target_positions(ts, close, fc, cfg, "1h", "return"), rate)
    if vbt is None:
        print(f"{n:>10,}  vectorbt not installed (pip install vectorbt): no comparison")
        return
    vbt()  # numba compiles on the first call: not timed
    w, c = best(vbt, repeat)
    print(f"{n:>10,}  {'vectorbt from_orders + stats() (same targets)':<46} {w:8.3f} {c:8.3f} {c / plain:14.2f}")


if __name__ == "__main__":
    main()
