"""The offline market: a seeded, crypto-like price process behind a ccxt-style interface.

`SyntheticExchange` answers `load_markets()` and paged `fetch_ohlcv(symbol, timeframe, since, limit)`
exactly like a ccxt exchange, so the same fetch loop, store and CLI run on it with no network.

The process, per bar t (all parameters in `data.synthetic`):
    h_t = phi * h_{t-1} + vol_of_vol * eta_t                  log-volatility, AR(1): volatility clustering
    sigma_t = annual_vol * sqrt(dt) * exp(h_t) * regime_t * season(hour)
    f_t = rho * f_{t-1} + sqrt(1 - rho^2) * u_t               a hidden, slowly varying trend (unit variance)
    e_t = signal * f_{t-1} + sqrt(1 - signal^2) * z_t        z ~ Student-t(df), unit variance: fat tails
    r_t = (drift - sigma_t^2 / 2 per bar) + sigma_t * e_t     log return of the bar
so with `signal = s > 0` the next return leans on a trend that only the recent PAST returns reveal (rho =
`signal_persistence`): a model reading several lags can find it, the one-bar persistence rule barely
does; with `signal = 0` nothing at all is predictable: the honest null.

The series is generated in fixed chunks, each from its own seeded generator with the AR state carried
over, so the candles of a given time never depend on how far into the future one asks. Every draw and
every exp comes from `draws` (raw PCG64 bits, correctly rounded arithmetic only), so a config gives the
same candles bit for bit on any machine, CPU and numpy version.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from cryptonorm.config import SyntheticConfig
from cryptonorm.data import draws
from cryptonorm.timeframes import parse_date, timeframe_ms

CHUNK = 1 << 16  # bars per generator chunk
MARKETS = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "XRP/USDT", "ETH/BTC")


class SyntheticExchange:
    """A ccxt-compatible, deterministic exchange (`id = "synthetic"`)."""

    id = "synthetic"
    rateLimit = 0  # ms between requests; nothing to protect
    page_limit = 1000  # candles per fetch_ohlcv page, like most exchanges

    def __init__(self, params: SyntheticConfig | None = None, now_ms: int | None = None) -> None:
        self.params = params or SyntheticConfig()
        self.markets: dict[str, dict[str, Any]] = {}
        self._now_ms = now_ms  # fixed clock for tests; None = wall clock
        self._series: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        self._state_cache: dict[tuple[str, str, int], tuple[float, float, int]] = {}

    # ---- the ccxt surface used by exchange.py
    def load_markets(self) -> dict[str, dict[str, Any]]:
        if not self.markets:
            self.markets = {s: {"symbol": s, "active": True} for s in MARKETS}
        return self.markets

    @property
    def symbols(self) -> list[str]:
        return list(self.load_markets())

    @property
    def timeframes(self) -> dict[str, str]:
        return {tf: tf for tf in ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d", "1w")}

    def milliseconds(self) -> int:
        return self._now_ms if self._now_ms is not None else int(time.time() * 1000)

    def fetch_ohlcv(self, symbol: str, timeframe: str = "1h", since: int | None = None,
                    limit: int | None = None, params: dict[str, Any] | None = None) -> list[list[float]]:
        """Up to `limit` candles opening at or after `since`, the still-forming one included."""
        if symbol not in self.load_markets():
            raise KeyError(symbol)
        step = timeframe_ms(timeframe)
        start = self.start_ms(timeframe)
        limit = min(limit or self.page_limit, self.page_limit)
        now = self.milliseconds()
        last_open = (now // step) * step  # the forming candle, like a live exchange
        if last_open < start:
            return []
        first = start if since is None else max(start, -(-since // step) * step)
        i0 = (first - start) // step
        i1 = min(i0 + limit, (last_open - start) // step + 1)
        if i1 <= i0:
            return []
        s = self._generate(symbol, timeframe, int(i1))
        ts = start + np.arange(i0, i1, dtype=np.int64) * step
        block = np.column_stack([ts.astype("float64"), s["open"][i0:i1], s["high"][i0:i1],
                                 s["low"][i0:i1], s["close"][i0:i1], s["volume"][i0:i1]])
        rows: list[list[float]] = block.tolist()
        for r in rows:
            r[0] = int(r[0])
        return rows

    # ---- the process
    def start_ms(self, timeframe: str) -> int:
        step = timeframe_ms(timeframe)
        return -(-parse_date(self.params.start) // step) * step

    def _generate(self, symbol: str, timeframe: str, n: int) -> dict[str, np.ndarray]:
        """The first `n` bars (extended chunk by chunk and cached)."""
        key = (symbol, timeframe)
        have = self._series.get(key)
        if have is not None and len(have["close"]) >= n:
            return have
        n_chunks = -(-n // CHUNK)
        arrays = [self._chunk(symbol, timeframe, c) for c in range(n_chunks)]
        r = np.concatenate([a[0] for a in arrays])
        sig = np.concatenate([a[1] for a in arrays])
        uhi = np.concatenate([a[2] for a in arrays])
        ulo = np.concatenate([a[3] for a in arrays])
        vnoise = np.concatenate([a[4] for a in arrays])
        season = np.concatenate([a[5] for a in arrays])
        p = self.params
        close = p.price * draws.exp(np.cumsum(r))
        open_ = np.empty_like(close)
        open_[0] = p.price
        open_[1:] = close[:-1]
        # intrabar extremes: half-normal excursions beyond the body, scaled by the bar's volatility
        high = np.maximum(open_, close) * draws.exp(sig * uhi)
        low = np.minimum(open_, close) * draws.exp(-sig * ulo)
        hours = timeframe_ms(timeframe) / 3_600_000
        shock = np.abs(r) / np.maximum(sig, 1e-12)
        volume = p.volume * hours * season * draws.exp(0.4 * vnoise) * (0.5 + 0.5 * shock)
        out = {"open": open_, "high": high, "low": low, "close": close, "volume": volume}
        self._series[key] = out
        return out

    def _chunk(self, symbol: str, timeframe: str, c: int) -> tuple[np.ndarray, ...]:
        """Returns, sigmas and noise of chunk `c`; depends only on (params, symbol, timeframe, c).

        Every draw comes from `draws` (raw PCG64 bits and correctly rounded arithmetic), one named
        stream per quantity, so the same config gives the same bits on any machine and numpy version.
        """
        p = self.params
        step = timeframe_ms(timeframe)

        def stream(name: str) -> np.random.PCG64:
            return draws.bits(p.seed, symbol, timeframe, c, name)

        t = self.start_ms(timeframe) + (c * CHUNK + np.arange(CHUNK, dtype=np.int64)) * step
        # unit-variance Student-t shocks, and the hidden trend f (AR(1), state carried across chunks)
        scale = np.sqrt((p.tail_df - 2) / p.tail_df)
        z = draws.student_t(stream("z"), p.tail_df, CHUNK) * scale
        rho = p.signal_persistence
        f0 = self._last_f(symbol, timeframe, c)
        f = draws.ar1(np.sqrt(1.0 - rho * rho) * draws.normals(stream("f"), CHUNK), rho, f0)
        f_prev = np.empty(CHUNK)
        f_prev[1:] = f[:-1]
        f_prev[0] = f0
        e = p.signal * f_prev + np.sqrt(1.0 - p.signal * p.signal) * z
        # log-volatility AR(1), state carried across chunks; stationary std = vov / sqrt(1 - phi^2)
        eta = draws.normals(stream("h"), CHUNK) * p.vol_of_vol
        h0 = self._last_h(symbol, timeframe, c)
        h = draws.ar1(eta, p.vol_persistence, h0)
        h_var = p.vol_of_vol * p.vol_of_vol / max(1.0 - p.vol_persistence * p.vol_persistence, 1e-9)
        # volatility regimes: a Markov switch with mean length regime_days; a lognormal level each
        switch_p = min(1.0, step / (p.regime_days * 86_400_000))
        switches = draws.uniforms(stream("switch"), CHUNK) < switch_p
        regime_id = self._regime_start(symbol, timeframe, c) + np.cumsum(switches)
        ids = np.unique(regime_id)
        levels = draws.exp(np.array([-0.08 + 0.4 * draws.normals(draws.bits(p.seed, symbol, "regime", int(k)), 1)[0]
                                     for k in ids]))
        regime = levels[np.searchsorted(ids, regime_id)]
        # intraday seasonality (peak at 14:00 UTC), only for bars shorter than a day
        if step < 86_400_000:
            hour = (t // 3_600_000) % 24
            season = 1 + p.seasonality * draws.cos_hour(hour - 14)
        else:
            season = np.ones(CHUNK)
        dt = step / (365 * 86_400_000)
        sig = p.annual_vol * np.sqrt(dt) * draws.exp(h - h_var / 2) * regime * season
        r = p.drift * dt - 0.5 * sig * sig + sig * e
        uhi = np.abs(draws.normals(stream("hi"), CHUNK)) * 0.6
        ulo = np.abs(draws.normals(stream("lo"), CHUNK)) * 0.6
        vnoise = draws.normals(stream("volume"), CHUNK)
        self._state_cache[(symbol, timeframe, c + 1)] = (float(f[-1]), float(h[-1]), int(regime_id[-1]))
        return r, sig, uhi, ulo, vnoise, season

    # State carried across chunk boundaries; chunks are generated in order, so it is always cached.
    def _state(self, symbol: str, timeframe: str, c: int) -> tuple[float, float, int]:
        """(last trend f, last log-vol h, last regime id) at the end of chunk c - 1."""
        key = (symbol, timeframe, c)
        if key not in self._state_cache:
            if c == 0:
                return (0.0, 0.0, 0)
            self._chunk(symbol, timeframe, c - 1)
        return self._state_cache[key]

    def _last_f(self, symbol: str, timeframe: str, c: int) -> float:
        return self._state(symbol, timeframe, c)[0]

    def _last_h(self, symbol: str, timeframe: str, c: int) -> float:
        return self._state(symbol, timeframe, c)[1]

    def _regime_start(self, symbol: str, timeframe: str, c: int) -> int:
        return self._state(symbol, timeframe, c)[2]
