"""Cross-sectional transforms of a universe: per timestamp, across the coins trading at that moment.

Arrays are (T, C) or (T, C, F): time, coin, feature. `mask` (T, C) marks the coins in the cross-section at
t (trading, with a finite value); everything else is ignored and comes back NaN. Each row t uses only row t,
so nothing here reads the future, nor a coin that is not trading yet.

    zscore   (x - mean_t) / std_t                  Qlib's CSZScoreNorm (population std; 0 where std = 0)
    rank     (rank_t(x) - 1) / (n_t - 1) in [0, 1]   Qlib's CSRankNorm before its gaussianisation; ties average
Targets from the per-coin forward log return `outcome` (T, C):
    return          outcome itself
    excess_return   outcome - its cross-sectional mean at t
    rank            the cross-sectional percentile of outcome at t (as `rank` above)
Universe features (T, 2), the same for every coin at t: the cross-sectional mean of the last bar's log
return, and its cross-sectional standard deviation (dispersion).
"""

from __future__ import annotations

import numpy as np

MODES = ("none", "zscore", "rank")
TARGETS = ("return", "excess_return", "rank")
UNIVERSE_FEATURES = ("cs_mean_return", "cs_dispersion")


def _mask(x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    ok = np.isfinite(x)
    if mask is not None:
        ok &= mask if x.ndim == mask.ndim else mask[..., None]
    return ok


def cs_mean(x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Mean over coins (axis 1) of the members of the cross-section; NaN where there are none."""
    ok = _mask(x, mask)
    n = ok.sum(axis=1)
    s = np.where(ok, x, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out: np.ndarray = np.where(n > 0, s / np.maximum(n, 1), np.nan)
    return out


def zscore(x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(x - mean_t) / std_t over the coins of each timestamp (population std; 0 where the std is 0)."""
    ok = _mask(x, mask)
    n = np.maximum(ok.sum(axis=1, keepdims=True), 1)
    xm = np.where(ok, x, 0.0)
    mean = xm.sum(axis=1, keepdims=True) / n
    dev = np.where(ok, x - mean, 0.0)
    std = np.sqrt((dev * dev).sum(axis=1, keepdims=True) / n)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(std > 0, dev / np.where(std > 0, std, 1.0), 0.0)
    return np.where(ok, out, np.nan)


def rank(x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Cross-sectional percentile in [0, 1] of each coin at each timestamp (ties share their mean rank;
    a lone coin gets 0.5)."""
    ok = _mask(x, mask)
    big = np.where(ok, x, np.inf)
    order = np.argsort(big, axis=1, kind="stable")
    sorted_x = np.take_along_axis(big, order, axis=1)
    pos = np.empty_like(order)
    np.put_along_axis(pos, order, np.arange(x.shape[1]).reshape((1, -1) + (1,) * (x.ndim - 2)), axis=1)
    # ties: the mean of the first and last position of the value in its sorted row
    c = x.shape[1]
    new = np.ones(sorted_x.shape, dtype=bool)
    new[:, 1:] = sorted_x[:, 1:] != sorted_x[:, :-1]
    idx = np.arange(c).reshape((1, -1) + (1,) * (x.ndim - 2))
    first = np.maximum.accumulate(np.where(new, idx, 0), axis=1)
    end = np.ones(sorted_x.shape, dtype=bool)
    end[:, :-1] = sorted_x[:, :-1] != sorted_x[:, 1:]
    last = np.flip(np.minimum.accumulate(np.flip(np.where(end, idx, c), axis=1), axis=1), axis=1)
    mid_sorted = (first + last) / 2.0
    mid = np.take_along_axis(mid_sorted, pos, axis=1)
    n = ok.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(n > 1, mid / np.maximum(n - 1, 1), 0.5)
    return np.where(ok, out, np.nan)


def transform(x: np.ndarray, mode: str, mask: np.ndarray | None = None) -> np.ndarray:
    """features.cross_section: none | zscore | rank, per timestamp."""
    if mode == "none":
        return np.where(_mask(x, mask), x, np.nan)
    if mode == "zscore":
        return zscore(x, mask)
    if mode == "rank":
        return rank(x, mask)
    raise ValueError(f"cross-section mode {mode!r} is unknown; use one of {', '.join(MODES)}")


def target(outcome: np.ndarray, kind: str, mask: np.ndarray | None = None) -> np.ndarray:
    """(T, C) label of each coin from its forward log return: return | excess_return | rank."""
    if kind == "return":
        return np.where(_mask(outcome, mask), outcome, np.nan)
    if kind == "excess_return":
        return np.where(_mask(outcome, mask), outcome - cs_mean(outcome, mask)[:, None], np.nan)
    if kind == "rank":
        return rank(outcome, mask)
    raise ValueError(f"cross-sectional target {kind!r} is unknown; use one of {', '.join(TARGETS)}")


def universe_features(last_return: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(T, 2): the cross-sectional mean of the last bar's log return and its dispersion (std) at t."""
    ok = _mask(last_return, mask)
    mean = cs_mean(last_return, ok)
    dev = np.where(ok, last_return - mean[:, None], 0.0)
    n = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        disp = np.where(n > 0, np.sqrt((dev * dev).sum(axis=1) / np.maximum(n, 1)), np.nan)
    return np.column_stack([mean, disp])
