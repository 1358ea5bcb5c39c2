"""Funding of perpetual swaps in the backtest: which bar pays which funding time.

Holding a position at a funding time T pays position x notional x rate (longs pay a positive rate, shorts
receive it). In the backtest, position[t] is held from close[t-1] to close[t], i.e. over the times
(ts[t-1] + step, ts[t] + step] with ts the candle open times: bar t pays every funding time in that
interval (across an outage, the funding times inside it too). With the constant-fraction convention of
the simulation (notional = position x equity at close[t-1]), the funding charge is a return:
carry[t] = sum of those rates, and strategy_return[t] -= position[t] x carry[t].
"""

from __future__ import annotations

import numpy as np

from cryptonorm.errors import DataError
from cryptonorm.timeframes import format_ms


def funding_per_bar(timestamps: np.ndarray, step: int, funding_ts: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """(N,) sum of the funding rates each bar's position pays (row 0: 0, nothing is held before bar 0).

    Raises DataError, saying how much is missing, when the funding times do not cover the bars: funding
    is never assumed to be zero.
    """
    ts = np.asarray(timestamps, dtype="int64")
    fts = np.asarray(funding_ts, dtype="int64")
    fr = np.asarray(rates, dtype="float64")
    n = len(ts)
    carry = np.zeros(n)
    if n < 2:
        return carry
    lo, hi = int(ts[0]) + step, int(ts[-1]) + step  # the first position's start, the last one's end
    if len(fts) == 0:
        raise DataError(f"no funding rates for the backtest {format_ms(lo)} -> {format_ms(hi)}; fetch them "
                        "(cryptonorm fetch with data.market: swap), give data.funding_file, or set "
                        "backtest.funding: off")
    interval = int(np.median(np.diff(fts))) if len(fts) > 1 else 8 * 3_600_000
    missing_start = max(0, (int(fts[0]) - lo) // interval)
    missing_end = max(0, (hi - int(fts[-1])) // interval)
    if missing_start or missing_end:
        days = (missing_start + missing_end) * interval / 86_400_000
        raise DataError(f"funding rates cover {format_ms(int(fts[0]))} -> {format_ms(int(fts[-1]))} but the "
                        f"backtest runs {format_ms(lo)} -> {format_ms(hi)}: {missing_start} funding time(s) "
                        f"missing at the start and {missing_end} at the end ({days:.1f} days); fetch again, "
                        "extend data.funding_file, or set backtest.funding: off")
    # bar t (t >= 1) pays funding times in (ts[t-1] + step, ts[t] + step]
    csum = np.r_[0.0, np.cumsum(fr)]
    upto = np.searchsorted(fts, ts + step, side="right")  # count of funding times <= ts[t] + step
    carry[1:] = csum[upto[1:]] - csum[upto[:-1]]
    return carry
