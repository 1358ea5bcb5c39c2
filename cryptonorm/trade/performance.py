"""Performance metrics of per-bar strategy returns (pure numpy): the metric table, drawdown, per calendar year."""

from __future__ import annotations

import math

import numpy as np

from cryptonorm.errors import DataError
from cryptonorm.evaluate.forecast import dot
from cryptonorm.timeframes import bars_per_year, timeframe_ms
from cryptonorm.trade.trades import Trades, find_trades

DAY_MS = 86_400_000
YEAR_MS = 365 * DAY_MS  # crypto trades every day; the same year as bars_per_year


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
    return performance_of(r, p, f, ts, timeframe)


def performance_of(
    r: np.ndarray, p: np.ndarray | None, f: np.ndarray | None, ts: np.ndarray, timeframe: str,
    trades: Trades | None = None, *, equity: np.ndarray | None = None, turnover: float | None = None,
) -> dict[str, float]:
    """`performance` on checked float64 arrays (ts (n+1,)). Work the caller already did is reused: `trades`,
    `equity` (n+1,) = [1, cumprod(1 + r)] and `turnover` = sum |dp| (prepending a flat start). `p` None:
    in the market on every bar (buy-and-hold; then `trades` is required); `f` None: no costs."""
    n = len(r)
    years = float(ts[-1] - ts[0]) / YEAR_MS
    if equity is None:
        eq = np.empty(n + 1)
        eq[0] = 1.0
        np.cumprod(1.0 + r, out=eq[1:])
    else:
        eq = equity
    final = float(eq[-1])
    dd = drawdown(eq, ts)
    stats = _return_stats(r, timeframe)
    cagr = _cagr(final, years)
    if p is None:
        n_in, n_up = n, int(np.count_nonzero(r > 0))
    else:
        in_mkt = p != 0
        n_in = int(np.count_nonzero(in_mkt))
        n_up = int(np.count_nonzero(np.logical_and(in_mkt, r > 0, out=in_mkt)))
    if trades is not None:
        tr = trades
    else:
        assert p is not None, "performance_of: trades are required when positions are implied"
        tr = find_trades(p, r, f if f is not None else np.zeros(n))
    if turnover is None:
        turnover = float(np.abs(np.diff(p, prepend=0.0)).sum()) if p is not None else 1.0
    return {
        "total_return": final - 1.0,
        "cagr": cagr,
        "volatility": stats["volatility"],
        "sharpe": stats["sharpe"],
        "sortino": stats["sortino"],
        "max_drawdown": dd["max_drawdown"],
        "max_drawdown_bars": dd["bars"],
        "max_drawdown_days": dd["days"],
        "max_drawdown_recovered": dd["recovered"],
        "calmar": cagr / abs(dd["max_drawdown"]) if dd["max_drawdown"] < 0 else math.nan,
        "hit_rate": n_up / n_in if n_in else math.nan,
        "trades": len(tr.first),
        "win_rate": float(np.count_nonzero(tr.returns > 0)) / len(tr.first) if len(tr.first) else math.nan,
        "profit_factor": stats["profit_factor"],
        "exposure": n_in / n if n else math.nan,
        "turnover": turnover / years if years > 0 else math.nan,
        "fees_paid": _fees_paid(f, eq) if f is not None else 0.0,
        "bars": n,
        "years": years,
    }


def _fees_paid(f: np.ndarray, eq: np.ndarray) -> float:
    """sum f_t x E_{t-1} (f (n,), eq (n+1,)). Once the equity stays below the smallest normal float (wiped
    out) to the end, its terms are < 2.3e-308 each and cannot change a sum above 1e-250, so they are left out:
    subnormal arithmetic is microcoded, ~15x slower, and a wiped-out equity is subnormal on most bars."""
    if len(f) == 0:
        return 0.0
    wiped = eq[:-1] < np.finfo(np.float64).tiny
    k = int(np.argmax(wiped)) if wiped[-1] else len(f)
    if not wiped[k:].all():  # it came back above 2.3e-308 (never seen): every term
        k = len(f)
    head = dot(f[:k], eq[:k])
    if k == len(f) or head > 1e-250:
        return head
    return dot(f, eq[:-1])


