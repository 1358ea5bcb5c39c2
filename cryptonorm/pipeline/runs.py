"""Run directories: features, audit, train (single split or walk-forward), predict, backtest.

A run directory is finished when run.json exists (written last); a re-run into it clears the old outputs
first, so it never mixes two runs.
"""

from __future__ import annotations

import contextlib
import json
import platform
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryptonorm import __version__
from cryptonorm.atomic import write_csv, write_json, write_text_atomic
from cryptonorm.config import Config, build_config, dump_yaml, read_yaml
from cryptonorm.data.candles import data_hash
from cryptonorm.data.store import candle_path, have_candles, load_candles, write_atomic
from cryptonorm.errors import ConfigError, DataError
from cryptonorm.pipeline.fetch import ProgressFn, fetch

# ---------------------------------------------------------------- features and audit


def features(cfg: Config, out: Path) -> tuple[Path, int, int]:
    """Write the raw (unscaled) feature table with timestamp and OHLCV to `out` (.parquet or .csv)."""
    from cryptonorm.features.indicators import compute_features

    suffix = out.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise ConfigError(f"-o {out}: use a .parquet or .csv file name")
    table = compute_features(load_candles(cfg), cfg.features)
    if suffix == ".parquet":
        write_atomic(table, out)
    else:
        write_csv(out, table)
    return out, len(table), table.shape[1]


def audit(cfg: Config) -> Any:
    """Run the look-ahead audit on the user's own config and data."""
    from cryptonorm.features.audit import audit as run_audit

    return run_audit(load_candles(cfg), cfg)


# ---------------------------------------------------------------- train


