"""Walk-forward on a universe (`split.walk_forward`): retrain every `step` bars, forecast the next
`step` bars of every coin out of sample.

For fold k with test bars [s, s + step) of the universe grid (s from the first sample time + train_bars +
embargo, every `step` bars): the training span is [s - embargo - train_bars, s - embargo) (rolling) or
[first sample time, s - embargo) (expanding); its last `val_fraction` is the validation part (for early
stopping), with the embargo (split.embargo, default horizon + window bars) between train and validation
too. Each fold gets its own scaler fitted on its training part and a fresh model with the run's seed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cryptonorm.config import Config
from cryptonorm.errors import DataError
from cryptonorm.features.panel import PanelPrepared
from cryptonorm.pipeline.panel import panel_data, to_grid
from cryptonorm.timeframes import format_ms


def fold_times(prep: PanelPrepared, cfg: Config) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(train, validation, test) (T,) timestamp masks of every fold (module docstring)."""
    wf = cfg.split.walk_forward
    t_n = len(prep.timestamps)
    times = np.flatnonzero(prep.valid.any(axis=1))
    if not len(times):
        raise DataError("the universe has no sample to walk forward over; use more data")
    first, last = int(times[0]), int(times[-1])
    embargo = cfg.split.embargo if cfg.split.embargo is not None else prep.horizon + prep.window
    grid = np.arange(t_n)
    folds = []
    for s in range(first + wf.train_bars + embargo, last + 1, wf.step):
        lo = first if wf.mode == "expanding" else max(first, s - embargo - wf.train_bars)
        hi = s - embargo  # exclusive end of the training span
        val_start = hi - int(wf.val_fraction * (hi - lo))
        train = (grid >= lo) & (grid < val_start - embargo)
        val = (grid >= val_start) & (grid < hi)
        test = (grid >= s) & (grid < s + wf.step)
        folds.append((train, val, test))
    if not folds:
        raise DataError(f"split.walk_forward.train_bars ({wf.train_bars}) + the embargo ({embargo}) leave no "
                        f"bar to test in the universe's {last - first + 1} bars with samples; lower train_bars")
    return folds


def walk_forward(prep: PanelPrepared, cfg: Config) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """((T, C) out-of-sample forecasts, (T,) tested timestamps, training info with one record per fold)."""
    from cryptonorm.learn import training

    forecast = np.full(prep.y.shape, np.nan)
    tested = np.zeros(len(prep.timestamps), dtype=bool)
    records: list[dict[str, Any]] = []
    n_train = n_test = 0
    for train_t, val_t, test_t in fold_times(prep, cfg):
        if not (prep.valid & train_t[:, None]).any() or not (prep.valid & test_t[:, None]).any():
            continue  # a fold without samples (a long outage): nothing to learn or to test
        data = panel_data(prep, cfg, (train_t, val_t, test_t))
        fit = training.fit(data, cfg)
        part = to_grid(training.predict(fit.model, data, data.test_idx), data.test_idx, prep.y.shape)
        forecast = np.where(np.isfinite(part), part, forecast)
        tested |= test_t & np.isfinite(part).any(axis=1)
        n_train, n_test = n_train + len(data.train_idx), n_test + len(data.test_idx)
        ts = prep.timestamps
        records.append({"train_start": format_ms(int(ts[np.argmax(train_t)])),
                        "test_start": format_ms(int(ts[np.argmax(test_t)])),
                        "test_end": format_ms(int(ts[len(ts) - 1 - np.argmax(test_t[::-1])])),
                        "train_samples": len(data.train_idx), "test_samples": len(data.test_idx),
                        "best_epoch": fit.best_epoch, "stopped": fit.stopped})
    if not tested.any():
        raise DataError("no walk-forward fold had samples to train and test on; use more data")
    return forecast, tested, {"samples": {"train": n_train, "test": n_test}, "folds": records}
