"""Statistics of a sweep, as pure functions (arrays and frames in, numbers out; no files, no plots).

- paired t-test and Wilcoxon signed-rank test on per-cell metrics of runs that share a seed;
- Diebold-Mariano on a per-bar loss differential: a Newey-West (Bartlett) long-run variance with lag
  horizon - 1, the Harvey-Leybourne-Newbold small-sample correction and a two-sided Student-t p-value with
  T - 1 degrees of freedom. A negative DM statistic means the first forecast beats the second.
Undefined tests (fewer than 2 seeds, all differences equal) give NaN and a note instead of a warning.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats


@dataclass(frozen=True)
class TestResult:
    """A test's statistic, two-sided p-value, sample size, and why it is NaN when it is."""

    statistic: float
    pvalue: float
    n: int
    note: str = ""


def paired_t(a: np.ndarray, b: np.ndarray) -> TestResult:
    """Paired t-test of a - b (scipy.stats.ttest_rel); NaN with a note when it is undefined."""
    a, b = np.asarray(a, dtype="float64"), np.asarray(b, dtype="float64")
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    n = len(a)
    if n < 2:
        return TestResult(math.nan, math.nan, n, f"t-test needs >= 2 paired seeds, got {n}")
    d = a - b
    if np.all(d == d[0]):
        return TestResult(math.nan, math.nan, n, "t-test undefined: all paired differences are equal")
    r = stats.ttest_rel(a, b)
    return TestResult(float(r.statistic), float(r.pvalue), n)


def paired_wilcoxon(a: np.ndarray, b: np.ndarray) -> TestResult:
    """Wilcoxon signed-rank test of a - b (zero differences dropped, as scipy's default)."""
    a, b = np.asarray(a, dtype="float64"), np.asarray(b, dtype="float64")
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    n = len(a)
    if n < 2:
        return TestResult(math.nan, math.nan, n, f"Wilcoxon needs >= 2 paired seeds, got {n}")
    if np.all(a == b):
        return TestResult(math.nan, math.nan, n, "Wilcoxon undefined: all paired differences are zero")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = stats.wilcoxon(a, b)
    return TestResult(float(r.statistic), float(r.pvalue), n)


def diebold_mariano(d: np.ndarray, horizon: int = 1) -> TestResult:
    """Diebold-Mariano test that the loss differential d_t (T,) has mean zero.

    Long-run variance: Newey-West (Bartlett weights 1 - k / (L + 1)) with L = horizon - 1 lags, so
    overlapping h-step forecasts are allowed for. Statistic times the Harvey-Leybourne-Newbold (1997)
    factor sqrt((T + 1 - 2h + h(h - 1) / T) / T); two-sided p-value from Student-t with T - 1 df.
    Identical losses on every bar give statistic NaN and p-value 1 (no evidence of any difference).
    """
    d = np.asarray(d, dtype="float64")
    d = d[np.isfinite(d)]
    T, h = len(d), max(1, int(horizon))
    if T < 2:
        return TestResult(math.nan, math.nan, T, f"DM needs >= 2 common test bars, got {T}")
    if np.all(d == 0):
        return TestResult(math.nan, 1.0, T, "DM: identical losses on every bar")
    u = d - d.mean()
    lags = min(h - 1, T - 1)
    var = float(u @ u) / T
    for k in range(1, lags + 1):
        var += 2.0 * (1.0 - k / (lags + 1)) * float(u[k:] @ u[:-k]) / T
    if not var > 0:
        return TestResult(math.nan, math.nan, T, "DM undefined: the loss differential has no variance")
    dm = float(d.mean()) / math.sqrt(var / T)
    factor = (T + 1 - 2 * h + h * (h - 1) / T) / T
    stat = dm * math.sqrt(factor) if factor > 0 else dm
    return TestResult(stat, float(2.0 * stats.t.sf(abs(stat), df=T - 1)), T)


def loss_differential(errors: list[tuple[pd.DataFrame, pd.DataFrame]]) -> np.ndarray:
    """Mean over seeds of e_a,t^2 - e_b,t^2 on the test bars all pairs forecast.

    Each pair is (forecasts of run a, forecasts of run b): frames with timestamp, forecast, y, split.
    """
    per_seed = []
    for fa, fb in errors:
        m = _test_rows(fa).merge(_test_rows(fb), on="timestamp", suffixes=("_a", "_b"))
        d = (m["forecast_a"] - m["y_a"]) ** 2 - (m["forecast_b"] - m["y_b"]) ** 2
        per_seed.append(pd.Series(d.to_numpy("float64"), index=m["timestamp"].to_numpy()))
    if not per_seed:
        return np.array([], dtype="float64")
    return pd.concat(per_seed, axis=1, join="inner").mean(axis=1).to_numpy("float64")


def _test_rows(f: pd.DataFrame) -> pd.DataFrame:
    t = f[(f["split"] == "test") & f["forecast"].notna() & f["y"].notna()]
    return t[["timestamp", "forecast", "y"]]

