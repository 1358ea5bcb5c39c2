"""Numeric kernels of the indicators, numpy only: the EMA / Wilder recursion and the rolling mean and std.

Both are exact to float64 rounding (no add/remove running sum that drifts, no sum-of-squares cancellation)
and run as a few whole-array numpy passes, without numba or scipy: `scipy.signal` alone takes seconds to
import on a loaded machine, and every `cryptonorm train` on a local file would pay it.
"""

from __future__ import annotations

import numpy as np

# Largest growth factor (1 - alpha)^-k inside one block of `recursive`: values up to 1e150 stay finite, and
# the term it drops (a factor (1 - alpha)^B <= 1e-150) is far below float64 rounding.
_SPAN = 1e150
_CHUNK = 1 << 16  # values per slice of `rolling_mean_std`: its few temporaries stay in the CPU cache


def recursive(x: np.ndarray, alpha: float, prev: float, out: np.ndarray | None = None) -> np.ndarray:
    """y[i] = alpha * x[i] + (1 - alpha) * y[i-1] for every i of x, with y[-1] = prev (1-D float64), into out.

    Closed form per block of B values, c = 1 - alpha: y[k] = c^k * (c * y_before + sum_{j<=k} alpha x[j] c^-j),
    one cumsum for all blocks instead of a Python loop. B is the longest block with c^-B <= 1e150, so the
    carry from two blocks back (a factor c^B <= 1e-150) is below rounding: each block needs only the
    previous block's sums. Same values as the sequential loop to ~1e-14 relative; a NaN carries forward
    forever, as in the loop.
    """
    m = len(x)
    y = np.empty(m) if out is None else out
    c = 1.0 - alpha
    if c <= 0.0 or m == 0:  # alpha = 1: y = x (and the loop's 0 * NaN still carries a NaN forward)
        np.multiply(x, alpha, out=y)
        nan = np.isnan(y)
        if nan.any():
            y[int(np.argmax(nan)):] = np.nan
        return y
    size = int(min(m, max(1.0, np.log(_SPAN) / -np.log(c))))
    rows, rest = divmod(m, size)
    k = np.arange(size, dtype=float)
    z = y[:rows * size].reshape(rows, size)  # (rows, size), computed in place in the output
    np.multiply(x[:rows * size].reshape(rows, size), alpha * c**-k, out=z)  # alpha x[j] c^-j, <= ~1e150 |x|
    np.cumsum(z, axis=1, out=z)
    carry = np.empty((rows, 1))
    carry[0] = c * prev
    carry[1:, 0] = z[:-1, -1] * c**size  # c * y at the end of the block before, less its own carry (<= 1e-150)
    z += carry
    gone = np.isnan(carry[:, 0])  # a NaN in a block reaches every later block: the dropped term is NaN then
    if gone.any():
        z[int(np.argmax(gone)):] = np.nan
    z *= c**k
    if rest:  # the last, shorter block
        recursive(x[rows * size:], alpha, float(y[rows * size - 1]), out=y[rows * size:])
    return y


def _fill_nan(x: np.ndarray) -> np.ndarray:
    """x with each NaN replaced by the last value before it (leading NaNs by the first value)."""
    ok = ~np.isnan(x)
    idx = np.maximum.accumulate(np.where(ok, np.arange(len(x)), 0))
    out = x[idx]
    out[:int(np.argmax(ok))] = x[int(np.argmax(ok))]
    return out


def rolling_mean(x: np.ndarray, n: int) -> np.ndarray:
    """Mean of each window x[i-n+1 : i+1], as `rolling_mean_std` (half its work)."""
    return _moments(x, n, std=False)[0]


