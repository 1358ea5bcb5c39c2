"""Volatility forecast metrics and the Diebold-Mariano test (pure numpy / scipy).

Inputs are variances per bar: f the forecast, v the realized variance of the label (the same bars).

| key | definition |
| --- | --- |
| qlike | mean(v / f - log(v / f) - 1) (Patton 2011): 0 for a perfect forecast, >= 0 |
| mse_var | mean((f - v)^2), on the variance |
| mse_vol | mean((sqrt f - sqrt v)^2), on the vol (per bar, not annualized) |
| mz_intercept, mz_slope, mz_r2 | OLS v = a + b f + e (Mincer & Zarnowitz 1969): an unbiased forecast has a = 0, b = 1 |
| rank_ic | Spearman rank correlation of f and v |
| directional_accuracy | sign agreement of f - c and v - c, c = the TRAINING labels' mean variance (1) |
| n | bars |

(1) given as `centre`; absent without one: a centre taken from the test sample would look ahead.

Forecasts must be finite and > 0 (QLIKE is undefined otherwise): `vol_metrics` raises DataError naming
how many are not; a label of zero variance is undefined too (dataset.py drops such samples).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats

from cryptonorm.errors import DataError

VOL_KEYS = ("qlike", "mse_var", "mse_vol", "mz_intercept", "mz_slope", "mz_r2", "rank_ic")


def qlike_terms(f: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(n,) per-bar QLIKE loss v / f - log(v / f) - 1 (inputs already checked > 0)."""
    ratio: np.ndarray = v / f
    out: np.ndarray = ratio - np.log(ratio) - 1.0
    return out


def check_variances(f: np.ndarray, v: np.ndarray, what: str = "forecast") -> tuple[np.ndarray, np.ndarray]:
    """float64 copies of (f, v); DataError for a length mismatch or a value that is not finite and > 0."""
    f = np.asarray(f, dtype="float64")
    v = np.asarray(v, dtype="float64")
    if f.shape != v.shape or f.ndim != 1:
        raise DataError(f"volatility metrics: the {what} and the labels must be 1-D of one length, got "
                        f"{f.shape} and {v.shape}")
    bad_f = ~(np.isfinite(f) & (f > 0))
    if bad_f.any():
        raise DataError(f"volatility metrics: {int(bad_f.sum())} {what} variance(s) of {len(f)} are not finite and "
                        "> 0; QLIKE needs positive forecasts (train with target.vol_form log_var, or a positive "
                        "output: vol or var)")
    bad_v = ~(np.isfinite(v) & (v > 0))
    if bad_v.any():
        raise DataError(f"volatility metrics: {int(bad_v.sum())} label variance(s) are not finite and > 0; a zero "
                        "realized variance (a flat price) has no QLIKE")
    return f, v


def vol_metrics(f: np.ndarray, v: np.ndarray, centre: float | None = None) -> dict[str, float]:
    """The metrics of the module docstring for forecast variances f against realized variances v."""
    f, v = check_variances(f, v)
    n = len(f)
    out: dict[str, float] = {"n": float(n)}
    if n == 0:
        return out
    out["qlike"] = float(np.mean(qlike_terms(f, v)))
    out["mse_var"] = float(np.mean((f - v) ** 2))
    out["mse_vol"] = float(np.mean((np.sqrt(f) - np.sqrt(v)) ** 2))
    out.update(mincer_zarnowitz(f, v))
    out["rank_ic"] = _spearman(f, v)
    if centre is not None and math.isfinite(centre):
        out["directional_accuracy"] = float(np.mean(np.sign(f - centre) == np.sign(v - centre)))
    return out


def mincer_zarnowitz(f: np.ndarray, v: np.ndarray) -> dict[str, float]:
    """OLS of v on a constant and f: intercept, slope and R^2; NaN for a constant forecast or n < 3."""
    nan = {"mz_intercept": math.nan, "mz_slope": math.nan, "mz_r2": math.nan}
    if len(f) < 3:
        return nan
    fc, vc = f - f.mean(), v - v.mean()
    sff = _dot(fc, fc)
    if sff <= 0:
        return nan
    slope = _dot(fc, vc) / sff
    intercept = float(v.mean()) - slope * float(f.mean())
    svv = _dot(vc, vc)
    resid = vc - slope * fc
    r2 = 1.0 - _dot(resid, resid) / svv if svv > 0 else math.nan
    return {"mz_intercept": intercept, "mz_slope": slope, "mz_r2": r2}


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    # a plain sum, not BLAS: 1-D dot products through a multithreaded BLAS stall for 100+ ms on busy cores
    return float(np.sum(a * b))


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan  # undefined for a constant forecast: say so rather than 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return float(stats.spearmanr(a, b)[0])


