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

import math
import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from cryptonorm.config import BacktestConfig
from cryptonorm.errors import ConfigError, DataError
from cryptonorm.timeframes import bars_per_year, format_ms, timeframe_ms
from cryptonorm.trade.metrics import forecast_metrics

DAY_MS = 86_400_000
YEAR_MS = 365 * DAY_MS  # crypto trades every day; the same year as bars_per_year
KINDS = ("return", "direction")
EQUITY_COLUMNS = ["timestamp", "close", "forecast", "position", "strategy_return", "equity", "bh_equity",
                  "cost", "gap"]
TRADE_COLUMNS = ["entry_time", "exit_time", "side", "size", "entry_price", "exit_price", "return",
                 "bars_held", "closed"]


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
        "forecast", "bars", "periods", "gap_bars", "missing_bars", ...}; serialize with `to_json_safe`.
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
    the forecast metrics (their rank correlation is most of the time on a million bars).
    Raises ConfigError for a kind that cannot be traded, DataError for bad inputs; a backtest needs at
    least 2 bars (one bar to hold a position over), so a single-bar test set is a DataError.
    """
    ts, px, fc, out = _check_inputs(timestamps, close, forecast, outcome, cfg, timeframe, kind)
    n_rows = len(px)
    step = timeframe_ms(timeframe)
    cost_rate = (cfg.fee_bps + cfg.slippage_bps) / 1e4

    bar_ret = np.zeros(n_rows)  # (N,) close[t] / close[t-1] - 1, the real change across gaps too
    bar_ret[1:] = px[1:] / px[:-1] - 1.0
    gap = np.zeros(n_rows, dtype=bool)
    gap[1:] = np.diff(ts) != step

    target = target_positions(ts, px, fc, cfg, timeframe, kind)  # decided at close t
    pos, cost, ret, eq = _run(target, bar_ret, cost_rate)

    # baselines on the same bars and costs
    bh_target = np.ones(n_rows)  # long 1 from the close of the first bar: one entry fee
    bh_pos, bh_cost, bh_ret, bh_eq = _run(bh_target, bar_ret, cost_rate)
    ls_size = min(1.0, cfg.max_leverage)
    ls_target = np.sign(bar_ret) * ls_size  # sign of the bar's own return, known at its close
    if not cfg.allow_short:
        ls_target = np.maximum(ls_target, 0.0)
    ls_pos, ls_cost, ls_ret, _ = _run(ls_target, bar_ret, cost_rate)

    def perf(r: np.ndarray, p: np.ndarray, c: np.ndarray, tr: Trades | None = None) -> dict[str, float]:
        return _performance(r[1:], p[1:], c[1:], ts, timeframe, tr)  # row 0 is the start, not a bar held

    gross_pos, gross_cost, gross_ret, _ = _run(target, bar_ret, 0.0)  # the same positions, no costs

    zeros = np.zeros(n_rows)
    trades = find_trades(pos[1:], ret[1:], cost[1:])
    strategy = perf(ret, pos, cost, trades)
    metrics: dict[str, Any] = {
        "strategy": strategy,
        "strategy_before_costs": perf(gross_ret, gross_pos, gross_cost),
        "buy_and_hold": perf(bh_ret, bh_pos, bh_cost),
        "baselines": {"flat": perf(zeros, zeros, zeros), "last_sign": perf(ls_ret, ls_pos, ls_cost)},
        "per_year": per_year(ts[1:], ret[1:], timeframe, bh_returns=bh_ret[1:]),
        "costs": {"fee_bps": cfg.fee_bps, "slippage_bps": cfg.slippage_bps,
                  "bps_per_side": cfg.fee_bps + cfg.slippage_bps, "fees_paid": strategy["fees_paid"]},
        "forecast": _forecast_metrics(fc, px, out, kind) if forecast_stats else {},
        "bars": n_rows,
        "periods": n_rows - 1,
        "gap_bars": int(gap.sum()),
        "missing_bars": int(np.maximum(np.diff(ts) // step - 1, 0).sum()),
        "timeframe": timeframe,
        "kind": kind,
        "sizing": cfg.sizing,
        "start": format_ms(int(ts[0])),
        "end": format_ms(int(ts[-1])),
    }
    # copy=False: every array is this function's own (the inputs were copied by _check_inputs)
    equity = pd.DataFrame({"timestamp": ts, "close": px, "forecast": fc, "position": pos, "strategy_return": ret,
                           "equity": eq, "bh_equity": bh_eq, "cost": cost, "gap": gap}, copy=False)
    return Backtest(equity=equity, trades=_trade_frame(ts, px, pos, trades), metrics=metrics)


def _check_inputs(
    timestamps: np.ndarray, close: np.ndarray, forecast: np.ndarray, outcome: np.ndarray | None,
    cfg: BacktestConfig, timeframe: str, kind: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Every check of simulate's inputs, once; helpers below assume valid inputs."""
    if kind == "volatility":
        raise ConfigError("target.kind 'volatility' forecasts volatility, not direction: backtesting needs "
                          "target.kind 'return' or 'direction'")
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
    if np.any(np.diff(ts) <= 0):
        i = int(np.argmax(np.diff(ts) <= 0)) + 1
        raise DataError(f"backtest: timestamps must be strictly increasing (row {i}: {format_ms(int(ts[i]))}); "
                        "sort and deduplicate the candles")
    if not np.all(np.isfinite(px) & (px > 0)):
        i = int(np.argmax(~(np.isfinite(px) & (px > 0))))
        raise DataError(f"backtest: close must be finite and > 0 (row {i} is {float(px[i])}); clean the candles")
    if np.isinf(fc).any():
        raise DataError(f"backtest: {int(np.isinf(fc).sum())} forecast(s) are infinite; use NaN for 'no forecast'")
    if kind == "direction" and np.any((fc < 0) | (fc > 1)):  # NaN compares False
        raise DataError("backtest: target.kind 'direction' needs probabilities in [0, 1]; got values outside")
    return ts, px, fc, out


