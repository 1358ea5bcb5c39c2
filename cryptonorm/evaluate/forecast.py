"""Pure forecast metrics (numpy in, floats out). Performance metrics of a backtest live in backtest.py."""

from __future__ import annotations

import math

import numpy as np


def forecast_metrics(pred: np.ndarray, y: np.ndarray, kind: str) -> dict[str, float]:
    """Metrics of forecasts `pred` against outcomes `y` (same length, NaN-free).

    kind "return": MSE, MAE, directional accuracy (sign agreement), Pearson and Spearman information
    coefficients. kind "volatility": the same without directional accuracy (vol_metrics.vol_metrics has
    it, centred on the training mean: a centre taken from these outcomes would look ahead).
    kind "direction": `pred` are probabilities of an up move, `y` in {0, 1}: accuracy, log-loss, AUC.
    """
    pred = np.asarray(pred, dtype="float64")
    y = np.asarray(y, dtype="float64")
    n = len(y)
    out: dict[str, float] = {"n": float(n)}
    if n == 0:
        return out
    if kind == "direction":
        p = np.clip(pred, 1e-7, 1 - 1e-7)
        out["accuracy"] = float(np.mean((p > 0.5) == (y > 0.5)))
        out["directional_accuracy"] = out["accuracy"]
        out["log_loss"] = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
        rank_p = rankdata(p)  # once, for the AUC and the rank correlation
        out["auc"] = auc(p, y, ranks=rank_p)
        varies = n >= 3 and np.ptp(p) > 0 and np.ptp(y) > 0  # a constant series has no correlation
        binary = bool(np.all((y == 0.0) | (y == 1.0)))
        out["ic_pearson"] = _corr(p, y) if varies else float("nan")
        out["ic_spearman"] = (_corr(rank_p, _binary_ranks(y > 0.5) if binary else rankdata(y), own=True)
                              if varies else float("nan"))
        out["base_rate"] = float(np.mean(y))
        return out
    err = pred - y
    out["mse"] = dot(err, err) / n
    out["mae"] = float(np.abs(err, out=err).sum()) / n
    if kind != "volatility":
        # sign agreement on the outcomes that moved, from boolean counts (no sign arrays, no gathers)
        moved = n - int(np.count_nonzero(y == 0))
        agree = (int(np.count_nonzero(np.logical_and(pred > 0, y > 0))) +
                 int(np.count_nonzero(np.logical_and(pred < 0, y < 0))))
        out["directional_accuracy"] = agree / moved if moved else float("nan")
    varies = n >= 3 and np.ptp(pred) > 0 and np.ptp(y) > 0  # a constant series has no correlation
    out["ic_pearson"] = _corr(pred, y) if varies else float("nan")
    out["ic_spearman"] = _corr(rankdata(pred), rankdata(y), own=True) if varies else float("nan")
    return out


def _corr(x: np.ndarray, z: np.ndarray, *, own: bool = False) -> float:
    """Pearson correlation of x and z, both non-constant (Spearman's: of their ranks). `own`: x and z are
    the caller's scratch (ranks), centred in place."""
    dx = np.subtract(x, x.mean(), out=x if own else None)
    dz = np.subtract(z, z.mean(), out=z if own else None)
    r = float(dot(dx, dz)) / math.sqrt(float(dot(dx, dx)) * float(dot(dz, dz)))
    return max(-1.0, min(1.0, r))


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """sum(a * b) of two (n,) arrays without a temporary and without BLAS: a multithreaded BLAS dot on a
    loaded 2-core machine measured 20-70x slower (median) than this single-threaded loop."""
    return float(np.einsum("i,i->", a, b))


def rankdata(x: np.ndarray) -> np.ndarray:
    """(n,) float64 ranks 1..n of x, ties averaged: scipy.stats.rankdata(x) ("average"), 10-15x faster.

    The sort order comes from one np.sort of packed int64 keys (`_sort_order`) rather than np.argsort: a
    plain sort of 64-bit keys is SIMD-vectorized in numpy, an argsort measured ~4x slower. The average rank
    of a tie group does not depend on the order inside it, so any correct sort gives scipy's ranks.
    """
    x = np.asarray(x, dtype="float64")
    n = len(x)
    ranks = np.empty(n)
    if n == 0:
        return ranks
    order, new = _sort_order(x)
    if new.all():  # no ties (continuous forecasts): rank = position in the sorted order
        ranks[order] = np.arange(1, n + 1, dtype=np.float64)
        return ranks
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:], n]  # exclusive
    group_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks[order] = np.repeat(group_rank, ends - starts)
    return ranks


_LOW63 = np.int64((1 << 63) - 1)


def _sort_order(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order (n,) int64 with x[order] sorted, new (n,) bool: new[i] when x[order[i]] starts a group of equal
    values). NaN falls back to np.argsort (each NaN its own group, last, as there).

    Each value becomes an order-preserving int64 key (IEEE bits, negatives flipped; -0.0 = 0.0) whose low
    `bits` bits are replaced by its index, and the keys are sorted. Values that agree on everything but
    those low bits (relative difference < ~2^(bits-52)) land next to each other in index order; those
    few runs are re-sorted on their full keys, which cannot move them out of their run.
    """
    n = len(x)
    if n == 1 or n >= 1 << 40 or np.isnan(x).any():
        order = np.argsort(x)
        xs = x[order]
        new = np.ones(n, dtype=bool)
        np.not_equal(xs[1:], xs[:-1], out=new[1:])
        return order, new
    key = np.add(x, 0.0).view(np.int64)  # + 0.0: -0.0 -> 0.0; then the IEEE bits as a signed integer
    packed = np.right_shift(key, 63)  # -1 (all ones) for negatives, 0 otherwise
    packed &= _LOW63
    key ^= packed  # negatives: every bit but the sign flipped, so signed order = value order
    bits = int(n - 1).bit_length()
    low = (1 << bits) - 1
    np.bitwise_and(key, ~low, out=packed)
    packed |= np.arange(n, dtype=np.int64)
    packed.sort()
    order = packed & low
    packed >>= bits  # arithmetic shift: the high bits, in order
    tied = packed[1:] == packed[:-1]  # tied[i]: sorted i and i+1 agree on the high bits
    new = np.ones(n, dtype=bool)
    if not tied.any():
        return order, new
    np.logical_not(tied, out=new[1:])
    member = np.zeros(n, dtype=bool)  # positions inside runs of equal high bits
    member[:-1] = tied
    member[1:] |= tied
    at = np.flatnonzero(member)
    full = key[order[at]]
    fix = np.argsort(full, kind="stable")  # full keys of a run stay inside the run's range of keys
    order[at] = order[at][fix]
    full = full[fix]
    inner = at[1:][tied[at[1:] - 1]]  # run members after the first of their run
    j = np.searchsorted(at, inner)
    new[inner] = full[j] != full[j - 1]
    return order, new


def _binary_ranks(up: np.ndarray) -> np.ndarray:
    """rankdata of a 0/1 outcome without sorting: every 0 gets the mean rank of the zeros, every 1 of the ones."""
    n_down = len(up) - int(np.count_nonzero(up))
    return np.where(up, n_down + (len(up) - n_down + 1) / 2.0, (n_down + 1) / 2.0)


def auc(p: np.ndarray, y: np.ndarray, *, ranks: np.ndarray | None = None) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula, ties averaged (`ranks`: rankdata(p))."""
    pos = y > 0.5
    n_pos = int(np.count_nonzero(pos))
    n_neg = len(pos) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = rankdata(p) if ranks is None else ranks
    return float((r[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
