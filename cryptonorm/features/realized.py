"""Realized variance of each bar (close-to-close or range-based from OHLC) and the volatility labels.

Per-bar variance estimators (`target.rv`), all of the log price, per bar, not annualized:

| rv | per-bar measure m[i] | reference |
| --- | --- | --- |
| close | r[i]^2, r[i] = log(c[i] / c[i-1]) (NaN at i = 0) | realized variance, one return per bar |
| parkinson | log(h[i] / l[i])^2 / (4 log 2) | Parkinson (1980) |
| garman_klass | 0.5 log(h[i] / l[i])^2 - (2 log 2 - 1) log(c[i] / o[i])^2 | Garman & Klass (1980) |

The range estimators use bar i's own open, high, low and close only, so they ignore the jump from the
previous close to this open (near zero on a 24/7 exchange) and need no previous bar. A close-to-close
return that spans an outage (`span` > 1 bars) is divided by the span, as the backtest's realized vol does,
so the trailing measures the baselines read are not inflated by a gap (samples whose window or label
crosses a gap are dropped anyway, see dataset.py).

Label of the sample whose window ends at row t (`target.kind: volatility`, horizon h):
    var[t] = mean(m[t+1 .. t+h])          the mean per-bar variance over the next h bars
and the network predicts `target.vol_form` of it: `vol` = sqrt(var) (with rv=close: the root mean square
of the next h returns, the label cryptonorm always had), `log_var` = log(var), or `var` itself. A label
of exactly zero variance (a flat price over the whole horizon: a stale or filled quote, not a measurement)
is undefined (NaN): its log and its QLIKE do not exist.

Variance floor: no volatility forecast goes below `variance_floor(training labels' variance)`, the
VOL_FLOOR_QUANTILE quantile of the training labels' variance (with thousands of training labels, about the
5th calmest h-bar stretch the market had in training). QLIKE punishes a forecast f below the realized v by
~v / f, so one forecast collapsing towards 0 (DAIN did, on some seeds: f ~ 1e-17, test QLIKE up to 1e10,
issue 23) dominates every mean; a floor below almost every variance seen in training costs a sound model
nothing (QLIKE is flat for f near v and mild for f > v) and bounds the damage of a collapsed one. A quantile,
not the minimum: one glitch bar does not set it. The pipeline counts the forecasts it raised
(metrics.json: <split>.vol_floor_hits, vol_floor).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from cryptonorm.errors import ConfigError, DataError

ESTIMATORS = ("close", "parkinson", "garman_klass")
VOL_FLOOR_QUANTILE = 0.001  # the variance floor: this quantile of the training labels' variance (see above)
FORMS = ("vol", "log_var", "var")
_LOG2 = math.log(2.0)


def bar_variance(open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray, estimator: str,
                 span: np.ndarray | None = None) -> np.ndarray:
    """(N,) per-bar variance m[i] by `estimator` (see the module docstring); NaN where undefined.

    `span` (N,) optional: bars since the previous row (1 normally, k after an outage of k-1 bars); a
    close-to-close return is divided by it.
    """
    o, h, lo, c = (np.asarray(a, dtype="float64") for a in (open_, high, low, close))
    if estimator not in ESTIMATORS:
        raise ConfigError(f"target.rv: got {estimator!r}; allowed: {', '.join(ESTIMATORS)}")
    with np.errstate(divide="ignore", invalid="ignore"):
        if estimator == "close":
            m = np.full(len(c), np.nan)
            if len(c) > 1:
                r = np.log(c[1:] / c[:-1])
                m[1:] = r * r / (1.0 if span is None else np.maximum(np.asarray(span[1:], dtype="float64"), 1.0))
            return m
        hl = np.log(h / lo)  # >= 0 on clean candles
        if estimator == "parkinson":
            return hl * hl / (4.0 * _LOG2)
        co = np.log(c / o)
        # >= 0 because |log(c/o)| <= log(h/l) and 0.5 > 2 log 2 - 1 (= 0.386)
        return 0.5 * hl * hl - (2.0 * _LOG2 - 1.0) * co * co


def bar_returns(close: np.ndarray, span: np.ndarray | None = None) -> np.ndarray:
    """(N,) log(c[i] / c[i-1]) / sqrt(span[i]) (NaN at 0): the per-bar returns GARCH reads."""
    c = np.asarray(close, dtype="float64")
    r = np.full(len(c), np.nan)
    if len(c) > 1:
        r[1:] = np.log(c[1:] / c[:-1]) / np.sqrt(1.0 if span is None else np.maximum(
            np.asarray(span[1:], dtype="float64"), 1.0))
    return r


def forward_variance(m: np.ndarray, horizon: int) -> np.ndarray:
    """(N,) var[t] = mean(m[t+1 .. t+horizon]); NaN where the span passes the end or holds a NaN."""
    n, h = len(m), int(horizon)
    if h < 1:
        raise ConfigError(f"target.horizon must be >= 1, got {h}")
    # sum over rows j-h+1 .. j (pandas' compensated rolling sum: precise and prefix-stable), shifted by h
    s = pd.Series(m).rolling(h, min_periods=h).sum().to_numpy()
    out = np.full(n, np.nan)
    if n > h:
        out[: n - h] = np.maximum(s[h:], 0.0) / h
    return out


def to_form(var: np.ndarray, form: str) -> np.ndarray:
    """Variance -> what the network predicts (`target.vol_form`); zero variance -> NaN (undefined)."""
    v = np.asarray(var, dtype="float64")
    v = np.where(v > 0, v, np.nan)
    if form == "vol":
        return np.sqrt(v)
    if form == "log_var":
        return np.log(v)
    if form == "var":
        return v
    raise ConfigError(f"target.vol_form: got {form!r}; allowed: {', '.join(FORMS)}")


def from_form(x: np.ndarray, form: str) -> np.ndarray:
    """Inverse of `to_form`: the network's forecast -> variance (per bar)."""
    a = np.asarray(x, dtype="float64")
    if form == "vol":
        return a * a
    if form == "log_var":
        return np.exp(a)
    if form == "var":
        return a.copy()
    raise ConfigError(f"target.vol_form: got {form!r}; allowed: {', '.join(FORMS)}")


