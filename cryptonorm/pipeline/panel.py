"""One model across a universe of coins: prepare, split by time, scale, train, forecast every coin, then
the cross-sectional metrics (IC, ICIR, Newey-West t, decay) and the portfolio backtest on the test period.

The panel (T, C, F) is laid out coin-major as one (C x T, F) matrix, so sample (t, c) is the end row c x T + t
and a window is rows c x T + t - w + 1 .. c x T + t: the existing window gather and training loop run on it
unchanged, windows are never copied, and no window crosses from one coin into another (a sample's window
lies inside its coin's life, by its validity). train.batching random: batches random across coins and
times; by_time: the training samples of each timestamp together (every coin at that moment), timestamps in
a random order each epoch, cut into train.batch_size batches (a batch's first and last timestamp may be
split with its neighbour). BatchNorm's batch statistics are then (nearly) cross-sectional in training; at
inference it uses its running averages, as always.

Split by time, never by coin: the timestamps holding a valid sample are cut by split.train/val/test
(the oldest left out when they sum to less than 1), with an embargo of split.embargo (default
horizon + window) bars dropped from the end of each earlier split, so every coin is in every split and no
label of one split overlaps an input window of the next. The scaler is fitted on the training period only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cryptonorm.atomic import write_csv, write_json
from cryptonorm.config import Config
from cryptonorm.config.universe import PortfolioConfig
from cryptonorm.data.universe import Universe, load_universe
from cryptonorm.errors import DataError
from cryptonorm.features import cross_section as cs
from cryptonorm.features.panel import PanelPrepared, prepare_panel
from cryptonorm.features.scaling import Scaler
from cryptonorm.timeframes import timeframe_ms

if TYPE_CHECKING:
    from cryptonorm.trade.portfolio import PortfolioRun

DECAY_HORIZONS = [1, 2, 4, 8, 24]
MOMENTUM_BARS = 24  # the cross-sectional momentum baseline: the last 24 bars' excess return


@dataclass(eq=False)
class PanelData:
    """The panel as the training loop reads it (learn.training.WindowedData)."""

    X: np.ndarray  # (C x T, F) float32, scaled, 0 where undefined
    y: np.ndarray  # (C x T,) float32
    train_idx: np.ndarray  # (n,) int64 end rows c x T + t
    val_idx: np.ndarray
    test_idx: np.ndarray
    window: int
    n_times: int  # T
    scaler: Scaler
    groups: np.ndarray | None = None  # (n_train,) dense timestamp id per training sample (train.batching by_time)


@dataclass
class PanelResult:
    """What `run_panel` returns (and writes to its folder)."""

    out: Path
    metrics: dict[str, Any]


def split_times(prep: PanelPrepared, cfg: Config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T,) bool masks of the train, validation and test timestamps (module docstring)."""
    t_n = len(prep.timestamps)
    times = np.flatnonzero(prep.valid.any(axis=1))
    n = len(times)
    s = cfg.split
    take = min(n, int(round((s.train + s.val + s.test) * n)))
    times = times[n - take:]
    a, b = int(s.train * n), int(s.train * n) + int(s.val * n)
    parts = [times[:a], times[a:b], times[b:]]
    embargo = cfg.split.embargo if cfg.split.embargo is not None else prep.horizon + prep.window
    for i in range(2):  # the last times of a split sit >= embargo bars before the next split's first
        nxt = next((p[0] for p in parts[i + 1:] if len(p)), None)
        if nxt is not None:
            parts[i] = parts[i][parts[i] < nxt - embargo]
    masks = []
    for p in parts:
        m = np.zeros(t_n, dtype=bool)
        m[p] = True
        masks.append(m)
    if not masks[0].any() or not masks[2].any():
        raise DataError(f"the universe has {n} timestamps with samples: too few to split into train and test; "
                        "use more data or lower features.window / target.horizon")
    return masks[0], masks[1], masks[2]


