"""Cross-sectional forecast metrics of a universe, with Qlib's definitions (qlib.contrib.eva.alpha).

Inputs are (T, C) arrays, time by coin, NaN where a coin is not in the cross-section (not trading, or no
forecast / label). A timestamp counts when at least `min_coins` coins have both a forecast and a label.

    IC_t        Pearson correlation across coins at t of forecast and label  (Qlib `calc_ic`, "ic")
    rank IC_t   Spearman correlation across coins at t                       (Qlib `calc_ic`, "ric")
    ICIR        mean(IC_t) / std(IC_t), std with ddof = 1 (pandas' default, as Qlib)
    t_nw        Newey-West t-statistic of mean(IC_t): Bartlett kernel, `lags` lags, the small-sample factor
                T / (T - 1) (statsmodels OLS of IC_t on a constant, cov_type="HAC", use_correction=True)
    hit rate    share of timestamps with IC_t > 0
    IC decay    mean IC_t of the forecast against the forward log return over h = 1, 2, ... bars
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_COINS = 3  # coins with a forecast and a label needed for one timestamp's IC


def _pearson_rows(a: np.ndarray, b: np.ndarray, ok: np.ndarray) -> np.ndarray:
    n = ok.sum(axis=1)
    nn = np.maximum(n, 1)
    am = np.where(ok, a, 0.0).sum(axis=1) / nn
    bm = np.where(ok, b, 0.0).sum(axis=1) / nn
    da = np.where(ok, a - am[:, None], 0.0)
    db = np.where(ok, b - bm[:, None], 0.0)
    cov = (da * db).sum(axis=1)
    den = np.sqrt((da * da).sum(axis=1) * (db * db).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        out: np.ndarray = np.where(den > 0, cov / np.where(den > 0, den, 1.0), np.nan)
    return out


def ic_series(forecast: np.ndarray, label: np.ndarray, *, rank: bool = False,
              min_coins: int = MIN_COINS) -> np.ndarray:
    """(T,) IC_t (or rank IC_t); NaN where fewer than min_coins coins have both values or one side is flat."""
    ok = np.isfinite(forecast) & np.isfinite(label)
    a, b = forecast, label
    if rank:  # Spearman = Pearson of the ranks (ties averaged) among the coins that count at t
        from scipy.stats import rankdata

        a = rankdata(np.where(ok, forecast, np.nan), axis=1, nan_policy="omit")
        b = rankdata(np.where(ok, label, np.nan), axis=1, nan_policy="omit")
    out = _pearson_rows(a, b, ok)
    out[ok.sum(axis=1) < min_coins] = np.nan
    return out


def newey_west_t(x: np.ndarray, lags: int) -> float:
    """t-statistic of the mean of x under HAC (Bartlett) standard errors with `lags` lags; NaN dropped."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    n = len(x)
    if n < 2:
        return float("nan")
    u = x - x.mean()
    s = float(u @ u) / n
    for j in range(1, min(lags, n - 1) + 1):
        s += 2.0 * (1.0 - j / (lags + 1.0)) * float(u[j:] @ u[:-j]) / n
    var = s / n * n / (n - 1)  # statsmodels' use_correction: nobs / (nobs - k), k = 1
    return float(x.mean() / np.sqrt(var)) if var > 0 else float("nan")


def default_lags(n: int) -> int:
    """floor(4 (n / 100)^(2/9)): the Newey-West (1994) rule of thumb."""
    return int(np.floor(4.0 * (max(n, 1) / 100.0) ** (2.0 / 9.0)))


@dataclass(frozen=True)
class ICSummary:
    """Cross-sectional forecast quality over a period."""

    ic: float  # mean IC_t
    ic_std: float
    icir: float
    rank_ic: float
    rank_icir: float
    t_nw: float  # Newey-West t of mean IC_t
    lags: int
    hit_rate: float  # share of IC_t > 0
    timestamps: int  # timestamps with an IC
    coins_mean: float  # mean coins per counted timestamp

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.__dict__.items()}


def summarize(forecast: np.ndarray, label: np.ndarray, *, lags: int | None = None,
              min_coins: int = MIN_COINS) -> ICSummary:
    """IC, ICIR, rank IC, Newey-West t and hit rate of (T, C) forecasts against (T, C) labels."""
    ic = ic_series(forecast, label, min_coins=min_coins)
    ric = ic_series(forecast, label, rank=True, min_coins=min_coins)
    ok = np.isfinite(ic)
    v, rv = ic[ok], ric[np.isfinite(ric)]
    lag = default_lags(len(v)) if lags is None else lags
    both = np.isfinite(forecast) & np.isfinite(label)

    def ir(s: np.ndarray) -> float:
        return float(s.mean() / s.std(ddof=1)) if len(s) > 1 and s.std(ddof=1) > 0 else float("nan")

    return ICSummary(ic=float(v.mean()) if len(v) else float("nan"),
                     ic_std=float(v.std(ddof=1)) if len(v) > 1 else float("nan"), icir=ir(v),
                     rank_ic=float(rv.mean()) if len(rv) else float("nan"), rank_icir=ir(rv),
                     t_nw=newey_west_t(v, lag), lags=lag,
                     hit_rate=float((v > 0).mean()) if len(v) else float("nan"), timestamps=int(len(v)),
                     coins_mean=float(both.sum(axis=1)[ok].mean()) if len(v) else float("nan"))


def ic_decay(forecast: np.ndarray, close: np.ndarray, horizons: list[int], *,
             min_coins: int = MIN_COINS) -> dict[int, float]:
    """Mean IC_t of the forecast made at t against log(close[t+h] / close[t]), for each h."""
    out: dict[int, float] = {}
    for h in horizons:
        fwd = np.full(close.shape, np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            fwd[:-h] = np.log(close[h:] / close[:-h])
        s = ic_series(forecast, fwd, min_coins=min_coins)
        out[h] = float(np.nanmean(s)) if np.isfinite(s).any() else float("nan")
    return out