def new_run_dir(cfg: Config, root: Path = Path("runs")) -> Path:
    """runs/<name>-<UTC timestamp>[-n]: never reuses an existing directory."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = root / f"{cfg.name}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    path.mkdir(parents=True)
    return path


def versions() -> dict[str, str]:
    import torch

    out = {"cryptonorm": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
           "torch": torch.__version__, "numpy": np.__version__, "pandas": pd.__version__}
    with contextlib.suppress(Exception):  # the installed version, without importing ccxt (slow, unused here)
        from importlib.metadata import version

        out["ccxt"] = version("ccxt")
    return out


HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "lr", "seconds", "samples_per_s"]


@dataclass
class TrainSummary:
    run_dir: Path
    metrics: dict[str, Any]
    device: str
    stopped: str
    best_epoch: int
    seconds: float


def train(cfg: Config, out: Path | None = None, *, progress: ProgressFn | None = None,
          candles: pd.DataFrame | None = None) -> TrainSummary:
    """Train one model; write config, checkpoint, scaler, history, metrics and forecasts to a run dir."""
    t0 = time.time()
    if candles is None:
        if cfg.data.exchange == "synthetic" and not cfg.data.file and not have_candles(cfg):
            fetch(cfg)  # the offline market is generated on demand: no network, deterministic
        candles = load_candles(cfg)
    from cryptonorm.features import dataset, splits
    from cryptonorm.learn import device as device_mod
    from cryptonorm.learn import training  # torch is imported only once there is data to train on

    prep = dataset.prepare(candles, cfg)
    device = device_mod.resolve_device(cfg.train.device)
    run_dir = Path(out) if out is not None else new_run_dir(cfg)
    _check_run_dir(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _clear_run_outputs(run_dir)  # a re-run into the same directory never leaves a mix of two runs
    write_text_atomic(run_dir / "config.yaml", dump_yaml(resolved_paths(cfg)))
    device_mod.seed_everything(cfg.seed, cfg.train.deterministic)
    if cfg.backtest.walk_forward.enabled:
        ds, res, forecasts, split_of, folds = _walk_forward(prep, cfg, device, progress, run_dir)
    else:
        ds = splits.split(prep, cfg)
        res = training.fit(ds, cfg, device, progress=progress, checkpoint=run_dir / "model.pt")
        forecasts = np.full(len(ds.y), np.nan)
        split_of = np.full(len(ds.y), "", dtype=object)
        for name in ("train", "val", "test"):
            idx = getattr(ds, f"{name}_idx")
            if len(idx):
                forecasts[idx] = training.predict(res.model, ds, idx, device)
                split_of[idx] = name
        folds = []
    write_csv(run_dir / "history.csv", pd.DataFrame(res.history).reindex(columns=HISTORY_COLUMNS))
    write_json(run_dir / "scaler.json", {"scaler": ds.scaler.to_dict(), "features": ds.feature_names,
                                          "window": ds.window})
    vol = None
    if cfg.target.kind == "volatility":  # baselines, DM and variance metrics (pipeline/vol.py)
        from cryptonorm.pipeline.vol import VolContext

        vol = VolContext(prep, forecasts, split_of, cfg)
    metrics = _split_metrics(ds, forecasts, split_of, cfg, vol)
    metrics.update({"stopped": res.stopped, "best_epoch": res.best_epoch, "message": res.message})
    if folds:
        metrics["walk_forward"] = {"folds": len(folds), "mode": cfg.backtest.walk_forward.mode,
                                   "step": cfg.backtest.walk_forward.step,
                                   "train_bars": cfg.backtest.walk_forward.train_bars}
        write_csv(run_dir / "folds.csv", pd.DataFrame(folds))
    write_json(run_dir / "metrics.json", metrics)
    _write_forecasts(run_dir, ds, forecasts, split_of, vol)
    run_info = {"seed": cfg.seed, "device": str(device), "versions": versions(),
                "data": {"path": str(candle_path(cfg)), "hash": data_hash(candles), "rows": len(candles),
                         "first": int(candles["timestamp"].iloc[0]), "last": int(candles["timestamp"].iloc[-1])},
                "seconds": round(time.time() - t0, 3), "stopped": res.stopped,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_json(run_dir / "run.json", run_info)
    return TrainSummary(run_dir, metrics, str(device), res.stopped, res.best_epoch, time.time() - t0)


def resolved_paths(cfg: Config) -> Config:
    """The config with data.dir and data.file made absolute, so a run directory works from any folder."""
    update: dict[str, Any] = {"dir": str(Path(cfg.data.dir).resolve())}
    if cfg.data.file:
        update["file"] = str(Path(cfg.data.file).resolve())
    return cfg.model_copy(update={"data": cfg.data.model_copy(update=update)})


def _split_metrics(ds: Any, forecasts: np.ndarray, split_of: np.ndarray, cfg: Config,
                   vol: Any = None) -> dict[str, Any]:
    """Forecast metrics of the validation and test samples, beside the persistence baseline (for
    volatility: beside the volatility baselines, pipeline/vol.py)."""
    from cryptonorm.trade.metrics import forecast_metrics

    kind = cfg.target.kind
    out: dict[str, Any] = {"target": kind, "horizon": cfg.target.horizon, "samples": {}, "dropped": ds.dropped}
    for name in ("train", "val", "test"):
        idx = np.flatnonzero((split_of == name) & np.isfinite(forecasts))
        out["samples"][name] = len(idx)
        if name != "train" and len(idx):
            out[name] = forecast_metrics(forecasts[idx], ds.y[idx].astype("float64"), kind)
            if vol is not None:
                out[name].update(vol.metrics(idx))
            else:
                out[name]["persistence"] = _persistence_metrics(ds, idx, kind)
    return out


def _walk_forward(prep: Any, cfg: Config, device: Any, progress: ProgressFn | None,
                  run_dir: Path) -> tuple[Any, Any, np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Refit every `step` bars on a rolling/expanding window; every test forecast is out of sample.

    Fold k predicts rows [s, s + step); it trains on rows before s - embargo (the last `val_fraction` of
    them, after another embargo, for early stopping), with the scaler refitted on its own training rows.
    """
    from cryptonorm.features import splits
    from cryptonorm.learn import training

    wf = cfg.backtest.walk_forward
    n = len(prep.timestamps)
    embargo = cfg.split.embargo if cfg.split.embargo is not None else prep.horizon + prep.window
    if wf.train_bars + 2 * embargo + wf.step > n:
        raise ConfigError(f"backtest.walk_forward needs train_bars + 2 x embargo + step = "
                          f"{wf.train_bars + 2 * embargo + wf.step} bars, the data has {n}; lower "
                          "backtest.walk_forward.train_bars/step or use more data")
    forecasts = np.full(n, np.nan)
    split_of = np.full(n, "", dtype=object)
    folds: list[dict[str, Any]] = []
    ds = res = None
    start = wf.train_bars + embargo
    while start < n:
        stop = min(start + wf.step, n)
        fit_end = start - embargo  # labels of training samples end before the test windows begin
        fit_start = 0 if wf.mode == "expanding" else max(0, fit_end - wf.train_bars)
        n_val = max(1, int((fit_end - fit_start) * wf.val_fraction))
        val_start = fit_end - n_val
        train_end = val_start - embargo
        ds_k = splits.fold(prep, slice(fit_start, train_end), slice(val_start, fit_end), slice(start, stop), cfg)
        if len(ds_k.train_idx) and len(ds_k.val_idx) and len(ds_k.test_idx):
            fold_progress = None if progress is None else (lambda d, k=len(folds): progress({**d, "fold": k}))
            res = training.fit(ds_k, cfg, device, progress=fold_progress, checkpoint=run_dir / "model.pt")
            forecasts[ds_k.test_idx] = training.predict(res.model, ds_k, ds_k.test_idx, device)
            split_of[ds_k.test_idx] = "test"
            ds = ds_k
            folds.append({"fold": len(folds), "train_start": int(prep.timestamps[fit_start]),
                          "train_end": int(prep.timestamps[train_end - 1]), "test_start": int(prep.timestamps[start]),
                          "test_end": int(prep.timestamps[stop - 1]), "train_samples": len(ds_k.train_idx),
                          "test_samples": len(ds_k.test_idx), "best_epoch": res.best_epoch, "stopped": res.stopped})
        start = stop
    if ds is None or res is None:
        raise DataError("walk-forward produced no fold with training, validation and test samples; "
                        "use more data or a smaller backtest.walk_forward.train_bars")
    return ds, res, forecasts, split_of, folds


