"""Technical indicators: pure, vectorized functions, candle frame in -> feature frame out.

Raw values follow TA-Lib's definitions and, after each indicator's warm-up, equal `talib.SMA, EMA, RSI,
MACD, BBANDS, ATR` to ~1e-12 relative (tests/test_indicators.py checks 1e-9 on real BTC/USDT 1h candles).
During warm-up a column is NaN exactly where TA-Lib's is NaN. Two engines, same values: where TA-Lib is
installed, SMA, EMA, RSI, MACD and ATR are handed to it (C loops; imported at first use); otherwise, and
always for the bands and the other columns, numpy kernels in `features/rolling.py` compute the recursions
and rolling windows exactly to float64 rounding (no scipy: `scipy.signal` alone took seconds to import).
Timings beside TA-Lib: benchmarks/bench_features.py and docs/benchmarks.md ("Indicators").

Indicators are computed over the *bar sequence* as given: on data with gaps (missing bars) a rolling
window or recursion simply continues across the gap. `dataset.prepare` therefore never lets a sample's
window or label span cross a gap (gap_policy=drop), or fills the gap with flat bars flagged by
`gap_mask` first (gap_policy=ffill). Indicator look-backs that reach back over a gap before a sample's
window are not excluded.

Columns of `compute_features`: their definitions, warm-up lengths and which are model inputs are tabled
once, in docs/guide/features.md (the Features table); the notes below cover what the table does not.

`{k}` is written by `format_k` (2.0 -> "2", 2.5 -> "2.5"). MACD, ATR and the bands are in price units and
drift with the price level, so `inputs: stationary` leaves them out in favour of the scale-free columns.
Deliberate differences from TA-Lib: RSI is 50 (TA-Lib: 0) when the average gain plus loss is zero, and
TA-Lib's 1e-8 "is zero" threshold is not applied (it zeroes the RSI of sub-cent coins). MACD values agree
with TA-Lib to ~1e-15 x close in absolute terms; near a zero crossing that is more than 1e-9 relative,
since a difference of two price-sized EMAs cannot be more precise than float64 rounding of the price.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from cryptonorm.config import FeaturesConfig
from cryptonorm.data.candles import COLUMNS
from cryptonorm.errors import DataError
from cryptonorm.features.rolling import recursive, rolling_mean, rolling_mean_std

# A window whose std is below this fraction of its mean is flat (rounding noise, not a real spread).
_FLAT = 1e-12
CANDLE_COLUMNS = COLUMNS  # the candle frame's columns (one definition, in data/candles.py)

# Model inputs kept with `features.inputs: stationary`: scale-free columns only.
_STATIONARY = re.compile(
    r"^(rsi_\d+|bb_pctb_\d+_[0-9.e+-]+|bb_width_\d+_[0-9.e+-]+|logret_\d+|vol_\d+|volz_\d+"
    r"|rel_sma_\d+|rel_ema_\d+|gap_mask)$"
)


def format_k(k: float) -> str:
    """Bollinger width in a column name: 2.0 -> "2", 2.5 -> "2.5"."""
    k = float(k)
    return str(int(k)) if k.is_integer() else repr(k)


def _unique(periods: Iterable[int]) -> list[int]:
    return list(dict.fromkeys(int(p) for p in periods))


def _unique_pairs(pairs: Iterable[tuple[int, float]]) -> list[tuple[int, float]]:
    return list(dict.fromkeys((int(n), float(k)) for n, k in pairs))


def _unique_triples(triples: Iterable[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    return list(dict.fromkeys((int(a), int(b), int(c)) for a, b, c in triples))


# ---------------------------------------------------------------- building blocks (1-D float64 arrays)

_TALIB: Any = None  # the talib module once looked up; False where it is not installed


def _talib(*arrays: np.ndarray) -> Any:
    """TA-Lib, when installed and the inputs are NaN-free float64 (TA-Lib treats NaN differently), else None.

    Its C loops are the definitions this module follows (tests/test_indicators.py holds both paths to 1e-9
    of each other), 2-3x faster than the numpy path. It is imported here, at first use, not at start.
    """
    global _TALIB
    if _TALIB is None:
        try:
            import talib

            _TALIB = talib
        except ImportError:
            _TALIB = False
    if _TALIB is False or any(a.dtype != np.float64 or not a.flags.c_contiguous or np.isnan(a.sum())
                              for a in arrays):
        return None
    return _TALIB


def _recursive(x: np.ndarray, alpha: float, seed_idx: int, seed: float) -> np.ndarray:
    """y[seed_idx] = seed; y[i] = alpha * x[i] + (1 - alpha) * y[i-1] after it; NaN before it.

    The EMA / Wilder recursion, TA-Lib's loop, as a few numpy passes (`rolling.recursive`).
    """
    out = np.empty(len(x))
    out[:seed_idx] = np.nan
    if seed_idx < len(x):
        out[seed_idx] = seed
        recursive(x[seed_idx + 1:], alpha, seed, out=out[seed_idx + 1:])
    return out


def sma(x: np.ndarray, n: int) -> np.ndarray:
    """Simple moving average over the last n values (NaN for the first n-1), as talib.SMA."""
    ta = _talib(x) if n > 1 else None
    return ta.SMA(x, n) if ta is not None else rolling_mean(x, n)


def rolling_std(x: np.ndarray, n: int) -> np.ndarray:
    """Population (ddof=0) standard deviation over the last n values, as TA-Lib's STDDEV.

    Exact to float64 rounding (`rolling.rolling_mean_std`); an add/remove running variance (pandas' rolling
    std, TA-Lib's own) drifts to ~1e-8 relative on long price series and is noise on a flat window.
    """
    return rolling_mean_std(x, n)[1]


def ema(x: np.ndarray, n: int, start: int = 0) -> np.ndarray:
    """EMA with alpha = 2/(n+1) seeded by the mean of x[start:start+n] (first value at start+n-1).

    With start=0 this is talib.EMA (TA-Lib's default, non-Metastock seeding).
    """
    seed_idx = start + n - 1
    if seed_idx >= len(x):
        return np.full(len(x), np.nan)
    ta = _talib(x) if n > 1 and start == 0 else None
    if ta is not None:
        return ta.EMA(x, n)
    return _recursive(x, 2.0 / (n + 1), seed_idx, float(np.mean(x[start:start + n])))


def rsi(close: np.ndarray, n: int) -> np.ndarray:
    """Wilder's RSI (first value at row n), as talib.RSI; 50 where there was no change at all."""
    out = np.full(len(close), np.nan)
    if len(close) <= n:
        return out
    ta = _talib(close) if n > 1 else None
    if ta is not None:
        got = ta.RSI(close, n)
        if not (got[n:] == 0.0).any():  # TA-Lib's 0 is also its "no change" (ours: 50) and its 1e-8 cut-off
            return got
    d = np.diff(close)  # d[i-1] = close[i] - close[i-1]
    gain = np.maximum(d, 0.0)
    loss = gain - d  # max(-d, 0), exactly
    # Wilder's smoothing (alpha = 1/n), seeded with the plain mean of the first n changes (rows 1..n):
    # g[0], lo[0] belong to row n
    g, lo = np.empty(len(d) - n + 1), np.empty(len(d) - n + 1)
    g[0], lo[0] = np.mean(gain[:n]), np.mean(loss[:n])
    recursive(gain[n:], 1.0 / n, g[0], out=g[1:])
    recursive(loss[n:], 1.0 / n, lo[0], out=lo[1:])
    lo += g  # the total
    r = out[n:]
    with np.errstate(invalid="ignore", divide="ignore"):
        np.divide(g, lo, out=r)
    r *= 100.0
    r[lo == 0.0] = 50.0
    return out


def macd(close: np.ndarray, fast: int, slow: int, signal: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(line, signal, histogram) as talib.MACD.

    TA-Lib starts BOTH EMAs at bar slow-1: the slow one seeded with the SMA of the first `slow` closes,
    the fast one with the SMA of the `fast` closes ending at bar slow-1 (so the fast EMA differs from
    talib.EMA(close, fast)). Alphas are 2/(n+1) for every period, 12/26 included (TA-Lib's fixed
    0.15/0.075 belong to MACDFIX only). All three outputs are NaN before bar slow+signal-2.
    """
    if fast > slow:  # TA-Lib swaps them too
        fast, slow = slow, fast
    ta = _talib(close) if fast > 1 else None
    if ta is not None and slow + signal - 2 < len(close):
        return tuple(ta.MACD(close, fast, slow, signal))  # type: ignore[return-value]
    n = len(close)
    nan = np.full(n, np.nan)
    first = slow + signal - 2
    if first >= n:
        return nan, nan.copy(), nan.copy()
    s0 = slow - 1
    slow_e = _recursive(close, 2.0 / (slow + 1), s0, float(np.mean(close[:slow])))
    fast_e = _recursive(close, 2.0 / (fast + 1), s0, float(np.mean(close[slow - fast:slow])))
    line = fast_e - slow_e  # defined from bar slow-1
    sig = ema(line, signal, start=s0)
    line[:first] = np.nan
    return line, sig, line - sig


def bbands(close: np.ndarray, n: int, k: float) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                         np.ndarray, np.ndarray]:
    """(upper, mid, lower, %B, bandwidth) of Bollinger bands, population std, as talib.BBANDS.

    The std is always the numpy one: TA-Lib's running-sum variance leaves ~1e-8 x price of noise on a flat
    window, where this std is exactly 0 (and %B the neutral 0.5).
    """
    mid = sma(close, n)  # the one moving average (TA-Lib's where installed), also sma_{n}
    sd = rolling_std(close, n)
    sd *= k
    upper, lower = mid + sd, mid - sd
    span = np.multiply(sd, 2.0, out=sd)
    with np.errstate(invalid="ignore", divide="ignore"):
        pctb = np.subtract(close, lower)
        pctb /= span
        width = span / mid
    # a flat window has no band: %B is then the neutral 0.5 (not a division by zero); NaN stays NaN
    pctb[span <= _FLAT * np.abs(mid)] = 0.5
    return upper, mid, lower, pctb, width


def true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """max(h - l, |h - c[t-1]|, |l - c[t-1]|); NaN at row 0 (no previous close), as talib.TRANGE."""
    tr = np.empty(len(close))
    tr[:1] = np.nan
    if len(close) > 1:
        pc, h, lo, t = close[:-1], high[1:], low[1:], tr[1:]
        np.subtract(h, lo, out=t)
        gap = np.abs(h - pc)
        np.maximum(t, gap, out=t)
        np.abs(np.subtract(lo, pc, out=gap), out=gap)
        np.maximum(t, gap, out=t)
    return tr


def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int) -> np.ndarray:
    """Wilder's average true range (first value at row n), as talib.ATR."""
    ta = _talib(high, low, close) if n > 1 else None
    if ta is not None and len(close) > n:
        return ta.ATR(high, low, close, n)
    tr = true_range(high, low, close)
    if n == 1:
        return tr
    if len(close) <= n:
        return np.full(len(close), np.nan)
    return _recursive(tr, 1.0 / n, n, float(np.mean(tr[1:n + 1])))


def log_return(close: np.ndarray, n: int) -> np.ndarray:
    """log(close[t] / close[t-n]); NaN for the first n rows."""
    out = np.full(len(close), np.nan)
    if len(close) > n:
        out[n:] = np.log(close[n:] / close[:-n])
    return out


def volatility(close: np.ndarray, n: int) -> np.ndarray:
    """Population std of the last n 1-bar log returns (per bar); NaN for the first n rows."""
    return rolling_std(log_return(close, 1), n)


def volume_zscore(volume: np.ndarray, n: int) -> np.ndarray:
    """(v - rolling mean) / rolling population std over n bars; 0 where the window is constant."""
    mean, sd = rolling_mean_std(volume, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.subtract(volume, mean)
        z /= sd
    z[sd <= _FLAT * np.abs(mean)] = 0.0  # a constant window: 0, not a division by zero; NaN stays NaN
    return z


# ---------------------------------------------------------------- the feature frame


def feature_columns(f: FeaturesConfig) -> list[str]:
    """Indicator column names `compute_features` adds after timestamp + OHLCV, in order."""
    cols = [f"sma_{n}" for n in _unique(f.sma)] + [f"ema_{n}" for n in _unique(f.ema)]
    cols += [f"rsi_{n}" for n in _unique(f.rsi)]
    for a, b, c in _unique_triples(f.macd):
        cols += [f"macd_{a}_{b}_{c}", f"macd_signal_{a}_{b}_{c}", f"macd_hist_{a}_{b}_{c}"]
    for n, k in _unique_pairs(f.bbands):
        s = f"{n}_{format_k(k)}"
        cols += [f"bb_upper_{s}", f"bb_mid_{s}", f"bb_lower_{s}", f"bb_pctb_{s}", f"bb_width_{s}"]
    cols += [f"atr_{n}" for n in _unique(f.atr)]
    cols += [f"logret_{n}" for n in _unique(f.returns)]
    cols += [f"vol_{n}" for n in _unique(f.volatility)]
    cols += [f"volz_{n}" for n in _unique(f.volume_z)]
    if f.price_rel:
        cols += [f"rel_sma_{n}" for n in _unique(f.sma)] + [f"rel_ema_{n}" for n in _unique(f.ema)]
    return cols


def column_warmup(f: FeaturesConfig) -> dict[str, int]:
    """Leading NaN rows of each indicator column (as TA-Lib's lookback), in `feature_columns` order."""
    w: dict[str, int] = {c: 0 for c in CANDLE_COLUMNS}
    w.update({f"sma_{n}": n - 1 for n in _unique(f.sma)})
    w.update({f"ema_{n}": n - 1 for n in _unique(f.ema)})
    w.update({f"rsi_{n}": n for n in _unique(f.rsi)})
    for a, b, c in _unique_triples(f.macd):
        for p in ("macd", "macd_signal", "macd_hist"):
            w[f"{p}_{a}_{b}_{c}"] = max(a, b) + c - 2
    for n, k in _unique_pairs(f.bbands):
        w.update({f"bb_{p}_{n}_{format_k(k)}": n - 1 for p in ("upper", "mid", "lower", "pctb", "width")})
    w.update({f"atr_{n}": n for n in _unique(f.atr)})
    w.update({f"logret_{n}": n for n in _unique(f.returns)})
    w.update({f"vol_{n}": n for n in _unique(f.volatility)})
    w.update({f"volz_{n}": n - 1 for n in _unique(f.volume_z)})
    if f.price_rel:
        w.update({f"rel_sma_{n}": n - 1 for n in _unique(f.sma)})
        w.update({f"rel_ema_{n}": n - 1 for n in _unique(f.ema)})
    return w


def warmup_bars(f: FeaturesConfig, columns: Iterable[str] | None = None) -> int:
    """Leading rows where at least one of `columns` (default: every column) is NaN."""
    w = column_warmup(f)
    return max([0] + [w.get(c, 0) for c in (w if columns is None else columns)])


def compute_features(candles: pd.DataFrame, f: FeaturesConfig) -> pd.DataFrame:
    """timestamp + OHLCV + every raw indicator column (see the module table), same rows as `candles`."""
    missing = [c for c in CANDLE_COLUMNS if c not in candles.columns]
    if missing:
        raise DataError(f"candles lack column(s) {', '.join(missing)}; need {', '.join(CANDLE_COLUMNS)}")
    o, h, lo, c, v = (np.ascontiguousarray(candles[k].to_numpy(dtype="float64"))
                      for k in ("open", "high", "low", "close", "volume"))
    out: dict[str, np.ndarray] = {"timestamp": candles["timestamp"].to_numpy(dtype="int64"),
                                  "open": o, "high": h, "low": lo, "close": c, "volume": v}
    smas = {n: sma(c, n) for n in _unique(f.sma)}
    emas = {n: ema(c, n) for n in _unique(f.ema)}
    out.update({f"sma_{n}": x for n, x in smas.items()})
    out.update({f"ema_{n}": x for n, x in emas.items()})
    for n in _unique(f.rsi):
        out[f"rsi_{n}"] = rsi(c, n)
    for a, b, g in _unique_triples(f.macd):
        line, sig, hist = macd(c, a, b, g)
        out[f"macd_{a}_{b}_{g}"], out[f"macd_signal_{a}_{b}_{g}"], out[f"macd_hist_{a}_{b}_{g}"] = line, sig, hist
    for n, k in _unique_pairs(f.bbands):
        s = f"{n}_{format_k(k)}"
        up, mid, low_band, pctb, width = bbands(c, n, k)
        out.update({f"bb_upper_{s}": up, f"bb_mid_{s}": mid, f"bb_lower_{s}": low_band,
                    f"bb_pctb_{s}": pctb, f"bb_width_{s}": width})
    for n in _unique(f.atr):
        out[f"atr_{n}"] = atr(h, lo, c, n)
    for n in _unique(f.returns):
        out[f"logret_{n}"] = log_return(c, n)
    for n in _unique(f.volatility):
        out[f"vol_{n}"] = volatility(c, n)
    for n in _unique(f.volume_z):
        out[f"volz_{n}"] = volume_zscore(v, n)
    if f.price_rel:
        out.update({f"rel_sma_{n}": c / x - 1.0 for n, x in smas.items()})
        out.update({f"rel_ema_{n}": c / x - 1.0 for n, x in emas.items()})
    # copy=False: the arrays are ours; avoid doubling the memory for long series
    return pd.DataFrame(out, index=candles.index, copy=False)


def input_columns(columns: list[str], f: FeaturesConfig) -> list[str]:
    """Model inputs among `columns`: all but timestamp, or (stationary) only the scale-free ones."""
    if f.inputs == "all":
        return [c for c in columns if c != "timestamp"]
    return [c for c in columns if _STATIONARY.match(c)]
