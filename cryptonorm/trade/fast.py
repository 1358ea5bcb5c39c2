"""The backtest's engine choice, and the typed calls of the compiled kernels (trade/kernels.py).

numba (the `fast` extra) is used when it is installed and CRYPTONORM_NUMBA is not 0; it is imported only
when a backtest runs, never at import time (`cryptonorm --help` stays fast). Without it the numpy code
(positions.book, performance.performance_of, trades.trade_returns) runs: it is the reference, and the
kernels reproduce its results within 1e-9 relative (counts exactly).
"""

from __future__ import annotations

import importlib.util
import math
import os
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from cryptonorm.config import BacktestConfig
from cryptonorm.timeframes import bars_per_year
from cryptonorm.trade.performance import drawdown_span, metric_table, return_stats, year_cuts, year_row
from cryptonorm.trade.trades import Trades

RANK_CORR_MAX = 2_000_000  # rank_corr's integer sums are exact up to this many values


@lru_cache(maxsize=1)
def _numba_installed() -> bool:
    return importlib.util.find_spec("numba") is not None


def enabled() -> bool:
    """Whether the compiled engine runs: numba importable and CRYPTONORM_NUMBA not set to 0."""
    return os.environ.get("CRYPTONORM_NUMBA", "1").strip().lower() not in ("0", "false", "no", "off") and \
        _numba_installed()


class Curves(NamedTuple):
    """What either engine computes from the targets: the strategy's columns (N,), buy-and-hold's equity,
    the four curves' metric tables, the per-year rows, the strategy's trades, funding paid."""

    pos: np.ndarray
    cost: np.ndarray
    ret: np.ndarray
    equity: np.ndarray
    bh_equity: np.ndarray
    funding: np.ndarray | None  # pos x carry, the funding charged in each bar (None: spot)
    strategy: dict[str, float]
    gross: dict[str, float]
    buy_and_hold: dict[str, float]
    last_sign: dict[str, float]
    years: list[dict[str, float]]
    trades: Trades
    funding_paid: tuple[float, float] | None  # (strategy, buy-and-hold) in units of the starting equity


def curves(ts: np.ndarray, px: np.ndarray, target: np.ndarray, cfg: BacktestConfig, timeframe: str,
           carry: np.ndarray | None) -> Curves | None:
    """The compiled engine: four passes per curve (strategy, its cost-free twin, buy-and-hold, last-sign).
    None when a kernel asks for the numpy engine (fees paid on an equity below 1e-250 throughout: see
    kernels.py)."""
    from cryptonorm.trade import kernels as k

    n = len(px)
    rate = (cfg.fee_bps + cfg.slippage_bps) / 1e4
    lev, short = min(1.0, cfg.max_leverage), cfg.allow_short
    ch = np.zeros(0) if carry is None else carry
    cuts, year0 = year_cuts(ts[1:])
    rows = cuts + 1  # bars held are rows 1..N-1
    years = np.zeros((4, len(rows) - 1, 5))  # every curve's; the strategy's and buy-and-hold's are reported
    cols = np.empty((4 if carry is None else 5, n))  # the strategy's series (returned)
    scratch = np.empty_like(cols)  # the other curves' series, one curve at a time
    bh_eq = np.empty(n)
    first, last, tret = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n)
    none_i, none_f = np.zeros(0, np.int64), np.zeros(0)
    st = np.zeros((4, k.N_STATS))
    signs = k.last_sign_target(px, lev, short)
    # the strategy, its cost-free twin (no cost, no funding), buy-and-hold, last-sign
    runs = [(target, False, rate, ch, cols, cols[k.C_EQUITY]), (target, False, 0.0, none_f, scratch, none_f),
            (target, True, rate, ch, scratch, bh_eq), (signs, False, rate, ch, scratch, none_f)]
    for i, (tg, hold, cost, fund, ser, eq) in enumerate(runs):
        charge = ser[k.C_FUNDING] if len(fund) else none_f
        k.book(px, tg, hold, cost, fund, ser[k.C_POSITION], ser[k.C_RETURN], ser[k.C_COST], charge, st[i])
        k.equity(ser[k.C_RETURN], ser[k.C_COST], charge, rows, years[i], eq, st[i])
        keep = i == 0
        k.trades(ser[k.C_POSITION], ser[k.C_COST], ser[k.C_RETURN], first if keep else none_i,
                 last if keep else none_i, tret if keep else none_f, st[i])
        k.spread(ser[k.C_RETURN], st[i, k.TOTAL] / (n - 1), rows, years[i], st[i])
    n_trades = int(st[0, k.TRADES])
    if st[:, k.FALLBACK].any():
        return None
    tables = [_table(st[i], n - 1, ts, timeframe, k) for i in range(4)]
    trades = Trades(first[:n_trades].copy(), last[:n_trades].copy(), tret[:n_trades].copy())
    year_list = _years(years[0], years[2], cuts, year0, timeframe, carry is not None, k)
    paid = None if carry is None else (float(st[0, k.FUNDING]), float(st[2, k.FUNDING]))
    return Curves(cols[k.C_POSITION], cols[k.C_COST], cols[k.C_RETURN], cols[k.C_EQUITY], bh_eq,
                  None if carry is None else cols[k.C_FUNDING], tables[0], tables[1], tables[2], tables[3],
                  year_list, trades, paid)


