"""Time the interactive HTML reports: build (Python) and open (a real headless Chromium, from file:// until
every chart is drawn, `window.reportDrawnMs`) for a 500-cell sweep page and a 1,000,000-bar backtest page.
Prints best / median of N and the page sizes; never asserts. Needs plotly, selenium and a system Chromium
(Debian: apt-get install chromium chromium-driver); without a browser it prints the build times only.

    .venv/bin/python benchmarks/bench_reports.py [--repeat 3] [--cells 500] [--bars 1000000]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cryptonorm.config import BacktestConfig
from cryptonorm.render.html_backtest import backtest_page
from cryptonorm.render.html_sweep import SweepPage, TableData, sweep_page
from cryptonorm.trade.backtest import simulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from browser import Browser, find_chromium  # noqa: E402


def sweep_data(n_cells: int, epochs: int = 30, seed: int = 0) -> SweepPage:
    """n_cells cells: 5 norms x 2 model kinds x 5 batch sizes x seeds, each with a training history."""
    rng = np.random.default_rng(seed)
    norms, kinds, batches = ["none", "batch", "layer", "group", "revin"], ["mlp", "lstm"], [16, 32, 64, 128, 256]
    seeds = max(1, n_cells // (len(norms) * len(kinds) * len(batches)))
    rows, curves = [], {}
    for norm in norms:
        for kind in kinds:
            for b in batches:
                for s in range(seeds):
                    cid = f"{norm}-{kind}-{b}-{s}"
                    rows.append({"cell_id": cid, "model.norm": norm, "model.kind": kind, "train.batch_size": str(b),
                                 "seed": str(s), "status": "ok", "run_dir": f"/sweeps/big/cells/{cid}/run",
                                 "error": None, "test_mse": rng.uniform(1e-4, 2e-4), "bt_sharpe": rng.normal()})
                    curves[cid] = pd.DataFrame({"epoch": np.arange(1, epochs + 1),
                                                "val_loss": 2e-4 + rng.uniform(0, 1e-4, epochs).cumsum()[::-1]})
    cells = pd.DataFrame(rows)
    summary = TableData("Mean ± std over seeds", ["model.norm", "model.kind", "train.batch_size", "n", "test_mse"],
                        [[r["model.norm"], r["model.kind"], r["train.batch_size"], str(seeds), "1.5e-4 ± 2e-5"]
                         for r in rows[::seeds]])
    return SweepPage(title=f"bench sweep ({len(rows)} cells)", info=[], tables=[summary], cells=cells,
                     grid_keys=["model.norm", "model.kind", "train.batch_size", "seed"], group_key="model.norm",
                     panel_key="model.kind", metrics=[("test_mse", "test mse"), ("bt_sharpe", "Sharpe")],
                     curves=curves, batch_key="train.batch_size", loss="test_mse")


def timed(fn: object, repeat: int) -> tuple[float, float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return min(times), float(np.median(times)), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cells", type=int, default=500)
    ap.add_argument("--bars", type=int, default=1_000_000)
    args = ap.parse_args()
    print(f"python {platform.python_version()}, {os.cpu_count()} CPU(s), load average "
          f"{os.getloadavg()[0]:.1f}; best / median of {args.repeat}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-reports-"))
    data = sweep_data(args.cells)
    n = args.bars
    rng = np.random.default_rng(1)
    ts = 1_500_000_000_000 + np.arange(n, dtype="int64") * 3_600_000
    bt = simulate(ts, 100 * np.exp(np.cumsum(rng.normal(0, 0.008, n))), rng.normal(0, 1e-3, n),
                  BacktestConfig.model_validate({}), "1h", "return", forecast_stats=False)
    pages = {
        f"sweep page, {len(data.cells)} cells": lambda: sweep_page(tmp / "sweep" / "report.html", data),
        f"backtest page, {n:,} bars, {len(bt.trades):,} trades":
            lambda: backtest_page(tmp / "bt" / "report.html", bt.equity, bt.trades, bt.metrics, title="bench"),
    }
    found = find_chromium()
    browser = Browser(*found) if found else None
    if browser is None:
        print("no headless Chromium found: build times only")
    print(f"{'page':<48} {'MB':>6} {'build best s':>13} {'median':>7} {'open best s':>12} {'median':>7}")
    try:
        for name, build in pages.items():
            b_best, b_med, path = timed(build, args.repeat)
            size = Path(str(path)).stat().st_size / 1e6
            line = f"{name:<48} {size:6.2f} {b_best:13.2f} {b_med:7.2f}"
            if browser is not None:
                browser.open_report(Path(str(path)), timeout=120)  # warm the browser and its disk cache
                opens = []
                for _ in range(args.repeat):
                    seen = browser.open_report(Path(str(path)), timeout=120)
                    if seen.errors or seen.requests:
                        print(f"  warning: {name}: console errors {seen.errors} requests {seen.requests}")
                    opens.append(seen.seconds)
                line += f" {min(opens):12.2f} {float(np.median(opens)):7.2f}"
            print(line)
    finally:
        if browser is not None:
            browser.close()


if __name__ == "__main__":
    main()
