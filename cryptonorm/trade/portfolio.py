"""A portfolio across a universe of coins: forecasts -> weights per coin -> returns after per-coin costs
and funding (pure numpy, no torch, no disk).

Arrays are (T, C): time by coin. The timing is the single-coin backtest's (trade/backtest.py): weights
decided at the close of bar t from forecast[t] are held over bar t+1; every weight is a fraction of the
equity at the start of the bar, and a trade costs |w[t] - w[t-1]| x (fee + slippage) of the equity:

    eligible[t, c]   coin c has a bar at t and a finite forecast
    target[t]        weights from forecast[t] over the eligible coins (below); on rows that are not a
                     rebalance (every `rebalance` bars from the first) the previous target is kept
    w[t]             = target[t-1]                          (row 0: 0, nothing is held before bar 0)
    r[t, c]          = close[t, c] / (c's previous close) - 1 where c has a bar at t, else 0: the change
                       across a coin's own gap is earned on the bar it comes back
    cost[t]          = sum_c |w[t, c] - w[t-1, c]| x rate_c   (rate_c: fee_bps of c or backtest.fee_bps, + slippage)
    ret[t]           = sum_c w[t, c] r[t, c] - cost[t] - sum_c w[t, c] funding[t, c]
    equity[t]        = equity[t-1] (1 + ret[t]),  equity[0] = 1
A coin without a bar at a rebalance (an outage, or delisted) gets weight 0 there: it is closed at its last
close. A coin listed later is not eligible before its first bar (no survivorship look-ahead).

Targets at t, n eligible coins, legs of m = k or max(1, floor(quantile x n)) coins (at most n // 2 per leg for
long_short), score = 1 (equal) or |forecast - the eligible coins' mean forecast| (forecast; top_k: |forecast|):
    long_short   long the m highest forecasts, short the m lowest; dollar_neutral: each leg's scores scaled
                 to gross / 2 (an empty leg: nothing held); otherwise all scores scaled to gross together
    long_only    the m highest, scaled to gross
    top_k        the k largest |forecast|, each on its forecast's side (0: none), scaled to gross
With one coin, top_k with k = 1 and equal weights is the single-coin backtest's fixed-size sign strategy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cryptonorm.config import BacktestConfig
from cryptonorm.config.universe import PortfolioConfig
from cryptonorm.errors import ConfigError, DataError
from cryptonorm.timeframes import format_ms
from cryptonorm.trade.performance import per_year, performance_of


@dataclass(frozen=True)
class PortfolioRun:
    """The result of `simulate_portfolio`: every (T, C) or (T,) series and the metrics."""

    weights: np.ndarray  # (T, C) w[t]: held over bar t
    bar_returns: np.ndarray  # (T, C) r[t]
    returns: np.ndarray  # (T,) ret[t] after costs and funding
    cost: np.ndarray  # (T,) cost[t]
    funding: np.ndarray  # (T,) funding charged in bar t (fraction of equity; < 0 = received)
    equity: np.ndarray  # (T,)
    metrics: dict[str, Any]


def leg_size(n: np.ndarray, p: PortfolioConfig) -> np.ndarray:
    """(T,) coins per leg at each t from the coins eligible there."""
    m = np.full(n.shape, p.k, dtype=np.int64) if p.k is not None else np.maximum(1, np.floor(p.quantile * n)).astype(
        np.int64)
    if p.kind == "long_short":
        m = np.minimum(m, n // 2)
    return np.minimum(m, n)


def target_weights(forecast: np.ndarray, eligible: np.ndarray, p: PortfolioConfig) -> np.ndarray:
    """(T, C) target weights decided at each close from that row's forecasts alone (see the docstring)."""
    f = np.where(eligible, forecast, np.nan)
    n = eligible.sum(axis=1)
    m = leg_size(n, p)[:, None]
    key = np.abs(f) if p.kind == "top_k" else f
    # position of each eligible coin from the top (0 = highest) and from the bottom; ties by column order
    desc = _positions(np.where(eligible, -key, np.inf))
    asc = _positions(np.where(eligible, key, np.inf))
    with np.errstate(invalid="ignore"):
        mean = np.where(n > 0, np.nansum(f, axis=1) / np.maximum(n, 1), 0.0)[:, None]
    if p.weights == "equal":
        score = np.where(eligible, 1.0, 0.0)
    else:
        score = np.nan_to_num(np.abs(f) if p.kind == "top_k" else np.abs(f - mean))
    longs = eligible & (desc < m)
    shorts = eligible & (asc < m) if p.kind == "long_short" else np.zeros_like(eligible)
    if p.kind == "top_k":
        sign = np.sign(np.nan_to_num(f))
        longs, shorts = longs & (sign > 0), longs & (sign < 0)
    lw, sw = np.where(longs, score, 0.0), np.where(shorts, score, 0.0)
    ls, ss = lw.sum(axis=1, keepdims=True), sw.sum(axis=1, keepdims=True)
    if p.kind == "long_short" and p.dollar_neutral:
        half = p.gross / 2.0
        both = (ls > 0) & (ss > 0)
        w = np.where(both, lw / np.where(ls > 0, ls, 1.0) * half - sw / np.where(ss > 0, ss, 1.0) * half, 0.0)
    else:
        tot = ls + ss
        w = np.where(tot > 0, (lw - sw) / np.where(tot > 0, tot, 1.0) * p.gross, 0.0)
    return w + 0.0  # no -0.0