def _table(st: np.ndarray, n: int, ts: np.ndarray, timeframe: str, k: Any) -> dict[str, float]:
    """performance.metric_table of one curve's stats vector (kernels.curve, kernels.spread)."""
    mdd = float(st[k.LOW]) - 1.0
    if mdd >= 0:
        dd = {"max_drawdown": 0.0, "bars": 0, "days": 0.0, "recovered": 1.0}
    else:
        dd = drawdown_span(mdd, int(st[k.START]), int(st[k.END]), ts)
    stats = return_stats(n, float(st[k.TOTAL]), float(st[k.DEV2]), float(st[k.NEG2]), float(st[k.NEG]), timeframe)
    counts = (int(st[k.N_IN]), int(st[k.N_UP]), int(st[k.TRADES]), int(st[k.WINS]))
    return metric_table(n, ts, float(st[k.FINAL]), dd, stats, counts, float(st[k.TURN]), float(st[k.FEES]))


def _years(years: np.ndarray, bh_years: np.ndarray, cuts: np.ndarray, year0: int, timeframe: str, funding: bool,
           k: Any) -> list[dict[str, float]]:
    """performance.per_year's rows from the kernels' per-year sums (with the funding paid when charged)."""
    root = math.sqrt(bars_per_year(timeframe))
    out: list[dict[str, float]] = []
    for i, m in enumerate(np.diff(cuts).tolist()):
        if m == 0:
            continue  # a calendar year without bars
        y = years[i]
        sd = math.sqrt(float(y[k.Y_DEV2]) / (m - 1)) if m > 1 else math.nan
        row = year_row(year0 + i, float(y[k.Y_PROD]), float(y[k.Y_SUM]) / m, sd, float(y[k.Y_LOW]), m, root)
        row["bh_return"] = float(bh_years[i, k.Y_PROD]) - 1.0
        if funding:
            row["funding_paid"] = float(y[k.Y_FUNDING])
        out.append(row)
    return out


def rank_corr(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's correlation of two NaN-free, non-constant (n,) series by the compiled kernel on the numpy
    sort orders (metrics._sort_order, each series ranked once); None where the numpy ranks must do it (the
    engine is off, or n > RANK_CORR_MAX)."""
    if len(x) > RANK_CORR_MAX or not enabled():
        return None
    from cryptonorm.trade import kernels as k
    from cryptonorm.trade.metrics import _sort_order

    ox, nx = _sort_order(x)
    oy, ny = _sort_order(y)
    return max(-1.0, min(1.0, float(k.rank_corr(ox, nx, oy, ny))))
