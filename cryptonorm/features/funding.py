"""Features from a perpetual swap's funding rates, aligned without look-ahead.

A funding rate is known from its funding time T on. The features of bar t are computed at its close
(ts[t] + step, ts = candle open times) from the rates with T strictly before that close:

    funding_rate        the latest known rate
    funding_mean_{n}    mean of the last n known rates (n funding events, e.g. 3 = one day at 8 h)
    funding_z_{n}       (funding_rate - funding_mean_{n}) / population std of those n rates; 0 if flat

Bars before n rates are known are NaN (counted as warm-up/nan by `dataset.prepare`). `cryptonorm audit`
checks the alignment: it cuts candles AND funding rates at the same time and compares.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

FLAT = 1e-12  # a window whose std is below FLAT x mean |rate| counts as flat (z = 0)


def funding_features(timestamps: np.ndarray, step: int, funding: pd.DataFrame,
                     periods: list[int]) -> dict[str, np.ndarray]:
    """{name: (N,) float64} for bars with open times `timestamps` (see the module docstring)."""
    ts = np.asarray(timestamps, dtype="int64")
    fts = funding["timestamp"].to_numpy("int64")
    fr = funding["rate"].to_numpy("float64")
    # k[t] = number of rates with T < close of bar t; the latest known one is fr[k - 1]
    k = np.searchsorted(fts, ts + step, side="left")
    out: dict[str, np.ndarray] = {}
    latest = np.full(len(ts), np.nan)
    known = k > 0
    latest[known] = fr[k[known] - 1]
    out["funding_rate"] = latest
    for n in periods:
        mean = np.full(len(ts), np.nan)
        z = np.full(len(ts), np.nan)
        if len(fr) >= n:
            win = sliding_window_view(fr, n)  # (M - n + 1, n): window j holds rates j .. j+n-1
            w_mean = win.mean(axis=1)
            w_sd = np.sqrt(((win - w_mean[:, None]) ** 2).mean(axis=1))  # two-pass, population std
            ok = k >= n
            j = k[ok] - n  # the window ending at the latest known rate
            mean[ok] = w_mean[j]
            sd = w_sd[j]
            flat = sd <= FLAT * np.maximum(np.abs(w_mean[j]), 1e-12)
            z[ok] = np.where(flat, 0.0, (latest[ok] - w_mean[j]) / np.where(flat, 1.0, sd))
        out[f"funding_mean_{n}"] = mean
        out[f"funding_z_{n}"] = z
    return out
