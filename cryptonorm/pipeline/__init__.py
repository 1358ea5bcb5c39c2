"""The pipeline steps: fetch, features, audit, train, predict, backtest.

This package owns paths, run directories and what is written to disk; the computation lives in the core
modules. Every step can be called from Python with a `Config` (see `config.load_config`).

Modules: fetch (the store), prepare (features, audit), rundir (run directories), training (the train step),
walkforward (its folds), resume (interrupted training), integrity (file hashes), forecasting (predict),
backtesting (backtest, and train_and_backtest for `run`). The atomic writers live in cryptonorm.atomic and
the store in cryptonorm.data.store: import them from there.
"""

from cryptonorm.pipeline.backtesting import backtest, train_and_backtest
from cryptonorm.pipeline.fetch import FetchSummary, fetch
from cryptonorm.pipeline.forecasting import predict
from cryptonorm.pipeline.integrity import verify_run
from cryptonorm.pipeline.prepare import audit, features
from cryptonorm.pipeline.rundir import (
    RunDir,
    finished_run,
    is_run_dir,
    load_run_config,
    new_run_dir,
)
from cryptonorm.pipeline.training import TrainSummary, train, versions
from cryptonorm.pipeline.validate import validate_config

__all__ = [
    "FetchSummary", "RunDir", "TrainSummary", "audit", "backtest", "features", "fetch", "finished_run",
    "is_run_dir", "load_run_config", "new_run_dir", "predict", "train", "train_and_backtest", "validate_config",
    "verify_run", "versions",
]
