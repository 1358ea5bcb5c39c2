"""Time `backtest.simulate` on 1e5 and 1e6 hourly bars (random walk, random forecasts: the worst case for
trades, about one every two bars) side by side with a plain numpy pass over the same bars (returns,
costs, equity, drawdown, Sharpe: the least any backtest must do) and, optionally, with another checkout of
cryptonorm (`--before DIR`, e.g. `git archive main cryptonorm | tar -x -C DIR`) and with vectorbt's
`Portfolio.from_orders` + `stats()` on the same target positions (in-process when vectorbt imports here,
else `--vectorbt-python` of a separate venv: `python3 -m venv /tmp/vbt && /tmp/vbt/bin/pip install vectorbt`;
vectorbt pulls in numba, so it is no dependency of cryptonorm).

Every figure is the best of `--repeat` calls in each of `--rounds` rounds; the rounds visit the contenders
in turn (this process, then the other checkout and vectorbt, each in its own subprocess), so a change in
the machine's load hits them alike. The table compares CPU time of the process, every thread included
(on a loaded machine wall time favours short calls); it never asserts.

    .venv/bin/python benchmarks/bench_backtest.py [--repeat 5] [--rounds 3] [--before DIR]
        [--vectorbt-python /tmp/vbt/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

HOUR = 3_600_000
SIZES = (100_000, 1_000_000)
Timings = dict[str, tuple[float, float]]  # row -> (best wall s, best CPU s)


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


def cryptonorm_rows(n: int, repeat: int) -> Timings:
    """Every cryptonorm timing on n bars (the cryptonorm on sys.path: this checkout or --before's)."""
    from cryptonorm.config import BacktestConfig
    from cryptonorm.evaluate.forecast import forecast_metrics
    from cryptonorm.trade.backtest import simulate
    from cryptonorm.trade.performance import performance

    ts, close, fc = market(n)
    out: Timings = {}
    for sizing in ("fixed", "forecast", "volatility"):
        cfg = BacktestConfig.model_validate({"sizing": sizing})
        out[f"simulate, sizing={sizing} (every metric)"] = best(partial(simulate, ts, close, fc, cfg, "1h", "return"),
                                                                repeat)
    cfg = BacktestConfig.model_validate({})
    out["simulate, fixed, threads=2 (metrics on a 2nd thread)"] = best(
        lambda: simulate(ts, close, fc, cfg, "1h", "return", threads=2), repeat)
    out["simulate, fixed, forecast_stats=False"] = best(
        lambda: simulate(ts, close, fc, cfg, "1h", "return", forecast_stats=False), repeat)
    bt = simulate(ts, close, fc, cfg, "1h", "return", forecast_stats=False)
    r, p, fee = (bt.equity[k].to_numpy()[1:] for k in ("strategy_return", "position", "cost"))
    out["performance() alone"] = best(lambda: performance(r, p, "1h", fee, timestamps=ts), repeat)
    y = np.log(close[1:] / close[:-1])
    out["forecast_metrics() alone (2 rankings of n)"] = best(lambda: forecast_metrics(fc[:-1], y, "return"), repeat)
    return out


def vectorbt_rows(n: int, repeat: int, target: np.ndarray, cost_rate: float) -> Timings:
    """vectorbt on the same target positions (target percent of equity, fees per side), its stats()
    computed; numba compiles on the first call, which is not timed. ImportError without vectorbt."""
    import pandas as pd
    import vectorbt as vbt

    ts, close, _ = market(n)
    price = pd.Series(close, index=pd.to_datetime(ts, unit="ms"))
    size = pd.Series(target, index=price.index)

    def run() -> Any:
        pf = vbt.Portfolio.from_orders(price, size, size_type="targetpercent", fees=cost_rate, freq="1h")
        return pf.stats()

    run()
    return {"vectorbt from_orders + stats() (same targets)": best(run, repeat)}


def worker(args: argparse.Namespace) -> None:
    """Subprocess mode: print the timings of one contender on n bars as JSON."""
    if args.worker == "cryptonorm":
        rows = cryptonorm_rows(args.n, args.repeat)
    else:
        data = np.load(args.targets)
        rows = vectorbt_rows(args.n, args.repeat, data["target"], float(data["rate"]))
    print(json.dumps(rows))


def in_subprocess(cmd: list[str], env: dict[str, str] | None = None) -> Timings:
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"bench_backtest: {' '.join(cmd[:2])} failed: {r.stderr.strip().splitlines()[-1:]}")
    return {k: (v[0], v[1]) for k, v in json.loads(r.stdout.strip().splitlines()[-1]).items()}


def merge(into: Timings, new: Timings) -> None:
    for k, (w, c) in new.items():
        w0, c0 = into.get(k, (w, c))
        into[k] = (min(w0, w), min(c0, c))


def bench_size(n: int, args: argparse.Namespace, tmp: Path) -> None:
    """One row group of the table: every contender on n bars, round-robin over args.rounds rounds."""
    from cryptonorm.config import BacktestConfig
    from cryptonorm.trade.positions import target_positions

    ts, close, fc = market(n)
    cfg = BacktestConfig.model_validate({})
    rate = (cfg.fee_bps + cfg.slippage_bps) / 1e4
    targets = tmp / f"targets-{n}.npz"
    np.savez(targets, target=target_positions(ts, close, fc, cfg, "1h", "return"), rate=rate)
    me = [sys.executable, __file__, "--n", str(n), "--repeat", str(args.repeat)]
    after: Timings = {}
    before: Timings = {}
    other: Timings = {}
    vbt_note = "vectorbt not installed (pip install vectorbt, or --vectorbt-python): no comparison"
    for _ in range(args.rounds):
        merge(after, {"plain numpy pass (reference)": best(lambda: plain_pass(close, fc, rate), args.repeat)})
        merge(after, cryptonorm_rows(n, args.repeat))
        if args.before:
            env = {**os.environ, "PYTHONPATH": str(Path(args.before).resolve())}
            merge(before, in_subprocess([*me, "--worker", "cryptonorm"], env))
        if args.vectorbt_python:
            merge(other, in_subprocess([args.vectorbt_python, *me[1:], "--worker", "vectorbt",
                                        "--targets", str(targets)]))
        else:
            try:
                merge(other, vectorbt_rows(n, args.repeat, np.load(targets)["target"], rate))
            except ImportError:
                pass
    plain = after["plain numpy pass (reference)"][1]
    for label, rows in (("", after), ("before: ", before), ("", other)):
        for what, (w, c) in rows.items():
            print(f"{n:>10,}  {label + what:<56} {w:8.3f} {c:8.3f} {c / plain:14.2f}")
    if not other:
        print(f"{n:>10,}  {vbt_note}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5, help="calls per round; the best counts")
    ap.add_argument("--rounds", type=int, default=3, help="round-robin rounds over the contenders")
    ap.add_argument("--before", help="a directory holding another cryptonorm package to time beside this one")
    ap.add_argument("--vectorbt-python", help="the python of a venv with vectorbt installed")
    ap.add_argument("--worker", choices=["cryptonorm", "vectorbt"], help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--targets", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    print(f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} CPU(s), load "
          f"{os.getloadavg()[0]:.1f}, best of {args.repeat} x {args.rounds} rounds")
    cryptonorm_rows(1000, 1)  # warm imports and caches
    print(f"{'bars':>10}  {'what':<56} {'wall s':>8} {'CPU s':>8} {'x plain (CPU)':>14}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in SIZES:
            bench_size(n, args, Path(tmp))
    print(f"load at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
