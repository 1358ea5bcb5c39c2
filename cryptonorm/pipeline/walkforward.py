"""Walk-forward training: refit every `step` bars; every test forecast is out of sample."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cryptonorm.config import Config
from cryptonorm.errors import ConfigError, DataError
from cryptonorm.features.splits import embargo_bars
from cryptonorm.pipeline.fetch import ProgressFn
from cryptonorm.pipeline.resume import Checkpointer


@dataclass
class FoldSummary:
    """How the last fold's training ended (the fields of FitResult that the run's outputs use)."""

    history: list[dict[str, Any]]
    best_epoch: int
    stopped: str
    message: str


def walk_forward(prep: Any, cfg: Config, device: Any, progress: ProgressFn | None, run_dir: Path,
                 ck: Checkpointer) -> tuple[Any, FoldSummary, np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Refit every `step` bars on a rolling/expanding window; every test forecast is out of sample.

    Fold k predicts rows [s, s + step); it trains on rows before s - embargo (the last `val_fraction` of
    them, after another embargo, for early stopping), with the scaler refitted on its own training rows.
    Finished folds are recorded in `ck` and, on a resume, taken from it instead of trained again.
    Returns (last fold's dataset, last fold's training summary, forecasts (N,), split names (N,), fold records).
    """
    from cryptonorm.features import splits

    wf = cfg.split.walk_forward
    n = len(prep.timestamps)
    embargo = embargo_bars(prep, cfg)
    if wf.train_bars + 2 * embargo + wf.step > n:
        raise ConfigError(f"split.walk_forward needs train_bars + 2 x embargo + step = "
                          f"{wf.train_bars + 2 * embargo + wf.step} bars, the data has {n}; lower "
                          "split.walk_forward.train_bars/step or use more data")
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
            k = len(folds)
            if k < len(ck.folds):  # finished before an interruption: its saved forecasts, not a retraining
                done = ck.folds[k]
                forecasts[np.asarray(done["test_idx"], dtype=np.int64)] = np.array(done["forecasts"], dtype=float)
                record, res = done["record"], FoldSummary(**done["summary"])
            else:
                res = _train_fold(ds_k, cfg, device, progress, run_dir, ck, k, forecasts)
                record = {"fold": k, "train_start": int(prep.timestamps[fit_start]),
                          "train_end": int(prep.timestamps[train_end - 1]), "test_start": int(prep.timestamps[start]),
                          "test_end": int(prep.timestamps[stop - 1]), "train_samples": len(ds_k.train_idx),
                          "test_samples": len(ds_k.test_idx), "best_epoch": res.best_epoch, "stopped": res.stopped}
                ck.fold_done(record, ds_k.test_idx, forecasts[ds_k.test_idx], asdict(res))
            split_of[ds_k.test_idx] = "test"
            ds = ds_k
            folds.append(record)
        start = stop
    if ds is None or res is None:
        raise DataError("walk-forward produced no fold with training, validation and test samples; "
                        "use more data or a smaller split.walk_forward.train_bars")
    return ds, res, forecasts, split_of, folds


def _train_fold(ds_k: Any, cfg: Config, device: Any, progress: ProgressFn | None, run_dir: Path, ck: Checkpointer,
                k: int, forecasts: np.ndarray) -> FoldSummary:
    """Train fold k (resuming its saved epoch state if any) and fill in its test forecasts."""
    from cryptonorm.pipeline import fitting

    fold_progress = None if progress is None else (lambda d: progress({**d, "fold": k}))
    fitted = fitting.fit(ds_k, cfg, device, fold_progress, run_dir, ck, k)  # a network or ridge / LightGBM
    res = fitted.res
    forecasts[ds_k.test_idx] = fitted.forecast(ds_k, ds_k.test_idx)
    return FoldSummary(res.history, res.best_epoch, res.stopped, res.message)
