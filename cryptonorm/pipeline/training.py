"""The train step: one model on a chronological split (or walk-forward folds), written to a run directory."""

from __future__ import annotations

import contextlib
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
from cryptonorm.config import Config, dump_yaml
from cryptonorm.data.candles import data_hash
from cryptonorm.data.store import candle_path, have_candles, load_candles, load_funding
from cryptonorm.pipeline.fetch import ProgressFn, fetch
from cryptonorm.pipeline.integrity import file_hashes
from cryptonorm.pipeline.resume import Checkpointer
from cryptonorm.pipeline.rundir import (
    CONFIG,
    FOLDS,
    FORECASTS,
    HISTORY,
    METRICS,
    RUN_JSON,
    SCALER,
    RunDir,
    new_run_dir,
    resolved_paths,
)

HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "lr", "seconds", "samples_per_s"]


@dataclass
class TrainSummary:
    """What `train` returns: the run directory, its metrics and how training ended."""

    run_dir: Path
    metrics: dict[str, Any]
    device: str
    stopped: str
    best_epoch: int
    seconds: float
    resumed: str = ""  # where an interrupted run was picked up ("after epoch 3"); "" = from scratch


def versions() -> dict[str, str]:
    """Versions of cryptonorm, python, the platform and the libraries a run depends on (for run.json)."""
    import torch

    out = {"cryptonorm": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
           "torch": torch.__version__, "numpy": np.__version__, "pandas": pd.__version__}
    with contextlib.suppress(Exception):  # the installed version, without importing ccxt (slow, unused here)
        from importlib.metadata import version

        out["ccxt"] = version("ccxt")
    return out


