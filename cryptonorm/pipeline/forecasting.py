"""The predict step: forecasts of a saved run on its own data or another candle file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from cryptonorm.atomic import write_csv
from cryptonorm.config import build_config
from cryptonorm.data.store import load_candles, load_funding
from cryptonorm.errors import DataError
from cryptonorm.pipeline.rundir import finished_run


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
    ds = splits.apply(dataset.prepare(load_candles(cfg), cfg, load_funding(cfg)), Scaler.from_dict(meta["scaler"]),
                       meta["features"])
    idx = ds.test_idx  # every bar with a complete, clean input window, the latest one included
    pred = np.full(len(ds.close), np.nan)
    if len(idx):
        pred[idx] = training.predict(model, ds, idx, device)
    df = pd.DataFrame({"timestamp": ds.timestamps, "close": ds.close, "forecast": pred})
    out = out or run_dir / "predictions.csv"
    write_csv(out, df)
    return out, int(len(idx))
