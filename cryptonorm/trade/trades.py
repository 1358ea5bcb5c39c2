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
    positions: np.ndarray, returns: np.ndarray, fees: np.ndarray | None, first: np.ndarray, last: np.ndarray,
    *, factor: np.ndarray | None = None, turn: np.ndarray | None = None,
) -> np.ndarray:
    """(K,) compounded return of each trade [first, last] after its own share of the costs (see find_trades).

    Separate from `trade_bounds` so that series with the same positions (before and after costs) find
    their trades once. `fees` None: no costs (a cost-free twin). `factor` (n,): 1 + returns from a caller
    whose flat bars return minus their fee (the bar after a trade that exits to flat: its exit cost; 0
    elsewhere), as every simulation's do; it is left as it was. `turn` (n,): |position change| on each bar
    (the first from flat), when the caller has it. Without it, those bars are set so here.

    One product per trade from its first bar to the next trade's first bar (np.multiply.reduceat on the
    trade starts alone, no Python loop): the bars in between are flat with factor 1, except the bar right
    after a trade that exits to flat, whose 1 - fee is that trade's exit. A reversal's cost is split: the
    entry bar's factor keeps the opening trade's share, the closed trade is charged its share after.
    """
    if len(first) == 0:
        return np.zeros(0)
    pos = positions
    fac = _flat_factors(pos, returns, fees, last) if factor is None else factor
    rev = np.flatnonzero(first[1:] == last[:-1] + 1) + 1  # trades entered by a reversal: the previous bar is held
    if fees is None or len(rev) == 0:
        return np.multiply.reduceat(fac, first) - 1.0
    at = first[rev]  # the reversal bars: the exit of trade rev - 1 and the entry of trade rev
    p_out = pos[at - 1]
    share = np.abs(p_out)
    share *= fees[at]
    share /= np.abs(pos[at] - p_out) if turn is None else turn[at]  # the closed trade's share |p_out| / |dpos|
    kept = fac[at]  # the caller's factor is changed at these bars for the product, then restored
    fac[at] = kept + share  # the opening trade pays only the rest of the entry cost
    out = np.multiply.reduceat(fac, first)
    fac[at] = kept
    np.subtract(1.0, share, out=share)
    out[rev - 1] *= share
    out -= 1.0
    return out


def _flat_factors(pos: np.ndarray, returns: np.ndarray, fees: np.ndarray | None, last: np.ndarray) -> np.ndarray:
    """(n,) 1 + returns on bars held, 1 on flat bars but 1 - fee on a bar after a trade's exit to flat."""
    fac = np.add(returns, 1.0)
    fac[pos == 0] = 1.0
    if fees is not None:  # a flat exit's cost is wholly the trade's own
        after = last + 1
        out_flat = after[after < len(pos)]
        out_flat = out_flat[pos[out_flat] == 0]
        fac[out_flat] = 1.0 - fees[out_flat]
    return fac


def trade_frame(ts: np.ndarray, px: np.ndarray, pos: np.ndarray, tr: Trades, *,
                size: float | None = None) -> pd.DataFrame:
    """The trades table. `pos` is per row (N,); tr indexes bars held (row = index + 1). `size`: the one
    |position| of every bar in the market when the caller knows it (fixed sizing), else the mean is taken."""
    start, end = tr.first + 1, tr.last + 1  # rows held; entered at close[start - 1], exited at close[end]
    held = end - start + 1
    if size is not None:
        sizes = np.full(len(start), size)
    elif len(start):  # sum of |position| over rows [start, next start): the rows between trades are flat (0)
        sizes = np.add.reduceat(np.abs(pos), start) / held
    else:
        sizes = np.zeros(0)
    side = pd.Categorical.from_codes((pos[start] > 0).view(np.int8), categories=["short", "long"])
    # copy=False: every column is a new array of this function's (or the trades' own returns)
    return pd.DataFrame({
        "entry_time": ts[start - 1], "exit_time": ts[end], "side": side, "size": sizes,
        "entry_price": px[start - 1], "exit_price": px[end], "return": tr.returns,
        "bars_held": held, "closed": end < len(pos) - 1,
    }, columns=TRADE_COLUMNS, copy=False)
