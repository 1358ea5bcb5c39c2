"""Forecasts -> positions -> returns after costs -> pure performance metrics. No torch, no disk I/O.

Timing (no look-ahead): forecast[t] is known at the close of bar t and sets the position held over bar
t+1 (close[t] -> close[t+1]); the trade is filled at close[t]. The equity frame has one row per bar and
is "as realized": row t holds the position held over bar t (decided from forecast[t-1]), the return of
bar t after the cost of the trade made at close[t-1] to get into that position, and the equity at
close[t]:

    position[t]        = size(forecast[t-1])                  (row 0: 0, nothing is held before bar 0)
    cost[t]            = |position[t] - position[t-1]| * (fee_bps + slippage_bps) / 1e4
    strategy_return[t] = position[t] * (close[t] / close[t-1] - 1) - cost[t]
    equity[t]          = equity[t-1] * (1 + strategy_return[t]),  equity[0] = 1

The cost is a fraction of the equity at close[t-1], when the trade is made (the notional was sized on
that equity), so subtracting it from the bar's return is exact, not an approximation. The last forecast
sets a position whose outcome lies beyond the data: it is not traded. An open position at the end is
marked to market at the last close, without an exit fee (buy-and-hold is treated the same way).

Gaps: a bar that does not directly follow the previous one (an exchange outage) is a real bar whose
return is the real price change across the outage, the position held through it. Such bars are counted
in `metrics["gap_bars"]`, never treated as ordinary.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from cryptonorm.config import BacktestConfig
from cryptonorm.errors import ConfigError, DataError
from cryptonorm.evaluate.forecast import forecast_metrics
from cryptonorm.timeframes import format_ms, timeframe_ms
from cryptonorm.trade.performance import drawdown, flat_performance, per_year, performance, performance_of
from cryptonorm.trade.positions import Book, book, realized_vol, ruin_row, target_positions, wipe_out
from cryptonorm.trade.trades import TRADE_COLUMNS, Trades, find_trades, trade_bounds, trade_frame, trade_returns

# the public names of the backtest, wherever they live (callers import them from here)
__all__ = ["EQUITY_COLUMNS", "KINDS", "TRADE_COLUMNS", "Backtest", "Trades", "add_funding", "drawdown", "find_trades",
           "per_year", "performance", "realized_vol", "run_metrics", "simulate", "target_positions"]

KINDS = ("return", "direction")
EQUITY_COLUMNS = ["timestamp", "close", "forecast", "position", "strategy_return", "equity", "bh_equity",
                  "cost", "gap"]


@dataclass(frozen=True)
class Backtest:
    """The result of `simulate`.

    equity: one row per bar, columns EQUITY_COLUMNS (see the module docstring for the timing); `cost`
        is the cost charged in the bar (fraction of equity), `gap` is True where the bar spans an outage.
    trades: one row per trade, columns TRADE_COLUMNS. A trade opens when the position goes from flat or
        from the other side to long or short, and closes when it goes flat or reverses; resizing inside a
        trade (forecast/volatility sizing) is not a new trade. Times are candle open times (ms, UTC, as
        in the candle frame); fills are at that candle's close. `size` is the mean |position| over the
        trade; `return` is the trade's compounded return after its costs (entry, resizes, exit; a
        reversal's cost is split between the trade it closes and the one it opens); `closed` is False for
        a trade still open at the end (marked to market, no exit fee).
    metrics: {"strategy", "buy_and_hold", "baselines": {"flat", "last_sign"}, "per_year", "costs",
        "forecast", "bars", "periods", "gap_bars", "missing_bars", ...}; serialize with `cryptonorm.atomic.json_safe`.
    """

    equity: pd.DataFrame
    trades: pd.DataFrame
    metrics: dict[str, Any]


# ---------------------------------------------------------------- entry point


def simulate(
    timestamps: np.ndarray,
    close: np.ndarray,
    forecast: np.ndarray,
    cfg: BacktestConfig,
    timeframe: str,
    kind: str,
    *,
    outcome: np.ndarray | None = None,
    forecast_stats: bool = True,
    funding: np.ndarray | None = None,
    threads: int = 1,
) -> Backtest:
    """Backtest forecasts on the bars they were made for (see the module docstring for the timing).

    kind "return": forecast is a return; long if > threshold, short if < -threshold, else flat.
    kind "direction": forecast is P(up); the signal p - 0.5 is compared with the threshold.
    NaN forecast -> flat. Sizing (cfg.sizing): "fixed" |position| = 1; "forecast" |signal| divided by
    the root-mean-square of the non-NaN signals known at the decision (forecasts 0..t, expanding, so no
    look-ahead); "volatility" target_vol / realized volatility of the last vol_lookback bars (annualized
    std of log returns, a return across a gap divided by sqrt(bars it spans); flat until vol_lookback
    returns exist). Every position is capped at cfg.max_leverage.
    `outcome` (optional, (N,)): the realized outcome of each forecast, for the forecast metrics (e.g.
    Prepared.outcome for horizon > 1); default: the next bar's log return. `forecast_stats=False` skips
    the forecast metrics (their two exact rankings are ~1/4 of the time on a million bars).
    `funding` (optional, (N,)): a perpetual swap's funding rate paid per unit of position in each bar
    (`trade.funding.funding_per_bar`); charged to the strategy and to the baselines that hold positions
    (not to the before-costs line), reported as `costs.funding_paid`, per year and in the equity frame.
    Raises ConfigError for a kind that cannot be traded, DataError for bad inputs; a backtest needs at
    least 2 bars (one bar to hold a position over), so a single-bar test set is a DataError.
    `threads=2` computes the forecast metrics on a second thread beside the simulation (the caller knows
    whether a core is free; the numbers are the same either way).
    """
    ts, px, fc, out = _check_inputs(timestamps, close, forecast, outcome, cfg, timeframe, kind)
    carry = None if funding is None else np.asarray(funding, dtype="float64")
    if carry is not None and carry.shape != px.shape:
        raise DataError(f"backtest: funding has shape {carry.shape}, the bars {px.shape}")
    if not forecast_stats:
        return _simulate(ts, px, fc, cfg, timeframe, kind, None, carry)
    if threads < 2:  # the same work in this thread
        return _simulate(ts, px, fc, cfg, timeframe, kind, partial(_forecast_metrics, fc, px, out, kind), carry)
    # the forecast metrics (two sorts on a million bars) run on a second thread beside the simulation: numpy
    # releases the GIL in sorts and ufuncs, so an idle core takes them (on busy cores two threads only contend)
    with ThreadPoolExecutor(max_workers=1) as pool:
        job = pool.submit(_forecast_metrics, fc, px, out, kind)
        return _simulate(ts, px, fc, cfg, timeframe, kind, job.result, carry)


def _simulate(
    ts: np.ndarray, px: np.ndarray, fc: np.ndarray, cfg: BacktestConfig, timeframe: str, kind: str,
    forecast: Callable[[], dict[str, float]] | None, carry: np.ndarray | None,
) -> Backtest:
    """simulate on checked inputs; `forecast()` gives the forecast metrics (None: skipped), `carry` is the
    funding per bar (None: spot)."""
    n_rows = len(px)
    step = timeframe_ms(timeframe)
    cost_rate = (cfg.fee_bps + cfg.slippage_bps) / 1e4

    bar_ret = np.empty(n_rows)  # (N,) close[t] / close[t-1] - 1, the real change across gaps too
    bar_ret[0] = 0.0
    np.divide(px[1:], px[:-1], out=bar_ret[1:])
    bar_ret[1:] -= 1.0
    spacing = np.diff(ts)
    gap = np.zeros(n_rows, dtype=bool)
    np.not_equal(spacing, step, out=gap[1:])

    # Each run's temporaries are released before the next run allocates, so that the memory is reused
    # rather than mapped afresh (page faults cost ~10% of a million-bar backtest).
    run = book(target_positions(ts, px, fc, cfg, timeframe, kind), bar_ret, cost_rate, carry)  # decided at close t
    strategy, gross, trades = _strategy_metrics(run, ts, timeframe)
    bh_ret, bh_factor, bh_eq, bh_metrics = _buy_and_hold(bar_ret, ts, cost_rate, timeframe, carry)
    years = per_year(ts[1:], run.ret[1:], timeframe, factor=run.factor[1:], bh_factor=bh_factor[1:])
    pos, cost, ret, eq, ruin = run.pos, run.cost, run.ret, run.equity, run.ruin
    del run, bh_factor, bh_ret
    metrics: dict[str, Any] = {
        "strategy": strategy,
        "strategy_before_costs": gross,
        "buy_and_hold": bh_metrics,
        "baselines": {"flat": flat_performance(n_rows - 1, ts),
                      "last_sign": _last_sign(bar_ret, ts, cfg, timeframe, carry)},
        "per_year": years,
        "costs": {"fee_bps": cfg.fee_bps, "slippage_bps": cfg.slippage_bps,
                  "bps_per_side": cfg.fee_bps + cfg.slippage_bps, "fees_paid": strategy["fees_paid"]},
        "forecast": forecast() if forecast else {},
        "bars": n_rows,
        "periods": n_rows - 1,
        "gap_bars": int(np.count_nonzero(gap)),
        "missing_bars": int(np.maximum(spacing[gap[1:]] // step - 1, 0).sum()),  # only gaps can miss bars
        "timeframe": timeframe,
        "kind": kind,
        "sizing": cfg.sizing,
        "start": format_ms(int(ts[0])),
        "end": format_ms(int(ts[-1])),
        "ruin": ruin_info(ruin, ts),
    }
    if carry is not None:
        add_funding(metrics, ts, pos * carry, eq, np.r_[0.0, carry[1:]], bh_eq)  # buy-and-hold: 0, then 1
    # copy=False: every array is this function's own (the inputs were copied by _check_inputs)
    columns = {"timestamp": ts, "close": px, "forecast": fc, "position": pos, "strategy_return": ret,
               "equity": eq, "bh_equity": bh_eq, "cost": cost, "gap": gap}
    if carry is not None:
        columns["funding"] = pos * carry  # the funding charged in the bar (fraction of equity; < 0 = received)
    equity = pd.DataFrame(columns, copy=False)
    size = min(1.0, cfg.max_leverage) if cfg.sizing == "fixed" else None  # every trade's |position|
    return Backtest(equity=equity, trades=trade_frame(ts, px, pos, trades, size=size), metrics=metrics)


def ruin_info(row: int | None, ts: np.ndarray) -> dict[str, Any] | None:
    """metrics["ruin"]: where the strategy's equity was wiped out ({"bar", "time"}; it stays 0 after), or None."""
    return None if row is None else {"bar": row, "time": format_ms(int(ts[row]))}


