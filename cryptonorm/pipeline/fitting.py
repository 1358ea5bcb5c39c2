"""The ONE place where a run's model kind is dispatched: a network (learn/training.py, torch) or a tabular
model (learn/tabular.py: ridge, LightGBM). Single-split training, walk-forward folds and `predict` all come
through here, so both families get the same splits, scaler, embargo, refits and outputs.

A tabular model of a volatility target is fitted on the log of the label's variance (whatever
`target.vol_form` is) and its forecast variance is turned back into `vol_form`, so forecasts.csv and every
volatility metric read the same columns as for a network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryptonorm.atomic import write_csv
from cryptonorm.config import Config
from cryptonorm.config.tabular import IMPORTANCE_FILE, MODEL_FILE, TABULAR_KINDS
from cryptonorm.pipeline.fetch import ProgressFn
from cryptonorm.pipeline.resume import Checkpointer
from cryptonorm.pipeline.rundir import MODEL

NETWORK_MODEL_FILE = MODEL  # rundir's name, re-exported for the dispatch's readers


def is_tabular(cfg: Config) -> bool:
    """Whether cfg.model.kind is fitted by learn/tabular.py (ridge, lightgbm) instead of the torch loop."""
    return cfg.model.kind in TABULAR_KINDS


def model_file(cfg: Config) -> str:
    """The file a finished run of this config keeps its model in."""
    return MODEL_FILE if is_tabular(cfg) else NETWORK_MODEL_FILE


@dataclass
class Fitted:
    """A fitted model of either family: how training went (`res`: FitResult or TabularFit) and its forecasts."""

    res: Any
    forecast: Callable[[Any, np.ndarray], np.ndarray]  # (dataset, END rows (n,)) -> (n,) in the target's units


def fit(ds: Any, cfg: Config, device: Any, progress: ProgressFn | None, run_dir: Path, ck: Checkpointer,
        fold: int) -> Fitted:
    """Fit cfg.model.kind on ds (train_idx, early stopping on val_idx) and save it into run_dir."""
    if is_tabular(cfg):
        return _fit_tabular(ds, cfg, run_dir)
    from cryptonorm.learn import training

    res = training.fit(ds, cfg, device, progress=progress, checkpoint=run_dir / NETWORK_MODEL_FILE,
                       resume=ck.state_for(fold), on_epoch_end=ck.saver(fold))
    return Fitted(res, lambda d, idx: training.predict(res.model, d, idx, device))


def _fit_tabular(ds: Any, cfg: Config, run_dir: Path) -> Fitted:
    from cryptonorm.learn import tabular

    objective, link = _objective(cfg)
    res = tabular.fit(ds.X, _label(ds.y, cfg), ds.train_idx, ds.val_idx, ds.window, cfg.model, objective, link,
                      cfg.seed)
    tabular.save(res.model, run_dir, extra={"best_epoch": res.best_epoch, "loss": res.best_loss})
    write_csv(run_dir / IMPORTANCE_FILE,
              pd.DataFrame(res.model.importance(list(ds.feature_names))).sort_values("importance", ascending=False))
    model = res.model
    return Fitted(res, lambda d, idx: tabular_forecast(model, d, idx, cfg))


def _objective(cfg: Config) -> tuple[str, str]:
    kind = cfg.target.kind
    return ("binary" if kind == "direction" else "regression"), ("log" if kind == "volatility" else "identity")


def _label(y: np.ndarray, cfg: Config) -> np.ndarray:
    """The label a tabular model is fitted on: the variance for volatility (fitted on its log), else y."""
    if cfg.target.kind != "volatility":
        return np.asarray(y, dtype=np.float64)
    from cryptonorm.features import realized

    return realized.from_form(y, cfg.target.vol_form)


def tabular_forecast(model: Any, ds: Any, idx: np.ndarray, cfg: Config) -> np.ndarray:
    """Forecasts (n,) of a tabular model in the target's units (the variance back in target.vol_form)."""
    out = model.predict(ds.X, idx)
    if cfg.target.kind == "volatility":
        from cryptonorm.features import realized

        out = realized.to_form(out, cfg.target.vol_form)
    return np.asarray(out, dtype=np.float64)


def load_tabular(run_dir: Path, cfg: Config) -> tuple[Callable[[Any, np.ndarray], np.ndarray], dict[str, Any]]:
    """A saved tabular run's forecast function and its meta (n_features, window, ...), for `predict`."""
    from cryptonorm.learn import tabular

    model, meta = tabular.load(run_dir)
    return (lambda d, idx: tabular_forecast(model, d, idx, cfg)), meta
