"""Trades found in per-bar positions (vectorized, no Python loop over bars) and the trades table."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

TRADE_COLUMNS = ["entry_time", "exit_time", "side", "size", "entry_price", "exit_price", "return",
                 "bars_held", "closed"]


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


def trade_frame(ts: np.ndarray, px: np.ndarray, pos: np.ndarray, tr: Trades) -> pd.DataFrame:
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