def _positions(key: np.ndarray) -> np.ndarray:
    """(T, C) rank position of each entry in its row, ascending, ties by column (stable)."""
    order = np.argsort(key, axis=1, kind="stable")
    pos = np.empty_like(order)
    np.put_along_axis(pos, order, np.arange(key.shape[1])[None, :], axis=1)
    return pos


def hold_between_rebalances(target: np.ndarray, every: int) -> np.ndarray:
    """(T, C) the target of the last rebalance row (0, every, 2 every, ...) at or before each t."""
    if every == 1:
        return target
    rows = (np.arange(len(target)) // every) * every
    return target[rows]


def bar_returns(close: np.ndarray) -> np.ndarray:
    """(T, C) close / the coin's previous close - 1 where it has a bar (and one before), else 0."""
    present = np.isfinite(close)
    idx = np.where(present, np.arange(len(close))[:, None], -1)
    last = np.maximum.accumulate(idx, axis=0)  # (T, C) row of the last bar at or before t
    prev = np.full(close.shape, -1, dtype=np.int64)
    prev[1:] = last[:-1]
    cols = np.arange(close.shape[1])[None, :]
    prev_close = np.where(prev >= 0, close[np.maximum(prev, 0), cols], np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = close / prev_close - 1.0
    return np.where(present & (prev >= 0), r, 0.0)


def simulate_portfolio(timestamps: np.ndarray, close: np.ndarray, forecast: np.ndarray, cfg: BacktestConfig,
                       timeframe: str, symbols: list[str], *, funding: np.ndarray | None = None) -> PortfolioRun:
    """Backtest a portfolio of (T, C) forecasts on (T, C) closes (NaN: no bar); `funding` (T, C) per-bar rate
    each unit of weight pays (perpetuals; trade.funding.funding_per_bar per coin)."""
    p = cfg.portfolio if cfg.portfolio is not None else PortfolioConfig()
    ts, px, fc = _check(timestamps, close, forecast, symbols, p)
    present = np.isfinite(px)
    eligible = present & np.isfinite(fc)
    target = hold_between_rebalances(target_weights(fc, eligible, p), p.rebalance)
    if p.rebalance > 1:  # a held coin without a bar at a rebalance row is closed there
        rows = np.arange(len(ts)) % p.rebalance == 0
        target = np.where(rows[:, None] & ~eligible, 0.0, target)
    w = np.zeros_like(target)
    w[1:] = target[:-1]
    r = bar_returns(px)
    rate = np.array([p.fee_bps.get(s, cfg.fee_bps) + cfg.slippage_bps for s in symbols]) / 1e4  # (C,)
    turn = np.zeros_like(w)
    turn[1:] = np.abs(w[1:] - w[:-1])
    cost = (turn * rate[None, :]).sum(axis=1)
    carry = np.zeros_like(w) if funding is None else np.nan_to_num(np.asarray(funding, dtype="float64")) * w
    gross = (w * r).sum(axis=1)
    ret = gross - cost - carry.sum(axis=1)
    equity = np.cumprod(1.0 + ret)
    exposure = np.abs(w).sum(axis=1)
    metrics = performance_of(ret[1:], exposure[1:], cost[1:], ts, timeframe, equity=equity,
                             turnover=float(turn[1:].sum()))
    for k in ("trades", "win_rate"):  # a single position's notions; a book has none
        metrics.pop(k, None)
    contrib = w * r - turn * rate[None, :] - carry
    out: dict[str, Any] = {
        "strategy": metrics,
        "strategy_before_costs": performance_of(gross[1:], exposure[1:], None, ts, timeframe,
                                                equity=np.cumprod(1.0 + gross), turnover=float(turn[1:].sum())),
        "per_year": per_year(ts[1:], ret[1:], timeframe),
        "long_leg": float((np.where(w > 0, w * r, 0.0)).sum()),  # summed (not compounded) contributions
        "short_leg": float((np.where(w < 0, w * r, 0.0)).sum()),
        "per_coin": {s: float(contrib[:, i].sum()) for i, s in enumerate(symbols)},
        "mean_coins": float(eligible.sum(axis=1).mean()),
        "mean_gross": float(exposure[1:].mean()),
        "mean_net": float(w[1:].sum(axis=1).mean()),
        "funding_paid": float(carry.sum()),
        "portfolio": p.model_dump(mode="json"),
        "bars": len(ts), "start": format_ms(int(ts[0])), "end": format_ms(int(ts[-1])), "timeframe": timeframe,
    }
    return PortfolioRun(weights=w, bar_returns=r, returns=ret, cost=cost, funding=carry.sum(axis=1),
                        equity=equity, metrics=out)


def _check(timestamps: np.ndarray, close: np.ndarray, forecast: np.ndarray, symbols: list[str],
           p: PortfolioConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ts = np.asarray(timestamps, dtype="int64")
    px = np.asarray(close, dtype="float64")
    fc = np.asarray(forecast, dtype="float64")
    if px.ndim != 2 or px.shape != fc.shape or ts.shape != (px.shape[0],) or px.shape[1] != len(symbols):
        raise DataError(f"portfolio backtest: close {px.shape} and forecast {fc.shape} must be (T, C) for "
                        f"{len(ts)} timestamps and {len(symbols)} coins")
    if len(ts) < 2 or (np.diff(ts) <= 0).any():
        raise DataError("portfolio backtest needs at least 2 strictly increasing timestamps")
    bad = np.isfinite(px) & ~(px > 0)
    if bad.any():
        t, c = np.argwhere(bad)[0]
        raise DataError(f"{symbols[c]}: close must be > 0 (at {format_ms(int(ts[t]))}); clean its candles")
    unknown = [s for s in p.fee_bps if s not in symbols]
    if unknown:
        raise ConfigError(f"backtest.portfolio.fee_bps names {unknown[0]}, which is not in the universe; "
                          f"use one of {', '.join(symbols)}")
    check_k(p, int(np.isfinite(px).sum(axis=1).max()))
    return ts, px, fc


def check_k(p: PortfolioConfig, trading: int) -> None:
    """backtest.portfolio.k fits the most coins trading at once (`trading`): ConfigError if not."""
    if p.k is None:
        return
    most = trading // 2 if p.kind == "long_short" else trading
    if p.k > most:
        raise ConfigError(f"backtest.portfolio.k = {p.k} but at most {trading} coins trade at once "
                          f"({most} per leg for {p.kind}); lower backtest.portfolio.k to {max(most, 1)} or less")
