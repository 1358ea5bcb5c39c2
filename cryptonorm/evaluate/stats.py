"""Statistics of a sweep, as pure functions (arrays and frames in, numbers out; no files, no plots).

- paired t-test and Wilcoxon signed-rank test on per-cell metrics of runs that share a seed;
- Diebold-Mariano on a per-bar loss differential of ONE seed (evaluate.vol_metrics.diebold_mariano, the one
  implementation): a Newey-West (Bartlett) long-run variance with lag horizon - 1, the
  Harvey-Leybourne-Newbold small-sample correction and a two-sided Student-t p-value with T - 1 df.
  A negative DM statistic means the first forecast beats the second.
  Seeds are never averaged before the test: `dm_per_seed` runs one DM per seed and combines them with a
  sign test over seeds, so one collapsed seed cannot make a small p-value on its own;
- Holm's step-down correction across every p-value of a table;
- confidence intervals: a percentile bootstrap of a mean (paired differences over seeds) or of any
  statistic of two independent samples (a ratio of spreads), and the Student-t interval of a mean;
- the Brown-Forsythe test of equal spread (Levene about the median);
- the interaction F-test of a two-way repeated-measures ANOVA (seeds as subjects), for norm x batch size;
- the smallest p-value each test can reach with n seeds.
Undefined tests (fewer than 2 seeds, all differences equal) give NaN and a note instead of a warning.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from cryptonorm.evaluate import vol_metrics


@dataclass(frozen=True)
class TestResult:
    """A test's statistic, two-sided p-value, sample size, and why it is NaN when it is."""

    statistic: float
    pvalue: float
    n: int
    note: str = ""


def _finite_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """a and b as float64, keeping only the pairs (seeds) where both are finite."""
    a, b = np.asarray(a, dtype="float64"), np.asarray(b, dtype="float64")
    ok = np.isfinite(a) & np.isfinite(b)
    return a[ok], b[ok]


def paired_t(a: np.ndarray, b: np.ndarray) -> TestResult:
    """Paired t-test of a - b (scipy.stats.ttest_rel); NaN with a note when it is undefined."""
    a, b = _finite_pairs(a, b)
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
    a, b = _finite_pairs(a, b)
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
    """Diebold-Mariano test that the loss differential d_t (T,) has mean zero: evaluate.vol_metrics'
    implementation with method "hln" and lags = horizon - 1 (overlapping h-step forecasts; Bartlett
    weights), i.e. the statistic times the Harvey-Leybourne-Newbold (1997) factor and a two-sided
    Student-t p-value with T - 1 df. Non-finite values are dropped. Identical losses on every bar give
    statistic NaN and p-value 1 (no evidence of any difference)."""
    d = np.asarray(d, dtype="float64")
    h = max(1, int(horizon))
    r = vol_metrics.diebold_mariano(d, np.zeros_like(d), h, lags=h - 1, method="hln")
    T = int(r["n"])
    note = ""
    if T < 2:
        note = f"DM needs >= 2 common test bars, got {T}"
    elif r["p"] == 1.0 and math.isnan(r["stat"]):
        note = "DM: identical losses on every bar"
    elif math.isnan(r["p"]):
        note = "DM undefined: the loss differential has no variance"
    return TestResult(r["stat"], r["p"], T, note)


@dataclass(frozen=True)
class DMSeeds:
    """Per-seed Diebold-Mariano tests and their sign-test combination."""

    n_seeds: int  # seeds with a forecast pair
    n_better: int  # seeds whose DM statistic < 0 (the first forecast has the lower loss)
    n_worse: int  # seeds whose DM statistic > 0
    n_better_sig: int  # of those, with p < alpha
    n_worse_sig: int
    median_stat: float  # median per-seed DM statistic
    pvalue: float  # two-sided sign test of n_better among the seeds with a finite statistic
    per_seed: tuple[TestResult, ...] = ()
    note: str = ""


