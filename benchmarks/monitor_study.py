"""Does the drift alarm say anything about the error to come? Yearly walk-forward on real BTC and ETH 1h.

For each coin and each test year Y: train a BatchNorm MLP on 2020-01-01 .. Y-0.5 (validation Y-0.5 .. Y, dates
split), then `monitor` the coin's file; on the bars of year Y only (out of sample) take the Spearman rank
correlation between a drift signal at bar t and the forecasts' mean squared error over the next k bars
(forecasts made at t+1..t+k, each against its realized next-bar log return), and the same error in excess of a
zero forecast's. Signals: the BatchNorm alarm and its two parts (mean shift, log variance ratio), the mean
input PSI, and a FreqAI-style dissimilarity index (distance of bar t's feature row to its nearest training
row, divided by the mean pairwise distance of training rows; 5,000 training rows sampled). The bars overlap (a
window of N bars, k bars ahead): neighbouring terms are not independent, so the correlations come with a
moving-block bootstrap 90% interval (blocks of N + k bars). Prints a markdown table.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/monitor_study.py [--years 2023 2024] [--k 24 168]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from cryptonorm import pipeline
from cryptonorm.config import build_config
from cryptonorm.pipeline.monitoring import drift_frame, load_inputs

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def dissimilarity(rows: np.ndarray, train: np.ndarray, seed: int = 0) -> np.ndarray:
    """FreqAI's DI: nearest-training-row distance over the mean pairwise training distance."""
    from scipy.spatial.distance import pdist
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(seed)
    t = train[rng.choice(len(train), size=min(5000, len(train)), replace=False)]
    d_bar = pdist(t[rng.choice(len(t), size=min(2000, len(t)), replace=False)]).mean()
    dist, _ = NearestNeighbors(n_neighbors=1).fit(t).kneighbors(rows)
    return dist[:, 0] / d_bar


def future_error(forecast: np.ndarray, close: np.ndarray, k: int, excess: bool = False) -> np.ndarray:
    """(n,) mean of (forecast_s - r_{s+1})^2 over s = t+1 .. t+k, r the next bar's log return; with `excess`
    minus a zero forecast's r_{s+1}^2 (what the model loses or gains over "no move": the level of volatility
    cancels out). NaN where incomplete."""
    e = np.full(len(close), np.nan)
    r = np.diff(np.log(close))
    e[:-1] = (forecast[:-1] - r) ** 2 - (r * r if excess else 0.0)
    c = np.r_[0.0, np.cumsum(np.nan_to_num(e))]
    out = np.full(len(close), np.nan)
    n = len(close)
    out[: n - k - 1] = (c[k + 1: n] - c[1: n - k]) / k
    return out


def block_ci(x: np.ndarray, y: np.ndarray, block: int, reps: int = 300, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    n, out = len(x), []
    starts = np.arange(0, max(1, n - block))
    for _ in range(reps):
        idx = np.concatenate([np.arange(s, s + block) for s in rng.choice(starts, size=n // block + 1)])[:n]
        out.append(stats.spearmanr(x[idx], y[idx]).statistic)
    return float(np.quantile(out, 0.05)), float(np.quantile(out, 0.95))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--years", type=int, nargs="+", default=[2023, 2024])
    ap.add_argument("--coins", nargs="+", default=["BTC", "ETH"])
    ap.add_argument("--k", type=int, nargs="+", default=[24, 168])
    ap.add_argument("--window", type=int, default=168)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    names = {"alarm": "alarm (BN)", "bn_shift": "BN mean shift", "bn_logvar": "BN log var ratio",
             "psi_mean": "input PSI", "di": "FreqAI DI"}
    lines = ["| coin | test year | error | k | bars | " + " | ".join(names.values()) + " |",
             "|---|---|---|---|---" + "|---" * len(names) + "|"]
    with tempfile.TemporaryDirectory() as tmp:
        for coin in args.coins:
            file = DATA / f"{coin}_USDT-1h.csv.gz"
            for year in args.years:
                raw = {"name": f"mon-{coin}-{year}", "seed": 0,
                       "data": {"exchange": "binance", "symbol": f"{coin}/USDT", "timeframe": "1h", "file": str(file),
                                "since": "2020-01-01", "until": f"{year + 1}-01-01"},
                       "split": {"val_start": f"{year - 1}-07-01", "test_start": f"{year}-01-01"},
                       "features": {"window": 24, "returns": [1, 2, 4, 8, 24]},
                       "model": {"kind": "mlp", "norm": "batch", "hidden": [64, 32], "dropout": 0.1},
                       "train": {"epochs": args.epochs, "device": "cpu"}}
                run = Path(tmp) / f"{coin}-{year}"
                pipeline.train(build_config(raw), run)
                inp = load_inputs(run, file)
                frame, _, _ = drift_frame(inp, args.window)
                frame["di"] = dissimilarity(inp.ds.X[inp.ds.test_idx], inp.train_rows)
                ts = pd.to_datetime(frame["timestamp"], unit="ms", utc=True)
                for excess, k in ((x, k) for x in (False, True) for k in args.k):
                    frame["err"] = future_error(frame["forecast"].to_numpy(), frame["close"].to_numpy(), k, excess)
                    oos = frame[(ts.dt.year == year).to_numpy()].dropna(subset=["err", "alarm", "psi_mean"])
                    cells = []
                    for sig in names:
                        x, y = oos[sig].to_numpy(), oos["err"].to_numpy()
                        rho = stats.spearmanr(x, y).statistic
                        lo, hi = block_ci(x, y, args.window + k)
                        cells.append(f"{rho:+.2f} [{lo:+.2f}, {hi:+.2f}]")
                    head = f"| {coin} | {year} | {'excess' if excess else 'MSE'} | {k} | {len(oos)} | "
                    lines.append(head + " | ".join(cells) + " |")
                    print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