# ---------------------------------------------------------------- positions and returns


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


def _run(
    target: np.ndarray, bar_ret: np.ndarray, cost_rate: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Targets decided at each close -> (position held, cost, strategy return, equity), all (N,)."""
    pos = np.empty_like(target)
    pos[0] = 0.0
    pos[1:] = target[:-1]  # the last target is never traded: its bar is beyond the data
    cost = np.abs(np.diff(pos, prepend=0.0)) * cost_rate
    ret = pos * bar_ret - cost
    return pos, cost, ret, np.cumprod(1.0 + ret)


# ---------------------------------------------------------------- trades


class Trades(NamedTuple):
    """Trades found in per-bar arrays (bars held, row 0 excluded): index of the first and last bar held."""

    first: np.ndarray  # (K,) int64
    last: np.ndarray  # (K,) int64
    returns: np.ndarray  # (K,) compounded return after the trade's own costs


def find_trades(positions: np.ndarray, returns: np.ndarray, fees: np.ndarray) -> Trades:
    """Runs of constant non-zero side in `positions` (which start flat) and their returns after costs.

    A bar's cost may include the exit of the previous trade (a reversal): there |dpos| = |old| + |new|,
    so each trade takes the share |its position| / |dpos|. With no reversal a trade's return is exactly
    the equity change from before its entry fee to after its exit fee.
    """
    pos = positions
    n = len(pos)
    side = np.sign(pos)
    changed = np.empty(n, dtype=bool)  # side differs from the bar before (flat before the first bar)
    changed[0] = side[0] != 0
    np.not_equal(side[1:], side[:-1], out=changed[1:])
    in_mkt = side != 0
    first = np.flatnonzero(changed & in_mkt)
    ends_before = np.empty(n, dtype=bool)  # side differs from the bar after (or it is the last bar)
    ends_before[-1] = True
    ends_before[:-1] = changed[1:]
    last = np.flatnonzero(ends_before & in_mkt)
    if len(first) == 0:
        return Trades(first, last, np.zeros(0))
    prev = np.where(first > 0, pos[first - 1], 0.0)
    dpos_in = np.abs(pos[first] - prev)  # > 0: the side changed
    share_in = fees[first] * np.abs(pos[first]) / dpos_in
    after = last + 1
    exit_share = np.zeros(len(last))
    has_exit = after < n
    ai, li = after[has_exit], last[has_exit]
    dpos_out = np.abs(pos[ai] - pos[li])  # > 0: the side changed
    exit_share[has_exit] = fees[ai] * np.abs(pos[li]) / dpos_out
    factor = np.empty(n + 1)  # a sentinel 1 at the end so that `after` may equal n in reduceat
    np.add(returns, 1.0, out=factor[:-1])
    factor[-1] = 1.0
    factor[first] += fees[first] - share_in  # keep only this trade's share of the entry cost
    bounds = np.empty(2 * len(first), dtype=np.int64)
    bounds[0::2], bounds[1::2] = first, after
    prod = np.multiply.reduceat(factor, bounds)[0::2]  # product over [first, last]
    return Trades(first, last, prod * (1.0 - exit_share) - 1.0)


def _trade_frame(ts: np.ndarray, px: np.ndarray, pos: np.ndarray, tr: Trades) -> pd.DataFrame:
    """The trades table. `pos` is per row (N,); tr indexes bars held (row = index + 1)."""
    start, end = tr.first + 1, tr.last + 1  # rows held; entered at close[start - 1], exited at close[end]
    held = end - start + 1
    size = np.zeros(0)
    if len(start):  # sum of |position| over rows [start, end]; the sentinel lets end + 1 equal N
        size = np.add.reduceat(np.r_[np.abs(pos), 0.0], np.ravel(np.c_[start, end + 1]))[0::2] / held
    side = pd.Categorical.from_codes((pos[start] > 0).astype("int8"), categories=["short", "long"])
    return pd.DataFrame({
        "entry_time": ts[start - 1], "exit_time": ts[end], "side": side, "size": size,
        "entry_price": px[start - 1], "exit_price": px[end], "return": tr.returns,
        "bars_held": held.astype("int64"), "closed": end < len(pos) - 1,
    }, columns=TRADE_COLUMNS)


# ---------------------------------------------------------------- metrics


def performance(
    returns: np.ndarray, positions: np.ndarray, timeframe: str, fees: np.ndarray,
    *, timestamps: np.ndarray | None = None,
) -> dict[str, float]:
    """Performance metrics of per-bar strategy returns (pure).

    Inputs, all (n,) for n bars held: `returns` r simple returns after costs, `positions` the position
    held over each bar (starting flat before the first), `fees` the cost charged in each bar (fraction of
    equity, already inside r). `timestamps` (n+1,) ms of the equity points (the start, then the end of
    each bar; simulate passes the bars' open times) for calendar time; default: a regular grid.
    Equity E_0 = 1, E_t = E_{t-1}(1 + r_t); P = bars_per_year(timeframe) = 365 x bars per day (8,760
    for 1h, 2,190 for 4h, 365 for 1d); years = elapsed calendar time / 365 days. Risk-free rate 0.

    | key | definition |
    | --- | --- |
    | total_return | E_n - 1 |
    | cagr | E_n^(1/years) - 1 (elapsed calendar time; -1 if equity is wiped out) |
    | volatility | std(r, ddof=1) x sqrt(P) |
    | sharpe | mean(r) / std(r, ddof=1) x sqrt(P); NaN (null) when std is 0, e.g. no trades, or n < 2 |
    | sortino | mean(r) / sqrt(mean(min(r, 0)^2)) x sqrt(P); NaN when no bar lost |
    | max_drawdown | min over t of E_t / max(E_0..E_t) - 1 (<= 0) |
    | max_drawdown_bars | bars from the peak before the deepest trough to recovery (back at that peak) or the end |
    | max_drawdown_days | the same span in calendar days |
    | max_drawdown_recovered | 1 if equity got back to that peak, else 0 |
    | calmar | cagr / abs(max_drawdown); NaN when there was no drawdown |
    | hit_rate | fraction of bars in the market (position != 0) with r > 0; NaN if never in the market |
    | trades | trades opened: position goes from flat or the other side to long/short (a resize is not one) |
    | win_rate | fraction of trades whose compounded return after costs is > 0; NaN with no trade |
    | profit_factor | sum of r > 0 / abs(sum of r < 0); inf (null) with no losing bar, NaN with neither |
    | exposure | fraction of bars with position != 0 |
    | turnover | sum abs(position_t - position_{t-1}) per year (an entry from flat counts its size) |
    | fees_paid | sum of costs in units of the starting equity: sum fees_t x E_{t-1} |
    | bars | n |
    | years | elapsed calendar years |
    """
    r, p, f = (np.asarray(a, dtype="float64") for a in (returns, positions, fees))
    if not (r.ndim == 1 and r.shape == p.shape == f.shape):
        raise DataError(f"performance: returns, positions and fees must be 1-D of one length, got "
                        f"{r.shape}, {p.shape}, {f.shape}")
    if timestamps is None:
        ts = np.arange(len(r) + 1, dtype="int64") * timeframe_ms(timeframe)
    else:
        ts = np.asarray(timestamps, dtype="int64")
        if ts.shape != (len(r) + 1,):
            raise DataError(f"performance: timestamps must have n + 1 = {len(r) + 1} values (the start, then "
                            f"each bar), got {ts.shape}")
    return _performance(r, p, f, ts, timeframe)


def _performance(
    r: np.ndarray, p: np.ndarray, f: np.ndarray, ts: np.ndarray, timeframe: str, trades: Trades | None = None,
) -> dict[str, float]:
    n = len(r)
    root = math.sqrt(bars_per_year(timeframe))
    years = float(ts[-1] - ts[0]) / YEAR_MS
    eq = np.empty(n + 1)
    eq[0] = 1.0
    np.cumprod(1.0 + r, out=eq[1:])
    final = float(eq[-1])
    dd = drawdown(eq, ts)
    mean = float(r.mean()) if n else math.nan
    dev = r - mean
    sd = math.sqrt(float(np.sum(dev * dev)) / (n - 1)) if n > 1 else math.nan
    neg = np.minimum(r, 0.0)
    downside = math.sqrt(float(np.sum(neg * neg)) / n) if n else math.nan
    losses = -float(neg.sum())
    gains = float(r.sum()) + losses
    cagr = _cagr(final, years)
    in_mkt = p != 0
    n_in = int(np.count_nonzero(in_mkt))
    tr = trades if trades is not None else find_trades(p, r, f)
    turnover = float(np.abs(np.diff(p, prepend=0.0)).sum())
    return {
        "total_return": final - 1.0,
        "cagr": cagr,
        "volatility": sd * root,
        "sharpe": mean / sd * root if sd > 0 else math.nan,
        "sortino": mean / downside * root if downside > 0 else math.nan,
        "max_drawdown": dd["max_drawdown"],
        "max_drawdown_bars": dd["bars"],
        "max_drawdown_days": dd["days"],
        "max_drawdown_recovered": dd["recovered"],
        "calmar": cagr / abs(dd["max_drawdown"]) if dd["max_drawdown"] < 0 else math.nan,
        "hit_rate": int(np.count_nonzero(in_mkt & (r > 0))) / n_in if n_in else math.nan,
        "trades": len(tr.first),
        "win_rate": float(np.mean(tr.returns > 0)) if len(tr.first) else math.nan,
        "profit_factor": gains / losses if losses > 0 else (math.inf if gains > 0 else math.nan),
        "exposure": n_in / n if n else math.nan,
        "turnover": turnover / years if years > 0 else math.nan,
        "fees_paid": float(np.sum(f * eq[:-1])),
        "bars": n,
        "years": years,
    }


def _cagr(final: float, years: float) -> float:
    if years <= 0:
        return math.nan
    if final <= 0:
        return -1.0
    with np.errstate(over="ignore"):
        return float(np.power(final, 1.0 / years)) - 1.0  # inf (null in JSON) if absurdly large


def drawdown(equity: np.ndarray, timestamps: np.ndarray) -> dict[str, float]:
    """Deepest drawdown of an equity curve (n+1,) and the span from its peak to recovery (or the end).

    Returns max_drawdown (<= 0), bars, days, recovered (1.0 / 0.0).
    """
    peak = np.maximum.accumulate(equity)
    dd = equity / peak - 1.0
    trough = int(np.argmin(dd))
    mdd = float(dd[trough])
    if mdd >= 0:
        return {"max_drawdown": 0.0, "bars": 0, "days": 0.0, "recovered": 1.0}
    peak_val = peak[trough]
    start = int(np.flatnonzero(equity[: trough + 1] == peak_val)[-1])  # the last time at that peak
    back = np.flatnonzero(equity[trough:] >= peak_val)
    end = trough + int(back[0]) if len(back) else len(equity) - 1
    return {"max_drawdown": mdd, "bars": end - start, "days": float(timestamps[end] - timestamps[start]) / DAY_MS,
            "recovered": 1.0 if len(back) else 0.0}


def per_year(
    timestamps: np.ndarray, returns: np.ndarray, timeframe: str, *, bh_returns: np.ndarray | None = None,
) -> list[dict[str, float]]:
    """Per calendar year (UTC, by the open time of the bar a return belongs to): compounded return,
    Sharpe (as in `performance`), max drawdown within the year (from the year's starting equity), bars,
    and the buy-and-hold return when `bh_returns` is given. The years' returns compound to the total:
    prod(1 + return_y) = 1 + total_return.
    """
    ts = np.asarray(timestamps, dtype="int64")
    r = np.asarray(returns, dtype="float64")
    if len(r) == 0:
        return []
    years = ts.astype("datetime64[ms]").astype("datetime64[Y]").astype("int64") + 1970
    cuts = np.r_[0, np.flatnonzero(np.diff(years)) + 1, len(r)]
    root = math.sqrt(bars_per_year(timeframe))
    out: list[dict[str, float]] = []
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        seg = r[a:b]
        eq = np.r_[1.0, np.cumprod(1.0 + seg)]
        sd = float(np.std(seg, ddof=1)) if len(seg) > 1 else math.nan
        row: dict[str, float] = {
            "year": int(years[a]),
            "return": float(eq[-1] - 1.0),
            "sharpe": float(np.mean(seg)) / sd * root if sd > 0 else math.nan,
            "max_drawdown": float(np.min(eq / np.maximum.accumulate(eq) - 1.0)),
            "bars": int(b - a),
        }
        if bh_returns is not None:
            row["bh_return"] = float(np.prod(1.0 + np.asarray(bh_returns[a:b], dtype="float64")) - 1.0)
        out.append(row)
    return out


def _forecast_metrics(fc: np.ndarray, close: np.ndarray, outcome: np.ndarray | None, kind: str) -> dict[str, float]:
    """Forecast quality (metrics.forecast_metrics) against realized outcomes, on the bars that have both.

    Default outcome of forecast[t]: the log return of bar t+1 (for "direction": 1 if it is > 0, else 0).
    """
    if outcome is None:
        outcome = np.full(len(fc), np.nan)
        outcome[:-1] = np.log(close[1:] / close[:-1])
    ok = np.isfinite(fc) & np.isfinite(outcome)
    y = outcome[ok]
    if kind == "direction" and not np.isin(y, (0.0, 1.0)).all():
        y = (y > 0).astype("float64")  # a return outcome -> up / not up
    with warnings.catch_warnings():  # a constant forecast has no correlation: NaN, as documented there
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return forecast_metrics(fc[ok], y, kind)


# ---------------------------------------------------------------- serialization


def to_json_safe(obj: Any) -> Any:
    """Plain JSON types: numpy scalars -> Python, NaN and +-inf -> None, tuples and arrays -> lists."""
    if isinstance(obj, dict):
        return {str(k): to_json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [to_json_safe(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj
