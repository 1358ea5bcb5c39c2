"""The predict step: forecasts of a saved run on its own data or another candle file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryptonorm.atomic import write_csv
from cryptonorm.config import Config, build_config
from cryptonorm.data.store import load_candles, load_funding
from cryptonorm.errors import DataError
from cryptonorm.pipeline.integrity import verify_run
from cryptonorm.pipeline.rundir import finished_run, run_dir_lock


def predict(run_dir: Path, data_file: Path | None = None, out: Path | None = None) -> tuple[Path, int]:
    """Forecasts of a saved run on its own data (or another candle file), written as CSV."""
    from cryptonorm.features import dataset, splits
    from cryptonorm.features.scaling import Scaler
    from cryptonorm.learn import checkpoints, training
    from cryptonorm.learn import device as device_mod

    run_dir = Path(run_dir)
    cfg = finished_run(run_dir)
    with run_dir_lock(run_dir):
        meta = read_scaler_json(run_dir)
        scaler = Scaler.from_dict(meta["scaler"])
        verify_run(run_dir)
        model, ckpt = checkpoints.load_checkpoint(run_dir / "model.pt")
        check_model_fits(run_dir, cfg, meta, ckpt)
        if data_file is not None:  # another file: all of it, not the run's date range
            data = {**cfg.to_dict()["data"], "file": str(data_file), "since": None, "until": None}
            cfg = build_config({**cfg.to_dict(), "data": data})
        device = device_mod.resolve_device(cfg.train.device)
        model.to(device)
        candles = load_candles(cfg)
        ds = splits.apply(dataset.prepare(candles, cfg, load_funding(cfg, candles["timestamp"])), scaler,
                          meta["features"])
        idx = ds.test_idx  # every bar with a complete, clean input window, the latest one included
        pred = np.full(len(ds.close), np.nan)
        if len(idx):
            pred[idx] = training.predict(model, ds, idx, device)
        if cfg.target.kind == "volatility":  # the run's variance floor (absent in runs before issue 23)
            from cryptonorm.features.realized import floor_forecasts

            pred = floor_forecasts(pred, meta.get("vol_floor"), cfg.target.vol_form)[0]
        df = pd.DataFrame({"timestamp": ds.timestamps, "close": ds.close, "forecast": pred})
        out = out or run_dir / "predictions.csv"
        write_csv(out, df)
    return out, int(len(idx))


def read_scaler_json(run_dir: Path) -> dict[str, Any]:
    """RUN_DIR/scaler.json: {"scaler": {...}, "features": [names], "window": W} (and "vol_floor", the variance
    floor of a volatility run); DataError naming the problem."""
    path = run_dir / "scaler.json"
    if not (run_dir / "model.pt").exists() or not path.exists():
        raise DataError(f"{run_dir} has no model.pt/scaler.json; the training did not finish, train again")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        where = f" (line {e.lineno}, column {e.colno})" if isinstance(e, json.JSONDecodeError) else ""
        raise DataError(f"{path} is not valid JSON{where}: it was truncated or edited; restore it or train "
                        "the run again") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("scaler"), dict) or not isinstance(
            meta.get("features"), list) or not isinstance(meta.get("window"), int):
        raise DataError(f"{path} lacks the scaler, features or window entries: it was edited; restore it or "
                        "train the run again")
    return meta


def check_model_fits(run_dir: Path, cfg: Config, meta: dict[str, Any], ckpt: dict[str, Any]) -> None:
    """The model, scaler.json and config.yaml must describe the same inputs (window x features)."""
    n_feat, window = int(ckpt.get("n_features", -1)), int(ckpt.get("window", -1))
    if (len(meta["features"]), meta["window"]) != (n_feat, window):
        raise DataError(f"{run_dir / 'model.pt'} expects {window} bars x {n_feat} features, but "
                        f"{run_dir / 'scaler.json'} describes {meta['window']} x {len(meta['features'])}: "
                        "the model comes from another run; restore this run's model.pt or train again")
    if cfg.features.window != window:
        raise DataError(f"{run_dir / 'config.yaml'} says features.window={cfg.features.window} but the model "
                        f"was trained with {window}: config.yaml was edited after training; restore it or "
                        "train again")