def _return_stats(r: np.ndarray, timeframe: str) -> dict[str, float]:
    """Volatility, Sharpe, Sortino and profit factor of per-bar returns (definitions in `performance`)."""
    n = len(r)
    root = math.sqrt(bars_per_year(timeframe))
    total = float(r.sum())
    mean = total / n if n else math.nan
    dev = r - mean
    sd = math.sqrt(dot(dev, dev) / (n - 1)) if n > 1 else math.nan
    neg = np.minimum(r, 0.0, out=dev)  # dev is spent: reuse its memory
    downside = math.sqrt(dot(neg, neg) / n) if n else math.nan
    losses = -float(neg.sum())
    gains = total + losses
    return {
        "volatility": sd * root,
        "sharpe": mean / sd * root if sd > 0 else math.nan,
        "sortino": mean / downside * root if downside > 0 else math.nan,
        "profit_factor": gains / losses if losses > 0 else (math.inf if gains > 0 else math.nan),
    }


def flat_performance(n: int, ts: np.ndarray) -> dict[str, float]:
    """`performance` of n bars never in the market (all returns, positions and fees 0), without the arrays.

    The flat baseline of every backtest; tests check it equals performance(zeros, zeros, zeros).
    """
    years = float(ts[-1] - ts[0]) / YEAR_MS
    nan = math.nan
    return {
        "total_return": 0.0, "cagr": _cagr(1.0, years), "volatility": 0.0 if n > 1 else nan, "sharpe": nan,
        "sortino": nan, "max_drawdown": 0.0, "max_drawdown_bars": 0, "max_drawdown_days": 0.0,
        "max_drawdown_recovered": 1.0, "calmar": nan, "hit_rate": nan, "trades": 0, "win_rate": nan,
        "profit_factor": nan, "exposure": 0.0 if n else nan, "turnover": 0.0 if years > 0 else nan,
        "fees_paid": 0.0, "bars": n, "years": years,
    }


def _cagr(final: float, years: float) -> float:
    if years <= 0:
        return math.nan
    if final <= 0:
        return -1.0
    with np.errstate(over="ignore"):
        return float(np.power(final, 1.0 / years)) - 1.0  # inf (null in JSON) if absurdly large


def drawdown_curve(equity: np.ndarray) -> np.ndarray:
    """(N,) equity / running peak - 1 (<= 0) of an equity curve (N,); 0 where the peak is not positive."""
    peak = np.maximum.accumulate(equity)
    return np.divide(equity, peak, out=np.zeros_like(equity, dtype="float64"), where=peak > 0) - 1.0


def drawdown(equity: np.ndarray, timestamps: np.ndarray) -> dict[str, float]:
    """Deepest drawdown of an equity curve (n+1,) and the span from its peak to recovery (or the end).

    Returns max_drawdown (<= 0), bars, days, recovered (1.0 / 0.0).
    """
    peak = np.maximum.accumulate(equity)
    ratio = np.divide(equity, peak, out=peak)  # peak is not needed again: reuse its memory
    trough = int(np.argmin(ratio))
    mdd = float(ratio[trough]) - 1.0
    if mdd >= 0:
        return {"max_drawdown": 0.0, "bars": 0, "days": 0.0, "recovered": 1.0}
    peak_val = float(np.max(equity[: trough + 1]))
    start = _last_equal(equity, trough, peak_val)  # the last time at that peak
    end = _first_at_least(equity, trough, peak_val)
    recovered = end >= 0
    if not recovered:
        end = len(equity) - 1
    return {"max_drawdown": mdd, "bars": end - start, "days": float(timestamps[end] - timestamps[start]) / DAY_MS,
            "recovered": 1.0 if recovered else 0.0}


