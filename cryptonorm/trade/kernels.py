"""The backtest's compiled engine (numba): four simple passes per equity curve, and Spearman's sums.

Imported only by cryptonorm.trade.fast when a backtest runs with numba installed (the `fast` extra) and
CRYPTONORM_NUMBA is not 0; the numpy code in positions.py, performance.py and trades.py is the reference
these kernels reproduce (within 1e-9 relative, integer counts exactly). Every kernel is compiled once per
machine (cache=True keeps the machine code in __pycache__) and releases the GIL.

A curve (the strategy, its cost-free twin, buy-and-hold, last-sign) takes four passes over its bars: `book`
(position -> turnover -> cost -> return, and their sums), `equity` (equity, drawdown, fees and funding paid,
per-year statistics), `trades` (first, last, compounded return after the trade's own costs, a reversal's cost
split as trades.trade_returns splits it) and `spread` (squared deviations from the means, as numpy's
two-pass std). Four simple loops measured 2-3x faster than one fused loop doing all of it: LLVM keeps each
small loop's state in registers, and the data-dependent choices are written as selects, not branches (with
random forecasts a trade starts on every other bar, and a branch on that is mispredicted half the time).

Scaled equity: the equity is kept as m x 2^(-512 j): when m falls below 2^-960 it is multiplied by 2^512
(exact: a power of two changes no rounding). A wiped-out curve then never goes subnormal, where each
multiply is microcoded (~100 cycles); its final equity and drawdown are MORE accurate than numpy's subnormal
ones (which lose bits at every bar below 2.2e-308). A stored equity column (the strategy's, buy-and-hold's)
is m x 2^(-512 j): numpy's cumprod bit for bit while it is a normal float, closer to the exact product below.
Fees and funding paid leave out terms on an equity below 2^-960; they cannot change a sum above 1e-250
(stats[FALLBACK] = 1 asks the caller for the numpy engine otherwise).
"""

from __future__ import annotations

import numpy as np
from numba import njit

# stats vector of one curve (float64)
FINAL, TOTAL, NEG, N_IN, N_UP, TURN, FEES, LOW, START, END, TRADES, WINS, FUNDING, DEV2, NEG2, FALLBACK = range(16)
N_STATS = 16
# a curve's series (rows of its (4 or 5, N) array)
C_EQUITY, C_POSITION, C_RETURN, C_COST, C_FUNDING = range(5)
# per-year rows (Y, 5): product of 1 + r, sum of r, lowest equity / running peak, funding paid, sum (r - mean)^2
Y_PROD, Y_SUM, Y_LOW, Y_FUNDING, Y_DEV2 = range(5)

_TINY = 2.2250738585072014e-308  # the smallest normal float64
_SMALL = 2.0 ** -960  # a scaled equity below this is multiplied by 2^512
_UP, _DOWN = 2.0 ** 512, 2.0 ** -512


@njit(cache=True, nogil=True, error_model="numpy")
def last_sign_target(px: np.ndarray, lev: float, short: bool) -> np.ndarray:
    """(N,) the last-sign baseline's targets, as backtest._last_sign sets them: sign(close[t] / close[t-1] - 1)
    x lev (0 for row 0; shorts at 0 when not allowed)."""
    n = len(px)
    out = np.empty(n)
    out[0] = 0.0
    lo = -1.0 if short else 0.0
    for t in range(1, n):
        b = px[t] / px[t - 1] - 1.0
        s = 1.0 if b > 0.0 else 0.0
        s = lo if b < 0.0 else s
        out[t] = s * lev
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def book(px: np.ndarray, target: np.ndarray, hold: bool, rate: float, carry: np.ndarray, pos: np.ndarray,
         ret: np.ndarray, cost: np.ndarray, charge: np.ndarray, stats: np.ndarray) -> None:
    """Pass 1 of a curve: the position held over each bar (the target decided at close t-1, or long 1 when
    `hold`), its cost, funding charge and return, into pos, cost, charge (when `carry` has N values) and ret
    (N,), with numpy's operations in numpy's order (positions.book): every value is the same float. Row 0 is
    the start (flat). Sums of returns, losses, turnover, bars in the market and up bars go into `stats`."""
    funded = len(carry) > 0
    pos[0], ret[0], cost[0] = 0.0, 0.0, 0.0
    if funded:
        charge[0] = 0.0 * carry[0]
    pp = total = neg = turn = 0.0
    n_in = n_up = 0
    for t in range(1, len(px)):
        p = 1.0 if hold else target[t - 1]
        tu = abs(p - pp)
        c = tu * rate
        r = p * (px[t] / px[t - 1] - 1.0) - c
        if funded:
            ch = p * carry[t]
            r -= ch
            charge[t] = ch
        pos[t], ret[t], cost[t] = p, r, c
        total += r
        neg += min(r, 0.0)
        turn += tu
        held = p != 0.0
        n_in += held
        n_up += held & (r > 0.0)
        pp = p
    stats[TOTAL], stats[NEG], stats[TURN], stats[N_IN], stats[N_UP] = total, neg, turn, n_in, n_up