def run_metrics(run: Book, ts: np.ndarray, timeframe: str) -> tuple[dict[str, float], Trades]:
    """(performance metrics after costs and funding, trades) of one run, from the series `book` computed."""
    held = run.pos[1:]  # row 0 is the start, not a bar held
    first, last = trade_bounds(held)
    trades = Trades(first, last, trade_returns(held, run.ret[1:], run.cost[1:], first, last, factor=run.factor[1:],
                                               turn=run.turn[1:]))
    return performance_of(run.ret[1:], held, run.cost[1:], ts, timeframe, trades, equity=run.equity,
                          turnover=float(run.turn[1:].sum())), trades


def _strategy_metrics(run: Book, ts: np.ndarray, timeframe: str) -> tuple[dict[str, float], dict[str, float], Trades]:
    """(metrics after costs, metrics before costs and funding, trades) of one run: the two share the
    positions, hence the trades' bounds, the turnover and the exposure."""
    strategy, trades = run_metrics(run, ts, timeframe)
    held, first, last = run.pos[1:], trades.first, trades.last
    factor = run.gross + 1.0  # row 0: 1
    ret = run.gross
    if ruin_row(factor) is not None:  # without costs a leveraged run can be wiped out too (at another bar)
        ret = run.gross.copy()
        wipe_out(factor, ret)
    gross_trades = Trades(first, last, trade_returns(held, ret[1:], None, first, last, factor=factor[1:]))
    equity = np.cumprod(factor, out=factor)  # the factors are spent: the equity takes their memory
    gross = performance_of(ret[1:], held, None, ts, timeframe, gross_trades, equity=equity,
                           turnover=float(run.turn[1:].sum()))
    return strategy, gross, trades


