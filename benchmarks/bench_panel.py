"""Prepare time and peak memory of a universe: 30 coins x 8 years of 1h (~2 million rows) by default.

    python benchmarks/bench_panel.py                  # the synthetic universe: 30 coins, 8 years, 1h
    python benchmarks/bench_panel.py --real           # the 30 coins of ../shared/data/panel, full history
    python benchmarks/bench_panel.py --coins 10 --years 2

Prints the seconds of each step (load, per-coin features + cross-section, scaling + coin-major layout) and
the peak resident memory of the process (ru_maxrss). Targets (issue 28): under 60 s and under 4 GiB on the
2-core machine. Windows are never materialised: a batch gathers them from end rows (the last line shows
the bytes a full (N, W, F) copy would take, for comparison).
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np

from cryptonorm.config import build_config
from cryptonorm.data.universe import load_universe
from cryptonorm.features.panel import prepare_panel
from cryptonorm.pipeline.panel import panel_data

# ~30 model inputs: more periods of the stationary indicators than the default config
WIDE = {"returns": [1, 2, 4, 8, 12, 24, 48, 96, 168], "volatility": [12, 24, 96, 168], "volume_z": [24, 168],
        "rsi": [7, 14, 28], "bbands": [[20, 2.0], [50, 2.0]]}
PANEL = Path(__file__).resolve().parents[2] / "shared" / "data" / "panel"


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--real", action="store_true", help="the shared panel's 30 coins instead of synthetic ones")
    ap.add_argument("--coins", type=int, default=30)
    ap.add_argument("--years", type=float, default=8.0)
    ap.add_argument("--listed", type=float, default=0.0, help="share of coins listed late (and delisted early)")
    ap.add_argument("--cross-section", default="zscore", choices=["none", "zscore", "rank"])
    a = ap.parse_args()
    if a.real:
        symbols = sorted(p.name.split("-")[0].replace("_", "/") for p in PANEL.glob("*_USDT-1h.csv.gz"))
        universe = {"symbols": symbols, "files_dir": str(PANEL)}
        exchange = "binance"
    else:
        universe = {"synthetic": {"coins": a.coins, "days": int(a.years * 365), "listed": a.listed,
                                  "delisted": a.listed}}
        exchange = "synthetic"
    cfg = build_config({"data": {"exchange": exchange, "timeframe": "1h", "universe": universe},
                        "features": {"cross_section": a.cross_section, "window": 32, **WIDE},
                        "target": {"kind": "excess_return"}})
    t0 = time.perf_counter()
    u = load_universe(cfg)
    t1 = time.perf_counter()
    prep = prepare_panel(u, cfg)
    t2 = time.perf_counter()
    data = panel_data(prep, cfg)
    t3 = time.perf_counter()
    t_n, c_n, f_n = prep.features.shape
    rows = int(u.present().sum())
    n_samples = len(data.train_idx) + len(data.val_idx) + len(data.test_idx)
    print(f"universe: {'real panel' if a.real else 'synthetic'}, {c_n} coins, {t_n} timestamps, {rows:,} coin-bars, "
          f"{f_n} features, {n_samples:,} samples")
    print(f"load candles            {t1 - t0:7.2f} s")
    print(f"features + cross-section {t2 - t1:6.2f} s")
    print(f"scale + coin-major layout {t3 - t2:5.2f} s")
    print(f"total prepare           {t3 - t0:7.2f} s   (target < 60 s)")
    print(f"peak resident memory    {peak_gib():7.2f} GiB (target < 4 GiB)")
    print(f"X (C*T, F) float32      {data.X.nbytes / 2**30:7.2f} GiB; windows as a copy would take "
          f"{n_samples * data.window * f_n * 4 / 2**30:.1f} GiB (never made)")
    assert np.isfinite(data.X).all()


if __name__ == "__main__":
    main()
