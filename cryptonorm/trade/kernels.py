"""The backtest's compiled engine (numba): one fused pass per equity curve, and Spearman's sums.

Imported only by cryptonorm.trade.fast when a backtest runs with numba installed (the `fast` extra) and
CRYPTONORM_NUMBA is not 0; the numpy code in positions.py, performance.py and trades.py is the reference
these kernels reproduce (within 1e-9 relative, integer counts exactly). Every kernel is compiled once per
machine (cache=True keeps the machine code in __pycache__) and releases the GIL.

A curve pass walks the bars once: position -> turnover -> cost -> return -> equity, with the running peak
and deepest drawdown (its peak and recovery bars), the sums for Sharpe / Sortino / profit factor / hit rate
/ exposure, fees and funding paid, the trades (first, last, compounded return after the trade's own costs,
a reversal's cost split as trades.trade_returns splits it) and the per-year statistics. A second pass
takes the squared deviations from the means the first one found (two passes, as numpy's std, so a nearly
constant return series keeps its precision).

Scaled equity: a curve whose values are not returned (the cost-free twin, last-sign) may keep its equity
as m x 2^(-512 j): when m falls below 2^-960 it is multiplied by 2^512 (exact: a power of two changes no
rounding). A wiped-out curve then never goes subnormal, where each multiply is microcoded (~100 cycles):
its final equity and drawdown are MORE accurate than numpy's subnormal ones (which lose bits at every bar
below 2.2e-308). The strategy and buy-and-hold equities are returned, so they are never scaled and equal
numpy's cumprod bit for bit. Fees paid leave out terms on an equity below 2.2e-308 (scaled: below 2^-960);
they cannot change a sum above 1e-250 (stats[FALLBACK] = 1 asks the caller for the numpy engine otherwise).
"""

from __future__ import annotations

import numpy as np
from numba import njit

TARGET, HOLD = 0, 2  # where a curve's positions come from: targets (last_sign_target's too), long 1
# stats vector of one curve (float64)
FINAL, TOTAL, NEG, N_IN, N_UP, TURN, FEES, LOW, START, END, TRADES, WINS, FUNDING, DEV2, NEG2, FALLBACK = range(16)
N_STATS = 16
# the columns a curve may store (rows of `cols`)
C_EQUITY, C_POSITION, C_RETURN, C_COST, C_FUNDING = range(5)
# per-year rows (Y, 5): product of 1 + r, sum of r, lowest equity / running peak, funding paid, sum (r - mean)^2
Y_PROD, Y_SUM, Y_LOW, Y_FUNDING, Y_DEV2 = range(5)

_TINY = 2.2250738585072014e-308  # the smallest normal float64
_SMALL = 2.0 ** -960  # a scaled equity below this is multiplied by 2^512
_UP, _DOWN = 2.0 ** 512, 2.0 ** -512
_MARGIN = 1e-320  # keeps the drawdown prefilter conservative when its threshold is subnormal


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
def _position(mode: int, t: int, target: np.ndarray) -> float:
    """The position held over bar t (row t >= 1): the target decided at close t-1, or long 1 (buy-and-hold).
    (A third, computed mode here measured 20x slower: LLVM no longer specializes the loop.)"""
    if mode == TARGET:
        return target[t - 1]
    return 1.0


@njit(cache=True, nogil=True, error_model="numpy")
def _bar(mode: int, t: int, px: np.ndarray, target: np.ndarray, rate: float, carry: np.ndarray,
         pp: float) -> tuple[float, float, float, float, float]:
    """(position, turnover, cost, funding charge, return) of bar t after position pp, with numpy's operations
    in numpy's order (positions.book): every value is the same float."""
    br = px[t] / px[t - 1] - 1.0
    p = _position(mode, t, target)
    tu = abs(p - pp)
    c = tu * rate
    r = p * br - c
    ch = 0.0
    if len(carry) > 0:
        ch = p * carry[t]
        r -= ch
    return p, tu, c, ch, r


