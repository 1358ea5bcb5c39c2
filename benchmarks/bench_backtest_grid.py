"""Time a backtest grid: 1,000 combinations (100 thresholds x 10 fee levels, fixed sizing, long/short) on
100,000 hourly bars, three ways:

- one pass: `trade.grid.simulate_grid`, every combination a row of 2-D arrays, 19 strategy metrics each;
- one at a time: `trade.backtest.simulate(..., forecast_stats=False)` per combination (what `backtest
  --grid` did before), timed on `--sample` combinations and scaled to the whole grid;
- vectorbt: `Portfolio.from_orders` on the same 1,000 columns (target percent orders where the target
  changes, the fee of each column), `--vectorbt-columns` columns per call (default 100: one call on all
  1,000 x 100,000 needs over 10 GB), then again with total_return, sharpe_ratio and max_drawdown of every
  column. In-process when vectorbt imports here, else `--vectorbt-python` of a separate venv
  (`python3 -m venv /tmp/vbt && /tmp/vbt/bin/pip install vectorbt`): vectorbt pulls in numba, so it is no
  dependency of cryptonorm. numba compiles on a first call on a short slice, which is not timed.

The forecast is a smoothed random walk (a sign change every ~30 bars), so that vectorbt's order records
(one per target change, 56 bytes each) stay a few hundred megabytes. Every figure is the best of
`--repeat` calls in each of `--rounds` rounds that visit the contenders in turn; the table compares CPU
time of the process (on a loaded machine wall time favours short calls). It never asserts.

    .venv/bin/python benchmarks/bench_backtest_grid.py [--bars 100000] [--repeat 2] [--rounds 2]
        [--sample 20] [--vectorbt-python /tmp/vbt/bin/python] [--vectorbt-columns 100]

`--real-run`: instead, what `backtest RUN --grid` computes on a real run's validation split (the tests'
small real config: BTC/USDT 1h, Jan-Apr 2024, trained here for 2 epochs): 400 combinations (40 thresholds
x 10 fee levels) through `rebacktest.split_metrics` against `simulate_split` per combination.
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
from pathlib import Path
from typing import Any

import numpy as np

HOUR = 3_600_000
THRESHOLDS = np.linspace(0.0, 0.0099, 100)
FEES_BPS = np.linspace(0.0, 45.0, 10)
Timing = tuple[float, float]  # (best wall s, best CPU s)


def market(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hourly timestamps, a random-walk close and a persistent forecast (an EMA of noise, span ~30 bars)."""
    rng = np.random.default_rng(seed)
    ts = 1_500_000_000_000 // HOUR * HOUR + np.arange(n, dtype=np.int64) * HOUR
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.008, n)))
    noise = rng.normal(0.0, 0.01, n)
    fc = np.empty(n)
    level, alpha = 0.0, 2 / 31
    for i in range(n):  # a plain loop: 0.1 s, once
        level += alpha * (noise[i] - level)
        fc[i] = level
    return ts, close, fc


def configs() -> list[Any]:
    from cryptonorm.config import BacktestConfig

    return [BacktestConfig.model_validate({"threshold": float(t), "fee_bps": float(f)})
            for t in THRESHOLDS for f in FEES_BPS]


def best(fn: Callable[[], Any], repeat: int) -> Timing:
    walls, cpus = [], []
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus)


def cryptonorm_rows(n: int, repeat: int, sample: int) -> dict[str, Timing]:
    from cryptonorm.trade.backtest import simulate
    from cryptonorm.trade.grid import simulate_grid

    ts, close, fc = market(n)
    cfgs = configs()
    out = {"cryptonorm simulate_grid, one pass (19 metrics)":
           best(lambda: simulate_grid(ts, close, fc, cfgs, "1h", "return"), repeat)}
    picks = [cfgs[i] for i in np.linspace(0, len(cfgs) - 1, sample).astype(int)]
    wall, cpu = best(lambda: [simulate(ts, close, fc, c, "1h", "return", forecast_stats=False) for c in picks],
                     repeat)
    scale = len(cfgs) / len(picks)
    out[f"cryptonorm simulate one at a time (x{scale:.0f} of {len(picks)})"] = (wall * scale, cpu * scale)
    return out


def vectorbt_rows(n: int, repeat: int, targets_file: str, chunk: int) -> dict[str, Timing]:
    """vectorbt on the same 1,000 columns: orders where the target changes (NaN: no order), `chunk` columns
    per from_orders call (vectorbt broadcasts every argument to (bars, columns) arrays: one call on all
    1,000 columns of 100,000 bars passed 10 GB of memory here, more than a shared machine should give it)."""
    import pandas as pd
    import vectorbt as vbt

    data = np.load(targets_file)
    distinct, which, fees = data["targets"], data["which"], data["fees"]
    ts, close, _ = market(n)
    index = pd.to_datetime(ts, unit="ms")
    price = pd.Series(close, index=index)

    def orders(cols: np.ndarray) -> Any:
        size = np.full((n, len(cols)), np.nan)
        for k, col in enumerate(cols):
            t = distinct[which[col]]
            changed = np.r_[t[0] != 0, t[1:] != t[:-1]]
            size[changed, k] = t[changed]
        return pd.DataFrame(size, index=index)

    def run(p: Any, s: Any, f: np.ndarray, metrics: bool) -> Any:
        pf = vbt.Portfolio.from_orders(p, s, size_type="targetpercent", fees=f, freq="1h")
        if metrics:
            return pf.total_return(), pf.sharpe_ratio(), pf.max_drawdown()
        return pf

    run(price.iloc[:500], orders(np.arange(3)).iloc[:500], fees[:3], True)  # numba compiles here, untimed
    total: dict[str, list[float]] = {"sim": [0.0, 0.0], "metrics": [0.0, 0.0]}
    for lo in range(0, len(which), chunk):
        cols = np.arange(lo, min(len(which), lo + chunk))
        s = orders(cols)
        for key, metrics in (("sim", False), ("metrics", True)):
            w, c = best(lambda s=s, cols=cols, metrics=metrics: run(price, s, fees[cols], metrics), repeat)
            total[key][0] += w
            total[key][1] += c
        del s
    calls = f"{len(which):,} columns in calls of {chunk}"
    return {f"vectorbt from_orders, {calls}": (total["sim"][0], total["sim"][1]),
            "vectorbt from_orders + total_return, sharpe, max_drawdown": (total["metrics"][0], total["metrics"][1])}