def check_arrays(timestamps: np.ndarray, close: np.ndarray, forecast: np.ndarray,
                 timeframe: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """simulate's array checks alone (ts int64, close float64, forecast float64; copies), for other
    strategies on the same bars (trade/vol_target.py)."""
    ts, px, fc, _ = _check_inputs(timestamps, close, forecast, None, BacktestConfig(), timeframe, "return")
    return ts, px, fc


def _buy_and_hold(
    bar_ret: np.ndarray, ts: np.ndarray, cost_rate: float, timeframe: str, carry: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, float]]:
    """Long 1 from the close of the first bar (row 1 on): one entry fee, funding on every bar, no exit ->
    (returns (N,), 1 + returns (N,), equity (N,), metrics), from the bar returns without a position array."""
    bh_ret = bar_ret.copy()
    bh_ret[1] -= cost_rate
    if carry is not None:
        bh_ret[1:] -= carry[1:]
    bh_factor = bh_ret + 1.0
    bh_eq = np.cumprod(bh_factor)
    bh_cost = np.zeros(len(bar_ret) - 1)
    bh_cost[0] = cost_rate
    # a single trade over every bar held, its entry fee wholly its own and no exit: its return is the final
    # equity's (the same sequential product as trade_returns would take)
    one = np.zeros(1, dtype=np.int64)
    bh_trades = Trades(one, one + len(bar_ret) - 2, bh_eq[-1:] - 1.0)
    return bh_ret, bh_factor, bh_eq, performance_of(bh_ret[1:], None, bh_cost, ts, timeframe, bh_trades,
                                                    equity=bh_eq, turnover=1.0)