# long function: one fused loop over the bars is the point of this module (see the docstring)
@njit(cache=True, nogil=True, error_model="numpy")
def curve(px: np.ndarray, target: np.ndarray, mode: int, rate: float, carry: np.ndarray, scaled: bool,
          rows: np.ndarray, years: np.ndarray, cols: np.ndarray, first: np.ndarray, last: np.ndarray,
          tret: np.ndarray, stats: np.ndarray) -> int:
    """One curve's first pass over rows 1..N-1 (row 0: the start, flat, equity 1). Fills `stats` (N_STATS)
    and `years` (Y, 5) for the years' rows rows[y] <= t < rows[y + 1] (rows[0] = 1, rows[Y] = N); `cols`
    (w, N): the first w of equity, position, return, cost, funding charge (w = 0: none); the trades' first /
    last bars held (row - 1) and returns when `first` can hold them. Returns the number of trades."""
    n = len(px)
    width, keep = cols.shape[0], len(first) > 0
    if width > 0:
        cols[0, 0] = 1.0
    if width > 1:
        cols[1, 0], cols[2, 0], cols[3, 0] = 0.0, 0.0, 0.0
    if width > 4:
        cols[4, 0] = 0.0 * carry[0]
    m, j = 1.0, 0  # equity = m x 2^(-512 j)
    peak, peak_at = 1.0, 0
    low, low_j, start, end, top = 1.0, 0, 0, -1, 1.0  # deepest equity / peak, its peak bar, recovery, peak
    thr = 1.0 * (1.0 + 1e-12) + _MARGIN  # bars below thr may set a new low (no division on the others)
    total = neg = turn = fees = funding = 0.0
    n_in = n_up = k = wins = 0
    skipped = False
    side, tp, t0, pp = 0, 1.0, 0, 0.0
    for y in range(len(rows) - 1):
        yp, ypeak, ylow, ysum, yfund = 1.0, 1.0, 1.0, 0.0, 0.0
        ythr = 1.0 + 1e-12
        for t in range(rows[y], rows[y + 1]):
            p, tu, c, ch, r = _bar(mode, t, px, target, rate, carry, pp)
            f = r + 1.0
            if c != 0.0:
                if j == 0 and m >= _TINY:
                    fees += c * m
                else:
                    skipped = True
            if ch != 0.0:
                funding += ch * m
                yfund += ch * m
            m *= f
            if width > 0:
                cols[0, t] = m
            if width > 1:
                cols[1, t], cols[2, t], cols[3, t] = p, r, c
            if width > 4:
                cols[4, t] = ch
            if scaled:
                if m < _SMALL and m > 0.0:
                    m *= _UP
                    j += 1
                elif j > 0 and m >= _SMALL * _UP:
                    m *= _DOWN
                    j -= 1
            # drawdown: running peak, deepest equity / peak (first bar of it), recovery of that peak
            if j == 0 and m >= peak:
                if m > peak:
                    peak = m
                    thr = low * peak * (1.0 + 1e-12) + _MARGIN
                peak_at = t
                if end < 0 and m >= top:
                    end = t
            elif j > low_j or (j == low_j and m < thr):
                ratio = m / peak
                if j > low_j or ratio < low:
                    low, low_j, start, end, top = ratio, j, peak_at, -1, peak
                    thr = low * peak * (1.0 + 1e-12) + _MARGIN
            total += r
            if r < 0.0:
                neg += r
            turn += tu
            if p != 0.0:
                n_in += 1
                if r > 0.0:
                    n_up += 1
            # trades: a run of one non-zero side; the factors of the flat bars after an exit are exactly 1
            s = 0
            if p > 0.0:
                s = 1
            elif p < 0.0:
                s = -1
            if s != side:
                if side != 0:
                    share = 0.0
                    if s != 0:
                        if c != 0.0:
                            share = abs(pp) * c / tu
                        out = tp * (1.0 - share) - 1.0
                    else:
                        out = tp * f - 1.0
                    if keep:
                        first[k] = t0 - 1
                        last[k] = t - 2
                        tret[k] = out
                    k += 1
                    if out > 0.0:
                        wins += 1
                    tp = f + share
                else:
                    tp = f
                t0 = t
            elif s != 0:
                tp *= f
            side, pp = s, p
            # the year: compounded return, sum of returns, drawdown from the year's start at 1
            ysum += r
            yp *= f
            if yp >= ypeak:
                ypeak = yp
                ythr = ylow * ypeak * (1.0 + 1e-12) + _MARGIN
            elif yp < ythr:
                ratio = yp / ypeak
                if ratio < ylow:
                    ylow = ratio
                    ythr = ylow * ypeak * (1.0 + 1e-12) + _MARGIN
        years[y, Y_PROD], years[y, Y_SUM], years[y, Y_LOW], years[y, Y_FUNDING] = yp, ysum, ylow, yfund
    if side != 0:
        out = tp - 1.0
        if keep:
            first[k], last[k], tret[k] = t0 - 1, n - 2, out
        k += 1
        if out > 0.0:
            wins += 1
    stats[FINAL] = m if j == 0 else m * 2.0 ** (-512 * min(j, 3))  # 2^-1536: 0.0, as it should be
    stats[LOW] = low if low_j == 0 else 0.0
    stats[TOTAL], stats[NEG], stats[N_IN], stats[N_UP], stats[TURN] = total, neg, n_in, n_up, turn
    stats[FEES], stats[START], stats[END], stats[TRADES], stats[WINS] = fees, start, end, k, wins
    stats[FUNDING] = funding
    stats[FALLBACK] = 1.0 if (skipped and fees <= 1e-250) else 0.0
    return k


@njit(cache=True, nogil=True, error_model="numpy")
def spread(px: np.ndarray, target: np.ndarray, mode: int, rate: float, carry: np.ndarray, ret: np.ndarray,
           mean: float, rows: np.ndarray, years: np.ndarray, stats: np.ndarray) -> None:
    """The second pass: sums of (r - mean)^2 and min(r, 0)^2 into stats, and of (r - the year's mean)^2 into
    years[:, Y_DEV2]. The returns are read from `ret` (N,) when the curve stored them, else recomputed."""
    dev2 = neg2 = 0.0
    pp = 0.0
    stored = len(ret) == len(px)
    for y in range(len(rows) - 1):
        ymean = years[y, Y_SUM] / max(rows[y + 1] - rows[y], 1)
        ydev2 = 0.0
        for t in range(rows[y], rows[y + 1]):
            if stored:
                r = ret[t]
            else:
                pp, _, _, _, r = _bar(mode, t, px, target, rate, carry, pp)
            d = r - mean
            dev2 += d * d
            if r < 0.0:
                neg2 += r * r
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