def dm_per_seed(pairs: list[tuple[np.ndarray, np.ndarray]], horizon: int = 1, alpha: float = 0.05) -> DMSeeds:
    """One Diebold-Mariano test per seed on that seed's per-bar losses (loss_a, loss_b), never on errors
    averaged over seeds; combined across seeds by a two-sided sign test (binomial, p = 1/2) on the signs of
    the per-seed statistics. The sign test cannot be driven by one extreme seed, and with n seeds its
    p-value cannot go below 2 / 2^n (see `min_pvalues`)."""
    per = [diebold_mariano(np.asarray(a, "float64") - np.asarray(b, "float64"), horizon) for a, b in pairs]
    usable = [r for r in per if np.isfinite(r.statistic)]
    neg = sum(r.statistic < 0 for r in usable)
    pos = sum(r.statistic > 0 for r in usable)
    sig_neg = sum(r.statistic < 0 and r.pvalue < alpha for r in usable)
    sig_pos = sum(r.statistic > 0 and r.pvalue < alpha for r in usable)
    k = neg + pos
    if k == 0:
        note = "DM: no seed with a usable test" if pairs else "DM: no forecast pairs"
        return DMSeeds(len(pairs), 0, 0, 0, 0, math.nan, math.nan, tuple(per), note)
    p = float(stats.binomtest(neg, k, 0.5).pvalue)
    median = float(np.median([r.statistic for r in usable]))
    return DMSeeds(len(pairs), neg, pos, sig_neg, sig_pos, median, p, tuple(per))


def holm(pvalues: np.ndarray | list[float]) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values; NaN p-values stay NaN and do not count in the family.

    Sorted ascending p_(1) <= ... <= p_(m): adjusted p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))."""
    p = np.asarray(pvalues, dtype="float64")
    out = np.full(p.shape, math.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def bootstrap_ci(x: np.ndarray, confidence: float = 0.95, n_resamples: int = 9999,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of x (NaNs dropped); (NaN, NaN) below 2 values.

    Resamples with replacement from an explicit, seeded generator, so a report is reproducible. With 5
    seeds the interval is narrow-biased (a percentile bootstrap of 5 values cannot reach beyond their
    range); it describes the seeds run, not a population guarantee."""
    x = np.asarray(x, dtype="float64")
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_resamples, len(x)))].mean(axis=1)  # (n_resamples,)
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return float(lo), float(hi)