def newey_west_lags(n: int, horizon: int) -> int:
    """HAC lags for loss differentials of h-bar forecasts: at least h - 1 (overlapping labels make the
    differential MA(h-1) under the null) and at least Newey-West's rule floor(4 (n / 100)^(2/9)), since
    volatility losses stay autocorrelated longer than the label overlap."""
    return max(int(horizon) - 1, int(math.floor(4.0 * (max(n, 1) / 100.0) ** (2.0 / 9.0))))


DM_METHODS = ("normal", "hln")


def diebold_mariano(loss_a: np.ndarray, loss_b: np.ndarray, horizon: int = 1, lags: int | None = None,
                    method: str = "normal") -> dict[str, float]:
    """Diebold-Mariano (1995) test of equal expected loss, d = loss_a - loss_b per bar (the one
    implementation in this project; evaluate.stats calls it with method "hln" and lags = horizon - 1).

    stat = mean(d) / sqrt(LRV / n), LRV the Newey-West (Bartlett weights 1 - k / (L + 1)) long-run variance
    of d with L = `lags` (default `newey_west_lags(n, horizon)`). method "normal": p two-sided from the
    standard normal (DM 1995). method "hln": the statistic times the Harvey-Leybourne-Newbold (1997) factor
    sqrt((n + 1 - 2h + h(h - 1) / n) / n) and p two-sided from Student-t with n - 1 df (small samples).
    stat < 0: a has the lower loss. Bars where either loss is not finite are dropped (n counts the rest).
    Returns {"stat", "p", "mean_diff", "lags", "n"}; stat and p are NaN when n < 2 or d is constant and
    non-zero; identical losses on every bar give stat NaN and p 1 (no evidence of any difference).
    """
    if method not in DM_METHODS:
        raise ValueError(f"method must be one of {DM_METHODS}, got {method!r}")
    d = np.asarray(loss_a, dtype="float64") - np.asarray(loss_b, dtype="float64")
    d = d[np.isfinite(d)]
    n, h = len(d), max(1, int(horizon))
    L = newey_west_lags(n, h) if lags is None else int(lags)
    out = {"stat": math.nan, "p": math.nan, "mean_diff": float(d.mean()) if n else math.nan, "lags": float(L),
           "n": float(n)}
    if n < 2:
        return out
    if np.all(d == 0):
        out["p"] = 1.0
        return out
    dc = d - d.mean()
    lrv = _dot(dc, dc) / n
    for k in range(1, min(L, n - 1) + 1):
        lrv += 2.0 * (1.0 - k / (L + 1.0)) * _dot(dc[k:], dc[:-k]) / n
    if not lrv > 0:
        return out
    stat = float(d.mean()) / math.sqrt(lrv / n)
    if method == "hln":
        factor = (n + 1 - 2 * h + h * (h - 1) / n) / n
        stat = stat * math.sqrt(factor) if factor > 0 else stat
        out["p"] = float(2.0 * stats.t.sf(abs(stat), df=n - 1))
    else:
        out["p"] = float(2.0 * stats.norm.sf(abs(stat)))
    out["stat"] = stat
    return out


def dm_vs(f: np.ndarray, ref: np.ndarray, v: np.ndarray, horizon: int) -> dict[str, dict[str, float]]:
    """Diebold-Mariano of forecast f against the reference ref (both variances) on QLIKE and on mse_var."""
    f, v = check_variances(f, v)
    ref, _ = check_variances(ref, v, "reference")
    return {"qlike": diebold_mariano(qlike_terms(f, v), qlike_terms(ref, v), horizon),
            "mse_var": diebold_mariano((f - v) ** 2, (ref - v) ** 2, horizon)}
