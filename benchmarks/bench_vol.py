"""Time the volatility baselines (HAR-RV by OLS, EWMA, naive; GARCH(1,1)-t aside) and the variance metrics
with Diebold-Mariano on 100k bars of a GARCH-like market. Prints best-of-N wall times; never asserts.

    .venv/bin/python benchmarks/bench_vol.py [--bars 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import numpy as np

from cryptonorm.evaluate import vol_baselines as vb
from cryptonorm.evaluate import vol_metrics as vm


def market(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(m, var, r): per-bar variance, the 6-bar forward label, returns of a GARCH(1,1) path with t shocks."""
    rng = np.random.default_rng(seed)
    z = rng.standard_t(5, n) / np.sqrt(5 / 3)
    r, s2 = np.empty(n), 1e-4
    for i in range(n):  # the market itself, not timed
        r[i] = np.sqrt(s2) * z[i]
        s2 = 2e-6 + 0.06 * r[i] ** 2 + 0.92 * s2
    m = r * r
    var = np.full(n, np.nan)
    cs = np.r_[0.0, np.cumsum(m)]
    var[: n - 6] = (cs[7:] - cs[1:-6]) / 6
    return m, var, r


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bars", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    n = args.bars
    print(f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} CPU(s), best of {args.repeat}")
    m, var, r = market(n)
    train = np.arange(200, int(0.7 * n))
    test = np.arange(int(0.85 * n), n - 6)
    t = best(lambda: vb.fit_baselines(m, var, r, train, 6, "4h", garch=False), args.repeat)
    print(f"{n:>9,} bars  HAR (OLS) + EWMA + naive, every row          {t:8.3f} s")
    b = vb.fit_baselines(m, var, r, train, 6, "4h", garch=False).forecasts

    def score() -> None:
        for f in b.values():
            vm.vol_metrics(f[test], var[test], 1e-4)
            vm.dm_vs(f[test], b["har"][test], var[test], 6)

    t = best(score, args.repeat)
    print(f"{len(test):>9,} bars  metrics + DM (qlike, mse_var) of 3 baselines  {t:8.3f} s")
    try:
        import arch  # noqa: F401
    except ImportError:
        print("GARCH(1,1)-t: skipped (pip install 'cryptonorm[vol]' for arch)")
        return
    t = best(lambda: vb.garch_t(r, m, train, 6), 1)
    print(f"{n:>9,} bars  GARCH(1,1)-t fit (arch, {len(train):,} bars) + filter    {t:8.3f} s")


if __name__ == "__main__":
    main()