def _last_sign(
    bar_ret: np.ndarray, ts: np.ndarray, cfg: BacktestConfig, timeframe: str, carry: np.ndarray | None,
) -> dict[str, float]:
    """The last-sign baseline's metrics: long (short) over the next bar after a bar that went up (down)."""
    target = np.sign(bar_ret)  # sign of the bar's own return, known at its close
    if not cfg.allow_short:
        np.maximum(target, 0.0, out=target)
    target *= min(1.0, cfg.max_leverage)
    run = book(target, bar_ret, (cfg.fee_bps + cfg.slippage_bps) / 1e4, carry)
    del target
    return run_metrics(run, ts, timeframe)[0]


def add_funding(metrics: dict[str, Any], ts: np.ndarray, charge: np.ndarray, eq: np.ndarray,
                bh_charge: np.ndarray, bh_eq: np.ndarray) -> None:
    """Funding paid in units of the starting equity (sum charge_t x E_{t-1}, as fees_paid), total and per
    calendar year, for the strategy and buy-and-hold."""
    prev = np.r_[1.0, eq[:-1]]
    paid = charge * prev
    metrics["costs"]["funding_paid"] = float(paid.sum())
    metrics["costs"]["bh_funding_paid"] = float((bh_charge * np.r_[1.0, bh_eq[:-1]]).sum())
    years = ts.astype("datetime64[ms]").astype("datetime64[Y]").astype("int64") + 1970
    for row in metrics["per_year"]:  # per_year rows are keyed by the year of each bar's open time (rows 1..)
        row["funding_paid"] = float(paid[1:][years[1:] == row["year"]].sum())