def bootstrap_ci_two(a: np.ndarray, b: np.ndarray, statistic: Callable[[np.ndarray, np.ndarray], float],
                     confidence: float = 0.95, n_resamples: int = 9999, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of statistic(a, b) for two independent samples (NaNs dropped), each
    resampled with replacement on its own from one seeded generator; (NaN, NaN) below 2 values in either.
    Resamples whose statistic is not finite (e.g. a zero spread) are left out; NaN when none is finite."""
    a, b = (np.asarray(x, dtype="float64") for x in (a, b))
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    ia = rng.integers(0, len(a), size=(n_resamples, len(a)))  # (n_resamples, len(a))
    ib = rng.integers(0, len(b), size=(n_resamples, len(b)))
    vals = np.array([statistic(a[i], b[j]) for i, j in zip(ia, ib, strict=True)], dtype="float64")
    vals = vals[np.isfinite(vals)]
    if not len(vals):
        return math.nan, math.nan
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(vals, [tail, 1.0 - tail])
    return float(lo), float(hi)


def t_interval(x: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean of x (NaNs dropped): the interval that agrees with the
    (paired) t-test on the same values; (NaN, NaN) below 2 values."""
    x = np.asarray(x, dtype="float64")
    x = x[np.isfinite(x)]
    n = len(x)
    if n < 2:
        return math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * float(np.std(x, ddof=1)) / math.sqrt(n)
    return float(x.mean()) - half, float(x.mean()) + half


def brown_forsythe(a: np.ndarray, b: np.ndarray) -> TestResult:
    """Brown-Forsythe test of equal spread of two independent samples (scipy's Levene test about the
    median); NaN with a note below 2 values per group or when neither group varies."""
    a, b = (np.asarray(x, dtype="float64") for x in (a, b))
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    n = min(len(a), len(b))
    if n < 2 or not (np.std(a) > 0 or np.std(b) > 0):
        return TestResult(math.nan, math.nan, n, f"spread test needs >= 2 seeds per group with some spread, "
                                                 f"got {n}")
    r = stats.levene(a, b, center="median")
    return TestResult(float(r.statistic), float(r.pvalue), n)


def interaction_anova(y: np.ndarray) -> TestResult:
    """Interaction F-test of a two-way repeated-measures ANOVA, y of shape (S subjects, A, B) levels.

    Here: S seeds, A norms, B batch sizes. Tests whether the effect of B differs between levels of A (does
    one norm degrade differently with batch size), with the subject x A x B residual as its error term:
    F = (SS_AB / ((A-1)(B-1))) / (SS_ABS / ((A-1)(B-1)(S-1))). Needs a complete (no NaN) array."""
    y = np.asarray(y, dtype="float64")
    if y.ndim != 3:
        raise ValueError(f"y must be (seeds, A, B), got shape {y.shape}")
    S, A, B = y.shape
    if S < 2 or A < 2 or B < 2:
        return TestResult(math.nan, math.nan, S, f"interaction test needs >= 2 seeds, norms and batch sizes, got "
                                                 f"{S}, {A}, {B}")
    if not np.isfinite(y).all():
        return TestResult(math.nan, math.nan, S, "interaction test needs every seed in every cell")
    g = y.mean()
    m_ab = y.mean(axis=0)  # (A, B)
    m_a, m_b = y.mean(axis=(0, 2)), y.mean(axis=(0, 1))  # (A,), (B,)
    m_sa, m_sb, m_s = y.mean(axis=2), y.mean(axis=1), y.mean(axis=(1, 2))  # (S, A), (S, B), (S,)
    inter = m_ab - m_a[:, None] - m_b[None, :] + g  # (A, B)
    ss_ab = S * float((inter**2).sum())
    resid = (y - m_ab[None] - m_sa[:, :, None] - m_sb[:, None, :] + m_a[None, :, None] + m_b[None, None, :]
             + m_s[:, None, None] - g)  # (S, A, B)
    ss_err = float((resid**2).sum())
    df1, df2 = (A - 1) * (B - 1), (A - 1) * (B - 1) * (S - 1)
    if not ss_err > 0:
        return TestResult(math.nan, math.nan, S, "interaction test undefined: no residual variance")
    f = (ss_ab / df1) / (ss_err / df2)
    return TestResult(float(f), float(stats.f.sf(f, df1, df2)), S)


def min_pvalues(n: int) -> dict[str, float]:
    """The smallest two-sided p-value each seed-level test can reach with n paired seeds.

    Wilcoxon (exact) and the sign test over per-seed DM statistics: 2 / 2^n (all n differences on one side),
    capped at 1. The t-test has no floor (it can reach any p if the differences are consistent enough),
    given as 0.0; its validity rests on roughly normal differences, which 5 seeds cannot check."""
    floor = min(1.0, 2.0 / 2.0**n) if n >= 1 else math.nan
    return {"t": 0.0 if n >= 2 else math.nan, "wilcoxon": floor, "dm_sign": floor}


# ---------------------------------------------------------------- per-bar losses (for Diebold-Mariano)

# metric -> the per-bar loss whose mean it is, from forecasts.csv columns; metrics that are not a mean of
# per-bar losses (rank IC, AUC, Mincer-Zarnowitz) have no DM test.
BAR_LOSSES = ("mse", "mae", "log_loss", "qlike", "mse_var", "mse_vol")


def bar_loss(frame: pd.DataFrame, metric: str, forecast: str = "forecast") -> pd.Series:
    """Per-bar loss (indexed by timestamp) of the test rows of one run's forecasts.csv frame.

    mse / mae / log_loss use `forecast` and `y`; qlike / mse_var / mse_vol use the variance columns a
    volatility run writes (`forecast_var` or `baseline_<name>`, and `y_var`). `forecast` picks the forecast
    column (e.g. baseline_har for a baseline's losses; variance metrics map "forecast" to forecast_var)."""
    f = frame[frame["split"] == "test"] if "split" in frame.columns else frame
    if metric in ("qlike", "mse_var", "mse_vol"):
        col = "forecast_var" if forecast == "forecast" else forecast
        if col not in f.columns or "y_var" not in f.columns:
            raise KeyError(f"{metric} needs the columns {col} and y_var in forecasts.csv")
        f = f[f[col].notna() & f["y_var"].notna()]
        fv, v = f[col].to_numpy("float64"), f["y_var"].to_numpy("float64")
        if metric == "qlike":
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = v / fv
                loss = ratio - np.log(ratio) - 1.0
        elif metric == "mse_var":
            loss = (fv - v) ** 2
        else:
            loss = (np.sqrt(fv) - np.sqrt(v)) ** 2
    elif metric in ("mse", "mae", "log_loss"):
        f = f[f[forecast].notna() & f["y"].notna()]
        fc, y = f[forecast].to_numpy("float64"), f["y"].to_numpy("float64")
        if metric == "mse":
            loss = (fc - y) ** 2
        elif metric == "mae":
            loss = np.abs(fc - y)
        else:
            p = np.clip(fc, 1e-7, 1 - 1e-7)
            loss = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    else:
        raise KeyError(f"{metric} is not a mean of per-bar losses; no Diebold-Mariano test for it")
    return pd.Series(loss, index=f["timestamp"].to_numpy())


def common_bars(a: pd.Series, b: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """The two per-bar loss series on the timestamps both have, finite in both: ((T,), (T,))."""
    m = pd.concat([a, b], axis=1, join="inner").dropna()
    m = m[np.isfinite(m).all(axis=1)]
    return m.iloc[:, 0].to_numpy("float64"), m.iloc[:, 1].to_numpy("float64")
