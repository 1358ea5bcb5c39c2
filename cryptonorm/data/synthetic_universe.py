"""The offline universe: many coins with a market factor, sectors, listings, delistings and a planted
cross-sectional signal of known strength (`data.universe.synthetic`).

Per bar t and coin i of sector k(i) = i % sectors (all parameters in `SyntheticUniverseConfig`):
    g_t      market volatility regime: a Markov switch (mean length regime_days), lognormal level each
    m_t, s_kt, z_it   unit-variance Student-t(tail_df) shocks: market, sector k, idiosyncratic
    f_it = rho * f_i,t-1 + sqrt(1 - rho^2) * u_it       a hidden idiosyncratic trend (unit variance)
    e_it = signal * f_i,t-1 + sqrt(1 - signal^2) * z_it   the idiosyncratic part: leans on the PAST trend
    sigma_t = annual_vol * sqrt(dt) * g_t
    r_it = sigma_t * (sqrt(a) m_t + sqrt(b) s_kt + sqrt(1 - a - b) e_it) - sigma_t^2 / 2   (a, b: shares)
The planted strength is exact: corr(f_i,t-1, e_it) = signal, and f is revealed only by coin i's own past
idiosyncratic returns, so a model that ranks coins by their recent excess returns can find it; with
signal = 0 no coin is predictable relative to the others: the honest null.

Listings and delistings: a `listed` share of the coins starts at a random bar in the first 60% of the span,
a `delisted` share stops at a random bar in the last 40%; a coin has no candles outside its life.
Every draw comes from `draws` (raw PCG64 bits, correctly rounded arithmetic), so a config gives the same
candles on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cryptonorm.config.universe import SyntheticUniverseConfig
from cryptonorm.data import draws
from cryptonorm.timeframes import parse_date, timeframe_ms

YEAR_MS = 365 * 86_400_000


@dataclass(eq=False)
class SyntheticUniverse:
    """The candles of every coin, and what the tests need to know about the process."""

    candles: dict[str, pd.DataFrame]  # symbol -> candle frame (timestamp, open, high, low, close, volume)
    timestamps: np.ndarray  # (T,) int64 ms: the universe's grid
    trend: np.ndarray  # (T, C) the hidden trend f_{i,t-1} that leans on bar t's return; NaN outside a life
    life: np.ndarray  # (C, 2) int64 first and last bar index (inclusive) of each coin


def generate(p: SyntheticUniverseConfig, timeframe: str, symbols: list[str]) -> SyntheticUniverse:
    """The universe of `symbols` (one per coin, p.coins of them) on `timeframe` bars."""
    step = timeframe_ms(timeframe)
    start = -(-parse_date(p.start) // step) * step
    n = int(p.days * 86_400_000 // step)
    ts = start + np.arange(n, dtype=np.int64) * step
    c = len(symbols)
    dt = step / YEAR_MS

    def stream(*name: object) -> np.random.PCG64:
        return draws.bits(p.seed, timeframe, *name)

    t_scale = np.sqrt((p.tail_df - 2) / p.tail_df)  # unit-variance Student-t
    switch = draws.uniforms(stream("regime"), n) < min(1.0, step / (p.regime_days * 86_400_000))
    regime_id = np.cumsum(switch)
    levels = draws.exp(-0.08 + 0.4 * draws.normals(stream("levels"), int(regime_id[-1]) + 1))
    sigma = p.annual_vol * np.sqrt(dt) * levels[regime_id]  # (T,)
    market = draws.student_t(stream("market"), p.tail_df, n) * t_scale
    sectors = [draws.student_t(stream("sector", k), p.tail_df, n) * t_scale for k in range(p.sectors)]
    a, b = p.market_share, p.sector_share
    rho, s = p.signal_persistence, p.signal

    life = _lives(p, n, c)
    trend = np.full((n, c), np.nan)
    out: dict[str, pd.DataFrame] = {}
    for i, sym in enumerate(symbols):
        f = draws.ar1(np.sqrt(1.0 - rho * rho) * draws.normals(stream("trend", i), n), rho, 0.0)
        f_prev = np.concatenate([[0.0], f[:-1]])
        z = draws.student_t(stream("idio", i), p.tail_df, n) * t_scale
        e = s * f_prev + np.sqrt(1.0 - s * s) * z
        shock = np.sqrt(a) * market + np.sqrt(b) * sectors[i % p.sectors] + np.sqrt(1.0 - a - b) * e
        r = sigma * shock - 0.5 * sigma * sigma
        lo, hi = int(life[i, 0]), int(life[i, 1])
        trend[lo:hi + 1, i] = f_prev[lo:hi + 1]
        out[sym] = _candles(ts[lo:hi + 1], r[lo:hi + 1], sigma[lo:hi + 1], stream("bars", i), step)
    return SyntheticUniverse(candles=out, timestamps=ts, trend=trend, life=life)


def _lives(p: SyntheticUniverseConfig, n: int, c: int) -> np.ndarray:
    """(C, 2) first and last bar of each coin: late listings in the first 60%, delistings in the last 40%."""
    u = draws.uniforms(draws.bits(p.seed, "life"), 4 * c).reshape(c, 4)
    life = np.zeros((c, 2), dtype=np.int64)
    life[:, 1] = n - 1
    late = u[:, 0] < p.listed
    gone = u[:, 1] < p.delisted
    life[late, 0] = (u[late, 2] * 0.6 * n).astype(np.int64)
    life[gone, 1] = (n - 1 - u[gone, 3] * 0.4 * n).astype(np.int64)
    return life


def _candles(ts: np.ndarray, r: np.ndarray, sigma: np.ndarray, bg: np.random.PCG64, step: int) -> pd.DataFrame:
    """OHLCV bars from log returns: open = previous close, half-normal wicks, lognormal volume."""
    m = len(ts)
    price0 = draws.exp(3.0 + 2.0 * draws.normals(bg, 1))[0]
    close = price0 * draws.exp(np.cumsum(r))
    open_ = np.concatenate([[price0], close[:-1]])
    wick = np.abs(draws.normals(bg, 2 * m)) * 0.6
    high = np.maximum(open_, close) * draws.exp(sigma * wick[:m])
    low = np.minimum(open_, close) * draws.exp(-sigma * wick[m:])
    shock = np.abs(r) / np.maximum(sigma, 1e-12)
    volume = 1_000.0 * (step / 3_600_000) * draws.exp(0.4 * draws.normals(bg, m)) * (0.5 + 0.5 * shock)
    return pd.DataFrame({"timestamp": ts, "open": open_, "high": high, "low": low, "close": close,
                         "volume": volume})