def _check_inputs(
    timestamps: np.ndarray, close: np.ndarray, forecast: np.ndarray, outcome: np.ndarray | None,
    cfg: BacktestConfig, timeframe: str, kind: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Every check of simulate's inputs, once; helpers below assume valid inputs."""
    if kind == "volatility":
        raise ConfigError("target.kind 'volatility' forecasts volatility, not direction: the direction strategy "
                          "needs target.kind 'return' or 'direction'; backtest a volatility forecast with "
                          "backtest.mode 'vol_target'")
    if kind not in KINDS:
        raise ConfigError(f"backtest: kind {kind!r} is unknown; allowed: return, direction")
    if kind == "direction" and cfg.threshold >= 0.5:
        raise ConfigError(f"backtest.threshold={cfg.threshold:g} can never be exceeded by p - 0.5 with "
                          "target.kind 'direction'; use a threshold below 0.5")
    timeframe_ms(timeframe)  # DataError if malformed
    ts = np.asarray(timestamps)
    if np.issubdtype(ts.dtype, np.datetime64):
        ts = ts.astype("datetime64[ms]").astype("int64")
    try:  # copies: the result must not share memory with the caller's arrays
        ts = ts.astype("int64", copy=True)
        px = np.array(close, dtype="float64")
        fc = np.array(forecast, dtype="float64")
        out = None if outcome is None else np.asarray(outcome, dtype="float64")
    except (TypeError, ValueError) as e:
        raise DataError(f"backtest: timestamps, close and forecast must be numeric arrays ({e})") from None
    shapes = {"timestamps": ts.shape, "close": px.shape, "forecast": fc.shape}
    if out is not None:
        shapes["outcome"] = out.shape
    if len(set(shapes.values())) != 1 or ts.ndim != 1:
        raise DataError("backtest: timestamps, close and forecast must be 1-D arrays of the same length, got "
                        + ", ".join(f"{k} {v}" for k, v in shapes.items()))
    if len(ts) < 2:
        raise DataError(f"backtest needs at least 2 bars (one bar to hold a position over), got {len(ts)}; "
                        "enlarge the test split")
    spacing = np.diff(ts)
    if spacing.min() <= 0:
        i = int(np.argmax(spacing <= 0)) + 1
        raise DataError(f"backtest: timestamps must be strictly increasing (row {i}: {format_ms(int(ts[i]))}); "
                        "sort and deduplicate the candles")
    if not (px.min() > 0 and np.isfinite(px.max())):  # NaN fails both; two reductions, no temporaries
        i = int(np.argmax(~(np.isfinite(px) & (px > 0))))
        raise DataError(f"backtest: close must be finite and > 0 (row {i} is {float(px[i])}); clean the candles")
    if np.isinf(fc).any():
        raise DataError(f"backtest: {int(np.isinf(fc).sum())} forecast(s) are infinite; use NaN for 'no forecast'")
    if kind == "direction" and np.any((fc < 0) | (fc > 1)):  # NaN compares False
        raise DataError("backtest: target.kind 'direction' needs probabilities in [0, 1]; got values outside")
    return ts, px, fc, out


def _forecast_metrics(fc: np.ndarray, close: np.ndarray, outcome: np.ndarray | None, kind: str) -> dict[str, float]:
    """Forecast quality (metrics.forecast_metrics) against realized outcomes, on the bars that have both.

    Default outcome of forecast[t]: the log return of bar t+1 (for "direction": 1 if it is > 0, else 0).
    """
    if outcome is None:
        outcome = np.empty(len(fc))
        np.log(np.divide(close[1:], close[:-1], out=outcome[:-1]), out=outcome[:-1])
        outcome[-1] = np.nan
    ok = np.isfinite(fc)
    ok &= np.isfinite(outcome)
    known = int(np.count_nonzero(ok))
    if known == len(ok) or (known == len(ok) - 1 and not ok[-1]):  # the usual case: views, no copies
        pred, y = fc[:known], outcome[:known]
    else:
        pred, y = fc[ok], outcome[ok]
    if kind == "direction" and not np.isin(y, (0.0, 1.0)).all():
        y = (y > 0).astype("float64")  # a return outcome -> up / not up
    return forecast_metrics(pred, y, kind)