def rolling_mean_std(x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, population std) of each window x[i-n+1 : i+1]; see `_moments`."""
    mean, sd = _moments(x, n, std=True)
    assert sd is not None
    return mean, sd


def _moments(x: np.ndarray, n: int, std: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """(mean, population std or None) of each window x[i-n+1 : i+1]; NaN for the first n-1 rows and for
    every window that holds a NaN. Exact to float64 rounding, O(len(x)) whatever n.

    Split x into blocks of n. The window starting at offset q of block b is the suffix q.. of block b plus
    the prefix ..q-1 of block b+1 (van Herk / Gil-Werman): two cumulative sums per block (suffix and prefix)
    give every window as ONE addition, never a difference of running sums. Deviations are taken from the
    last value of block b, a value inside the window: the variance Q/n - (S/n)^2 then loses at most a
    factor n+1 to cancellation (Q/n <= (n+1) var), ~1e-14 relative, even on a flat window next to a jump
    (where a running sum of squares or of price-sized values loses everything).
    """
    nan = np.isnan(x)
    if not nan.any():
        return _windows(x, n, std)
    if nan.all():
        return np.full(len(x), np.nan), (np.full(len(x), np.nan) if std else None)
    mean, sd = _windows(_fill_nan(x), n, std)
    held = np.cumsum(nan)  # NaNs up to each row; held[i] - held[i-n]: NaNs in the window ending at i
    held[n:] -= held[:-n].copy()
    mean[held > 0] = np.nan
    if sd is not None:
        sd[held > 0] = np.nan
    return mean, sd


def _windows(x: np.ndarray, n: int, std: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """`rolling_mean_std` of an x without NaN: the block loop, one cache-sized slice of blocks at a time."""
    size = len(x)
    if size < n:
        return np.full(size, np.nan), (np.full(size, np.nan) if std else None)
    full = size // n  # whole blocks in x; the windows reach into one more block, x's rest padded
    head = x[:full * n].reshape(full, n).T  # (n, full) view: column b = block b
    tail = np.full(n, x[-1])
    tail[:size - full * n] = x[full * n:]
    mean = np.empty(n - 1 + full * n)  # the first n-1 rows have no window; rows past `size` are cut
    mean[:n - 1] = np.nan
    sd = mean.copy() if std else None
    step = max(1024, _CHUNK // n)
    buf = np.empty((n, min(step, full) + 1))
    for b0 in range(0, full, step):  # windows starting in blocks b0..b1-1 end in blocks b0..b1
        b1 = min(full, b0 + step)
        t = buf[:, :b1 + 1 - b0]
        h = min(b1 + 1, full) - b0
        t[:, :h] = head[:, b0:b0 + h]  # transposing copy of a cache-sized slice
        t[:, h:] = tail[:, None]
        _window_block(t, mean, sd, n - 1 + b0 * n)
    return mean[:size], (sd[:size] if sd is not None else None)


def _cumsum_rows(a: np.ndarray, out: np.ndarray) -> None:
    """out[q] = a[0] + ... + a[q] down axis 0: one vectorized add per row (numpy's own cumsum is a scalar
    loop, ~4x slower per value)."""
    if len(a) == 0:
        return
    if a.shape[1] < 32:  # few, narrow rows: the per-call cost would dominate
        np.cumsum(a, axis=0, out=out)
        return
    out[0] = a[0]
    for q in range(1, len(a)):
        np.add(out[q - 1], a[q], out=out[q])


def _window_block(t: np.ndarray, mean: np.ndarray, sd: np.ndarray | None, at: int) -> None:
    """Windows starting in blocks t[:, :-1] (t: (n, k+1), column = block) into mean/sd from row `at`."""
    n, k = t.shape[0], t.shape[1] - 1
    a = t[-1:, :-1]  # (1, k) anchor: the last value of each block, inside each window it starts
    d = t[:, :-1] - a  # (n, k) suffix deviations
    e = t[:, 1:] - a  # (n, k) deviations in the next block (its prefix ends each window)
    s = np.empty_like(d)
    _cumsum_rows(d[::-1], s[::-1])  # s[q] = sum d[q:]
    ps = np.empty_like(e)
    ps[0] = 0.0
    _cumsum_rows(e[:-1], ps[1:])  # ps[q] = sum e[:q]
    s += ps
    s *= 1.0 / n  # mean deviation from the anchor, (n, k)
    mean[at:at + n * k].reshape(k, n)[...] = (s + a).T
    if sd is None:
        return
    d *= d
    e *= e
    q = np.empty_like(d)
    _cumsum_rows(d[::-1], q[::-1])
    _cumsum_rows(e[:-1], ps[1:])
    q += ps
    q *= 1.0 / n
    s *= s
    q -= s
    np.maximum(q, 0.0, out=q)
    np.sqrt(q, out=q)
    sd[at:at + n * k].reshape(k, n)[...] = q.T