def variance_floor(train_var: np.ndarray) -> float | None:
    """The smallest variance a forecast may have (per bar): the VOL_FLOOR_QUANTILE quantile of the training
    labels' positive finite variances (module docstring); None when there is none."""
    v = np.asarray(train_var, dtype="float64")
    v = v[np.isfinite(v) & (v > 0)]
    return float(np.quantile(v, VOL_FLOOR_QUANTILE)) if len(v) else None


def floor_forecasts(x: np.ndarray, floor: float | None, form: str) -> tuple[np.ndarray, np.ndarray]:
    """Forecasts in `form` units with every variance below `floor` raised to it, and the (N,) bool mask of
    the raised ones (NaN stays NaN; no floor: unchanged)."""
    a = np.asarray(x, dtype="float64")
    if floor is None:
        return a.copy(), np.zeros(a.shape, dtype=bool)
    var = from_form(a, form)
    hit = np.isfinite(var) & (var < floor)
    return np.where(hit, to_form(np.asarray(floor), form), a), hit


def labels(candles: pd.DataFrame, horizon: int, estimator: str, form: str,
           span: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y, var, m): the label in `form`, the forward variance and the per-bar measure, each (N,).

    Raises DataError when every forward variance is zero: a constant price has no volatility to forecast.
    """
    m = bar_variance(candles["open"].to_numpy(), candles["high"].to_numpy(), candles["low"].to_numpy(),
                     candles["close"].to_numpy(), estimator, span)
    var = forward_variance(m, horizon)
    finite = np.isfinite(var)
    if finite.any() and not (var[finite] > 0).any():
        raise DataError(f"the price is constant: every {horizon}-bar realized variance ({estimator}) is zero, "
                        "so there is no volatility to forecast; check the candles (data.file, data.symbols)")
    return to_form(var, form), var, m