def train(cfg: Config, out: Path | None = None, *, force: bool = False, progress: ProgressFn | None = None,
          candles: pd.DataFrame | None = None) -> TrainSummary:
    """Train one model; write config, checkpoint, scaler, history, metrics and forecasts to a run dir.

    `out` holding a finished run is refused unless `force`; an interrupted one with the same config resumes
    after its last finished epoch (or walk-forward fold). The run directory is locked while training.
    """
    t0 = time.time()
    if candles is None:
        if cfg.data.exchange == "synthetic" and not cfg.data.file and not have_candles(cfg):
            fetch(cfg)  # the offline market is generated on demand: no network, deterministic
        candles = load_candles(cfg)
    from cryptonorm.features import dataset, splits
    from cryptonorm.learn import device as device_mod  # torch is imported only once there is data to train on
    from cryptonorm.pipeline.walkforward import walk_forward

    prep = dataset.prepare(candles, cfg, load_funding(cfg, candles["timestamp"]))  # funding: None unless a swap
    splits.check_target_varies(prep, np.flatnonzero(prep.valid), "samples")  # before a run dir; the split: again
    device = device_mod.resolve_device(cfg.train.device)
    rd = RunDir(Path(out) if out is not None else new_run_dir(cfg))
    rd.check_out(force)
    run_dir, stored, candle_hash = rd.path, resolved_paths(cfg), data_hash(candles)
    with rd.lock():
        resuming = rd.begin(stored, force)
        if not resuming:
            write_text_atomic(rd / CONFIG, dump_yaml(stored))
        ck = Checkpointer(run_dir, candle_hash, resuming)
        device_mod.seed_everything(cfg.seed, cfg.train.deterministic)
        if cfg.split.walk_forward.enabled:
            ds, res, forecasts, split_of, folds = walk_forward(prep, cfg, device, progress, run_dir, ck)
        else:
            ds, res, forecasts, split_of = _single_split(prep, cfg, device, progress, run_dir, ck)
            folds = []
        metrics = _write_outputs(run_dir, cfg, prep, ds, res, forecasts, split_of, folds)
        run_info = {"seed": cfg.seed, "device": str(device), "versions": versions(),
                    "data": {"path": str(candle_path(stored).resolve()), "hash": candle_hash, "rows": len(candles),
                             "first": int(candles["timestamp"].iloc[0]),
                             "last": int(candles["timestamp"].iloc[-1])},
                    "files": file_hashes(run_dir),  # checked by predict and backtest
                    "seconds": round(time.time() - t0, 3), "stopped": res.stopped, "resumed": ck.resumed or None,
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        write_json(rd / RUN_JSON, run_info)
        ck.finish()
    return TrainSummary(run_dir, metrics, str(device), res.stopped, res.best_epoch, time.time() - t0, ck.resumed)


def _single_split(prep: Any, cfg: Config, device: Any, progress: ProgressFn | None, run_dir: Path,
                  ck: Checkpointer) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """Train on the chronological split; forecasts (N,) of every sample and the split name of each row."""
    from cryptonorm.features import splits
    from cryptonorm.pipeline import fitting

    ds = splits.split(prep, cfg)
    fitted = fitting.fit(ds, cfg, device, progress, run_dir, ck, 0)  # a network or ridge / LightGBM
    res = fitted.res
    forecasts = np.full(len(ds.y), np.nan)
    split_of = np.full(len(ds.y), "", dtype=object)
    for name in ("train", "val", "test"):
        idx = getattr(ds, f"{name}_idx")
        if len(idx):
            forecasts[idx] = fitted.forecast(ds, idx)
            split_of[idx] = name
    return ds, res, forecasts, split_of


def _write_outputs(run_dir: Path, cfg: Config, prep: Any, ds: Any, res: Any, forecasts: np.ndarray,
                   split_of: np.ndarray, folds: list[dict[str, Any]]) -> dict[str, Any]:
    """history.csv, scaler.json, folds.csv, metrics.json and forecasts.csv; returns the metrics."""
    write_csv(run_dir / HISTORY, pd.DataFrame(res.history).reindex(columns=HISTORY_COLUMNS))
    vol = None
    if cfg.target.kind == "volatility":  # baselines, DM and variance metrics (pipeline/vol.py)
        from cryptonorm.pipeline.vol import VolContext

        vol = VolContext(prep, forecasts, split_of, cfg)
        forecasts = vol.forecasts  # raised to the variance floor where below it (pipeline/vol.py)
    # vol_floor: `predict` raises its forecasts to the same floor (pipeline/forecasting.py)
    write_json(run_dir / SCALER, {"scaler": ds.scaler.to_dict(), "features": ds.feature_names,
                                   "window": ds.window, **({"vol_floor": vol.floor} if vol else {})})
    metrics = _split_metrics(ds, forecasts, split_of, cfg, vol)
    metrics.update({"stopped": res.stopped, "best_epoch": res.best_epoch, "message": res.message})
    if vol is not None:
        metrics["best_baseline"] = vol.best_info()
        metrics["vol_floor"] = vol.floor_summary(split_of)
        note = vol.floor_note(split_of)
        metrics["message"] = "; ".join([res.message, note]) if note else res.message
    if folds:
        metrics["walk_forward"] = {"folds": len(folds), "mode": cfg.split.walk_forward.mode,
                                   "step": cfg.split.walk_forward.step,
                                   "train_bars": cfg.split.walk_forward.train_bars}
        write_csv(run_dir / FOLDS, pd.DataFrame(folds), times=("train_start", "train_end", "test_start",
                                                                      "test_end"))
    write_json(run_dir / METRICS, metrics)
    _write_forecasts(run_dir, ds, forecasts, split_of, vol)
    return metrics


def _split_metrics(ds: Any, forecasts: np.ndarray, split_of: np.ndarray, cfg: Config,
                   vol: Any = None) -> dict[str, Any]:
    """Forecast metrics of the validation and test samples, beside the persistence baseline (for
    volatility: beside the volatility baselines, pipeline/vol.py)."""
    from cryptonorm.evaluate.forecast import forecast_metrics

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


def _persistence_metrics(ds: Any, idx: np.ndarray, kind: str) -> dict[str, float]:
    """The naive baseline: tomorrow looks like today (last bar's log return, or its sign)."""
    from cryptonorm.evaluate.forecast import forecast_metrics

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
    write_csv(run_dir / FORECASTS, df)