# What train writes; run.json last, as the marker of a finished run.
RUN_OUTPUTS = ("run.json", "metrics.json", "forecasts.csv", "scaler.json", "history.csv", "folds.csv", "model.pt",
               "predictions.csv", "config.yaml")


def _is_temp(p: Path) -> bool:
    return p.name.startswith(".") and p.name.endswith(".tmp")


def _check_run_dir(run_dir: Path) -> None:
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir} is a file; choose a new or empty directory")
    content = [p for p in run_dir.iterdir() if not _is_temp(p)]
    if content and not (run_dir / "config.yaml").exists():
        raise ConfigError(f"--out {run_dir} exists and is not a cryptonorm run directory; choose an empty "
                          "or new directory")


def _clear_run_outputs(run_dir: Path) -> None:
    """Remove an earlier run's outputs, the completion marker run.json first, and leftover temp files."""
    import shutil

    for name in RUN_OUTPUTS:
        with contextlib.suppress(FileNotFoundError):
            (run_dir / name).unlink()
    shutil.rmtree(run_dir / "backtest", ignore_errors=True)
    for p in run_dir.iterdir():
        if _is_temp(p):
            with contextlib.suppress(OSError):
                p.unlink()


def finished_run(run_dir: Path) -> Config:
    """The config of a run whose training finished (run.json is written last)."""
    cfg = load_run_config(run_dir)
    if not (Path(run_dir) / "run.json").exists():
        raise DataError(f"{run_dir} is an unfinished run (no run.json): its training was interrupted; "
                        "train again with the same --out")
    return cfg


def _persistence_metrics(ds: Any, idx: np.ndarray, kind: str) -> dict[str, float]:
    """The naive baseline: tomorrow looks like today (last bar's log return, or its sign)."""
    from cryptonorm.trade.metrics import forecast_metrics

    last = np.zeros(len(ds.close))
    last[1:] = np.diff(np.log(ds.close))
    h = max(1, int(getattr(ds, "horizon", 1)))
    if kind == "direction":
        pred = (last[idx] > 0).astype("float64") * 0.98 + 0.01
    else:
        pred = last[idx] * h
    return {k: v for k, v in forecast_metrics(pred, ds.y[idx].astype("float64"), kind).items() if k != "n"}


def _write_forecasts(run_dir: Path, ds: Any, forecasts: np.ndarray, split_of: np.ndarray, vol: Any = None) -> None:
    """forecasts.csv: every bar from the first out-of-sample forecast on (NaN where there is no valid sample).

    Bars inside a split's span that have no forecast (a gap, a dropped window) keep the split's name, so the
    backtest trades them flat instead of silently skipping them.
    """
    oos = np.flatnonzero((split_of == "val") | (split_of == "test"))
    start = int(oos[0]) if len(oos) else 0
    split = split_of[start:].copy()
    for name in ("val", "test"):
        rows = np.flatnonzero(split == name)
        if len(rows):
            seg = split[rows[0]:rows[-1] + 1]
            seg[seg == ""] = name
    df = pd.DataFrame({"timestamp": ds.timestamps[start:], "close": ds.close[start:], "forecast": forecasts[start:],
                       "y": ds.y[start:], "outcome": ds.outcome[start:], "split": split,
                       **(vol.columns(start) if vol is not None else {})})
    write_csv(run_dir / "forecasts.csv", df)


