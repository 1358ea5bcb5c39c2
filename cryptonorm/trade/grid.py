"""Backtest grids in one pass: every combination of backtest settings as a column of one simulation (a row
of its (combinations, bars) arrays, so that each combination's bars are contiguous).

`simulate` runs one set of settings and computes everything a report needs (trades table, baselines,
per-year rows, forecast metrics). A grid (`cryptonorm backtest RUN --grid ...`, a cost sensitivity) needs
only the strategy's metrics of each combination, on the same bars: here the bar returns are computed
once, the positions once per distinct strategy setting (costs do not change them), and the book
(positions, turnover, costs, returns, equity) and the metrics of many combinations at once, on 2-D arrays
of shape (combinations, bars), each combination's bars contiguous so that every row reduction sums in
the same order as the 1-D code. The result equals `simulate(...).metrics["strategy"]` of each
combination to float rounding (tested to 1e-12 on random configurations, funding and thresholds included;
bitwise equal in those tests, since every step is the 1-D code's own operation in its own order).

Combinations are processed in blocks of rows (`block_rows`) so that the working set stays a few tens of
megabytes whatever the grid's size: a 1,000 x 100,000 grid would need ~0.8 GB per full 2-D array.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from cryptonorm.config import BacktestConfig
from cryptonorm.errors import DataError
from cryptonorm.timeframes import bars_per_year
from cryptonorm.trade.backtest import _check_inputs
from cryptonorm.trade.performance import DAY_MS, YEAR_MS, _cagr, _fees_paid, _first_at_least, _last_equal
from cryptonorm.trade.positions import target_positions
from cryptonorm.trade.trades import trade_bounds, trade_returns

COST_FIELDS = ("fee_bps", "slippage_bps")  # the settings that change the costs but never the positions
BLOCK_ELEMENTS = 1 << 20  # elements per 2-D array in one block (8 MB of float64)


def simulate_grid(
    timestamps: np.ndarray, close: np.ndarray, forecast: np.ndarray, configs: Sequence[BacktestConfig],
    timeframe: str, kind: str, *, funding: np.ndarray | None = None, block_rows: int | None = None,
) -> list[dict[str, float]]:
    """The strategy metrics after costs (and funding) of each config in `configs`, as
    `trade.backtest.simulate(timestamps, close, forecast, cfg, timeframe, kind, funding=funding)
    .metrics["strategy"]` gives them one at a time, computed as columns of one simulation.

    Inputs are checked once, as `simulate` checks them (DataError / ConfigError). `block_rows`: combinations
    per 2-D block (default: ~1M elements per array).
    """
    if not configs:
        return []
    # simulate's checks, once: of the settings they read, only the threshold varies in a grid (direction
    # forecasts need it below 0.5), so the largest threshold's config stands for all
    strictest = max(configs, key=lambda c: c.threshold)
    ts, px, fc, _ = _check_inputs(timestamps, close, forecast, None, strictest, timeframe, kind)
    carry = None if funding is None else np.asarray(funding, dtype="float64")
    if carry is not None and carry.shape != px.shape:
        raise DataError(f"backtest: funding has shape {carry.shape}, the bars {px.shape}")
    n_rows = len(px)
    bar_ret = np.empty(n_rows)  # (N,) as simulate computes it
    bar_ret[0] = 0.0
    np.divide(px[1:], px[:-1], out=bar_ret[1:])
    bar_ret[1:] -= 1.0

    # configs grouped by their positions (costs do not change them): each group's positions, turnover,
    # gross returns and trades' bounds are computed once, then each config's costs, returns and equity
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(configs):
        groups.setdefault(_position_key(c), []).append(i)
    rows = block_rows or max(1, BLOCK_ELEMENTS // n_rows)
    out: list[dict[str, float] | None] = [None] * len(configs)
    chunk: list[list[int]] = []
    # a group larger than a block is split (its positions computed once per piece): a block stays ~rows rows
    pieces = [g[k:k + rows] for g in groups.values() for k in range(0, len(g), rows)]
    for members in [*pieces, []]:  # [] flushes the last block
        if chunk and (not members or sum(map(len, chunk)) + len(members) > rows):
            idx = [i for g in chunk for i in g]
            metrics = _block(ts, px, fc, bar_ret, carry, [configs[g[0]] for g in chunk],
                             np.repeat(np.arange(len(chunk)), [len(g) for g in chunk]),
                             np.array([(configs[i].fee_bps + configs[i].slippage_bps) / 1e4 for i in idx]),
                             timeframe, kind)
            for i, m in zip(idx, metrics, strict=True):
                out[i] = m if m is not None else _ruined(timestamps, close, forecast, configs[i], timeframe, kind,
                                                          funding)
            chunk = []
        if members:
            chunk.append(members)
    return [m for m in out if m is not None]


def _ruined(timestamps: np.ndarray, close: np.ndarray, forecast: np.ndarray, cfg: BacktestConfig, timeframe: str,
            kind: str, funding: np.ndarray | None) -> dict[str, float]:
    """A combination whose equity is wiped out: its metrics from `simulate`, which stops the book at the ruin
    (rare at the configs' bounds, so one at a time)."""
    from cryptonorm.trade.backtest import simulate

    metrics: dict[str, float] = simulate(timestamps, close, forecast, cfg, timeframe, kind,
                                         funding=funding).metrics["strategy"]
    return metrics


def _position_key(cfg: BacktestConfig) -> str:
    """What decides the positions: every backtest setting but the costs."""
    return cfg.model_copy(update={f: 0.0 for f in COST_FIELDS}).model_dump_json()


def _block(ts: np.ndarray, px: np.ndarray, fc: np.ndarray, bar_ret: np.ndarray, carry: np.ndarray | None,
           strategies: list[BacktestConfig], which: np.ndarray, rate: np.ndarray, timeframe: str,
           kind: str) -> list[dict[str, float] | None]:
    """The metrics of C combinations: P `strategies` (their positions), `which` (C,) the strategy of each,
    `rate` (C,) its cost per unit traded; `trade.positions.book`'s steps, row-wise, in the same order (row 0:
    nothing held). None for a combination wiped out: the caller applies the ruin rule through `simulate`."""
    p_rows, n = len(strategies), len(bar_ret)
    pos, turn = _positions(ts, px, fc, strategies, timeframe, kind)
    cost, ret = _book(pos, turn, bar_ret, carry, which, rate)
    in_mkt = pos[:, 1:] != 0  # (P, N - 1)
    n_in = np.count_nonzero(in_mkt, axis=1)
    turnover = turn[:, 1:].sum(axis=1)
    bounds = [trade_bounds(pos[j, 1:]) for j in range(p_rows)]

    factor = ret + 1.0
    eq = np.cumprod(factor, axis=1)  # row-wise the same sequential product as the 1-D one

    r, f = ret[:, 1:], cost[:, 1:]
    m = n - 1
    years = float(ts[-1] - ts[0]) / YEAR_MS
    root = math.sqrt(bars_per_year(timeframe))
    total, mean, sd, downside, losses, n_up = _moments(r, in_mkt[which])
    dd = _drawdowns(eq, ts)
    ruined = np.asarray((factor[:, 1:] <= 0.0).any(axis=1), dtype=bool)
    out: list[dict[str, float] | None] = []
    for i, j in enumerate(which.tolist()):
        if ruined[i]:
            out.append(None)
            continue
        first, last = bounds[j]
        returns = trade_returns(pos[j, 1:], r[i], f[i], first, last, factor=factor[i, 1:], turn=turn[j, 1:])
        k = len(first)
        final = float(eq[i, -1])
        cagr = _cagr(final, years)
        s, dn, mu = float(sd[i]), float(downside[i]), float(mean[i])
        gains = float(total[i]) + float(losses[i])
        lost = float(losses[i])
        mdd, dd_bars, dd_days, recovered = dd[i]
        out.append({
            "total_return": final - 1.0,
            "cagr": cagr,
            "volatility": s * root,
            "sharpe": mu / s * root if s > 0 else math.nan,
            "sortino": mu / dn * root if dn > 0 else math.nan,
            "max_drawdown": mdd,
            "max_drawdown_bars": int(dd_bars),
            "max_drawdown_days": dd_days,
            "max_drawdown_recovered": recovered,
            "calmar": cagr / abs(mdd) if mdd < 0 else math.nan,
            "hit_rate": int(n_up[i]) / int(n_in[j]) if n_in[j] else math.nan,
            "trades": k,
            "win_rate": float(np.count_nonzero(returns > 0)) / k if k else math.nan,
            "profit_factor": gains / lost if lost > 0 else (math.inf if gains > 0 else math.nan),
            "exposure": int(n_in[j]) / m,
            "turnover": float(turnover[j]) / years if years > 0 else math.nan,
            "fees_paid": _fees_paid(f[i], eq[i]),
            "bars": m,
            "years": years,
        })
    return out


def _moments(r: np.ndarray, in_mkt: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per row of the (C, M) returns `r`: sum, mean, sample std, downside deviation, summed losses and the
    count of winning bars in the market (`in_mkt` (C, M)), each as `trade.performance` computes it on one row."""
    c, m = r.shape
    total = r.sum(axis=1)  # rows are contiguous: pairwise sums, as np.sum of each row
    mean = total / m  # m >= 1: the checks ask for 2 bars
    dev = r - mean[:, None]
    sd = np.sqrt(np.einsum("ij,ij->i", dev, dev) / (m - 1)) if m > 1 else np.full(c, math.nan)
    neg = np.minimum(r, 0.0, out=dev)
    downside = np.sqrt(np.einsum("ij,ij->i", neg, neg) / m)
    losses = -neg.sum(axis=1)
    up = r > 0.0
    n_up = np.count_nonzero(np.logical_and(up, in_mkt, out=up), axis=1)
    return total, mean, sd, downside, losses, n_up


def _positions(ts: np.ndarray, px: np.ndarray, fc: np.ndarray, strategies: list[BacktestConfig], timeframe: str,
               kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(P, N) position held over each bar of each strategy (decided at the close of bar t, held over bar
    t + 1; row 0 holds nothing) and its (P, N) turnover."""
    p_rows, n = len(strategies), len(ts)
    pos = np.empty((p_rows, n))
    pos[:, 0] = 0.0
    for j, cfg in enumerate(strategies):
        pos[j, 1:] = target_positions(ts, px, fc, cfg, timeframe, kind)[:-1]
    turn = np.empty((p_rows, n))
    turn[:, 0] = 0.0
    np.subtract(pos[:, 1:], pos[:, :-1], out=turn[:, 1:])
    np.abs(turn, out=turn)
    return pos, turn


def _book(pos: np.ndarray, turn: np.ndarray, bar_ret: np.ndarray, carry: np.ndarray | None, which: np.ndarray,
          rate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(C, N) costs and returns of each combination: its strategy's (`which`) gross return less its cost
    rate x turnover, less the funding its position pays (`carry`)."""
    gross = pos * bar_ret
    charge = None if carry is None else pos * carry
    c, n = len(which), pos.shape[1]
    cost = np.empty((c, n))
    ret = np.empty((c, n))
    for k, j in enumerate(which.tolist()):
        np.multiply(turn[j], rate[k], out=cost[k])
        np.subtract(gross[j], cost[k], out=ret[k])
        if charge is not None:
            ret[k] -= charge[j]
    return cost, ret


def _drawdowns(eq: np.ndarray, ts: np.ndarray) -> list[tuple[float, int, float, float]]:
    """(max_drawdown, bars, days, recovered) of each row of `eq` (C, N), as `performance.drawdown` of
    each row: the running peaks and troughs on the 2-D array, the span's ends by each row's short scans."""
    peak = np.maximum.accumulate(eq, axis=1)
    ratio = eq / peak
    trough = np.argmin(ratio, axis=1)
    mdd = ratio[np.arange(len(eq)), trough] - 1.0
    out = []
    for i in range(len(eq)):
        if mdd[i] >= 0:
            out.append((0.0, 0, 0.0, 1.0))
            continue
        t = int(trough[i])
        row = eq[i]
        peak_val = float(peak[i, t])  # the running maximum: max(row[: t + 1])
        start = _last_equal(row, t, peak_val)
        end = _first_at_least(row, t, peak_val)
        recovered = end >= 0
        if not recovered:
            end = len(row) - 1
        out.append((float(mdd[i]), end - start, float(ts[end] - ts[start]) / DAY_MS, 1.0 if recovered else 0.0))
    return out

