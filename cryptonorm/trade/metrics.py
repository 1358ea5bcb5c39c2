"""Pure forecast metrics (numpy in, floats out). Performance metrics of a backtest live in backtest.py."""

from __future__ import annotations

import numpy as np
from scipy import stats


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
        out["auc"] = auc(p, y)
        out["ic_pearson"] = _corr(p, y, stats.pearsonr)
        out["ic_spearman"] = _corr(p, y, stats.spearmanr)
        out["base_rate"] = float(np.mean(y))
        return out
    err = pred - y
    out["mse"] = float(np.mean(err**2))
    out["mae"] = float(np.mean(np.abs(err)))
    if kind != "volatility":
        nz = y != 0
        out["directional_accuracy"] = float(np.mean(np.sign(pred[nz]) == np.sign(y[nz]))) if nz.any() else float("nan")
    out["ic_pearson"] = _corr(pred, y, stats.pearsonr)
    out["ic_spearman"] = _corr(pred, y, stats.spearmanr)
    return out


def _corr(a: np.ndarray, b: np.ndarray, fn: object) -> float:
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")  # undefined for a constant forecast: say so rather than 0
    return float(fn(a, b)[0])  # type: ignore[operator]


def auc(p: np.ndarray, y: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula, ties averaged."""
    pos = y > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = stats.rankdata(p)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
