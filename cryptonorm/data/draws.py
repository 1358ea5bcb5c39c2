"""Random draws and transcendental functions that give the same bits on every machine.

Why this exists: numpy guarantees the raw output of its bit generators (PCG64 from a seed is the same
stream in every numpy version), but NOT the output of `Generator` distribution methods (`standard_t`,
`standard_normal`, `gamma` may change algorithm between versions), and `np.exp` / `np.log` / `np.cos`
use SIMD kernels chosen by CPU (AVX2, AVX-512, NEON) whose last bits differ. The synthetic market went
through both, so the same config gave other candles on another machine.

Here everything is built from `PCG64.random_raw` (stream-stable) and IEEE-754 operations that are
correctly rounded on every platform: +, -, *, /, sqrt, floor/rint, frexp/ldexp, comparisons. Each numpy
expression is its own ufunc call, so no compiler can fuse a*b+c into an FMA; the AR(1) recursion runs
as a Python loop over floats for the same reason. Results are then identical bit for bit wherever they run.

    uniforms   53 random bits -> [0, 1)
    normals    Marsaglia's polar method (with our own log)
    gammas     Marsaglia & Tsang (2000), "A simple method for generating gamma variables"
    student_t  z / sqrt(chi2_df / df), chi2_df = 2 * Gamma(df / 2): exact for any df > 2
    exp, log   range reduction by powers of two + polynomial series (|rel. error| < 2e-16)
"""

from __future__ import annotations

import hashlib

import numpy as np

LN2_HI = 6.93147180369123816490e-01  # ln 2, high part: trailing bits zero, so k * LN2_HI is exact
LN2_LO = 1.90821492927058770002e-10  # ln 2 - LN2_HI
_EXP_TERMS = 18  # Taylor terms of exp(r), |r| <= ln2/2: the last is < 1e-19
_LOG_TERMS = 12  # odd powers of atanh's series, |s| <= 0.1716: the last is < 1e-19


def key(*parts: object) -> int:
    """A 64-bit seed from any parts, stable across Python and numpy versions."""
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


def bits(*parts: object) -> np.random.PCG64:
    """The bit generator of one named stream."""
    return np.random.PCG64(key(*parts))


def uniforms(bg: np.random.PCG64, n: int) -> np.ndarray:
    """n uniforms in [0, 1) from the top 53 bits of each raw 64-bit draw (exact in float64)."""
    raw = np.asarray(bg.random_raw(n), dtype=np.uint64)
    return (raw >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def exp(x: np.ndarray) -> np.ndarray:
    """e**x using only correctly rounded operations (x clipped to [-700, 700])."""
    x = np.clip(np.asarray(x, dtype=np.float64), -700.0, 700.0)
    k = np.rint(x * (1.0 / 0.6931471805599453))
    r = (x - k * LN2_HI) - k * LN2_LO  # |r| <= ln2/2 (+ rounding)
    p = np.ones_like(r)
    for i in range(_EXP_TERMS, 0, -1):  # Horner: 1 + r/1 (1 + r/2 (1 + r/3 (...)))
        p = 1.0 + (r / float(i)) * p
    return np.ldexp(p, k.astype(np.int64))


def log(x: np.ndarray) -> np.ndarray:
    """Natural log of x > 0 using only correctly rounded operations."""
    x = np.asarray(x, dtype=np.float64)
    m, e = np.frexp(x)  # x = m * 2**e, m in [0.5, 1)
    low = m < 0.7071067811865476
    m = np.where(low, m * 2.0, m)  # m in [sqrt(1/2), sqrt(2))
    e = (e - low).astype(np.float64)
    s = (m - 1.0) / (m + 1.0)  # log m = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...)
    s2 = s * s
    p = np.zeros_like(s)
    for i in range(_LOG_TERMS - 1, -1, -1):
        p = 1.0 / float(2 * i + 1) + s2 * p
    return e * LN2_HI + (e * LN2_LO + 2.0 * s * p)


def normals(bg: np.random.PCG64, n: int) -> np.ndarray:
    """n standard normals by Marsaglia's polar method (two per accepted pair)."""
    out: list[np.ndarray] = []
    have = 0
    while have < n:
        m = max(8, int((n - have) * 0.66) + 8)  # pairs per round (acceptance pi/4); a function of the count only
        u = uniforms(bg, 2 * m) * 2.0 - 1.0
        a, b = u[0::2], u[1::2]
        s = a * a + b * b
        ok = (s > 0.0) & (s < 1.0)
        a, b, s = a[ok], b[ok], s[ok]
        f = np.sqrt(-2.0 * log(s) / s)
        pair = np.empty(2 * len(s))
        pair[0::2], pair[1::2] = a * f, b * f
        out.append(pair)
        have += len(pair)
    return np.concatenate(out)[:n]


def gammas(bg: np.random.PCG64, shape: float, n: int) -> np.ndarray:
    """n draws of Gamma(shape, 1), shape >= 1, by Marsaglia & Tsang's squeeze-free rejection."""
    if shape < 1.0:
        raise ValueError(f"shape must be >= 1, got {shape}")
    d = shape - 1.0 / 3.0
    c = 1.0 / np.sqrt(9.0 * d)
    out: list[np.ndarray] = []
    have = 0
    while have < n:
        m = int((n - have) * 1.1) + 8
        x = normals(bg, m)
        u = uniforms(bg, m)
        v = 1.0 + c * x
        v = v * v * v
        ok = v > 0.0
        vs = np.where(ok, v, 1.0)
        ok &= log(np.where(u > 0.0, u, 1e-300)) < 0.5 * x * x + d - d * vs + d * log(vs)
        out.append(d * vs[ok])
        have += int(ok.sum())
    return np.concatenate(out)[:n]


def student_t(bg: np.random.PCG64, df: float, n: int) -> np.ndarray:
    """n draws of Student's t with df > 2 degrees of freedom: z / sqrt(chi2_df / df)."""
    z = normals(bg, n)
    chi2 = 2.0 * gammas(bg, df / 2.0, n)
    return z / np.sqrt(chi2 / df)


def ar1(x: np.ndarray, rho: float, y0: float) -> np.ndarray:
    """y_t = rho * y_{t-1} + x_t with y_{-1} = y0 (a plain loop: no fused multiply-add anywhere)."""
    out = np.empty(len(x))
    y = float(y0)
    for i, v in enumerate(x.tolist()):
        y = rho * y + v
        out[i] = y
    return out


def cos_hour(hour: np.ndarray) -> np.ndarray:
    """cos(2 pi h / 24) for whole hours h, from closed forms in sqrt (no platform cos)."""
    r2, r6 = np.sqrt(2.0), np.sqrt(6.0)
    quarter = np.array([1.0, (r6 + r2) / 4.0, np.sqrt(3.0) / 2.0, r2 / 2.0, 0.5, (r6 - r2) / 4.0, 0.0])
    h = np.asarray(hour, dtype=np.int64) % 24
    a = np.minimum(h, 24 - h)  # cos is even: 0..12
    return np.where(a <= 6, quarter[np.minimum(a, 6)], -quarter[np.minimum(12 - a, 6)])