# long function: one loop over the bars, its drawdown and per-year state side by side (see the docstring)
@njit(cache=True, nogil=True, error_model="numpy")
def equity(ret: np.ndarray, cost: np.ndarray, charge: np.ndarray, rows: np.ndarray, years: np.ndarray,
           eq: np.ndarray, stats: np.ndarray) -> None:
    """Pass 2: the equity (scaled below 2^-960, see the docstring; written to `eq` when it has N values,
    numpy's cumprod bit for bit while that is a normal float), fees and funding paid on the equity before
    each bar, the deepest drawdown (its peak's last bar, first bar of the trough, recovery), and per year
    (rows[y] <= t < rows[y + 1]) the compounded return, sum of returns, drawdown and funding paid.
    Data-dependent choices are selects, not branches: with random trades a branch on them is mispredicted."""
    store, funded = len(eq) > 0, len(charge) > 0
    if store:
        eq[0] = 1.0
    m, j, scale = 1.0, 0, 1.0  # equity = m x scale, scale = 2^(-512 j)
    peak, peak_at, low, start, end, top = 1.0, 0, 1.0, 0, -1, 1.0
    fees = funding = 0.0
    skipped = False
    for y in range(len(rows) - 1):
        yp, ypeak, ylow, ysum, yfund = 1.0, 1.0, 1.0, 0.0, 0.0
        for t in range(rows[y], rows[y + 1]):
            r, c = ret[t], cost[t]
            f = r + 1.0
            w = m if j == 0 else 0.0  # terms on a scaled (wiped-out) equity are < 2^-960: left out
            fees += c * w
            skipped |= (c != 0.0) & (j != 0)
            if funded:
                ch = charge[t] * w
                funding += ch
                yfund += ch
            m *= f
            if m < _SMALL and m > 0.0:  # rare (a wiped-out equity): a real branch
                m *= _UP
                j += 1
                scale = _DOWN ** j if j <= 2 else 0.0
            elif j > 0 and m >= _SMALL * _UP:
                m *= _DOWN
                j -= 1
                scale = _DOWN ** j
            if store:
                eq[t] = m * scale if j > 0 else m
            at = (j == 0) & (m >= peak)
            peak_at = t if at else peak_at
            peak = m if at else peak
            ratio = m / peak if j == 0 else 0.0
            deeper = ratio < low
            low = ratio if deeper else low
            start = peak_at if deeper else start
            top = peak if deeper else top
            end = -1 if deeper else end
            end = t if (end < 0) & (j == 0) & (m >= top) else end
            ysum += r
            yp *= f
            ypeak = max(ypeak, yp)
            ylow = min(ylow, yp / ypeak)
        years[y, Y_PROD], years[y, Y_SUM], years[y, Y_LOW], years[y, Y_FUNDING] = yp, ysum, ylow, yfund
    stats[FINAL] = m * scale if j > 0 else m  # 2^-1536 and below: 0.0, as it should be
    stats[LOW], stats[START], stats[END], stats[FEES], stats[FUNDING] = low, start, end, fees, funding
    stats[FALLBACK] = 1.0 if (skipped and fees <= 1e-250) else 0.0


