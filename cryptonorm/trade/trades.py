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
    first, last = trade_bounds(positions)
    return Trades(first, last, trade_returns(positions, returns, fees, first, last))


def trade_bounds(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, last) (K,) int64: the first and last bar of each run of constant non-zero side."""
    pos = positions
    n = len(pos)
    # int8 sides: 1 byte a bar instead of np.sign's 8 keeps the three passes below in cache
    side = (pos > 0).view(np.int8) - (pos < 0).view(np.int8)
    changed = np.empty(n + 1, dtype=bool)  # changed[i]: side[i] differs from the bar before (flat before 0)
    changed[0] = side[0] != 0
    np.not_equal(side[1:], side[:-1], out=changed[1:n])
    changed[n] = True  # the end closes whatever is open
    in_mkt = side != 0
    first = np.flatnonzero(changed[:n] & in_mkt)
    last = np.flatnonzero(changed[1:] & in_mkt)  # side differs from the bar after (or it is the last bar)
    return first, last


def trade_returns(
    positions: np.ndarray, returns: np.ndarray, fees: np.ndarray, first: np.ndarray, last: np.ndarray,
) -> np.ndarray:
    """(K,) compounded return of each trade [first, last] after its own share of the costs (see find_trades).

    Separate from `trade_bounds` so that series with the same positions (before and after costs) find
    their trades once.
    """
    pos = positions
    n = len(pos)
    if len(first) == 0:
        return np.zeros(0)
    factor = np.empty(n + 1)  # a sentinel 1 at the end so that `after` may equal n in reduceat
    np.add(returns, 1.0, out=factor[:-1])
    factor[-1] = 1.0
    bounds = np.empty(2 * len(first), dtype=np.int64)
    bounds[0::2], bounds[1::2] = first, last + 1
    if not fees.any():  # before costs: no fee to share out
        return np.multiply.reduceat(factor, bounds)[0::2] - 1.0
    prev = np.where(first > 0, pos[first - 1], 0.0)
    pos_in = pos[first]
    fee_in = fees[first]
    share_in = fee_in * np.abs(pos_in) / np.abs(pos_in - prev)  # |dpos| > 0: the side changed
    after = last + 1
    exit_share = np.zeros(len(last))
    has_exit = after < n
    ai, li = after[has_exit], last[has_exit]
    pos_out = pos[li]
    exit_share[has_exit] = fees[ai] * np.abs(pos_out) / np.abs(pos[ai] - pos_out)  # > 0: the side changed
    factor[first] += fee_in - share_in  # keep only this trade's share of the entry cost
    prod = np.multiply.reduceat(factor, bounds)[0::2]  # product over [first, last]
    return prod * (1.0 - exit_share) - 1.0


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
