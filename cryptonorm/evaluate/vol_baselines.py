"""Volatility baselines: HAR-RV on logs and on levels, EWMA (RiskMetrics and fitted), GARCH(1,1)-t, naive.

Every baseline forecasts, at the close of bar t and from bars 0 .. t only, the label of the sample whose
window ends at t: the mean per-bar variance var[t] = mean(m[t+1 .. t+h]) of the next h bars, where m is
the per-bar realized variance of `target.rv` (features/realized.py). Parameters are fitted on the
training rows only (`train_rows`: sample end rows of the training split); forecasts are then made for
every row, and the caller scores them on exactly the model's test rows.

naive   mean(m[t-h+1 .. t]): the last h bars' realized variance. Nothing fitted.
ewma    s[t] = lam s[t-1] + (1 - lam) m[t], lam = 0.94^(1 / bars per day) (RiskMetrics' daily 0.94,
        rescaled to the bar); s starts at the training bars' mean of m.
ewma_fit  the same recursion with the per-bar lam that minimizes QLIKE on the training rows (bounded
        scalar search over [0.5, 0.99999]).
har     exp(b0 + b1 log RV_d[t] + b2 log RV_w[t] + b3 log RV_m[t] + s^2 / 2), RV_x = mean of m over the
        last 1 / 7 / 30 days of bars (Corsi 2009's HAR-RV, fitted on logs as in Andersen, Bollerslev and
        Diebold 2007, with calendar days: crypto trades every day): OLS of log var[t] on the three log
        averages over the training rows with a positive label; s^2 = the OLS residual variance
        (sum e^2 / (n - 4)), exp(s^2 / 2) the log-normal bias correction (E e^x = e^(s^2/2), x ~ N(0, s^2)).
        An average of exactly 0 is floored at its smallest positive training value before the log.
har_levels  the HAR of the same averages fitted on levels: b0 + b1 RV_d + b2 RV_w + b3 RV_m, OLS of var[t]
        (numpy lstsq); the baseline cryptonorm reported as "har" before log-HAR (kept for comparison).
garch   mean over k = 1..h of the GARCH(1,1) k-step variance sigma^2_{t+k|t}, Student-t shocks, zero
        mean, fitted by maximum likelihood (`arch`) on 100 x the training bars' close-to-close log
        returns; for a range estimator (rv != close) rescaled by mean(m) / mean(r^2) of the training bars.

The levels HAR's OLS can forecast a negative variance on a calm bar; its forecasts are floored at the smallest
positive training label (counted in `info["har_levels"]["floored"]`). GARCH needs the optional `arch` package
(`pip install cryptonorm[vol]`); without it, the garch baseline is left out and `info` says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.signal import lfilter

from cryptonorm.errors import DataError
from cryptonorm.evaluate.vol_metrics import qlike_terms
from cryptonorm.timeframes import bars_per_year

RISKMETRICS_LAMBDA = 0.94  # per day (J.P. Morgan RiskMetrics, 1996)
HAR_DAYS = (1, 7, 30)  # daily, weekly, monthly averages, in calendar days
NAMES = ("har", "har_levels", "ewma", "ewma_fit", "garch", "naive")
EWMA_FIT_BOUNDS = (0.5, 0.99999)  # per-bar lambda searched by ewma_fit


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
    return ewma_lambda(m, RISKMETRICS_LAMBDA ** (1.0 / bars_per_day(timeframe)), init)


def ewma_lambda(m: np.ndarray, lam: float, init: float) -> np.ndarray:
    """(N,) s[t] = lam s[t-1] + (1 - lam) m[t], s[-1] = init; a NaN m[t] counts as `init`."""
    x = np.asarray(m, dtype="float64")
    ok = np.isfinite(x)
    x = np.where(ok, x, init)  # a NaN measure (bar 0 of the close estimator) counts as the initial level
    s, _ = lfilter([1.0 - lam], [1.0, -lam], x, zi=[lam * init])
    return np.asarray(s, dtype="float64")


def qlike(f: np.ndarray, v: np.ndarray) -> float:
    """Mean QLIKE (vol_metrics.qlike_terms) over the pairs where both are finite and positive."""
    ok = np.isfinite(f) & np.isfinite(v) & (f > 0) & (v > 0)
    return float(np.mean(qlike_terms(f[ok], v[ok]))) if ok.any() else math.inf


def ewma_fit(m: np.ndarray, y_var: np.ndarray, train_rows: np.ndarray,
             init: float) -> tuple[np.ndarray, dict[str, Any]]:
    """EWMA with the per-bar lambda that minimizes QLIKE on the training rows; (forecasts (N,), info)."""
    from scipy.optimize import minimize_scalar

    rows = np.asarray(train_rows, dtype=np.int64)
    stop = int(rows.max()) + 1  # the recursion up to the last training row only: nothing later is read
    res = minimize_scalar(lambda lam: qlike(ewma_lambda(m[:stop], lam, init)[rows], y_var[rows]),
                          bounds=EWMA_FIT_BOUNDS, method="bounded", options={"xatol": 1e-6})
    lam = float(res.x)
    return ewma_lambda(m, lam, init), {"lambda_bar": lam, "train_qlike": float(res.fun), "init": init}


def har_design(m: np.ndarray, timeframe: str) -> np.ndarray:
    """(N, 3) HAR regressors: mean per-bar variance over the last 1, 7 and 30 days of bars."""
    bpd = bars_per_day(timeframe)
    return np.column_stack([trailing_mean(m, max(1, round(d * bpd))) for d in HAR_DAYS])


def _har_rows(Z: np.ndarray, y_var: np.ndarray, train_rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(train_rows, dtype=np.int64)
    ok: np.ndarray = rows[np.isfinite(Z[rows]).all(axis=1) & np.isfinite(y_var[rows])]
    if len(ok) < 10:
        raise DataError(f"HAR baseline: only {len(ok)} training rows have a month of history and a label; use more "
                        "training data (HAR's monthly average needs 30 days of bars)")
    return ok


def log_har_design(Z: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """(N, 3) logs of the HAR averages; an average of 0 counts as `floor` (3,), its smallest positive training
    value (a flat day of bars has no log)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.log(np.where(np.isfinite(Z) & (Z <= 0), floor, Z))


