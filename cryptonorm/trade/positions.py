"""Positions and per-bar returns: what a backtest holds over each bar and what it earns after costs (pure numpy).

Timing is the one documented in cryptonorm.trade.backtest: a target decided at the close of bar t is the
position held over bar t+1.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from cryptonorm.config import BacktestConfig
from cryptonorm.timeframes import bars_per_year, timeframe_ms


def target_positions(
    timestamps: np.ndarray, close: np.ndarray, forecast: np.ndarray, cfg: BacktestConfig, timeframe: str,
    kind: str,
) -> np.ndarray:
    """(N,) position decided at the close of bar t from information up to t only (held over bar t+1)."""
    signal = forecast - 0.5 if kind == "direction" else forecast
    # NaN compares False: flat
    side = np.where(signal > cfg.threshold, 1.0, np.where(signal < -cfg.threshold, -1.0, 0.0))
    if not cfg.allow_short:
        side = np.maximum(side, 0.0)
    cap = cfg.max_leverage
    size: np.ndarray | float
    if cfg.sizing == "fixed":
        size = min(1.0, cap)
    elif cfg.sizing == "forecast":
        known = np.isfinite(signal)
        s = np.where(known, signal, 0.0)
        # expanding RMS of the signals known at close t (forecasts 0..t): the std around zero, so a
        # biased forecaster (always p ~ 0.55) is not blown up to the cap by a tiny spread
        rms = np.sqrt(np.cumsum(s * s) / np.maximum(np.cumsum(known), 1))
        size = np.divide(np.abs(s), rms, out=np.zeros_like(s), where=rms > 0)
    else:  # volatility
        vol = realized_vol(timestamps, close, cfg.vol_lookback, timeframe)
        vol_size = np.divide(cfg.target_vol, vol, out=np.full_like(vol, np.inf), where=vol > 0)
        vol_size[np.isnan(vol)] = 0.0  # not enough history yet: flat
        size = vol_size
    return np.clip(side * np.minimum(size, cap), -cap, cap) + 0.0  # + 0.0 turns -0.0 into 0.0


def realized_vol(timestamps: np.ndarray, close: np.ndarray, lookback: int, timeframe: str) -> np.ndarray:
    """(N,) annualized std (ddof=1) of the last `lookback` bar log returns up to and including bar t.

    A return across a gap is divided by sqrt(bars it spans) so an outage does not inflate the estimate.
    NaN until `lookback` returns exist.
    """
    step = timeframe_ms(timeframe)
    lr = np.full(len(close), np.nan)
    lr[1:] = np.log(close[1:] / close[:-1]) / np.sqrt(np.diff(timestamps) / step)
    std = pd.Series(lr).rolling(lookback, min_periods=lookback).std(ddof=1).to_numpy()
    return std * math.sqrt(bars_per_year(timeframe))


def run_positions(
    target: np.ndarray, bar_ret: np.ndarray, cost_rate: float, carry: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Targets decided at each close -> (position held, cost, strategy return, equity), all (N,).
    `carry` (N,): a per-bar rate each unit of position pays (a swap's funding, see trade/funding.py)."""
    pos = np.empty_like(target)
    pos[0] = 0.0
    pos[1:] = target[:-1]  # the last target is never traded: its bar is beyond the data
    cost = np.abs(np.diff(pos, prepend=0.0)) * cost_rate
    ret = pos * bar_ret - cost
    if carry is not None:
        ret -= pos * carry
    return pos, cost, ret, np.cumprod(1.0 + ret)
