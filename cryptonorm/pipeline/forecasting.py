"""The predict step: forecasts of a saved run on its own data or another candle file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryptonorm.atomic import atomic_path, write_csv
from cryptonorm.config import Config, build_config
from cryptonorm.data.store import load_candles, load_funding
from cryptonorm.errors import ConfigError, DataError
from cryptonorm.pipeline.fitting import is_tabular, load_tabular, model_file
from cryptonorm.pipeline.rundir import CONFIG, MODEL, PREDICTIONS, SCALER, RunDir

PREDICTION_FORMATS = (".csv", ".parquet")  # what `predict -o` writes, chosen by the file's suffix


def predict(run_dir: Path, data_file: Path | None = None, out: Path | None = None) -> tuple[Path, int]:
    """Forecasts of a saved run on its own data (or another candle file), written as CSV or parquet (by the
    suffix of `out`; default RUN_DIR/predictions.csv)."""
    from cryptonorm.features import dataset, splits
    from cryptonorm.features.scaling import Scaler
    rd = RunDir(run_dir)
    run_dir = rd.path
    if out is not None and Path(out).suffix.lower() not in PREDICTION_FORMATS:
        raise ConfigError(f"-o {out}: give a file name ending in {' or '.join(PREDICTION_FORMATS)} (the suffix "
                          "chooses the format)")
    cfg = rd.finished_config()
    with rd.lock():
        meta = rd.scaler(model_file(cfg))
        scaler = Scaler.from_dict(meta["scaler"])
        rd.verify()
        forecast, ckpt = _load_model(run_dir, cfg)
        check_model_fits(run_dir, cfg, meta, ckpt)
        if data_file is not None:  # another file: all of it, not the run's date range
            data = {**cfg.to_dict()["data"], "file": str(data_file), "since": None, "until": None}
            cfg = build_config({**cfg.to_dict(), "data": data})
        candles = load_candles(cfg)
        ds = splits.apply(dataset.prepare(candles, cfg, load_funding(cfg, candles["timestamp"])), scaler,
                          meta["features"])
        idx = ds.test_idx  # every bar with a complete, clean input window, the latest one included
        pred = np.full(len(ds.close), np.nan)
        if len(idx):
            pred[idx] = forecast(ds, idx)
        if cfg.target.kind == "volatility":  # the run's variance floor (absent in runs before issue 23)
            from cryptonorm.features.realized import floor_forecasts

            pred = floor_forecasts(pred, meta.get("vol_floor"), cfg.target.vol_form)[0]
        df = pd.DataFrame({"timestamp": ds.timestamps, "close": ds.close, "forecast": pred})
        out = Path(out) if out is not None else rd / PREDICTIONS
        if out.suffix.lower() == ".parquet":
            with atomic_path(out) as tmp:
                df.to_parquet(tmp, index=False)
        else:
            write_csv(out, df)
    return out, int(len(idx))


def _load_model(run_dir: Path, cfg: Config) -> tuple[Callable[[Any, np.ndarray], np.ndarray], dict[str, Any]]:
    """The saved model's forecast function (dataset, END rows) -> (n,) and its meta (n_features, window):
    a network's model.pt, or a ridge / LightGBM run's files (pipeline/fitting.py)."""
    if is_tabular(cfg):
        return load_tabular(run_dir, cfg)
    from cryptonorm.learn import checkpoints, training
    from cryptonorm.learn import device as device_mod

    model, ckpt = checkpoints.load_checkpoint(run_dir / MODEL)
    device = device_mod.resolve_device(cfg.train.device)
    model.to(device)
    return (lambda d, idx: training.predict(model, d, idx, device)), ckpt


def check_model_fits(run_dir: Path, cfg: Config, meta: dict[str, Any], ckpt: dict[str, Any]) -> None:
    """The model, scaler.json and config.yaml must describe the same inputs (window x features)."""
    n_feat, window = int(ckpt.get("n_features", -1)), int(ckpt.get("window", -1))
    name = model_file(cfg)
    if (len(meta["features"]), meta["window"]) != (n_feat, window):
        raise DataError(f"{run_dir / name} expects {window} bars x {n_feat} features, but "
                        f"{run_dir / SCALER} describes {meta['window']} x {len(meta['features'])}: "
                        f"the model comes from another run; restore this run's {name} or train again")
    if cfg.features.window != window:
        raise DataError(f"{run_dir / CONFIG} says features.window={cfg.features.window} but the model "
                        f"was trained with {window}: config.yaml was edited after training; restore it or "
                        "train again")
