"""Positions and per-bar returns: what a backtest holds over each bar and what it earns after costs (pure numpy).

Timing is the one documented in cryptonorm.trade.backtest: a target decided at the close of bar t is the
position held over bar t+1.
"""

from __future__ import annotations

import math
from typing import NamedTuple

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
    # side 1 / -1 / 0 (threshold >= 0, so at most one test holds; NaN compares False: flat)
    side = (signal > cfg.threshold).astype("float64")
    if cfg.allow_short:
        side -= signal < -cfg.threshold
    cap = cfg.max_leverage
    size: np.ndarray | float
    if cfg.sizing == "fixed":  # side x size is within the cap already: no clip, and +0.0 keeps no -0.0
        side *= min(1.0, cap)
        return side
    if cfg.sizing == "forecast":
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


class Book(NamedTuple):
    """One strategy run over the bars, every array (N,) per row (row 0: the start, nothing held)."""

    pos: np.ndarray  # position held over the bar
    turn: np.ndarray  # |pos[t] - pos[t-1]|, the notional traded at close[t-1]
    cost: np.ndarray  # turn x cost rate (fraction of equity)
    gross: np.ndarray  # pos x bar return: the return before costs and funding
    ret: np.ndarray  # gross - cost - pos x carry: the strategy return
    factor: np.ndarray  # 1 + ret
    equity: np.ndarray  # cumprod(factor), equity[0] = 1
    ruin: int | None = None  # the row at whose close the equity was wiped out (0 from there on), or None


def book(target: np.ndarray, bar_ret: np.ndarray, cost_rate: float, carry: np.ndarray | None = None) -> Book:
    """Targets decided at each close -> every per-bar series of the run (see Book), each computed once so
    that the metrics of the strategy and of its cost-free twin share them.
    `carry` (N,): a per-bar rate each unit of position pays (a swap's funding, see trade/funding.py)."""
    n = len(target)
    pos = np.empty(n)
    pos[0] = 0.0
    pos[1:] = target[:-1]  # the last target is never traded: its bar is beyond the data
    turn = np.empty(n)
    turn[0] = 0.0  # |pos[0] - 0|: the start is flat
    np.subtract(pos[1:], pos[:-1], out=turn[1:])
    np.abs(turn, out=turn)
    cost = turn * cost_rate
    gross = pos * bar_ret
    ret = gross - cost
    if carry is not None:
        ret -= pos * carry
    factor = ret + 1.0
    ruin = wipe_out(factor, pos, turn, cost, gross, ret)
    return Book(pos, turn, cost, gross, ret, factor, np.cumprod(factor), ruin)


def ruin_row(factor: np.ndarray) -> int | None:
    """The first row whose return loses the whole equity or more (1 + return <= 0), or None."""
    bust = factor <= 0.0
    return int(np.argmax(bust)) if bust.any() else None


def wipe_out(factor: np.ndarray, *after: np.ndarray) -> int | None:
    """A run whose equity is wiped out stops there: the row's factor becomes 0 (its return -1: the loss
    beyond the equity is not carried as negative equity) and every later row holds nothing (factor 1, 0 in
    each array of `after`, the return of the ruin row set to -1 in the last one), so the equity stays at 0.
    Returns the ruin row, or None (nothing changed: every run that is not ruined keeps its numbers)."""
    t = ruin_row(factor)
    if t is None:
        return None
    factor[t] = 0.0
    factor[t + 1:] = 1.0
    for a in after:
        a[t + 1:] = 0.0
    if after:
        after[-1][t] = -1.0
    return t
