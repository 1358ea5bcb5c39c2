"""Backtest of a volatility forecast (`backtest.mode: vol_target`): hold the underlying at a target risk.

At the close of bar t the strategy sets its long position to

    position = min(target_vol / forecast_vol[t], max_leverage),   forecast_vol = sqrt(f[t] x P)

(f[t] the forecast per-bar variance, P = bars per year: annualized), held over bar t+1 with the timing,
fees and slippage of cryptonorm.trade.backtest (a NaN forecast holds nothing). Beside it, on the same bars
and costs: the same sizing driven by the trailing realized vol (`trailing_vol`, annualized, known at t;
cryptonorm.trade.positions.realized_vol over backtest.vol_lookback bars), and buy-and-hold (position 1).
On a perpetual swap each of the three pays the funding of the positions it holds, as in trade/backtest.py.

Each gets the performance metrics of trade/performance.py plus its risk tracking:
    target_vol            the target (annualized)
    vol_ratio             realized volatility / target_vol (1 = on target over the whole test)
    risk_tracking_error   root mean square of (realized vol - target_vol) over consecutive 30-day
                          windows (realized vol annualized within each window): how far risk strays
    windows               how many 30-day windows that is
A better volatility forecast should show as a lower risk tracking error; Sharpe is reported beside it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from cryptonorm.config import BacktestConfig
from cryptonorm.errors import DataError
from cryptonorm.timeframes import bars_per_year, format_ms, timeframe_ms
from cryptonorm.trade.backtest import Backtest, add_funding, check_arrays, ruin_info, run_metrics
from cryptonorm.trade.performance import per_year
from cryptonorm.trade.positions import Book, book
from cryptonorm.trade.trades import Trades, trade_frame

WINDOW_DAYS = 30


def vol_target_positions(vol_ann: np.ndarray, target_vol: float, max_leverage: float) -> np.ndarray:
    """(N,) long position target_vol / vol capped at max_leverage; 0 where vol is NaN (no forecast)."""
    size = np.divide(target_vol, vol_ann, out=np.full_like(vol_ann, np.inf), where=vol_ann > 0)
    size[~np.isfinite(vol_ann)] = 0.0
    return np.minimum(size, max_leverage)


def risk_tracking(returns: np.ndarray, target_vol: float, timeframe: str) -> dict[str, float]:
    """vol_ratio and risk_tracking_error (module docstring) of per-bar returns (n,)."""
    P = bars_per_year(timeframe)
    w = max(2, round(WINDOW_DAYS * P / 365.0))
    r = np.asarray(returns, dtype="float64")
    k = len(r) // w
    out = {"target_vol": target_vol, "vol_ratio": math.nan, "risk_tracking_error": math.nan, "windows": float(k)}
    if len(r) > 1:
        out["vol_ratio"] = float(np.std(r, ddof=1) * math.sqrt(P)) / target_vol
    if k:
        vols = np.std(r[: k * w].reshape(k, w), axis=1, ddof=1) * math.sqrt(P)  # (k,) per window
        out["risk_tracking_error"] = float(np.sqrt(np.mean((vols - target_vol) ** 2)))
    return out


def simulate_vol_target(timestamps: np.ndarray, close: np.ndarray, forecast_var: np.ndarray,
                        cfg: BacktestConfig, timeframe: str, *, trailing_vol: np.ndarray | None = None,
                        funding: np.ndarray | None = None) -> Backtest:
    """Backtest the forecast variances (per bar) as a volatility-targeting strategy (module docstring).

    `trailing_vol` (N,) the annualized trailing realized vol known at each bar (default: computed from
    these bars alone, so the first vol_lookback bars of that baseline are flat). `funding` (N,): a swap's
    funding rate per unit of position in each bar (trade.funding.funding_per_bar), charged to the strategy,
    the trailing-vol baseline and buy-and-hold, reported as in trade.backtest.simulate. DataError for bad
    inputs or a negative forecast variance.
    """
    ts, px, fvar, tv, carry = _check(timestamps, close, forecast_var, cfg, timeframe, trailing_vol, funding)
    P = bars_per_year(timeframe)
    n = len(px)
    bar_ret = np.zeros(n)
    bar_ret[1:] = px[1:] / px[:-1] - 1.0
    cost_rate = (cfg.fee_bps + cfg.slippage_bps) / 1e4
    fvol = np.sqrt(fvar * P)  # (N,) annualized forecast vol, NaN where no forecast

    def run(target: np.ndarray) -> tuple[dict[str, Any], Book, Trades]:
        b = book(target, bar_ret, cost_rate, carry)
        perf, trades = run_metrics(b, ts, timeframe)
        perf.update(risk_tracking(b.ret[1:], cfg.target_vol, timeframe))
        perf["mean_position"] = float(np.mean(b.pos[1:]))
        return perf, b, trades

    strategy, sb, trades = run(vol_target_positions(fvol, cfg.target_vol, cfg.max_leverage))
    trailing, _, _ = run(vol_target_positions(tv, cfg.target_vol, cfg.max_leverage))
    bh, bhb, _ = run(np.ones(n))
    pos, cost, ret, eq, bh_ret, bh_eq = sb.pos, sb.cost, sb.ret, sb.equity, bhb.ret, bhb.equity
    step = timeframe_ms(timeframe)
    gap = np.zeros(n, dtype=bool)
    gap[1:] = np.diff(ts) != step
    metrics: dict[str, Any] = {
        "strategy": strategy,
        "buy_and_hold": bh,
        "baselines": {"trailing_vol": trailing},
        "per_year": per_year(ts[1:], ret[1:], timeframe, bh_returns=bh_ret[1:]),
        "costs": {"fee_bps": cfg.fee_bps, "slippage_bps": cfg.slippage_bps,
                  "bps_per_side": cfg.fee_bps + cfg.slippage_bps, "fees_paid": strategy["fees_paid"]},
        "forecast": {"mean_forecast_vol": float(np.nanmean(fvol)) if np.isfinite(fvol).any() else math.nan,
                     "bars_without_forecast": int(np.sum(~np.isfinite(fvol)))},
        "bars": n, "periods": n - 1, "gap_bars": int(gap.sum()),
        "missing_bars": int(np.maximum(np.diff(ts) // step - 1, 0).sum()),
        "timeframe": timeframe, "kind": "volatility", "mode": "vol_target", "sizing": "vol_target",
        "target_vol": cfg.target_vol, "max_leverage": cfg.max_leverage, "vol_lookback": cfg.vol_lookback,
        "start": format_ms(int(ts[0])), "end": format_ms(int(ts[-1])), "ruin": ruin_info(sb.ruin, ts),
    }
    columns = {"timestamp": ts, "close": px, "forecast": fvol, "position": pos, "strategy_return": ret,
               "equity": eq, "bh_equity": bh_eq, "cost": cost, "gap": gap}
    if carry is not None:
        add_funding(metrics, ts, pos * carry, eq, np.r_[0.0, carry[1:]], bh_eq)  # buy-and-hold: 0, then 1
        columns["funding"] = pos * carry  # the funding charged in the bar (fraction of equity; < 0 = received)
    equity = pd.DataFrame(columns, copy=False)
    return Backtest(equity=equity, trades=trade_frame(ts, px, pos, trades), metrics=metrics)


def _check(timestamps: np.ndarray, close: np.ndarray, forecast_var: np.ndarray, cfg: BacktestConfig, timeframe: str,
           trailing_vol: np.ndarray | None, funding: np.ndarray | None,
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """simulate_vol_target's inputs checked and as float64 arrays: (ts, close, forecast variance, trailing vol
    (computed from these bars when None), funding or None)."""
    ts, px, fvar = check_arrays(timestamps, close, forecast_var, timeframe)
    carry = None if funding is None else np.asarray(funding, dtype="float64")
    if carry is not None and carry.shape != px.shape:
        raise DataError(f"vol_target backtest: funding has shape {carry.shape}, the bars {px.shape}")
    if np.any(fvar < 0):  # NaN compares False
        raise DataError(f"vol_target backtest: {int(np.sum(fvar < 0))} forecast variance(s) are negative; a "
                        "variance forecast must be >= 0 (NaN for 'no forecast')")
    if trailing_vol is None:
        from cryptonorm.trade.positions import realized_vol

        trailing_vol = realized_vol(ts, px, cfg.vol_lookback, timeframe)
    tv = np.asarray(trailing_vol, dtype="float64")
    if tv.shape != (len(px),):
        raise DataError(f"vol_target backtest: trailing_vol must have {len(px)} values, got {tv.shape}")
    return ts, px, fvar, tv, carry