def _last_equal(a: np.ndarray, i: int, value: float) -> int:
    """The largest j <= i with a[j] == value (0 if none), scanning back in growing blocks: the peak before a
    trough is usually near it, and a whole-array comparison would cost a pass over every bar."""
    hi, size = i + 1, 1024
    while hi > 0:
        lo = max(0, hi - size)
        hits = np.flatnonzero(a[lo:hi] == value)
        if len(hits):
            return lo + int(hits[-1])
        hi, size = lo, size * 4
    return 0


def _first_at_least(a: np.ndarray, i: int, value: float) -> int:
    """The smallest j >= i with a[j] >= value, or -1, scanning forward in growing blocks."""
    lo, size = i, 1024
    while lo < len(a):
        hi = min(len(a), lo + size)
        hit = a[lo:hi] >= value
        if hit.any():
            return lo + int(np.argmax(hit))
        lo, size = hi, size * 4
    return -1


def per_year(
    timestamps: np.ndarray, returns: np.ndarray, timeframe: str, *, bh_returns: np.ndarray | None = None,
    factor: np.ndarray | None = None, bh_factor: np.ndarray | None = None,
) -> list[dict[str, float]]:
    """Per calendar year (UTC, by the open time of the bar a return belongs to): compounded return,
    Sharpe (as in `performance`), max drawdown within the year (from the year's starting equity), bars,
    and the buy-and-hold return when `bh_returns` is given. The years' returns compound to the total:
    prod(1 + return_y) = 1 + total_return. `factor`, `bh_factor`: 1 + returns, 1 + bh_returns when the
    caller has them.
    """
    ts = np.asarray(timestamps, dtype="int64")
    r = np.asarray(returns, dtype="float64")
    if len(r) == 0:
        return []
    # year boundaries by binary search of each new year's first millisecond (ts is sorted), not by
    # converting every timestamp to a calendar year
    first_year, last_year = ts[[0, -1]].astype("datetime64[ms]").astype("datetime64[Y]")
    starts = np.arange(first_year + 1, last_year + 1).astype("datetime64[ms]").astype("int64")
    cuts = np.r_[0, np.searchsorted(ts, starts, side="left"), len(r)]
    year0 = int(first_year.astype("int64")) + 1970
    root = math.sqrt(bars_per_year(timeframe))
    if factor is None:
        factor = r + 1.0
    if bh_factor is None and bh_returns is not None:
        bh_factor = np.asarray(bh_returns, dtype="float64") + 1.0
    longest = int(np.diff(cuts).max())
    eq, work = np.empty(longest + 1), np.empty(longest + 1)  # scratch for the longest year
    eq[0] = 1.0  # each year's equity starts at 1, before its first bar
    out: list[dict[str, float]] = []
    for i, (a, b) in enumerate(zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True)):
        if a == b:
            continue  # a calendar year without bars (a long outage)
        m = b - a
        seg = r[a:b]
        mean = float(seg.sum()) / m  # np.mean's and np.std's (ddof=1) own steps, into scratch memory
        sd = math.nan
        if m > 1:
            dev = np.subtract(seg, mean, out=work[:m])
            sd = math.sqrt(float(np.multiply(dev, dev, out=dev).sum()) / (m - 1))
        year_eq = eq[: m + 1]  # [1, equity after each bar of the year]
        np.cumprod(factor[a:b], out=year_eq[1:])
        peak = np.maximum.accumulate(year_eq, out=work[: m + 1])  # the starting 1 included
        row: dict[str, float] = {
            "year": year0 + i,
            "return": float(year_eq[-1]) - 1.0,
            "sharpe": mean / sd * root if sd > 0 else math.nan,
            "max_drawdown": min(0.0, float(np.divide(year_eq, peak, out=peak).min()) - 1.0),
            "bars": m,
        }
        if bh_factor is not None:
            row["bh_return"] = float(np.prod(bh_factor[a:b])) - 1.0
        out.append(row)
    return out