@njit(cache=True, nogil=True, error_model="numpy")
def trades(pos: np.ndarray, cost: np.ndarray, ret: np.ndarray, first: np.ndarray, last: np.ndarray,
           tret: np.ndarray, stats: np.ndarray) -> int:
    """Pass 3: the trades, runs of one non-zero side: first and last bar held (row - 1) and compounded return
    after the trade's own costs, a reversal's cost split as trades.trade_returns splits it (written when
    `first` has room), their number and winners into `stats`. Returns the number of trades."""
    keep = len(first) > 0
    n = len(pos)
    side, tp, t0, pp = 0, 1.0, 0, 0.0
    k = wins = 0
    for t in range(1, n):
        p, c = pos[t], cost[t]
        f = ret[t] + 1.0
        tu = abs(p - pp)
        s = int(p > 0.0) - int(p < 0.0)
        change = s != side
        closing = change & (side != 0)
        share = abs(pp) * c / (tu if tu != 0.0 else 1.0)  # a reversal: the closed trade's part of the cost
        share = share if closing & (s != 0) else 0.0
        out = tp * (1.0 - share) - 1.0 if s != 0 else tp * f - 1.0
        if keep:  # written on every bar, kept by advancing k
            first[k], last[k], tret[k] = t0 - 1, t - 2, out
        wins += closing & (out > 0.0)
        k += closing
        tp = f + share if change else tp * f  # a flat bar's factor is exactly 1
        t0 = t if change else t0
        side, pp = s, p
    if side != 0:
        out = tp - 1.0
        if keep:
            first[k], last[k], tret[k] = t0 - 1, n - 2, out
        k += 1
        wins += out > 0.0
    stats[TRADES], stats[WINS] = k, wins
    return k


@njit(cache=True, nogil=True, error_model="numpy")
def spread(ret: np.ndarray, mean: float, rows: np.ndarray, years: np.ndarray, stats: np.ndarray) -> None:
    """Pass 4: sums of (r - mean)^2 and min(r, 0)^2 into stats, and of (r - the year's mean)^2 into
    years[:, Y_DEV2] (two passes, as numpy's std: a nearly constant series keeps its precision)."""
    dev2 = neg2 = 0.0
    for y in range(len(rows) - 1):
        ymean = years[y, Y_SUM] / max(rows[y + 1] - rows[y], 1)
        ydev2 = 0.0
        for t in range(rows[y], rows[y + 1]):
            r = ret[t]
            d = r - mean
            dev2 += d * d
            neg = min(r, 0.0)
            neg2 += neg * neg
            d = r - ymean
            ydev2 += d * d
        years[y, Y_DEV2] = ydev2
    stats[DEV2], stats[NEG2] = dev2, neg2


@njit(cache=True, nogil=True, error_model="numpy")
def rank_corr(ox: np.ndarray, nx: np.ndarray, oy: np.ndarray, ny: np.ndarray) -> float:
    """Spearman's correlation from two sort orders (metrics._sort_order: order, new-group flags), ties
    averaged. Ranks are kept doubled and centred (2 rank - (n + 1), integers), so every sum is exact in
    int64 for n <= 2,000,000 (|sum| <= n^3 < 2^63): the ranks of x are scattered once, y's are walked in its
    sorted order, gathering x's."""
    n = len(ox)
    rx = np.empty(n, dtype=np.int64)
    sxx = 0
    s = 0
    while s < n:
        e = s + 1
        while e < n and not nx[e]:
            e += 1
        v = s + 1 + e - (n + 1)
        for i in range(s, e):
            rx[ox[i]] = v
        sxx += v * v * (e - s)
        s = e
    sxy = syy = 0
    s = 0
    while s < n:
        e = s + 1
        while e < n and not ny[e]:
            e += 1
        v = s + 1 + e - (n + 1)
        acc = 0
        for i in range(s, e):
            acc += rx[oy[i]]
        sxy += v * acc
        syy += v * v * (e - s)
        s = e
    return float(sxy) / np.sqrt(float(sxx) * float(syy))
