"""Volatility baselines: HAR-RV, EWMA (RiskMetrics), GARCH(1,1)-t and the naive last-window RV.

Every baseline forecasts, at the close of bar t and from bars 0 .. t only, the label of the sample whose
window ends at t: the mean per-bar variance var[t] = mean(m[t+1 .. t+h]) of the next h bars, where m is
the per-bar realized variance of `target.rv` (features/realized.py). Parameters are fitted on the
training rows only (`train_rows`: sample end rows of the training split); forecasts are then made for
every row, and the caller scores them on exactly the model's test rows.

naive   mean(m[t-h+1 .. t]): the last h bars' realized variance. Nothing fitted.
ewma    s[t] = lam s[t-1] + (1 - lam) m[t], lam = 0.94^(1 / bars per day) (RiskMetrics' daily 0.94,
        rescaled to the bar); s starts at the training bars' mean of m.
har     b0 + b1 RV_d[t] + b2 RV_w[t] + b3 RV_m[t], RV_x = mean of m over the last 1 / 7 / 30 days of
        bars (Corsi 2009 with calendar days: crypto trades every day); OLS of var[t] on the three
        averages over the training rows (numpy lstsq).
garch   mean over k = 1..h of the GARCH(1,1) k-step variance sigma^2_{t+k|t}, Student-t shocks, zero
        mean, fitted by maximum likelihood (`arch`) on 100 x the training bars' close-to-close log
        returns; for a range estimator (rv != close) rescaled by mean(m) / mean(r^2) of the training bars.

HAR's OLS can forecast a negative variance on a calm bar; its forecasts are floored at the smallest
positive training label (counted in `info["har"]["floored"]`). GARCH needs the optional `arch` package
(`pip install cryptonorm[vol]`); without it, the garch baseline is left out and `info` says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.signal import lfilter

from cryptonorm.errors import DataError
from cryptonorm.timeframes import bars_per_year

RISKMETRICS_LAMBDA = 0.94  # per day (J.P. Morgan RiskMetrics, 1996)
HAR_DAYS = (1, 7, 30)  # daily, weekly, monthly averages, in calendar days
NAMES = ("har", "ewma", "garch", "naive")


@dataclass
class Baselines:
    """Forecast variances (N,) per baseline name, and what was fitted (coefficients, notes)."""

    forecasts: dict[str, np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)


def bars_per_day(timeframe: str) -> float:
    """Bars in one calendar day (6 for 4h, 24 for 1h; 1/7 for 1w)."""
    return bars_per_year(timeframe) / 365.0


def trailing_mean(m: np.ndarray, n: int) -> np.ndarray:
    """(N,) mean(m[t-n+1 .. t]) by a cumulative sum; NaN until n values exist or where one is NaN."""
    n = max(int(n), 1)
    bad = ~np.isfinite(m)
    cs = np.concatenate([[0.0], np.cumsum(np.where(bad, 0.0, m))])
    cb = np.concatenate([[0], np.cumsum(bad)])
    out = np.full(len(m), np.nan)
    if len(m) >= n:
        s = cs[n:] - cs[:-n]
        nb = cb[n:] - cb[:-n]
        out[n - 1:] = np.where(nb == 0, s / n, np.nan)
    return out


def naive(m: np.ndarray, horizon: int) -> np.ndarray:
    """The last h bars' mean realized variance (what the label of the window ending at t - h was)."""
    return trailing_mean(m, horizon)


def ewma(m: np.ndarray, timeframe: str, init: float) -> np.ndarray:
    """RiskMetrics EWMA of the per-bar variance, lambda 0.94 per day rescaled to the bar, started at `init`."""
    lam = RISKMETRICS_LAMBDA ** (1.0 / bars_per_day(timeframe))
    x = np.asarray(m, dtype="float64")
    ok = np.isfinite(x)
    x = np.where(ok, x, init)  # a NaN measure (bar 0 of the close estimator) counts as the initial level
    s, _ = lfilter([1.0 - lam], [1.0, -lam], x, zi=[lam * init])
    return np.asarray(s, dtype="float64")


def har_design(m: np.ndarray, timeframe: str) -> np.ndarray:
    """(N, 3) HAR regressors: mean per-bar variance over the last 1, 7 and 30 days of bars."""
    bpd = bars_per_day(timeframe)
    return np.column_stack([trailing_mean(m, max(1, round(d * bpd))) for d in HAR_DAYS])


def har(m: np.ndarray, y_var: np.ndarray, train_rows: np.ndarray, timeframe: str) -> tuple[np.ndarray, dict[str, Any]]:
    """HAR-RV fitted by OLS on the training rows; (forecasts (N,), info with the coefficients)."""
    Z = har_design(m, timeframe)  # (N, 3)
    rows = np.asarray(train_rows, dtype=np.int64)
    ok = rows[np.isfinite(Z[rows]).all(axis=1) & np.isfinite(y_var[rows])]
    if len(ok) < 10:
        raise DataError(f"HAR baseline: only {len(ok)} training rows have a month of history and a label; use more "
                        "training data (HAR's monthly average needs 30 days of bars)")
    A = np.column_stack([np.ones(len(ok)), Z[ok]])  # (n, 4)
    coef, *_ = np.linalg.lstsq(A, y_var[ok], rcond=None)
    pred = coef[0] + Z @ coef[1:]
    floor = float(np.min(y_var[ok][y_var[ok] > 0])) if (y_var[ok] > 0).any() else 1e-12
    low = np.isfinite(pred) & (pred < floor)
    pred = np.where(low, floor, pred)
    windows = [max(1, round(d * bars_per_day(timeframe))) for d in HAR_DAYS]
    return pred, {"coef": [float(c) for c in coef], "windows_bars": windows, "fit_rows": len(ok),
                  "floor": floor, "floored": int(low.sum())}