def panel_data(prep: PanelPrepared, cfg: Config,
               times: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> PanelData:
    """Scale on the training period and lay the panel out coin-major (module docstring). `times`: (T,) masks
    of the train, validation and test timestamps (a walk-forward fold); default `split_times`."""
    t_n, c_n, f_n = prep.features.shape
    train_t, val_t, test_t = times if times is not None else split_times(prep, cfg)
    flat = np.ascontiguousarray(prep.features.transpose(1, 0, 2)).reshape(c_n * t_n, f_n)  # (C x T, F)
    last_train = int(np.flatnonzero(train_t)[-1])
    fit_rows = (prep.usable & (np.arange(t_n) <= last_train)[:, None]).T.reshape(-1)
    scaler = Scaler(kind=cfg.features.scaler).fit(flat, fit_rows, names=prep.feature_names)
    X = scaler.transform(flat, fill_nan=0.0)
    del flat
    y = np.nan_to_num(prep.y.T.reshape(-1)).astype(np.float32)

    def rows(times: np.ndarray) -> np.ndarray:
        ok = (prep.valid & times[:, None]).T.reshape(-1)  # coin-major
        return np.flatnonzero(ok).astype(np.int64)

    train_idx = rows(train_t)
    groups = None
    if cfg.train.batching == "by_time":  # every coin of a timestamp in one batch, timestamps in random order
        groups = np.unique(train_idx % t_n, return_inverse=True)[1].astype(np.int64)
    return PanelData(X=X, y=y, train_idx=train_idx, val_idx=rows(val_t), test_idx=rows(test_t),
                     window=prep.window, n_times=t_n, scaler=scaler, groups=groups)


def to_grid(values: np.ndarray, idx: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(T, C) array holding values at the coin-major end rows idx; NaN elsewhere."""
    t_n, c_n = shape
    out = np.full(t_n * c_n, np.nan)
    out[idx] = values
    return out.reshape(c_n, t_n).T


def momentum(close: np.ndarray, bars: int = MOMENTUM_BARS) -> np.ndarray:
    """(T, C) the last `bars` bars' log return of each coin minus the cross-sectional mean (past only)."""
    r = np.full(close.shape, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        r[1:] = np.log(close[1:] / close[:-1])
    ex = cs.target(r, "excess_return")
    cum = np.cumsum(np.nan_to_num(ex), axis=0)
    out = np.full(close.shape, np.nan)
    out[bars:] = cum[bars:] - cum[:-bars]
    out[~np.isfinite(ex)] = np.nan
    return out


def evaluate_period(prep: PanelPrepared, forecast: np.ndarray, rows: np.ndarray, cfg: Config,
                    funding: np.ndarray | None) -> tuple[dict[str, Any], PortfolioRun]:
    """IC metrics and the portfolio backtest of (T, C) forecasts over the timestamps `rows` (a slice)."""
    from cryptonorm.evaluate import ic
    from cryptonorm.trade.portfolio import simulate_portfolio

    label = np.where(prep.valid, prep.y, np.nan)[rows]
    f = forecast[rows]
    summary = ic.summarize(f, label, lags=max(prep.horizon - 1, ic.default_lags(len(rows))))
    bt_cfg = cfg.backtest if cfg.backtest.portfolio is not None else cfg.backtest.model_copy(
        update={"portfolio": PortfolioConfig()})
    run = simulate_portfolio(prep.timestamps[rows], prep.close[rows], f, bt_cfg, cfg.data.timeframe, prep.symbols,
                             funding=None if funding is None else funding[rows])
    return {"ic": summary.as_dict(), "ic_decay": ic.ic_decay(f, prep.close[rows], DECAY_HORIZONS),
            "portfolio": {k: v for k, v in run.metrics.items() if k != "per_year"},
            "per_year": run.metrics["per_year"]}, run


def per_coin_metrics(prep: PanelPrepared, forecast: np.ndarray, rows: np.ndarray) -> dict[str, dict[str, float]]:
    """Each coin's own forecast metrics over the test rows (time-series MSE, MAE, directional accuracy, IC)
    against its label; direction and volatility targets by their own kind, cross-sectional ones as returns."""
    from cryptonorm.evaluate.forecast import forecast_metrics

    kind = prep.kind if prep.kind in ("direction", "volatility") else "return"
    out: dict[str, dict[str, float]] = {}
    for c, sym in enumerate(prep.symbols):
        f, y = forecast[rows, c], np.where(prep.valid[rows, c], prep.y[rows, c], np.nan)
        ok = np.isfinite(f) & np.isfinite(y)
        if ok.sum() > 2:
            out[sym] = forecast_metrics(f[ok], y[ok], kind)
    return out


def funding_grid(u: Universe, ts: np.ndarray) -> np.ndarray | None:
    """(T, C) funding each unit of weight pays per bar (perpetuals), over each coin's own bars; None: spot."""
    if not u.funding:
        return None
    from cryptonorm.trade.funding import funding_per_bar

    step = timeframe_ms(u.timeframe)
    out = np.zeros(u.rows.shape)
    for c, sym in enumerate(u.symbols):
        live = np.flatnonzero(u.rows[:, c] >= 0)
        if not len(live):
            continue
        seg = slice(live[0], live[-1] + 1)
        f = u.funding[sym]
        try:
            out[seg, c] = funding_per_bar(ts[seg], step, f["timestamp"].to_numpy("int64"), f["rate"].to_numpy())
        except DataError as e:
            raise DataError(f"{sym}: {e}") from None
    return out


def single_split(prep: PanelPrepared, cfg: Config) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Train once on the chronological split: ((T, C) test forecasts, (T,) test timestamps, training info)."""
    from cryptonorm.learn import training

    data = panel_data(prep, cfg)
    fit = training.fit(data, cfg)
    forecast = to_grid(training.predict(fit.model, data, data.test_idx), data.test_idx, prep.y.shape)
    test_t = np.isin(np.arange(data.n_times), data.test_idx % data.n_times)
    info = {"samples": {"train": len(data.train_idx), "val": len(data.val_idx), "test": len(data.test_idx)},
            "training": {"best_epoch": fit.best_epoch, "stopped": fit.stopped, "device": fit.device,
                         "history": fit.history}}
    return forecast, test_t, info


def run_panel(cfg: Config, out: Path) -> PanelResult:
    """Train one model on the universe (or one per walk-forward fold), forecast the test period, write
    metrics and forecasts to `out`."""
    from cryptonorm.pipeline.rundir import RunDir, read_marker, write_marker
    from cryptonorm.trade.portfolio import check_k

    if read_marker(out).get("kind") != "panel":  # a folder of ours from an earlier panel run is replaced
        RunDir(out).check_out()
    u = load_universe(cfg)
    if cfg.backtest.portfolio is not None:  # before training, not after
        check_k(cfg.backtest.portfolio, int(u.present().sum(axis=1).max()))
    prep = prepare_panel(u, cfg)
    if cfg.split.walk_forward.enabled:
        from cryptonorm.pipeline.panel_walkforward import walk_forward

        forecast, test_t, training_info = walk_forward(prep, cfg)
    else:
        forecast, test_t, training_info = single_split(prep, cfg)
    rows = np.arange(int(np.flatnonzero(test_t)[0]), int(np.flatnonzero(test_t)[-1]) + 1)
    funding = funding_grid(u, prep.timestamps) if cfg.backtest.funding != "off" else None
    model_m, run = evaluate_period(prep, forecast, rows, cfg, funding)
    mom = np.where(test_t[:, None], momentum(prep.close), np.nan)
    base_m, _ = evaluate_period(prep, mom, rows, cfg, funding)
    model_m["per_coin"] = per_coin_metrics(prep, forecast, rows)
    metrics = {"model": model_m, "momentum": base_m, "coins": prep.symbols, "skipped": prep.skipped,
               **training_info, "config": cfg.to_dict()}
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, "panel")
    t_idx, c_idx = np.nonzero(np.isfinite(forecast))
    write_csv(out / "forecasts.csv", pd.DataFrame({
        "timestamp": prep.timestamps[t_idx], "symbol": np.asarray(prep.symbols)[c_idx],
        "forecast": forecast[t_idx, c_idx], "label": prep.y[t_idx, c_idx]}))
    write_csv(out / "portfolio.csv", pd.DataFrame({"timestamp": prep.timestamps[rows], "return": run.returns,
                                                  "cost": run.cost, "funding": run.funding, "equity": run.equity}))
    write_json(out / "metrics.json", metrics)
    return PanelResult(out=out, metrics=metrics)