def real_run_rows(repeat: int) -> dict[str, Timing]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import small_real_config

    from cryptonorm import pipeline
    from cryptonorm.config import build_config
    from cryptonorm.pipeline import rebacktest
    from cryptonorm.pipeline.backtesting import read_forecasts, simulate_split

    with tempfile.TemporaryDirectory() as tmp:
        base = build_config(small_real_config())
        pipeline.train(base, Path(tmp) / "run")
        full = read_forecasts(Path(tmp) / "run")
    configs = [rebacktest.backtest_overrides(base, {"threshold": float(t), "fee_bps": float(f)})
               for t in np.linspace(0, 0.002, 40) for f in np.linspace(0, 20, 10)]
    bars = int((full["split"] == "val").sum())
    return {f"split_metrics, one pass, {len(configs)} x {bars} bars":
            best(lambda: rebacktest.split_metrics(full, configs, "val"), repeat),
            f"simulate_split one at a time, {len(configs)} x {bars} bars":
            best(lambda: [simulate_split(full, c, "val", forecast_stats=False) for c in configs], repeat)}


def write_targets(n: int, path: Path) -> None:
    """The distinct target positions of the grid and each column's, for the vectorbt subprocess."""
    from cryptonorm.trade.positions import target_positions

    ts, close, fc = market(n)
    cfgs = configs()
    distinct = np.stack([target_positions(ts, close, fc, cfgs[i * len(FEES_BPS)], "1h", "return")
                         for i in range(len(THRESHOLDS))])
    which = np.repeat(np.arange(len(THRESHOLDS)), len(FEES_BPS))
    fees = np.array([(c.fee_bps + c.slippage_bps) / 1e4 for c in cfgs])
    np.savez(path, targets=distinct, which=which, fees=fees)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bars", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=2, help="calls per round; the best counts")
    ap.add_argument("--rounds", type=int, default=2, help="round-robin rounds over the contenders")
    ap.add_argument("--sample", type=int, default=20, help="combinations timed one at a time (then scaled)")
    ap.add_argument("--vectorbt-python", help="the python of a venv with vectorbt installed")
    ap.add_argument("--vectorbt-columns", type=int, default=100, help="columns per vectorbt call")
    ap.add_argument("--real-run", action="store_true", help="time the grid command's work on a real run instead")
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # a targets file: time vectorbt on it, print JSON
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(vectorbt_rows(args.bars, args.repeat, args.worker, args.vectorbt_columns)))
        return
    if args.real_run:
        print(f"{os.cpu_count()} CPU(s), load {os.getloadavg()[0]:.1f}; best of {args.repeat}")
        for what, (w, c) in real_run_rows(args.repeat).items():
            print(f"{what:<62} wall {w:7.3f} s  CPU {c:7.3f} s")
        return
    print(f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} CPU(s), load "
          f"{os.getloadavg()[0]:.1f}; {len(THRESHOLDS) * len(FEES_BPS):,} combinations x {args.bars:,} bars; "
          f"best of {args.repeat} x {args.rounds} rounds")
    rows: dict[str, Timing] = {}

    def merge(new: dict[str, Timing]) -> None:
        for k, (w, c) in new.items():
            w0, c0 = rows.get(k, (w, c))
            rows[k] = (min(w0, w), min(c0, c))

    with tempfile.TemporaryDirectory() as tmp:
        targets = Path(tmp) / "targets.npz"
        write_targets(args.bars, targets)
        note = "vectorbt not installed (pip install vectorbt, or --vectorbt-python): no comparison"
        for _ in range(args.rounds):
            merge(cryptonorm_rows(args.bars, args.repeat, args.sample))
            if args.vectorbt_python:
                r = subprocess.run([args.vectorbt_python, __file__, "--bars", str(args.bars), "--repeat",
                                    str(args.repeat), "--vectorbt-columns", str(args.vectorbt_columns),
                                    "--worker", str(targets)], capture_output=True, text=True)
                if r.returncode != 0:
                    raise SystemExit(f"bench_backtest_grid: vectorbt failed: {r.stderr.strip().splitlines()[-1:]}")
                merge({k: (v[0], v[1]) for k, v in json.loads(r.stdout.strip().splitlines()[-1]).items()})
                note = ""
            else:
                try:
                    merge(vectorbt_rows(args.bars, args.repeat, str(targets), args.vectorbt_columns))
                    note = ""
                except ImportError:
                    pass
    one = rows["cryptonorm simulate_grid, one pass (19 metrics)"][1]
    print(f"{'what':<62} {'wall s':>8} {'CPU s':>8} {'CPU / one pass':>15}")
    for what, (w, c) in rows.items():
        print(f"{what:<62} {w:8.2f} {c:8.2f} {c / one:15.2f}")
    if note:
        print(note)
    print(f"load at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