def garch_t(r: np.ndarray, m: np.ndarray, train_rows: np.ndarray, horizon: int,
            rv: str = "close") -> tuple[np.ndarray | None, dict[str, Any]]:
    """GARCH(1,1) with Student-t shocks fitted by `arch` on the training bars' returns; (None, note) when
    `arch` is not installed."""
    try:
        from arch import arch_model
    except ImportError:
        return None, {"skipped": "the optional package arch is not installed: pip install 'cryptonorm[vol]'"}
    first, last = max(1, int(np.min(train_rows))), int(np.max(train_rows))
    x = 100.0 * np.asarray(r, dtype="float64")  # percent returns: arch's optimizer is tuned for that scale
    fit_x = x[first:last + 1]  # the bars of the training span only
    fit_x = fit_x[np.isfinite(fit_x)]
    res = arch_model(fit_x, mean="Zero", vol="GARCH", p=1, q=1, dist="t", rescale=False).fit(disp="off")
    omega, alpha, beta = (float(res.params[k]) for k in ("omega", "alpha[1]", "beta[1]"))
    s2 = garch_path(x, omega, alpha, beta, float(np.var(fit_x)))  # (N,) sigma^2_{t+1|t}, percent^2
    pred = garch_mean_forecast(s2, omega, alpha, beta, horizon) / 1e4
    scale = 1.0
    if rv != "close":  # the label measures variance with a range estimator: put GARCH on its scale
        seg = slice(first, last + 1)
        r2 = np.asarray(r[seg], dtype="float64") ** 2
        ok = np.isfinite(r2) & np.isfinite(m[seg])
        scale = float(np.mean(m[seg][ok]) / np.mean(r2[ok]))
    info = {"omega": omega, "alpha": alpha, "beta": beta, "nu": float(res.params["nu"]), "scale": scale,
            "fit_bars": len(fit_x), "converged": int(res.convergence_flag) == 0}
    return pred * scale, info


def garch_path(x: np.ndarray, omega: float, alpha: float, beta: float, s2_0: float) -> np.ndarray:
    """(N,) one-step variances sigma^2_{t+1|t} = omega + alpha x[t]^2 + beta sigma^2_{t|t-1}, known at the
    close of t; a NaN return (bar 0) counts as x^2 = s2_0, the starting variance."""
    x2 = np.where(np.isfinite(x), x * x, s2_0)
    # s[t] = omega + alpha x2[t] + beta s[t-1], s[-1] = s2_0 (a linear recursion: lfilter)
    s, _ = lfilter([1.0], [1.0, -beta], omega + alpha * x2, zi=[beta * s2_0])
    return np.asarray(s, dtype="float64")


def garch_mean_forecast(s2_next: np.ndarray, omega: float, alpha: float, beta: float, horizon: int) -> np.ndarray:
    """Mean of the k-step GARCH(1,1) variances, k = 1..h: sigma^2_{t+k|t} = u + p^(k-1) (sigma^2_{t+1|t} - u),
    p = alpha + beta, u = omega / (1 - p); for p >= 1 (integrated) the forecast stays at sigma^2_{t+1|t}."""
    p = alpha + beta
    if p >= 1.0 or horizon == 1:
        return s2_next.copy()
    u = omega / (1.0 - p)
    w = float(np.mean(p ** np.arange(horizon)))
    return u + w * (s2_next - u)


def fit_baselines(m: np.ndarray, y_var: np.ndarray, r: np.ndarray, train_rows: np.ndarray, horizon: int,
                  timeframe: str, rv: str = "close", garch: bool = True) -> Baselines:
    """Every baseline's forecast variance for every row (see the module docstring)."""
    rows = np.asarray(train_rows, dtype=np.int64)
    if len(rows) == 0:
        raise DataError("volatility baselines need training rows; the training split is empty")
    seen = m[int(rows.min()): int(rows.max()) + 1]  # the training span's bars
    init = float(np.nanmean(seen)) if np.isfinite(seen).any() else math.nan
    out: dict[str, np.ndarray] = {}
    info: dict[str, Any] = {}
    out["har"], info["har"] = har(m, y_var, rows, timeframe)
    out["ewma"] = ewma(m, timeframe, init)
    info["ewma"] = {"lambda_bar": RISKMETRICS_LAMBDA ** (1.0 / bars_per_day(timeframe)), "init": init}
    if garch:
        g, info["garch"] = garch_t(r, m, rows, horizon, rv)
        if g is not None:
            out["garch"] = g
    out["naive"] = naive(m, horizon)
    info["naive"] = {"bars": int(horizon)}
    return Baselines(out, info)