# ---------------------------------------------------------------- saved runs


def load_run_config(run_dir: Path) -> Config:
    p = Path(run_dir) / "config.yaml"
    if not p.exists():
        raise ConfigError(f"{run_dir} is not a run directory (no config.yaml); pass the directory that "
                          "`cryptonorm train` printed")
    return build_config(read_yaml(p), source=str(p))


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.yaml").exists()




def predict(run_dir: Path, data_file: Path | None = None, out: Path | None = None) -> tuple[Path, int]:
    """Forecasts of a saved run on its own data (or another candle file), written as CSV."""
    from cryptonorm.features import dataset, splits
    from cryptonorm.features.scaling import Scaler
    from cryptonorm.learn import checkpoints, training
    from cryptonorm.learn import device as device_mod

    run_dir = Path(run_dir)
    cfg = finished_run(run_dir)
    if data_file is not None:  # another file: all of it, not the run's date range
        data = {**cfg.to_dict()["data"], "file": str(data_file), "since": None, "until": None}
        cfg = build_config({**cfg.to_dict(), "data": data})
    meta_path = run_dir / "scaler.json"
    if not (run_dir / "model.pt").exists() or not meta_path.exists():
        raise DataError(f"{run_dir} has no model.pt/scaler.json; the training did not finish, train again")
    meta = json.loads(meta_path.read_text())
    model, _ = checkpoints.load_checkpoint(run_dir / "model.pt")
    device = device_mod.resolve_device(cfg.train.device)
    model.to(device)
    ds = splits.apply(dataset.prepare(load_candles(cfg), cfg), Scaler.from_dict(meta["scaler"]),
                       meta["features"])
    idx = ds.test_idx  # every bar with a complete, clean input window, the latest one included
    pred = np.full(len(ds.close), np.nan)
    if len(idx):
        pred[idx] = training.predict(model, ds, idx, device)
    df = pd.DataFrame({"timestamp": ds.timestamps, "close": ds.close, "forecast": pred})
    out = out or run_dir / "predictions.csv"
    write_csv(out, df)
    return out, int(len(idx))


def backtest(run_dir: Path, split: str = "test") -> tuple[Path, Any]:
    """Backtest a run's out-of-sample forecasts; writes RUN_DIR/backtest/."""
    from cryptonorm.render import plots as report

    run_dir = Path(run_dir)
    cfg = finished_run(run_dir)
    fpath = run_dir / "forecasts.csv"  # with walk-forward, every out-of-sample fold forecast is "test"
    if not fpath.exists():
        raise DataError(f"{fpath} not found; train first (`cryptonorm train CONFIG`)")
    df = pd.read_csv(fpath)
    n_split = int((df["split"] == split).sum())
    if n_split < 2:
        raise DataError(f"the {split} split of {run_dir} has {n_split} bar(s); a backtest needs at least 2: "
                        "use a longer data range or a larger split.test")
    if cfg.backtest_mode == "vol_target":
        from cryptonorm.pipeline.vol import backtest_frame

        result = backtest_frame(df, cfg, split)
    else:
        result = _direction_backtest(df[df["split"] == split], cfg)
    out_dir = run_dir / "backtest"
    out_dir.mkdir(exist_ok=True)
    write_csv(out_dir / "equity.csv", result.equity)
    write_csv(out_dir / "trades.csv", result.trades)
    write_json(out_dir / "metrics.json", result.metrics)
    report.plot_equity(result, out_dir / "equity.png", title=f"{cfg.name}: {cfg.data.symbols[0]} "
                       f"{cfg.data.timeframe}, {split} split")
    return out_dir, result


def _direction_backtest(df: pd.DataFrame, cfg: Config) -> Any:
    from cryptonorm.trade import backtest as bt

    return bt.simulate(df["timestamp"].to_numpy("int64"), df["close"].to_numpy("float64"),
                       df["forecast"].to_numpy("float64"), cfg.backtest, cfg.data.timeframe, cfg.target.kind,
                       outcome=df["outcome"].to_numpy("float64"))