def har(m: np.ndarray, y_var: np.ndarray, train_rows: np.ndarray, timeframe: str) -> tuple[np.ndarray, dict[str, Any]]:
    """HAR-RV on logs fitted by OLS on the training rows, with the log-normal bias correction;
    (forecasts (N,), info with the coefficients and the residual variance)."""
    Z = har_design(m, timeframe)  # (N, 3)
    ok = _har_rows(Z, y_var, train_rows)
    ok = ok[y_var[ok] > 0]  # log of the label
    pos = np.where(Z[ok] > 0, Z[ok], np.inf)
    floor = np.min(pos, axis=0)
    floor = np.where(np.isfinite(floor), floor, 1e-300)
    L = log_har_design(Z, floor)  # (N, 3)
    A = np.column_stack([np.ones(len(ok)), L[ok]])  # (n, 4)
    coef, *_ = np.linalg.lstsq(A, np.log(y_var[ok]), rcond=None)
    resid = np.log(y_var[ok]) - A @ coef
    s2 = float(resid @ resid / max(len(ok) - A.shape[1], 1))  # the OLS residual variance
    pred = np.exp(coef[0] + L @ coef[1:] + 0.5 * s2)
    windows = [max(1, round(d * bars_per_day(timeframe))) for d in HAR_DAYS]
    return pred, {"coef": [float(c) for c in coef], "resid_var": s2, "windows_bars": windows, "fit_rows": len(ok),
                  "floor": [float(f) for f in floor]}


def har_levels(m: np.ndarray, y_var: np.ndarray, train_rows: np.ndarray,
               timeframe: str) -> tuple[np.ndarray, dict[str, Any]]:
    """HAR-RV fitted on levels by OLS on the training rows; (forecasts (N,), info with the coefficients)."""
    Z = har_design(m, timeframe)  # (N, 3)
    ok = _har_rows(Z, y_var, train_rows)
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


def strongest(forecasts: dict[str, np.ndarray], y_var: np.ndarray, rows: np.ndarray) -> tuple[str, float] | None:
    """(name, QLIKE) of the baseline with the lowest QLIKE on `rows`, among those with a finite, positive
    forecast on every one of them (and a positive label: QLIKE's domain); None when none qualifies."""
    rows = np.asarray(rows, dtype=np.int64)
    rows = rows[np.isfinite(y_var[rows]) & (y_var[rows] > 0)]
    scores = {name: qlike(fc[rows], y_var[rows]) for name, fc in forecasts.items()
              if len(rows) and np.isfinite(fc[rows]).all() and (fc[rows] > 0).all()}
    if not scores:
        return None
    name = min(scores, key=lambda k: (scores[k], NAMES.index(k) if k in NAMES else len(NAMES)))
    return name, scores[name]


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
    out["har_levels"], info["har_levels"] = har_levels(m, y_var, rows, timeframe)
    out["ewma"] = ewma(m, timeframe, init)
    info["ewma"] = {"lambda_bar": RISKMETRICS_LAMBDA ** (1.0 / bars_per_day(timeframe)), "init": init}
    out["ewma_fit"], info["ewma_fit"] = ewma_fit(m, y_var, rows, init)
    if garch:
        g, info["garch"] = garch_t(r, m, rows, horizon, rv)
        if g is not None:
            out["garch"] = g
    out["naive"] = naive(m, horizon)
    info["naive"] = {"bars": int(horizon)}
    return Baselines(out, info)
