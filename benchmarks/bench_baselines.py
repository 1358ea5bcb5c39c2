"""Time the tabular model kinds (learn/tabular.py) on 70,000 rows x 500 lagged features: ridge (normal
equations accumulated over row chunks) and LightGBM on 2 threads, each in its own process so its peak memory
(resource.getrusage ru_maxrss, and tracemalloc's peak of the Python/numpy allocations) is its own.

The inputs are real: BTC/USDT 1h candles from ../shared/data, the default features scaled on the training
split, and the last `lags` bars of the window, lags = ceil(500 / features). Prints; never asserts.

    .venv/bin/python benchmarks/bench_baselines.py [--rows 70000] [--columns 500] [--threads 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "BTC_USDT-1h.csv.gz"


def _dataset(rows: int, columns: int) -> tuple[object, int]:
    """The real BTC/USDT 1h dataset (scaled) and the lags that make about `columns` design columns."""
    from cryptonorm.config import build_config
    from cryptonorm.data.importers import read_user_file
    from cryptonorm.features import dataset, splits

    candles = read_user_file(DATA, "1h")
    probe = build_config({"data": {"timeframe": "1h"}, "features": {"window": 1}})
    n_feat = len(dataset.prepare(candles.iloc[:2000], probe).feature_names)
    lags = math.ceil(columns / n_feat)
    # the whole history (~73k bars): 97% training samples, the last 2% for LightGBM's early stopping
    cfg = build_config({"data": {"timeframe": "1h"}, "features": {"window": lags},
                        "split": {"train": 0.97, "val": 0.02, "test": 0.01}})
    ds = splits.split(dataset.prepare(candles, cfg), cfg)
    ds.train_idx = ds.train_idx[-rows:]
    return ds, lags


def child(kind: str, rows: int, columns: int, threads: int, repeat: int) -> dict[str, object]:
    """Fit `kind` `repeat` times; best wall time, peak memory."""
    from cryptonorm.config import ModelConfig
    from cryptonorm.learn import tabular

    ds, lags = _dataset(rows, columns)
    m = ModelConfig(kind=kind, norm="none", lags=lags,
                    lightgbm={"threads": threads, "n_estimators": 200, "early_stopping_rounds": 20})
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, peak = [], 0
    for _ in range(repeat):
        tracemalloc.start()
        t0 = time.perf_counter()
        res = tabular.fit(ds.X, ds.y, ds.train_idx, ds.val_idx, ds.window, m, "regression", "identity", 0)
        times.append(time.perf_counter() - t0)
        peak = max(peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"kind": kind, "rows": len(ds.train_idx), "columns": lags * ds.X.shape[1], "best_s": min(times),
            "times_s": [round(t, 3) for t in times], "tracemalloc_peak_mb": peak / 2**20,
            "maxrss_mb": rss1 / 1024, "maxrss_before_fit_mb": rss0 / 1024, "message": res.message}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=70_000)
    ap.add_argument("--columns", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2, help="LightGBM threads")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--child", choices=["ridge", "lightgbm"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.rows, a.columns, a.threads, a.repeat)))
        return
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, Python "
          f"{platform.python_version()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}")
    for kind in ("ridge", "lightgbm"):
        out = subprocess.run([sys.executable, __file__, "--child", kind, "--rows", str(a.rows), "--columns",
                              str(a.columns), "--threads", str(a.threads), "--repeat", str(a.repeat)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{kind:9s} {r['rows']:,} rows x {r['columns']} columns: best {r['best_s']:.3f} s of {r['times_s']}; "
              f"peak RSS {r['maxrss_mb']:.0f} MB (data loaded: {r['maxrss_before_fit_mb']:.0f} MB), tracemalloc "
              f"peak {r['tracemalloc_peak_mb']:.0f} MB; {r['message']}")


if __name__ == "__main__":
    main()
